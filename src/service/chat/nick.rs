//! Nick and room names: what is allowed, and the confusable-aware skeleton that decides when
//! two names are "the same" (so `Alice`, `alice` and `A1ice` cannot all be in at once).

use std::fmt;

/// Longest nick, in ASCII characters.
pub(crate) const MAX_NICK_CHARS: usize = 32;

/// Longest room name, in ASCII characters (a leading `#` not counted).
pub(crate) const MAX_ROOM_CHARS: usize = 32;

/// Nicks nobody may take, in any case or look-alike spelling (`Server`, `5ystem`, `adm1n`):
/// a line from them would read as the server speaking.
pub(crate) const RESERVED_NICKS: &[&str] = &["server", "system", "admin", "sockit"];

/// How far [`suggest`] counts (`alice_2` … `alice_99`) before giving up.
const MAX_SUGGESTION_SUFFIX: u32 = 99;

/// Why a nick or room name was refused; `Display` is the sentence shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    /// Empty.
    #[error("a {what} cannot be empty")]
    Empty {
        /// `nick` or `room name`.
        what: &'static str,
    },
    /// Longer than the limit.
    #[error("a {what} has at most {max} characters (this one has {len})")]
    TooLong {
        /// `nick` or `room name`.
        what: &'static str,
        /// The limit.
        max: usize,
        /// The length given, in bytes.
        len: usize,
    },
    /// Contains a character outside `[A-Za-z0-9._-]`.
    #[error("a {what} may only contain letters A-Z a-z, digits and . _ -")]
    BadCharacter {
        /// `nick` or `room name`.
        what: &'static str,
    },
    /// One of [`RESERVED_NICKS`], or a look-alike of one.
    #[error("the nicks server, system, admin and sockit (in any case or look-alike) are reserved")]
    Reserved,
}

/// Checks a nick against `[A-Za-z0-9._-]{1,32}` and [`RESERVED_NICKS`].
///
/// # Errors
/// A [`NameError`] saying what is wrong.
pub(crate) fn validate_nick(nick: &str) -> Result<(), NameError> {
    validate("nick", nick, MAX_NICK_CHARS)?;
    let key = skeleton(nick);
    if RESERVED_NICKS.iter().any(|r| skeleton(r) == key) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// Normalises a room name: an optional leading `#` is dropped, the rest must match
/// `[A-Za-z0-9._-]{1,32}`. Rooms are case-insensitive: the result is lowercase.
///
/// # Errors
/// A [`NameError`] saying what is wrong.
pub(crate) fn normalize_room(room: &str) -> Result<String, NameError> {
    let bare = room.strip_prefix('#').unwrap_or(room);
    validate("room name", bare, MAX_ROOM_CHARS)?;
    Ok(bare.to_ascii_lowercase())
}

fn validate(what: &'static str, name: &str, max: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { what });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            what,
            max,
            len: name.len(),
        });
    }
    if !name.bytes().all(is_name_byte) {
        return Err(NameError::BadCharacter { what });
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// The skeleton of a valid nick: two nicks with the same skeleton are the same person.
///
/// Case is folded, then these look-alikes are merged (a small table, not Unicode's full
/// confusables list, since nicks are ASCII):
///
/// | seen as | skeleton |
/// |---|---|
/// | `0`, `o`                | `o` |
/// | `1`, `i`, `l`           | `l` (case folding already merges `I`, and `I` looks like `l`) |
/// | `5`, `s`                | `s` |
/// | `rn`, `m`               | `m` |
/// | `vv`, `w`               | `w` |
pub(crate) fn skeleton(nick: &str) -> String {
    let folded: String = nick
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '0' => 'o',
            '1' | 'i' => 'l',
            '5' => 's',
            c => c,
        })
        .collect();
    folded.replace("rn", "m").replace("vv", "w")
}

/// A free alternative to a taken nick: `nick_2`, `nick_3`, … (the base shortened to fit
/// [`MAX_NICK_CHARS`]), the first whose skeleton `is_taken` says is free.
pub(crate) fn suggest(nick: &str, is_taken: impl Fn(&str) -> bool) -> Option<String> {
    (2..=MAX_SUGGESTION_SUFFIX).find_map(|n| {
        let suffix = format!("_{n}");
        let keep = MAX_NICK_CHARS.saturating_sub(suffix.len()).min(nick.len());
        // Valid nicks are ASCII, so any byte index is a character boundary.
        let candidate = format!("{}{suffix}", nick.get(..keep)?);
        (!is_taken(&skeleton(&candidate))).then_some(candidate)
    })
}

/// A room name for display: `#lobby`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoomName<'a>(pub &'a str);

impl fmt::Display for RoomName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks_outside_the_alphabet_or_too_long_are_refused() {
        assert!(validate_nick("alice.b-c_9").is_ok());
        assert!(matches!(validate_nick(""), Err(NameError::Empty { .. })));
        assert!(matches!(
            validate_nick(&"a".repeat(1000)),
            Err(NameError::TooLong { len: 1000, .. })
        ));
        for bad in ["al ice", "al\x1bice", "élise", "a\nb", "a/b", "a\u{202e}b"] {
            assert!(
                matches!(validate_nick(bad), Err(NameError::BadCharacter { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reserved_nicks_are_refused_in_any_case_or_look_alike() {
        for bad in [
            "server", "SERVER", "System", "admin", "ADM1N", "sockit", "50ckit", "5ystem",
        ] {
            assert_eq!(validate_nick(bad), Err(NameError::Reserved), "{bad}");
        }
        for fine in ["servers", "admin2", "sysadmin", "sock"] {
            assert!(validate_nick(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn case_and_look_alikes_share_a_skeleton() {
        let alice = skeleton("alice");
        for same in ["Alice", "ALICE", "A1ice", "al1ce", "aIice"] {
            assert_eq!(skeleton(same), alice, "{same}");
        }
        assert_eq!(skeleton("b0b"), skeleton("BOB"));
        assert_eq!(skeleton("rnary"), skeleton("mary"));
        assert_eq!(skeleton("vvill"), skeleton("Will"));
        assert_eq!(skeleton("5am"), skeleton("sam"));
        assert_ne!(skeleton("alice"), skeleton("alicia"));
    }

    #[test]
    fn suggestions_are_free_and_fit_the_limit() {
        let taken = [skeleton("alice_2")];
        let got = suggest("alice", |s| taken.iter().any(|t| t == s));
        assert_eq!(got.as_deref(), Some("alice_3"));
        let long = "a".repeat(MAX_NICK_CHARS);
        let got = suggest(&long, |_| false).unwrap_or_default();
        assert_eq!(got.len(), MAX_NICK_CHARS);
        assert!(got.ends_with("_2"));
        assert_eq!(suggest("x", |_| true), None);
    }

    #[test]
    fn rooms_are_normalised_with_or_without_a_hash() {
        assert_eq!(normalize_room("#Lobby").as_deref(), Ok("lobby"));
        assert_eq!(normalize_room("dev.ops").as_deref(), Ok("dev.ops"));
        assert!(normalize_room("#").is_err());
        assert!(normalize_room("a b").is_err());
        assert_eq!(RoomName("lobby").to_string(), "#lobby");
    }
}
