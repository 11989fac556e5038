//! The exec protocol's typed frames, named by their sender.
//!
//! ```text
//! client                                         server
//!   {"type":"run","argv":["ls","-l"],"shell":false} ->
//!   {"type":"stdin","size":N} + N bytes          ->      (any number, then)
//!   {"type":"stdin_eof"}                         ->
//!   {"type":"signal","signal":"INT"}             ->      (any time)
//!   {"type":"resize","rows":R,"cols":C}          ->      (any time; with a pty)
//!                                                <-  {"type":"stdout","size":N} + N bytes
//!                                                <-  {"type":"stderr","size":N} + N bytes
//!                                                <-  {"type":"stdin_credit","bytes":N}
//!                                                <-  {"type":"error","code":"…","message":"…"}
//!                                                <-  {"type":"exit","code":0,"signal":null}
//! ```
//!
//! Stdin is flow controlled, so that a command that stops reading cannot hold up the `signal`
//! and `resize` frames behind its input: a client starts with [`STDIN_WINDOW_BYTES`](super::STDIN_WINDOW_BYTES) of credit,
//! each `stdin` body spends its size, and each `stdin_credit` gives back `bytes` the command
//! has taken. A client that sends beyond its credit is refused (`stdin_window_exceeded`).
//!
//! `exit` is the server's last frame. An `error` is followed by `exit` only when the command
//! got as far as a shell would have (`not_found` then exit 127); otherwise the server closes.
//!
//! With `"pty":{"rows":R,"cols":C,"term":"xterm-256color"}` in `run` (`term` optional) the
//! command runs on a pseudo-terminal: its output, stdout and stderr merged as a terminal
//! merges them, comes in `stdout` frames; `stdin` is what is typed (Ctrl-C is byte 0x03, which
//! the terminal turns into SIGINT); `stdin_eof` types the terminal's EOF character (Ctrl-D)
//! instead of closing anything; `resize` changes the window size. Without a pty, `resize` is
//! ignored, so a client may send it whenever its window changes.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_TERM, MAX_PTY_COLS, MAX_PTY_ROWS, MAX_TERM_BYTES};
use crate::terminal::WindowSize;
use crate::wire::Message;

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Run a command: the first frame after the handshake, once per connection.
    Run {
        /// Program and arguments; with `shell`, the words joined by spaces form one
        /// `sh -c` line (ssh's rule).
        argv: Vec<String>,
        /// Run through `sh -c`; honoured only by a server started with `--shell`.
        #[serde(default)]
        shell: bool,
        /// Run on a pseudo-terminal of this size and type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pty: Option<PtyRequest>,
    },
    /// Bytes for the command's stdin follow.
    Stdin {
        /// Body length in bytes.
        size: u64,
    },
    /// The client's stdin ended: close the command's stdin.
    StdinEof,
    /// Deliver a signal to the command's process group.
    Signal {
        /// Which signal.
        signal: SignalName,
    },
    /// The client's window changed size: resize the command's terminal (ignored without one).
    Resize {
        /// Lines, 1 to [`MAX_PTY_ROWS`].
        rows: u16,
        /// Columns, 1 to [`MAX_PTY_COLS`].
        cols: u16,
    },
}

/// The terminal a command asks to run on, inside `run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtyRequest {
    /// Lines, 1 to [`MAX_PTY_ROWS`].
    pub rows: u16,
    /// Columns, 1 to [`MAX_PTY_COLS`].
    pub cols: u16,
    /// The command's `TERM`: up to [`MAX_TERM_BYTES`] of `A-Z a-z 0-9 . _ + -`; absent means
    /// [`DEFAULT_TERM`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

impl PtyRequest {
    /// The checked window size and `TERM` value.
    ///
    /// # Errors
    /// A sentence saying which field is out of range (peer text is not repeated).
    pub(crate) fn validate(&self) -> Result<(WindowSize, &str), String> {
        let size = window_size(self.rows, self.cols)?;
        let term = match self.term.as_deref() {
            None => DEFAULT_TERM,
            Some(term) if is_valid_term(term) => term,
            Some(_) => {
                return Err(format!(
                    "TERM must be 1 to {MAX_TERM_BYTES} characters of A-Z a-z 0-9 . _ + -"
                ))
            }
        };
        Ok((size, term))
    }
}

