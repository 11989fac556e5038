//! Waiting for a process to be gone: the bounded poll the exec tests use to check that a
//! remote command (and its children) died with its session.

use std::time::Duration;

use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::TEST_TIMEOUT;

/// How often [`wait_until_gone`] looks.
const PID_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Whether `pid` is gone: no such process, or a zombie waiting for a reaper we do not control.
pub fn is_gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    state.is_empty() || state.starts_with('Z')
}

/// Polls until `pid` [is gone](is_gone); fails the test with `what` (e.g. "child 42 outlived
/// its client") if it is still there after [`TEST_TIMEOUT`].
pub async fn wait_until_gone(pid: i32, what: &str) {
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    while !is_gone(pid) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(PID_POLL_INTERVAL).await;
    }
}

/// [`wait_until_gone`] for a test without a runtime.
pub fn wait_until_gone_blocking(pid: i32, what: &str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime for the poll")
        .block_on(wait_until_gone(pid, what));
}

/// Pids of the live processes whose command line is exactly `argv` (e.g. `["sleep", "987.1"]`,
/// an argument no other process has), found through /proc.
pub fn live_with_argv(argv: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .filter(|pid| !is_gone(*pid))
        .collect()
}
