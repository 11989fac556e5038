//! Headless Chromium for the browser tests: Debian's `chromium`, driven by `playwright-core`
//! from npm in `$SOCKIT_PLAYWRIGHT_DIR` (default `/tmp/sockit-playwright`; `.ci/run`
//! installs it there).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::have;

/// What a browser test needs: Debian's Chromium binary and the folder holding
/// `playwright-core`, or `None` after saying plainly which is missing (the test is skipped).
pub fn browser_tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    if !have("node", test) {
        return None;
    }
    let Some(browser) = chromium() else {
        println!("{test}: skipped: chromium is not installed (apt-get install chromium)");
        return None;
    };
    let Some(modules) = playwright_dir(test) else {
        println!("{test}: skipped: playwright-core is not installed (npm install playwright-core)");
        return None;
    };
    Some((browser, modules))
}

/// Where `playwright-core` is (installing it with npm if it is missing and npm is here).
fn playwright_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var_os("SOCKIT_PLAYWRIGHT_DIR")
            .unwrap_or_else(|| "/tmp/sockit-playwright".into()),
    );
    let installed = |d: &Path| d.join("node_modules/playwright-core/package.json").exists();
    if !installed(&dir) && have("npm", test) {
        fs::create_dir_all(&dir).ok()?;
        let _ = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--silent",
                "playwright-core",
            ])
            .current_dir(&dir)
            .status();
    }
    installed(&dir).then_some(dir)
}

/// Debian's browser binary (the `chromium` on PATH is a wrapper script).
fn chromium() -> Option<PathBuf> {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}
