//! Header validation and typed parsing: one cheap structural pass, then one serde_json parse.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

use super::{WireError, MAX_HEADER_DEPTH};

/// Longest peer-derived error text we keep, in characters.
const MAX_ERROR_CHARS: usize = 200;

/// Parses a raw header into the typed message `M`.
///
/// serde derive already rejects a duplicate tag or struct field, but not duplicate keys inside
/// map-typed fields or unknown (ignored) fields, and serde_json skips ignored values without
/// its recursion limit; [`check_shape`] closes those gaps before the typed parse.
pub(crate) fn parse_header<M: DeserializeOwned>(raw: &[u8]) -> Result<M, WireError> {
    let text = std::str::from_utf8(raw)
        .map_err(|e| WireError::InvalidHeader(format!("header is not UTF-8 ({e})")))?;
    check_shape(text)?;
    serde_json::from_str(text).map_err(|e| invalid(&e.to_string()))
}

fn invalid(msg: &str) -> WireError {
    WireError::InvalidHeader(sanitize(msg))
}

/// Keeps peer text (echoed by serde_json, e.g. an unknown variant) short and inert.
fn sanitize(msg: &str) -> String {
    crate::text::escape_one_line(msg, MAX_ERROR_CHARS)
}

struct Level {
    object: bool,
    expect_key: bool,
    keys_start: usize,
}

/// Checks the header is an object, nests at most [`MAX_HEADER_DEPTH`] deep and has no duplicate
/// key in any object. Syntax errors are left to serde_json, which parses the same text next.
fn check_shape(text: &str) -> Result<(), WireError> {
    let bytes = text.as_bytes();
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(invalid("header is not a JSON object"));
    }
    let mut levels: Vec<Level> = Vec::with_capacity(4);
    let mut keys: Vec<Cow<'_, str>> = Vec::with_capacity(8);
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                let (end, escaped) = string_end(bytes, i + 1);
                if let Some(level) = levels.last_mut().filter(|l| l.object && l.expect_key) {
                    level.expect_key = false;
                    keys.push(key_text(text, i, end, escaped)?);
                }
                i = end;
                continue;
            }
            b'{' | b'[' => {
                if levels.len() >= MAX_HEADER_DEPTH {
                    return Err(invalid(&format!(
                        "header nests deeper than {MAX_HEADER_DEPTH} levels"
                    )));
                }
                levels.push(Level {
                    object: b == b'{',
                    expect_key: b == b'{',
                    keys_start: keys.len(),
                });
            }
            b'}' | b']' => {
                if let Some(level) = levels.pop() {
                    if level.object {
                        check_unique(&mut keys, level.keys_start)?;
                    }
                }
            }
            b',' => {
                if let Some(level) = levels.last_mut() {
                    level.expect_key = level.object;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Index just past the closing quote of the string whose content starts at `from`, and whether
/// it contains escapes. `"` and `\` are ASCII, so they never occur inside a multi-byte char.
fn string_end(bytes: &[u8], from: usize) -> (usize, bool) {
    let mut j = from;
    let mut escaped = false;
    while let Some(&b) = bytes.get(j) {
        match b {
            b'\\' => {
                escaped = true;
                j += 2;
            }
            b'"' => return (j + 1, escaped),
            _ => j += 1,
        }
    }
    (bytes.len(), escaped)
}

fn key_text(
    text: &str,
    start: usize,
    end: usize,
    escaped: bool,
) -> Result<Cow<'_, str>, WireError> {
    let unterminated = || invalid("unterminated string in header");
    if escaped {
        // Rare: let serde_json decode the escapes so "\u0074ype" and "type" compare equal.
        let raw = text.get(start..end).ok_or_else(unterminated)?;
        serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|e| invalid(&e.to_string()))
    } else {
        let inner = end.checked_sub(1).and_then(|e| text.get(start + 1..e));
        inner.map(Cow::Borrowed).ok_or_else(unterminated)
    }
}

