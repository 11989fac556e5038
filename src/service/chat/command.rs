//! Typed lines: `/join dev` → [`ClientMessage::Join`], plain text → [`ClientMessage::Say`].
//! Both the line protocol (server side) and `sockit chat join` (client side) parse with this.

use super::messages::ClientMessage;

/// The commands, one line each, as `/help` lists them.
pub(crate) const HELP_LINES: &[&str] = &[
    "commands:",
    "  /join ROOM      leave the current room and join ROOM",
    "  /leave          leave the current room",
    "  /rooms          list the rooms",
    "  /who            list who is in the current room",
    "  /nick NEW       change your nick",
    "  /msg NICK TEXT  a private message",
    "  /me TEXT        an action: * you TEXT",
    "  /quit           leave the chat",
    "  //TEXT          say TEXT starting with a single /",
];

/// Parses one typed line (without its newline). `None` for an empty line, which says nothing.
///
/// # Errors
/// A sentence for an unknown command or a command missing its argument.
pub(crate) fn parse_line(line: &str) -> Option<Result<ClientMessage, String>> {
    if line.is_empty() {
        return None;
    }
    let Some(command) = line.strip_prefix('/') else {
        return Some(Ok(ClientMessage::Say { text: line.into() }));
    };
    if command.starts_with('/') {
        return Some(Ok(ClientMessage::Say {
            text: command.into(),
        }));
    }
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    let arg = rest.trim();
    let needs = |what: &str| Err(format!("usage: /{name} {what}"));
    let parsed = match name.to_ascii_lowercase().as_str() {
        "join" if arg.is_empty() => needs("ROOM"),
        "join" => Ok(ClientMessage::Join { room: arg.into() }),
        "leave" | "part" => Ok(ClientMessage::Leave),
        "rooms" | "list" => Ok(ClientMessage::Rooms),
        "who" | "names" => Ok(ClientMessage::Who),
        "nick" if arg.is_empty() => needs("NEW"),
        "nick" => Ok(ClientMessage::Nick { nick: arg.into() }),
        "msg" | "query" => match arg.split_once(' ') {
            Some((to, text)) if !text.trim().is_empty() => Ok(ClientMessage::Msg {
                to: to.into(),
                text: text.trim_start().into(),
            }),
            _ => needs("NICK TEXT"),
        },
        "me" if arg.is_empty() => needs("TEXT"),
        // `/me` keeps the text as typed, inner spacing included.
        "me" => Ok(ClientMessage::Me {
            text: rest.trim_start().into(),
        }),
        "help" | "?" => Ok(ClientMessage::Help),
        "quit" | "exit" => Ok(ClientMessage::Quit),
        _ => Err(format!(
            "unknown command /{}; /help lists them",
            crate::text::escape_one_line(name, super::nick::MAX_NICK_CHARS)
        )),
    };
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> ClientMessage {
        match parse_line(line) {
            Some(Ok(msg)) => msg,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn text_and_commands_parse() {
        assert_eq!(
            ok("hi there"),
            ClientMessage::Say {
                text: "hi there".into()
            }
        );
        assert_eq!(
            ok("//etc"),
            ClientMessage::Say {
                text: "/etc".into()
            }
        );
        assert_eq!(
            ok("/join #dev"),
            ClientMessage::Join {
                room: "#dev".into()
            }
        );
        assert_eq!(ok("/LEAVE"), ClientMessage::Leave);
        assert_eq!(
            ok("/msg bob  hello  you"),
            ClientMessage::Msg {
                to: "bob".into(),
                text: "hello  you".into()
            }
        );
        assert_eq!(
            ok("/me waves"),
            ClientMessage::Me {
                text: "waves".into()
            }
        );
        assert_eq!(ok("/nick al"), ClientMessage::Nick { nick: "al".into() });
        assert_eq!(ok("/quit"), ClientMessage::Quit);
        assert!(parse_line("").is_none());
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        for (line, want) in [
            ("/join", "usage: /join ROOM"),
            ("/msg bob", "usage: /msg NICK TEXT"),
            ("/frobnicate x", "unknown command /frobnicate"),
            ("/\x1b[2J", "unknown command /\\x1b[2J"),
        ] {
            match parse_line(line) {
                Some(Err(e)) => assert!(e.starts_with(want), "{line:?}: {e}"),
                other => panic!("{line:?} gave {other:?}"),
            }
        }
    }
}