/// Checks a window size from a `run` or `resize` frame.
///
/// # Errors
/// A sentence naming the limits.
pub(crate) fn window_size(rows: u16, cols: u16) -> Result<WindowSize, String> {
    if (1..=MAX_PTY_ROWS).contains(&rows) && (1..=MAX_PTY_COLS).contains(&cols) {
        Ok(WindowSize { rows, cols })
    } else {
        Err(format!(
            "a terminal of {rows} rows and {cols} columns: rows must be 1 to {MAX_PTY_ROWS}, \
             columns 1 to {MAX_PTY_COLS}"
        ))
    }
}

/// Whether `term` may be a command's `TERM`: short, and only characters terminal names use.
pub(crate) fn is_valid_term(term: &str) -> bool {
    (1..=MAX_TERM_BYTES).contains(&term.len())
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

impl Message for ClientMessage {
    fn body_size(&self) -> u64 {
        match self {
            ClientMessage::Stdin { size } => *size,
            _ => 0,
        }
    }
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// Bytes the command wrote to its stdout follow.
    Stdout {
        /// Body length in bytes.
        size: u64,
    },
    /// Bytes the command wrote to its stderr follow.
    Stderr {
        /// Body length in bytes.
        size: u64,
    },
    /// The command took this much more stdin: the client may send as much again.
    StdinCredit {
        /// Bytes credited.
        bytes: u64,
    },
    /// The command ended: exactly one of `code` and `signal` is set.
    Exit {
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Number of the signal that killed it, if one did.
        signal: Option<i32>,
        /// Set when the server's timeout stopped the command: the timeout, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timed_out_ms: Option<u64>,
    },
    /// The request was refused or failed; see the module docs for what follows.
    Error {
        /// Machine-readable snake_case code, e.g. `command_not_allowed`.
        code: String,
        /// Human-readable sentence.
        message: String,
    },
}

impl Message for ServerMessage {
    fn body_size(&self) -> u64 {
        match self {
            ServerMessage::Stdout { size } | ServerMessage::Stderr { size } => *size,
            _ => 0,
        }
    }
}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// The signals a client may forward, by their names without `SIG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SignalName {
    /// SIGHUP.
    Hup,
    /// SIGINT (Ctrl-C).
    Int,
    /// SIGQUIT.
    Quit,
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Term,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
}

impl From<SignalName> for Signal {
    fn from(name: SignalName) -> Signal {
        match name {
            SignalName::Hup => Signal::SIGHUP,
            SignalName::Int => Signal::SIGINT,
            SignalName::Quit => Signal::SIGQUIT,
            SignalName::Kill => Signal::SIGKILL,
            SignalName::Term => Signal::SIGTERM,
            SignalName::Usr1 => Signal::SIGUSR1,
            SignalName::Usr2 => Signal::SIGUSR2,
        }
    }
}

/// How the remote command ended, as carried by the `exit` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteExit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl RemoteExit {
    /// The local exit status by ssh's rule: the remote code, or 128+N when killed by signal N.
    pub fn exit_code(self) -> u8 {
        match self {
            // Like a shell, only the low 8 bits of a code survive.
            RemoteExit::Code(code) => (code & 0xff) as u8,
            RemoteExit::Signal(n) => u8::try_from(128 + n.clamp(0, 127)).unwrap_or(255),
        }
    }

    /// The `exit` frame for this status.
    pub fn to_message(self) -> ServerMessage {
        self.to_message_after(None)
    }

    /// The `exit` frame for this status, saying the server's timeout (`timed_out_after`)
    /// stopped the command if it did.
    pub fn to_message_after(self, timed_out_after: Option<Duration>) -> ServerMessage {
        let timed_out_ms =
            timed_out_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (code, signal) = match self {
            RemoteExit::Code(code) => (Some(code), None),
            RemoteExit::Signal(n) => (None, Some(n)),
        };
        ServerMessage::Exit {
            code,
            signal,
            timed_out_ms,
        }
    }
}

