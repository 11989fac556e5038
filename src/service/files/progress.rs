//! [`Progress`]: the bar a `put` or `get` advances as bytes cross the wire (bytes of total,
//! rate, ETA, the current file), drawn by `indicatif`; hidden unless the caller asks for one.
//! A receiving server (`recv`) restarts it per file and may print a line per stored file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(not(feature = "cli"))]
use self::no_bar::ProgressBar;
#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::hash::HashAlg;
use super::store::{Stored, MAX_PATH_BYTES};
use crate::text::escape_one_line;

/// Most characters of a file name shown on the bar; a longer name keeps its end.
pub(crate) const PROGRESS_NAME_CHARS: usize = 40;

/// Longest name escaped for the bar, in input characters (enough to fill any bar).
const MAX_ESCAPED_CHARS: usize = 1024;

/// The rate and ETA go in the `rate` key, left empty until bytes flow (see [`rate_and_eta`]).
#[cfg(feature = "cli")]
const TEMPLATE: &str = "{wide_msg} [{bar:20}] {decimal_bytes}/{decimal_total_bytes} {rate}";

/// A handle on one command's progress bar: cheap to clone, shared across tasks.
///
/// [`Progress::hidden`] (the default) holds no bar, so updates cost a branch. Drawing is
/// rate-limited by `indicatif`; an update is one atomic add.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Prefix of the line printed on stderr per stored file; `None` prints none.
    file_lines: Option<&'static str>,
    /// The file under way, kept with or without a bar: what an interrupted command reports.
    current: Arc<Current>,
}

/// The file a transfer is moving now and the bytes of it counted so far.
#[derive(Debug, Default)]
struct Current {
    name: Mutex<Option<String>>,
    bytes: AtomicU64,
    size: AtomicU64,
}

/// The file a transfer was moving, as [`Progress::under_way`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderWay {
    /// Its name, escaped.
    pub name: String,
    /// Its bytes counted so far: a resumed prefix and the bytes that crossed the wire.
    pub bytes: u64,
    /// Its size, once known (0 before).
    pub size: u64,
}

impl Progress {
    /// No bar at all: what library callers get unless they ask.
    pub fn hidden() -> Self {
        Progress::default()
    }

    /// A bar drawn to `target` (e.g. `ProgressDrawTarget::stderr()`), its total starting at 0.
    #[cfg(feature = "cli")]
    pub fn new(target: ProgressDrawTarget) -> Self {
        let style = ProgressStyle::with_template(TEMPLATE).map_or_else(
            |_| ProgressStyle::default_bar(),
            |s| {
                s.progress_chars("=> ").with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate_and_eta(state.per_sec(), state.eta()));
                    },
                )
            },
        );
        let bar = ProgressBar::with_draw_target(Some(0), target).with_style(style);
        Progress {
            bar: Some(bar),
            file_lines: None,
            current: Arc::default(),
        }
    }

    /// Also prints a line on stderr per file a server stores (`recv: stored NAME (SIZE bytes);
    /// ...`, `verb` first): what a receiver shows when stderr is not a terminal, and what
    /// stays on screen when it is.
    pub fn with_file_lines(self, verb: &'static str) -> Self {
        Progress {
            file_lines: Some(verb),
            ..self
        }
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
        if let Ok(mut current) = self.current.name.lock() {
            *current = Some(escape_one_line(name, MAX_PATH_BYTES));
        }
        self.current.bytes.store(0, Ordering::Relaxed);
        self.current.size.store(0, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_message(label(name));
        }
    }

    /// The file under way has `size` bytes.
    pub(crate) fn file_size(&self, size: u64) {
        self.current.size.store(size, Ordering::Relaxed);
    }

    /// `name` is being checked for a partial copy to resume: said on the bar, which shows no
    /// rate meanwhile.
    pub(crate) fn probe_file(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} (looking for a partial copy)", label(name)));
        }
    }

    /// The probe of `name` is answered: the bar shows its name alone again.
    pub(crate) fn probed(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(label(name));
        }
    }

    /// The file under way, if one has started: what an interrupted command says it cut off.
    pub fn under_way(&self) -> Option<UnderWay> {
        let name = self.current.name.lock().ok()?.clone()?;
        Some(UnderWay {
            name,
            bytes: self.current.bytes.load(Ordering::Relaxed),
            size: self.current.size.load(Ordering::Relaxed),
        })
    }

    /// A resumed prefix: counted at once, and kept out of the rate so the ETA stays right.
    pub(crate) fn skip(&self, bytes: u64) {
        self.current.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = self.bar.as_ref().filter(|_| bytes > 0) {
            bar.inc(bytes);
            bar.tick();
            bar.reset_eta();
        }
    }

    /// A receiving server's next file: the bar restarts at `offset` (a resumed prefix) of
    /// `size`, named `name` (escaped).
    pub(crate) fn begin_file(&self, name: &str, size: u64, offset: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(size);
            bar.set_message(label(name));
            bar.reset();
        }
        self.skip(offset);
    }

    /// A receiving server stored a file, `received` of its bytes in `elapsed`: prints its line
    /// if asked for (clear the bar first).
    pub(crate) fn print_stored(
        &self,
        stored: &Stored,
        received: u64,
        elapsed: Duration,
        hash: HashAlg,
    ) {
        if let Some(verb) = self.file_lines {
            eprintln!("{}", stored_line(verb, stored, received, elapsed, hash));
        }
    }

    /// `bytes` crossed the wire.
    pub(crate) fn advance(&self, bytes: u64) {
        self.current.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}

