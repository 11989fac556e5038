//! Processes a command left behind outside its process group (`setsid cmd &`, a double fork,
//! a daemon): found through /proc and killed by pid when the command exits and again when the
//! session ends (Linux; elsewhere there is no /proc to read and nothing is found).
//!
//! A process is the session's when its environment still holds the session's mark, or it
//! holds one of the session's pipes or its terminal open, or it descends from such a process.
//! Only this user's processes can be read, so nothing else is ever signalled. A process that
//! clears its environment and lets go of every descriptor of the session (and whose marked
//! ancestors are gone) is not found: only a cgroup could track it.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::fstat;
use nix::unistd::Pid;

/// The variable that marks a session's processes; children inherit it.
pub(super) const SESSION_MARK_VAR: &str = "SOCKIT_EXEC_SESSION";

/// Most of a process's environment read when looking for the mark.
const MAX_ENVIRON_BYTES: u64 = 1024 * 1024;

/// Most descriptors of one process looked at when looking for the session's files.
const MAX_FDS_CHECKED: usize = 4096;

/// Scans per sweep: a process may fork while the previous scan's kills land.
const MAX_SWEEP_ROUNDS: usize = 8;

/// Pause between a sweep's rounds, for the processes just killed to be gone.
const SWEEP_ROUND_PAUSE: Duration = Duration::from_millis(5);

/// The session marks handed out so far in this server.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// A file's identity: its device and inode. Both ends of a pipe share it.
type FileId = (u64, u64);

/// What identifies one session's processes: its mark, and the files (pipes, terminal) its
/// command was given.
#[derive(Debug, Clone)]
pub(super) struct Escapees {
    mark: String,
    files: Vec<FileId>,
    /// Cleared once the session lets go of its files: a sweep still running must not take
    /// another session's processes for this one's.
    files_held: Arc<AtomicBool>,
    /// Copies of the terminal's master, open for as long as this or a sweep's clone lives:
    /// the terminal's number (and so the slave's inode) cannot go to another session, in
    /// this server or any other process, while a sweep may still match processes by it.
    held: Vec<Arc<OwnedFd>>,
}

impl Escapees {
    /// A fresh mark, unique in this server: its pid and a counter.
    pub(super) fn new() -> Self {
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed) + 1;
        Escapees {
            mark: format!("{}.{n}", std::process::id()),
            files: Vec::new(),
            files_held: Arc::new(AtomicBool::new(true)),
            held: Vec::new(),
        }
    }

    /// The value of [`SESSION_MARK_VAR`] in the command's environment.
    pub(super) fn mark(&self) -> &str {
        &self.mark
    }

    /// Counts whoever holds `fd`'s file (a pipe's other end, the terminal) as the session's.
    pub(super) fn watch_file(&mut self, fd: impl AsFd) {
        if let Ok(st) = fstat(fd.as_fd()) {
            #[allow(clippy::useless_conversion)] // the field types differ between targets
            self.files
                .push((u64::from(st.st_dev), u64::from(st.st_ino)));
        }
    }

    /// Keeps a copy of `fd` open until this and every sweep started from it are done (see
    /// the `held` field). A copy that cannot be made (no descriptors left) is skipped.
    pub(super) fn hold_open(&mut self, fd: impl AsFd) {
        if let Ok(copy) = fd.as_fd().try_clone_to_owned() {
            self.held.push(Arc::new(copy));
        }
    }

    /// Stops identifying the session's processes by its files: call before closing them.
    pub(super) fn release_files(&self) {
        self.files_held.store(false, Ordering::SeqCst);
    }

    /// SIGKILLs every process of the session still alive, and what descends from them.
    /// Blocking: it reads /proc.
    pub(super) fn kill_all(&self) {
        let entry = format!("{SESSION_MARK_VAR}={}", self.mark);
        for round in 0..MAX_SWEEP_ROUNDS {
            let found = self.find(entry.as_bytes());
            if found.is_empty() {
                return;
            }
            for pid in found {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if round + 1 < MAX_SWEEP_ROUNDS {
                std::thread::sleep(SWEEP_ROUND_PAUSE);
            }
        }
    }

    /// [`Self::kill_all`] off the async threads, not waited for.
    pub(super) fn kill_all_soon(&self) {
        let sweep = self.clone();
        drop(tokio::task::spawn_blocking(move || sweep.kill_all()));
    }

    /// [`Self::kill_all`] off the async threads, waited for at most `within`.
    pub(super) async fn kill_all_within(&self, within: Duration) {
        let sweep = self.clone();
        let _ = tokio::time::timeout(
            within,
            tokio::task::spawn_blocking(move || sweep.kill_all()),
        )
        .await;
    }

    /// The live processes that carry `entry` or hold one of the files, and their descendants.
    fn find(&self, entry: &[u8]) -> Vec<i32> {
        let own = i32::try_from(std::process::id()).unwrap_or(0);
        let live: Vec<(i32, i32)> = pids()
            .into_iter()
            .filter(|pid| *pid != own)
            .filter_map(|pid| Some((pid, live_parent(pid)?)))
            .collect();
        // A child of this server that does not carry the mark is never this session's: it
        // is another session's command, or one being spawned, which between its fork and
        // its exec holds a copy of every descriptor this server has open, this session's
        // pipes among them. Only the mark counts for those.
        let mut found: Vec<i32> = live
            .iter()
            .filter(|(pid, ppid)| {
                carries(*pid, entry)
                    || (*ppid != own
                        && self.files_held.load(Ordering::SeqCst)
                        && holds_any(*pid, &self.files))
            })
            .map(|(pid, _)| *pid)
            .collect();
        // Descendants, breadth first: a child that cleared its environment is still found
        // through a parent that did not.
        let mut next = 0;
        while next < found.len() {
            let parent = found[next];
            for (pid, ppid) in &live {
                if *ppid == parent && *pid != own && !found.contains(pid) {
                    found.push(*pid);
                }
            }
            next += 1;
        }
        found
    }
}

/// Every pid in /proc (none where there is no /proc).
fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// The parent of `pid`, unless it is gone or a zombie (nothing left to kill).
fn live_parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold anything: the fields start after the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// Whether `pid`'s environment holds `entry` exactly (`NAME=value`).
fn carries(pid: i32, entry: &[u8]) -> bool {
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut environ = Vec::new();
    if file
        .take(MAX_ENVIRON_BYTES)
        .read_to_end(&mut environ)
        .is_err()
    {
        return false;
    }
    environ.split(|b| *b == 0).any(|var| var == entry)
}

/// Whether `pid` has one of `files` open.
fn holds_any(pid: i32, files: &[FileId]) -> bool {
    if files.is_empty() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.take(MAX_FDS_CHECKED)
        .filter_map(Result::ok)
        // Follows the descriptor's magic link to the open file itself.
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .any(|meta| files.contains(&(meta.dev(), meta.ino())))
}
