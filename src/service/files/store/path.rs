//! Peer-named relative paths, validated component by component so the store only ever hands
//! single names to `openat` and never joins a peer's string onto a real path.

use super::{
    StoreError, StoreOptions, MAX_COMPONENT_BYTES, MAX_PATH_BYTES, MAX_PATH_DEPTH, RESERVED_PREFIX,
};

/// At most this many characters of a refused name are shown in its error.
const SHOWN_CHARS: usize = 256;

const EMPTY: &str = "the path is empty";
const TOO_LONG: &str = "the path is longer than 4096 bytes";
const ABSOLUTE: &str = "absolute paths are not allowed";
const TOO_DEEP: &str = "the path has more than 64 components";
const EMPTY_COMPONENT: &str = "empty component (`//` or a trailing `/`)";
const DOT: &str = "`.` and `..` components are not allowed";
const NUL: &str = "it contains a NUL byte";
const CONTROL: &str = "it contains a control character";
const DRIVE: &str = "drive letters (`C:`) are not allowed";
const BACKSLASH: &str = "backslashes (Windows separators, UNC paths) are not allowed";
const COMPONENT_TOO_LONG: &str = "a component is longer than 255 bytes";
const RESERVED: &str = "names starting with `.sockit-` are reserved";

/// A validated relative path: non-empty `/`-separated components, none of them `.`, `..`,
/// empty, reserved, over [`MAX_COMPONENT_BYTES`], or holding NUL, `\`, `:` drive prefixes or
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelPath {
    parts: Vec<String>,
}

impl RelPath {
    /// Validates a peer's path string.
    ///
    /// # Errors
    /// [`StoreError::InvalidPath`] saying which rule the name broke.
    pub fn parse(s: &str) -> Result<RelPath, StoreError> {
        let refuse = |reason| StoreError::InvalidPath {
            path: shown_raw(s),
            reason,
        };
        if s.is_empty() {
            return Err(refuse(EMPTY));
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(refuse(TOO_LONG));
        }
        if s.starts_with('/') {
            return Err(refuse(ABSOLUTE));
        }
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() > MAX_PATH_DEPTH {
            return Err(refuse(TOO_DEEP));
        }
        for (i, part) in parts.iter().enumerate() {
            check_name(part, i == 0).map_err(refuse)?;
        }
        Ok(RelPath {
            parts: parts.into_iter().map(String::from).collect(),
        })
    }

    /// The components.
    pub(crate) fn parts(&self) -> &[String] {
        &self.parts
    }

    /// The `/`-joined form sent on the wire (unescaped: escape before printing).
    pub(crate) fn as_wire(&self) -> String {
        self.parts.join("/")
    }

    /// The parent's components and the last name (a `RelPath` is never empty).
    pub(super) fn split_last(&self) -> (&[String], &str) {
        match self.parts.split_last() {
            Some((name, parent)) => (parent, name),
            None => (&[], ""),
        }
    }
}

impl std::fmt::Display for RelPath {
    /// Escaped for terminals and logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::escape_one_line(
            &self.as_wire(),
            MAX_PATH_BYTES,
        ))
    }
}

/// Whether `name` may be one component of a path (`first`: the path's first one, where a
/// drive prefix would be read as a drive by Windows peers). Also used on names found on
/// disk, so that `walk` only offers what `parse` accepts back.
pub(super) fn check_name(name: &str, first: bool) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err(EMPTY_COMPONENT);
    }
    if name.contains('\0') {
        return Err(NUL);
    }
    if name.chars().any(char::is_control) {
        return Err(CONTROL);
    }
    let bytes = name.as_bytes();
    if first && bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(DRIVE);
    }
    if name.contains('\\') {
        return Err(BACKSLASH);
    }
    if name == "." || name == ".." {
        return Err(DOT);
    }
    if name.len() > MAX_COMPONENT_BYTES {
        return Err(COMPONENT_TOO_LONG);
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(RESERVED);
    }
    Ok(())
}

const HIDDEN: &str = "hidden (dot) names are refused, so a receiving home directory gets no \
                      .bashrc, .ssh/ or .git/hooks/ (the receiver's --allow-hidden-names allows them)";
const EDGE: &str = "names starting with `-` or a space, or ending with a space or a dot, are \
                    refused (--allow-unportable-names allows them)";
const WINDOWS_RESERVED: &str = "Windows reserves this name (CON, PRN, AUX, NUL, COM1-9, LPT1-9, \
                                with any extension) (--allow-unportable-names allows it)";
const WINDOWS_CHAR: &str = "it contains a character Windows forbids in names (< > : \" | ? *) \
                            (--allow-unportable-names allows it)";
const INVISIBLE: &str = "it contains an invisible or text-direction character (zero-width space, \
                         bidi control, soft hyphen) that can disguise a name \
                         (--allow-unportable-names allows it)";

/// Whether a store may write under `path`, beyond what [`RelPath::parse`] checks: the names a
/// home directory or a folder shared with Windows should not receive by default. Every
/// component counts, existing directories included (`.ssh/authorized_keys` is refused even
/// where `.ssh` exists).
///
/// # Errors
/// [`StoreError::InvalidPath`] naming the rule and the flag that lifts it.
pub(super) fn check_writable(path: &RelPath, options: &StoreOptions) -> Result<(), StoreError> {
    for name in path.parts() {
        if let Err(reason) = check_new_name(name, options) {
            return Err(StoreError::InvalidPath {
                path: path.to_string(),
                reason,
            });
        }
    }
    Ok(())
}

