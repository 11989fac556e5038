//! A request path turned into components below the root: decoded once, with every shape that
//! could climb out of the root or hide a separator refused before the file system is touched.

use http::StatusCode;
use percent_encoding::percent_decode_str;

/// Names starting with this are sockit's own (partial uploads) and never served.
const RESERVED_PREFIX: &str = ".sockit-";

/// The components of a request path (`/a/b%20c` → `["a", "b c"]`).
///
/// # Errors
/// 400 for a backslash, an encoded `/` or `\`, invalid UTF-8, NUL, or a `.` / `..` component;
/// 404 for a hidden (dot) component unless `show_hidden`, and always for sockit's own names.
pub(crate) fn decode_path(raw: &str, show_hidden: bool) -> Result<Vec<String>, StatusCode> {
    let lower = raw.to_ascii_lowercase();
    if raw.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return Err(StatusCode::BAD_REQUEST);
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    if decoded.contains('\0') {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut parts = Vec::new();
    for part in decoded.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(StatusCode::BAD_REQUEST);
        }
        if is_hidden(part, show_hidden) {
            return Err(StatusCode::NOT_FOUND);
        }
        parts.push(part.to_owned());
    }
    Ok(parts)
}

/// Whether a name is kept out of sight: a dot name without `--show-hidden`, and sockit's
/// own names always.
pub(crate) fn is_hidden(name: &str, show_hidden: bool) -> bool {
    name.starts_with(RESERVED_PREFIX) || (!show_hidden && name.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_decoded_once_into_components() {
        assert_eq!(decode_path("/a/b%20c/", false).unwrap(), ["a", "b c"]);
        assert_eq!(decode_path("/%2541", false).unwrap(), ["%41"]);
        assert!(decode_path("/", false).unwrap().is_empty());
    }

    #[test]
    fn climbing_and_hidden_separators_are_refused() {
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/a/%2E%2E",
            "/%2e%2e%2fetc",
            "/a%00b",
            "/..%5c",
            "/a\\b",
            "/%ff",
            "/./a",
        ] {
            assert_eq!(
                decode_path(bad, true),
                Err(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
    }

    #[test]
    fn dot_files_are_hidden_unless_asked_and_sockit_names_always() {
        assert_eq!(decode_path("/.env", false), Err(StatusCode::NOT_FOUND));
        assert_eq!(decode_path("/.env", true).unwrap(), [".env"]);
        assert_eq!(
            decode_path("/.sockit-partial/x", true),
            Err(StatusCode::NOT_FOUND)
        );
    }
}
