//! `sockit chat join`'s terminal: on a tty, a line editor (rustyline) with incoming messages
//! printed above the line being typed, timestamps and nick colours; otherwise plain lines
//! from stdin and to stdout. Peer text is escaped again before it is printed.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::client::{ChatClient, ChatError, ChatReceiver, ChatSender};
use super::messages::{ClientMessage, ServerMessage, NOTICE_PREFIX};
use super::{parse_line, RoomName, MAX_MESSAGE_BYTES};
use crate::text::escape_one_line;

/// Typed lines waiting to be sent: the editor thread blocks when the network is behind.
const INPUT_QUEUE_LINES: usize = 64;

/// Nick colours (ANSI foreground codes), chosen by a hash of the nick.
const NICK_COLOURS: [u8; 6] = [31, 32, 33, 34, 35, 36];

/// Runs the interactive session until `/quit`, end of input, or the server closing; nicks are
/// painted with ANSI colours if `colour`.
///
/// # Errors
/// [`ChatError::ServerClosed`] when the server ended the session unasked (it stopped, or
/// dropped this client), [`ChatError::Wire`] when the connection broke: the session does not
/// wait for Enter, it restores the terminal and returns at once. `Io` for the terminal.
pub async fn run_terminal(client: ChatClient, colour: bool) -> Result<(), ChatError> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let ChatClient {
        nick,
        room,
        sender,
        receiver,
    } = client;
    let hello = ServerMessage::Ready { nick, room };
    let (lines_tx, lines_rx) = mpsc::channel::<ClientMessage>(INPUT_QUEUE_LINES);
    let mut editor = None;
    // The line editor holds the terminal in raw mode while it waits for a line; if the
    // server goes away meanwhile, these settings are put back before returning under it.
    let mut terminal = None;
    let mut out: Box<dyn FnMut(String) + Send> = if tty {
        terminal = Some(crate::terminal::RawMode::restore_on_drop(std::io::stdin())?);
        super::paste::filter_stdin()?;
        let (printer, thread) = start_editor(lines_tx)?;
        editor = Some(thread);
        printer
    } else {
        tokio::spawn(read_stdin(lines_tx));
        Box::new(|line| {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        })
    };
    if let Some(line) = render(&hello, colour) {
        out(line);
    }
    let quitting = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn(send_lines(sender, lines_rx, quitting.clone()));
    let ended = receive(receiver, colour, &mut *out).await;
    sending.abort();
    let asked = quitting.load(Ordering::Acquire);
    let result = match ended {
        // The goodbye after /quit or the end of input.
        Ok(()) if asked => Ok(()),
        Ok(()) => Err(ChatError::ServerClosed),
        Err(e) => Err(ChatError::Wire(e)),
    };
    match editor.filter(|t| !t.is_finished()) {
        // The user is still at the prompt: the editor's read cannot be interrupted, so it
        // is left behind (the process is about to exit) with the terminal put back.
        Some(_) => {
            drop(out);
            drop(terminal);
            // Bracketed paste off again (the editor turned it on), then a fresh line.
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "\x1b[?2004l\r\n");
            let _ = stdout.flush();
        }
        None => drop(terminal),
    }
    result
}

