//! [`Progress`]: the bar a `put` or `get` advances as bytes cross the wire (bytes of total,
//! rate, ETA, the current file), drawn by `indicatif`; hidden unless the caller asks for one.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::text::escape_one_line;

/// Most characters of a file name shown on the bar; a longer name keeps its end.
pub const PROGRESS_NAME_CHARS: usize = 40;

/// Longest name escaped for the bar, in input characters (enough to fill any bar).
const MAX_ESCAPED_CHARS: usize = 1024;

const TEMPLATE: &str =
    "{wide_msg} [{bar:20}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// A handle on one command's progress bar: cheap to clone, shared across tasks.
///
/// [`Progress::hidden`] (the default) holds no bar, so updates cost a branch. Drawing is
/// rate-limited by `indicatif`; an update is one atomic add.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// No bar at all: what library callers get unless they ask.
    pub fn hidden() -> Self {
        Progress::default()
    }

    /// A bar drawn to `target` (e.g. `ProgressDrawTarget::stderr()`), its total starting at 0.
    pub fn new(target: ProgressDrawTarget) -> Self {
        let style = ProgressStyle::with_template(TEMPLATE).map_or_else(
            |_| ProgressStyle::default_bar(),
            |s| s.progress_chars("=> "),
        );
        let bar = ProgressBar::with_draw_target(Some(0), target).with_style(style);
        Progress { bar: Some(bar) }
    }

    /// Bytes counted so far: sent or received, plus resumed prefixes.
    pub fn position(&self) -> u64 {
        self.bar.as_ref().map_or(0, ProgressBar::position)
    }

    /// Bytes expected in all.
    pub fn length(&self) -> u64 {
        self.bar.as_ref().and_then(ProgressBar::length).unwrap_or(0)
    }

    /// Removes the bar from the terminal, so the lines printed next are not garbled.
    pub fn finish_and_clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// `bytes` more are expected.
    pub(crate) fn add_total(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc_length(bytes);
        }
    }

    /// `bytes` expected will not come after all (a refused or unreadable file).
    pub(crate) fn remove_total(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.dec_length(bytes);
        }
    }

    /// Shows `name` (escaped: it may come from the peer) as the file under way.
    pub(crate) fn start_file(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(label(name));
        }
    }

    /// A resumed prefix: counted at once, and kept out of the rate so the ETA stays right.
    pub(crate) fn skip(&self, bytes: u64) {
        if let Some(bar) = self.bar.as_ref().filter(|_| bytes > 0) {
            bar.inc(bytes);
            bar.tick();
            bar.reset_eta();
        }
    }

    /// `bytes` crossed the wire.
    pub(crate) fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}

/// `name` escaped for one line, cut to [`PROGRESS_NAME_CHARS`] from the end.
fn label(name: &str) -> String {
    let shown = escape_one_line(name, MAX_ESCAPED_CHARS);
    let count = shown.chars().count();
    if count <= PROGRESS_NAME_CHARS {
        return shown;
    }
    let tail: String = shown
        .chars()
        .skip(count - (PROGRESS_NAME_CHARS - 1))
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_progress_accepts_updates() {
        let progress = Progress::hidden();
        progress.add_total(10);
        progress.start_file("a");
        progress.skip(4);
        progress.advance(6);
        progress.remove_total(1);
        progress.finish_and_clear();
        assert_eq!((progress.position(), progress.length()), (0, 0));
    }

    #[test]
    fn a_drawn_progress_counts_resumed_and_sent_bytes() {
        let progress = Progress::new(ProgressDrawTarget::hidden());
        progress.add_total(100);
        progress.skip(60);
        progress.advance(40);
        assert_eq!((progress.position(), progress.length()), (100, 100));
    }

    #[test]
    fn names_are_escaped_and_long_ones_keep_their_end() {
        assert_eq!(label("a\x1b[2Jb\n"), "a\\x1b[2Jb\\x0a");
        let long = format!("{}tail.txt", "d/".repeat(100));
        let shown = label(&long);
        assert_eq!(shown.chars().count(), PROGRESS_NAME_CHARS);
        assert!(shown.starts_with('…') && shown.ends_with("/tail.txt"));
    }
}