impl std::fmt::Display for RemoteExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteExit::Code(code) => write!(f, "exit {code}"),
            RemoteExit::Signal(n) => write!(f, "signal {n}"),
        }
    }
}

impl From<&crate::wire::ErrorFrame> for ServerMessage {
    /// A refusal as the `error` frame the client receives.
    fn from(refusal: &crate::wire::ErrorFrame) -> Self {
        ServerMessage::error(&refusal.code, refusal.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_serialize_with_their_type_tag() {
        let run = ClientMessage::Run {
            argv: vec!["ls".into(), "a b".into()],
            shell: false,
            pty: None,
        };
        assert_eq!(
            serde_json::to_string(&run).unwrap(),
            r#"{"type":"run","argv":["ls","a b"],"shell":false}"#
        );
        let with_pty: ClientMessage = serde_json::from_str(
            r#"{"type":"run","argv":["top"],"pty":{"rows":24,"cols":80,"term":"xterm-256color"}}"#,
        )
        .unwrap();
        let ClientMessage::Run { pty: Some(pty), .. } = with_pty else {
            panic!("{with_pty:?}")
        };
        assert_eq!(
            pty.validate().unwrap(),
            (WindowSize { rows: 24, cols: 80 }, "xterm-256color")
        );
        let resize: ClientMessage =
            serde_json::from_str(r#"{"type":"resize","rows":50,"cols":132}"#).unwrap();
        assert_eq!(
            resize,
            ClientMessage::Resize {
                rows: 50,
                cols: 132
            }
        );
        let sig: ClientMessage =
            serde_json::from_str(r#"{"type":"signal","signal":"INT"}"#).unwrap();
        assert_eq!(
            sig,
            ClientMessage::Signal {
                signal: SignalName::Int
            }
        );
        assert_eq!(
            serde_json::to_string(&RemoteExit::Signal(9).to_message()).unwrap(),
            r#"{"type":"exit","code":null,"signal":9}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerMessage::error("not_found", "no such program")).unwrap(),
            r#"{"type":"error","code":"not_found","message":"no such program"}"#
        );
    }

    #[test]
    fn unknown_signals_and_fields_are_rejected() {
        for bad in [
            r#"{"type":"signal","signal":"SEGV"}"#,
            r#"{"type":"run","argv":["ls"],"env":{}}"#,
            r#"{"type":"stdin"}"#,
            r#"{"type":"run","argv":["ls"],"pty":{"rows":24,"cols":80,"mode":"raw"}}"#,
            r#"{"type":"run","argv":["ls"],"pty":{"rows":70000,"cols":80}}"#,
            r#"{"type":"resize","rows":-1,"cols":80}"#,
        ] {
            assert!(serde_json::from_str::<ClientMessage>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pty_sizes_and_terms_outside_the_limits_are_refused() {
        let pty = |rows, cols, term: Option<&str>| PtyRequest {
            rows,
            cols,
            term: term.map(str::to_owned),
        };
        assert_eq!(pty(24, 80, None).validate().unwrap().1, DEFAULT_TERM);
        assert!(pty(MAX_PTY_ROWS, MAX_PTY_COLS, Some("vt100"))
            .validate()
            .is_ok());
        for bad in [
            pty(0, 80, None),
            pty(24, 0, None),
            pty(MAX_PTY_ROWS + 1, 80, None),
            pty(24, MAX_PTY_COLS + 1, None),
            pty(24, 80, Some("")),
            pty(24, 80, Some("xterm\u{1b}[31m")),
            pty(24, 80, Some("xterm 256")),
            pty(24, 80, Some(&"x".repeat(MAX_TERM_BYTES + 1))),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let err = pty(24, 80, Some("\u{1b}]0;owned\u{7}"))
            .validate()
            .unwrap_err();
        assert!(
            !err.contains('\u{1b}'),
            "peer text is not repeated: {err:?}"
        );
    }

    #[test]
    fn exit_codes_follow_ssh() {
        assert_eq!(RemoteExit::Code(3).exit_code(), 3);
        assert_eq!(RemoteExit::Code(256 + 7).exit_code(), 7);
        assert_eq!(RemoteExit::Signal(9).exit_code(), 137);
        assert_eq!(RemoteExit::Signal(2).exit_code(), 130);
    }
}