/// Prints what arrives until the server ends the session (`Ok`) or the connection breaks.
async fn receive(
    mut receiver: ChatReceiver,
    colour: bool,
    out: &mut (dyn FnMut(String) + Send),
) -> Result<(), crate::wire::WireError> {
    loop {
        match receiver.recv().await {
            Ok(Some(msg)) => {
                if let Some(line) = render(&msg, colour) {
                    out(line);
                }
            }
            Ok(None) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Sends each typed command; the end of input says goodbye to the server. `quitting` is set
/// before a goodbye goes out, so the server's close that follows is expected.
async fn send_lines(
    mut sender: ChatSender,
    mut lines: mpsc::Receiver<ClientMessage>,
    quitting: Arc<AtomicBool>,
) {
    while let Some(msg) = lines.recv().await {
        if msg == ClientMessage::Quit {
            quitting.store(true, Ordering::Release);
        }
        if sender.send(&msg).await.is_err() {
            return;
        }
    }
    quitting.store(true, Ordering::Release);
    let _ = sender.send(&ClientMessage::Quit).await;
}

/// Parses a typed line; a bad command is reported locally and sends nothing.
fn command(line: &str) -> Option<ClientMessage> {
    match parse_line(line)? {
        Ok(msg) => Some(msg),
        Err(e) => {
            eprintln!("! {e}");
            None
        }
    }
}

async fn read_stdin(lines: mpsc::Sender<ClientMessage>) {
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = stdin.next_line().await {
        let Some(msg) = command(&line) else {
            continue;
        };
        let quit = msg == ClientMessage::Quit;
        if lines.send(msg).await.is_err() || quit {
            return;
        }
    }
}

/// A printer that puts lines above the line being typed.
type Printer = Box<dyn FnMut(String) + Send>;

/// Starts the line editor on its own thread; returns its printer and the thread.
fn start_editor(
    lines: mpsc::Sender<ClientMessage>,
) -> std::io::Result<(Printer, std::thread::JoinHandle<()>)> {
    use rustyline::error::ReadlineError;
    use rustyline::ExternalPrinter;
    let mut editor = rustyline::DefaultEditor::new().map_err(std::io::Error::other)?;
    let mut printer = editor
        .create_external_printer()
        .map_err(std::io::Error::other)?;
    let thread = std::thread::spawn(move || loop {
        match editor.readline("> ") {
            // The session ended while this line was being typed.
            Ok(_) if lines.is_closed() => return,
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                let Some(msg) = command(&line) else {
                    continue;
                };
                let quit = msg == ClientMessage::Quit;
                if lines.blocking_send(msg).is_err() || quit {
                    return;
                }
            }
            // Ctrl-C, Ctrl-D or a closed terminal: leave.
            Err(ReadlineError::Interrupted | ReadlineError::Eof) | Err(_) => return,
        }
    });
    // Outside `readline` (before the first prompt) the printer writes the text as is, so the
    // newline is ours; inside it, rustyline adds one only when missing.
    let print: Printer = Box::new(move |mut line: String| {
        line.push('\n');
        let _ = printer.print(line);
    });
    Ok((print, thread))
}

/// One server message as a line for the terminal, or `None` for nothing to show.
pub fn render(msg: &ServerMessage, colour: bool) -> Option<String> {
    let clean = |s: &str| escape_one_line(s, MAX_MESSAGE_BYTES);
    let who = |nick: &str| paint(&clean(nick), colour);
    let line = match msg {
        ServerMessage::Message {
            time, nick, text, ..
        } => {
            format!("{} <{}> {}", clock(*time), who(nick), clean(text))
        }
        ServerMessage::Action {
            time, nick, text, ..
        } => {
            format!("{} * {} {}", clock(*time), who(nick), clean(text))
        }
        ServerMessage::Private {
            time,
            from,
            to,
            text,
        } => {
            format!(
                "{} *{} -> {}* {}",
                clock(*time),
                who(from),
                who(to),
                clean(text)
            )
        }
        // Notices look like nothing a user can send (see `NOTICE_PREFIX`).
        ServerMessage::Notice { time, text, .. } => {
            format!("{} {NOTICE_PREFIX}{}", clock(*time), clean(text))
        }
        ServerMessage::Ready { nick, room } => match room {
            Some(room) => format!(
                "{NOTICE_PREFIX}you are {} in {}",
                who(nick),
                RoomName(&clean(room))
            ),
            None => format!(
                "{NOTICE_PREFIX}you are {}, in no room (/join ROOM)",
                who(nick)
            ),
        },
        ServerMessage::Error { message, .. } => format!("! {}", clean(message)),
    };
    Some(line)
}

fn paint(nick: &str, colour: bool) -> String {
    if !colour {
        return nick.to_owned();
    }
    let hash = nick.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    let code = NICK_COLOURS[hash % NICK_COLOURS.len()];
    format!("\x1b[{code}m{nick}\x1b[0m")
}

/// `HH:MM:SS` in local time for Unix milliseconds.
fn clock(ms: u64) -> String {
    let secs = libc::time_t::try_from(ms / 1000).unwrap_or(0);
    // SAFETY: `tm` is plain data; both pointers are valid for the call, and localtime_r
    // writes only into `tm`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if ok {
        format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
    } else {
        let day = ms / 1000 % 86_400;
        format!("{:02}:{:02}:{:02}", day / 3600, day / 60 % 60, day % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_escapes_peer_text_and_colours_only_when_asked() {
        let msg = ServerMessage::Message {
            time: 0,
            room: "lobby".into(),
            nick: "alice".into(),
            text: "hi\x1b[2J\u{202e}".into(),
        };
        let plain = render(&msg, false).unwrap_or_default();
        assert!(plain.ends_with(" <alice> hi\\x1b[2J\\u{202e}"), "{plain}");
        let coloured = render(&msg, true).unwrap_or_default();
        assert!(coloured.contains("\x1b[") && coloured.contains("alice\x1b[0m"));
        assert_eq!(clock(0).len(), 8);
    }
}