fn check_unique(keys: &mut Vec<Cow<'_, str>>, start: usize) -> Result<(), WireError> {
    if let Some(object_keys) = keys.get_mut(start..) {
        object_keys.sort_unstable();
        if let Some(pair) = object_keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(&format!("duplicate key {:?} in header", pair[0])));
        }
    }
    keys.truncate(start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Msg {
        Ping,
        Exec {
            argv: Vec<String>,
            #[serde(default)]
            env: HashMap<String, String>,
        },
    }

    #[derive(Debug, Deserialize)]
    struct Plain {
        #[allow(dead_code)]
        service: String,
    }

    fn assert_invalid(header: &str, needle: &str) {
        match parse_header::<Msg>(header.as_bytes()) {
            Err(WireError::InvalidHeader(msg)) => {
                assert!(msg.contains(needle), "{msg:?} lacks {needle:?}")
            }
            other => panic!("{header:.60} gave {other:?}"),
        }
    }

    fn nested(depth: usize) -> String {
        format!(
            r#"{{"type":"ping","deep":{}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    }

    #[test]
    fn a_well_formed_header_parses_into_the_typed_message() {
        let msg: Msg = parse_header(br#" {"type":"exec","argv":["ls","{\"}"]} "#).expect("parses");
        assert_eq!(
            msg,
            Msg::Exec {
                argv: vec!["ls".into(), "{\"}".into()],
                env: HashMap::new()
            }
        );
    }

    #[test]
    fn serde_alone_rejects_a_duplicate_tag_and_a_duplicate_variant_field() {
        let dup_tag = serde_json::from_str::<Msg>(r#"{"type":"ping","type":"exec"}"#);
        assert!(dup_tag.is_err_and(|e| e.to_string().contains("duplicate field `type`")));
        let dup_field = serde_json::from_str::<Msg>(r#"{"type":"exec","argv":[],"argv":["x"]}"#);
        assert!(dup_field.is_err_and(|e| e.to_string().contains("duplicate field `argv`")));
    }

    #[test]
    fn serde_alone_misses_duplicates_in_maps_and_unknown_fields_and_accepts_arrays() {
        let map = r#"{"type":"exec","argv":[],"env":{"PATH":"/a","PATH":"/b"}}"#;
        assert!(serde_json::from_str::<Msg>(map).is_ok());
        assert!(serde_json::from_str::<Msg>(r#"{"type":"ping","x":1,"x":2}"#).is_ok());
        assert!(serde_json::from_str::<Msg>(r#"["exec",["ls"]]"#).is_ok());
        // An ignored field is skipped iteratively, without the recursion limit:
        let ignored = format!(
            r#"{{"service":"x","deep":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(serde_json::from_str::<Plain>(&ignored).is_ok());
    }

    #[test]
    fn serde_json_recursion_limit_rejects_deep_nesting_without_overflowing_the_stack() {
        let err = serde_json::from_str::<Msg>(&nested(10_000)).expect_err("too deep");
        assert!(err.to_string().contains("recursion limit"));
    }

    #[test]
    fn duplicate_keys_are_rejected_at_every_level() {
        assert_invalid(r#"{"type":"x","type":"y"}"#, "duplicate key \"type\"");
        assert_invalid(
            r#"{"type":"exec","argv":["a"],"argv":["b"]}"#,
            "duplicate key \"argv\"",
        );
        assert_invalid(
            r#"{"type":"exec","argv":[],"env":{"P":"1","P":"2"}}"#,
            "\"P\"",
        );
        assert_invalid(r#"{"type":"ping","x":1,"x":2}"#, "duplicate key \"x\"");
        assert_invalid(
            r#"{"type":"ping","\u0074ype":"exec"}"#,
            "duplicate key \"type\"",
        );
        assert_invalid(
            r#"{"type":"ping","a":[{"k":1,"k":1}]}"#,
            "duplicate key \"k\"",
        );
    }

    #[test]
    fn equal_keys_in_different_objects_are_not_duplicates() {
        let ok = r#"{"type":"exec","argv":[],"env":{"type":"t","argv":"a"}}"#;
        assert!(parse_header::<Msg>(ok.as_bytes()).is_ok());
    }

    #[test]
    fn a_header_nested_ten_thousand_deep_is_rejected() {
        assert_invalid(&nested(10_000), "deeper than");
        let ignored = format!(
            r#"{{"service":"x","deep":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(matches!(
            parse_header::<Plain>(ignored.as_bytes()),
            Err(WireError::InvalidHeader(_))
        ));
    }

    #[test]
    fn a_header_that_is_json_but_not_an_object_is_rejected() {
        for header in ["[1]", "\"x\"", "5", "null", r#"["exec",["ls"]]"#, "", "  "] {
            assert_invalid(header, "not a JSON object");
        }
    }

    #[test]
    fn a_header_that_is_not_utf8_is_rejected() {
        let res = parse_header::<Msg>(b"{\"type\":\"\xff\"}");
        assert!(matches!(res, Err(WireError::InvalidHeader(m)) if m.contains("UTF-8")));
    }

    #[test]
    fn a_header_that_is_not_json_is_rejected() {
        assert_invalid("{nope", "key must be a string");
        assert_invalid(r#"{"type":"ping"} trailing"#, "trailing");
        assert_invalid(r#"{"type":"ping","#, "EOF");
        assert_invalid(r#"{"type":"unterminated"#, "");
    }

    #[test]
    fn peer_text_in_errors_is_escaped_and_truncated() {
        let evil = format!(r#"{{"type":"\u001b[31m{}"}}"#, "a".repeat(500));
        match parse_header::<Msg>(evil.as_bytes()) {
            Err(WireError::InvalidHeader(m)) => {
                assert!(!m.contains('\u{1b}'));
                assert!(m.chars().count() <= MAX_ERROR_CHARS * 10);
            }
            other => panic!("{other:?}"),
        }
    }
}
