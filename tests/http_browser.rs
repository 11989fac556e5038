//! `sockit http serve` in a real browser: headless Chromium (Debian's), driven by
//! `playwright-core` from npm, opens a listing holding a file with a hostile name, which must
//! show as text (no element, no script run) and download intact through its link; then
//! uploads a file with the page's form.
//!
//! Needs `node`, `chromium` and `playwright-core` in `$SOCKIT_PLAYWRIGHT_DIR` (default
//! `/tmp/sockit-playwright`; `.ci/run` installs it there, and the test tries `npm install`
//! into it once if `npm` is here). Says plainly that it was skipped otherwise.

mod common;

use std::fs;
use std::process::Command;

use common::browser::browser_tools;
use common::start;
use sockit::engine::Config;
use sockit::service::http::{HttpConfig, HttpServer};

/// A name that would be markup, a script, a fragment, a query and an escape if a listing
/// passed it through.
const HOSTILE: &str = "<img src=x onerror=alert(1)> \"q\" & 'a' #?%41 é.bin";

const SCRIPT: &str = r#"
const { chromium } = require('playwright-core');
const [url, name, saveTo, executablePath] = process.argv.slice(2);
(async () => {
  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    let dialogs = 0;
    page.on('dialog', (d) => { dialogs += 1; d.dismiss(); });
    await page.goto(url);
    const links = await page.$$eval('td a', (as) => as.map((a) => a.textContent));
    const images = await page.$$eval('img', (xs) => xs.length);
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 10000 }),
      page.getByText(name, { exact: true }).click(),
    ]);
    await download.saveAs(saveTo);
    const failure = await download.failure();
    // The page's upload form, as a person would use it: pick a file, press Upload.
    await page.setInputFiles('input[type=file]', {
      name: 'from the browser #1.txt', mimeType: 'text/plain', buffer: Buffer.from('sent by a form\n'),
    });
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    const after = await page.$$eval('td a', (as) => as.map((a) => a.textContent));
    console.log(JSON.stringify({ links, images, dialogs, failure, after, url: page.url() }));
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
"#;

#[test]
fn a_hostile_name_is_shown_escaped_and_downloads_intact() {
    let test = "a_hostile_name_is_shown_escaped_and_downloads_intact";
    let Some((browser, modules)) = browser_tools(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("www");
    fs::create_dir(&served).unwrap();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    fs::write(served.join(HOSTILE), &bytes).unwrap();
    fs::write(served.join("plain.txt"), "plain").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut config = HttpConfig::new(&served);
    config.upload = true;
    let server = runtime.block_on(start(HttpServer::new(config).unwrap(), Config::default()));
    let script = dir.path().join("listing.js");
    fs::write(&script, SCRIPT).unwrap();
    let saved = dir.path().join("downloaded");
    let out = Command::new("node")
        .arg(&script)
        .arg(format!("http://{}/", server.addr))
        .arg(HOSTILE)
        .arg(&saved)
        .arg(&browser)
        .env("NODE_PATH", modules.join("node_modules"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let links: Vec<&str> = seen["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        links.contains(&HOSTILE),
        "the name is shown as text: {links:?}"
    );
    assert_eq!(seen["images"], 0, "the name became an element");
    assert_eq!(seen["dialogs"], 0, "the name ran a script");
    assert!(seen["failure"].is_null(), "{seen}");
    assert_eq!(
        fs::read(&saved).unwrap(),
        bytes,
        "the download is not intact"
    );
}