fn check_new_name(name: &str, options: &StoreOptions) -> Result<(), &'static str> {
    if !options.allow_hidden_names && name.starts_with('.') {
        return Err(HIDDEN);
    }
    if options.allow_unportable_names {
        return Ok(());
    }
    if name.chars().any(is_invisible) {
        return Err(INVISIBLE);
    }
    if name.starts_with(['-', ' ']) || name.ends_with([' ', '.']) {
        return Err(EDGE);
    }
    if name.contains(['<', '>', ':', '"', '|', '?', '*']) {
        return Err(WINDOWS_CHAR);
    }
    let stem = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    let numbered = |prefix: &str| {
        stem.strip_prefix(prefix)
            .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit() && n != "0")
    };
    if matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL") || numbered("COM") || numbered("LPT")
    {
        return Err(WINDOWS_RESERVED);
    }
    Ok(())
}

/// Zero-width, bidi-control and other invisible format characters. The zero-width joiner and
/// non-joiner (U+200D, U+200C) are left out: emoji sequences and Persian and Indic scripts
/// need them.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}' | '\u{200E}' | '\u{200F}'
        | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Escapes a name that came from a peer or from disk for an error or a log line, shortened.
pub(super) fn shown_raw(s: &str) -> String {
    let mut shown = crate::text::escape_one_line(s, SHOWN_CHARS);
    if s.chars().nth(SHOWN_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// Escapes the path made of `parts` for an error.
pub(super) fn shown_parts(parts: &[String]) -> String {
    crate::text::escape_one_line(&parts.join("/"), MAX_PATH_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(s: &str) -> &'static str {
        match RelPath::parse(s) {
            Err(StoreError::InvalidPath { reason, .. }) => reason,
            other => panic!("{s:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn every_hostile_name_is_refused_with_its_reason() {
        let long_component = "x".repeat(MAX_COMPONENT_BYTES + 1);
        let long_path = ["y"; MAX_PATH_BYTES / 2 + 1].join("/");
        let deep = ["d"; MAX_PATH_DEPTH + 1].join("/");
        let cases: &[(&str, &str)] = &[
            ("", EMPTY),
            ("/etc/passwd", ABSOLUTE),
            ("/", ABSOLUTE),
            ("a//b", EMPTY_COMPONENT),
            ("a/", EMPTY_COMPONENT),
            (".", DOT),
            ("..", DOT),
            ("a/./b", DOT),
            ("a/../../etc", DOT),
            ("\\\\server\\share", BACKSLASH),
            ("a\\b", BACKSLASH),
            ("..\\x", BACKSLASH),
            ("C:", DRIVE),
            ("c:\\x", DRIVE),
            ("C:foo/bar", DRIVE),
            ("z:/x", DRIVE),
            ("a\0b", NUL),
            ("a\nb", CONTROL),
            ("a\x1b[31mred", CONTROL),
            ("tab\there", CONTROL),
            ("del\x7f", CONTROL),
            ("c1\u{9b}", CONTROL),
            (&long_component, COMPONENT_TOO_LONG),
            (&long_path, TOO_LONG),
            (&deep, TOO_DEEP),
            (".sockit-partial", RESERVED),
            ("a/.sockit-partial/x.part", RESERVED),
            (".sockit-anything", RESERVED),
        ];
        for (name, reason) in cases {
            assert_eq!(reason_of(name), *reason, "{name:?}");
        }
    }

    #[test]
    fn ordinary_names_are_accepted_as_components() {
        for ok in [
            "a",
            "a/b c/ü.txt",
            ".hidden",
            "...",
            "..a",
            "C",
            "ab:c",
            "x/C:y",
            ".sockit",
            "a/b/c.tar.gz",
        ] {
            let path = RelPath::parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(path.as_wire(), ok);
        }
        let longest = "x".repeat(MAX_COMPONENT_BYTES);
        assert_eq!(RelPath::parse(&longest).unwrap().parts(), [longest]);
        let deepest = ["d"; MAX_PATH_DEPTH].join("/");
        assert_eq!(
            RelPath::parse(&deepest).unwrap().parts().len(),
            MAX_PATH_DEPTH
        );
    }

    #[test]
    fn reasons_state_the_limits_in_force() {
        assert!(TOO_LONG.contains(&MAX_PATH_BYTES.to_string()));
        assert!(TOO_DEEP.contains(&MAX_PATH_DEPTH.to_string()));
        assert!(COMPONENT_TOO_LONG.contains(&MAX_COMPONENT_BYTES.to_string()));
        assert!(RESERVED.contains(RESERVED_PREFIX));
    }

    #[test]
    fn refused_names_are_escaped_and_shortened_in_errors() {
        let err = RelPath::parse("evil\x1b]52;c;AAAA\x07/x").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text}");
        assert!(text.contains("\\x1b"), "{text}");
        let err = RelPath::parse(&"z".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
        assert_eq!(err.code(), "invalid_path");
    }

    #[test]
    fn display_escapes_an_accepted_name() {
        let path = RelPath::parse("bidi\u{202e}txt.exe").unwrap();
        assert_eq!(path.to_string(), "bidi\\u{202e}txt.exe");
    }
}