/// The bar's rate and ETA: nothing until bytes flow (while a resume is probed, or before the
/// first chunk), rather than `0 B/s ETA 0s`.
#[cfg(feature = "cli")]
fn rate_and_eta(per_sec: f64, eta: Duration) -> String {
    if !per_sec.is_finite() || per_sec < 1.0 {
        return String::new();
    }
    // Saturating float-to-int conversion, as in `transfer_rate`.
    let rate = decimal_bytes(per_sec as u64);
    format!("{rate}/s ETA {}", indicatif::HumanDuration(eta))
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

/// `bytes` over `elapsed` in decimal units: `15 B/s`, `1.50 kB/s`, `2.02 GB/s`; `n/a` when no
/// time passed.
pub fn transfer_rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        // Saturating float-to-int conversion: an absurd rate prints as the largest one.
        format!("{}/s", decimal_bytes((bytes as f64 / secs) as u64))
    } else {
        "n/a".to_string()
    }
}

/// `n` bytes in decimal units with two decimals past a thousand: `15 B`, `1.50 kB`,
/// `2.02 GB` (as the progress bar shows them).
fn decimal_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// Stands in for indicatif's bar in a library built without the `cli` feature: it has no
/// values, so a [`Progress`] there never holds a bar and every update is a no-op.
#[cfg(not(feature = "cli"))]
mod no_bar {
    #[derive(Debug, Clone)]
    pub(crate) enum ProgressBar {}

    #[allow(clippy::unused_self)]
    impl ProgressBar {
        pub fn position(&self) -> u64 {
            match *self {}
        }
        pub fn length(&self) -> Option<u64> {
            match *self {}
        }
        pub fn finish_and_clear(&self) {
            match *self {}
        }
        pub(crate) fn inc_length(&self, _: u64) {
            match *self {}
        }
        pub(crate) fn dec_length(&self, _: u64) {
            match *self {}
        }
        pub(crate) fn set_message(&self, _: String) {
            match *self {}
        }
        pub(crate) fn inc(&self, _: u64) {
            match *self {}
        }
        pub fn tick(&self) {
            match *self {}
        }
        pub(crate) fn reset_eta(&self) {
            match *self {}
        }
        pub(crate) fn set_length(&self, _: u64) {
            match *self {}
        }
        pub fn reset(&self) {
            match *self {}
        }
    }
}

/// `verb: stored NAME (SIZE bytes); N bytes received in S s (RATE); verified HASH`, or
/// `verb: NAME unchanged (SIZE bytes already held); …`.
fn stored_line(
    verb: &str,
    stored: &Stored,
    received: u64,
    elapsed: Duration,
    hash: HashAlg,
) -> String {
    let name = escape_one_line(&stored.name, MAX_PATH_BYTES);
    let what = if stored.unchanged {
        format!("{name} unchanged ({} bytes already held)", stored.size)
    } else {
        format!("stored {name} ({} bytes)", stored.size)
    };
    format!(
        "{verb}: {what}; {received} bytes received in {:.2} s ({}); verified {hash}",
        elapsed.as_secs_f64(),
        transfer_rate(received, elapsed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_in_decimal_units() {
        assert_eq!(decimal_bytes(15), "15 B");
        assert_eq!(decimal_bytes(1500), "1.50 kB");
        assert_eq!(decimal_bytes(2_020_000_000), "2.02 GB");
        assert_eq!(transfer_rate(6000, Duration::from_secs(1)), "6.00 kB/s");
    }

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
    fn a_receivers_bar_restarts_for_each_file() {
        let progress = Progress::new(ProgressDrawTarget::hidden());
        progress.begin_file("a", 100, 0);
        progress.advance(100);
        progress.begin_file("b", 50, 20);
        assert_eq!((progress.position(), progress.length()), (20, 50));
    }

    #[test]
    fn a_stored_line_escapes_the_name_and_gives_size_rate_and_digest() {
        let stored = Stored {
            name: "d/a\x1b.txt".into(),
            size: 2_000_000,
            unchanged: false,
        };
        let line = stored_line(
            "recv",
            &stored,
            1_000_000,
            Duration::from_secs(1),
            HashAlg::Blake3,
        );
        assert_eq!(
            line,
            "recv: stored d/a\\x1b.txt (2000000 bytes); 1000000 bytes received in 1.00 s \
             (1.00 MB/s); verified blake3"
        );
    }

    #[test]
    fn the_bar_shows_no_rate_or_eta_until_bytes_flow() {
        assert_eq!(rate_and_eta(0.0, Duration::ZERO), "");
        assert_eq!(rate_and_eta(f64::NAN, Duration::ZERO), "");
        assert_eq!(rate_and_eta(0.5, Duration::from_secs(9)), "");
        let shown = rate_and_eta(1_500_000.0, Duration::from_secs(3));
        assert_eq!(shown, "1.50 MB/s ETA 3 seconds");
    }

    #[test]
    fn the_file_under_way_is_known_with_or_without_a_bar() {
        for progress in [
            Progress::hidden(),
            Progress::new(ProgressDrawTarget::hidden()),
        ] {
            assert_eq!(progress.under_way(), None);
            progress.start_file("a\x1b.bin");
            progress.file_size(40);
            progress.skip(10);
            progress.advance(5);
            let expect = UnderWay {
                name: "a\\x1b.bin".into(),
                bytes: 15,
                size: 40,
            };
            assert_eq!(progress.under_way(), Some(expect));
            progress.start_file("b");
            assert_eq!(progress.under_way().map(|u| u.bytes), Some(0));
        }
    }

    #[test]
    fn rates_take_the_unit_that_fits() {
        let second = Duration::from_secs(1);
        assert_eq!(transfer_rate(6, second), "6 B/s");
        assert_eq!(transfer_rate(6, Duration::from_millis(1)), "6.00 kB/s");
        assert_eq!(transfer_rate(2_020_000_000, second), "2.02 GB/s");
        assert_eq!(transfer_rate(1, Duration::ZERO), "n/a");
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
