//! The shared secret: loaded from a private file or `SOCKIT_TOKEN`, or generated; never printed by `Debug`.

use std::fmt;
use std::io::Read;
use std::path::Path;

use super::SessionError;

/// Environment variable a token is read from when no token file is given.
pub(crate) const TOKEN_ENV: &str = "SOCKIT_TOKEN";

/// Largest token file accepted, in bytes: a token is a line, not a document.
pub(crate) const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Random bytes in a generated token (shown as twice as many hex characters).
pub const GENERATED_TOKEN_BYTES: usize = 32;

/// A shared secret used as the HMAC key of the handshake.
///
/// Its `Debug` is masked, so it can sit in structs that are logged. The secret itself is only
/// reachable through [`Token::reveal`], for showing a freshly generated token to its owner once.
/// There is deliberately no `PartialEq`: tokens are only ever compared through HMAC proofs.
#[derive(Clone)]
pub struct Token {
    secret: String,
}

impl Token {
    /// Reads a token from `path`, trimming trailing whitespace (the final newline).
    ///
    /// # Errors
    ///
    /// [`SessionError::Token`] if the file cannot be read, is larger than
    /// [`MAX_TOKEN_FILE_BYTES`], is not UTF-8, is empty, or (on Unix) is accessible by group or
    /// others: like ssh with a private key, a token others can read is refused, not used.
    pub(crate) fn from_file(path: &Path) -> Result<Token, SessionError> {
        let shown = path.display();
        let fail = |what: String| SessionError::Token(format!("token file {shown}: {what}"));
        let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
        // Checking the opened file, not the path, leaves no gap for a swap in between.
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() {
            return Err(fail("not a regular file".into()));
        }
        check_private(&meta, path)?;
        let mut raw = Vec::new();
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| fail(e.to_string()))?;
        if raw.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(fail(format!(
                "larger than {MAX_TOKEN_FILE_BYTES} bytes; a token is one line"
            )));
        }
        let text = String::from_utf8(raw).map_err(|_| fail("not UTF-8".into()))?;
        Token::from_text(&text).map_err(|what| fail(what.into()))
    }

    /// Reads a token from the [`TOKEN_ENV`] (`SOCKIT_TOKEN`) environment variable;
    /// `Ok(None)` when it is not set.
    ///
    /// # Errors
    ///
    /// [`SessionError::Token`] if the variable is set but empty or not Unicode.
    pub(crate) fn from_env() -> Result<Option<Token>, SessionError> {
        from_env_var(TOKEN_ENV)
    }

    /// A fresh token: [`GENERATED_TOKEN_BYTES`] bytes from the OS RNG, as lowercase hex.
    ///
    /// # Errors
    ///
    /// [`SessionError::Token`] if the OS RNG is unavailable.
    pub fn generate() -> Result<Token, SessionError> {
        let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| SessionError::Token(format!("cannot generate a token: {e}")))?;
        Ok(Token {
            secret: hex::encode(bytes),
        })
    }

    /// The secret text, e.g. to print a generated token once to the operator who needs it.
    /// Never log it.
    pub fn reveal(&self) -> &str {
        &self.secret
    }

    /// Whether `given` is this token, for a token sent as it is (an HTTP `Authorization`
    /// header, a WebSocket's first message), in time independent of where they differ: both
    /// are hashed first, so neither length shows either.
    pub(crate) fn matches(&self, given: &[u8]) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let given = Sha256::digest(given);
        let want = Sha256::digest(self.secret.as_bytes());
        bool::from(given.ct_eq(&want))
    }

    /// Key bytes for the HMAC: the token text exactly as written (after trimming).
    pub(crate) fn key(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    /// A token with the given secret, for tests.
    #[cfg(test)]
    pub(crate) fn for_tests(secret: &str) -> Token {
        Token {
            secret: secret.to_owned(),
        }
    }

    /// A token from its text, trailing whitespace trimmed; the error says what is wrong.
    fn from_text(text: &str) -> Result<Token, &'static str> {
        let secret = text.trim_end();
        if secret.is_empty() {
            return Err("the token is empty");
        }
        Ok(Token {
            secret: secret.to_owned(),
        })
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(***, {} chars)", self.secret.chars().count())
    }
}

/// Loads the token: from `file` if given, else from `SOCKIT_TOKEN`, else `Ok(None)` (the
/// caller then generates one or refuses to start). Never from argv: it would show in `ps`.
///
/// # Errors
///
/// As `Token::from_file` and `Token::from_env`; a given file that fails is an error, not
/// a fall-through to the environment.
pub fn load_token(file: Option<&Path>) -> Result<Option<Token>, SessionError> {
    match file {
        Some(path) => Token::from_file(path).map(Some),
        None => Token::from_env(),
    }
}

fn from_env_var(name: &str) -> Result<Option<Token>, SessionError> {
    match std::env::var(name) {
        Ok(text) => Token::from_text(&text)
            .map(Some)
            .map_err(|what| SessionError::Token(format!("{name}: {what}"))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(SessionError::Token(format!("{name}: not valid Unicode")))
        }
    }
}

#[cfg(unix)]
fn check_private(meta: &std::fs::Metadata, path: &Path) -> Result<(), SessionError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let shown = path.display();
        return Err(SessionError::Token(format!(
            "token file {shown} has mode {mode:04o}: it is accessible by group or others, so \
             it is not used; run `chmod 600 {shown}`"
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_meta: &std::fs::Metadata, _path: &Path) -> Result<(), SessionError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn token_file(contents: &str, mode: u32) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), contents).expect("write");
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
        file
    }

    fn token_error(res: Result<Token, SessionError>) -> String {
        match res {
            Err(SessionError::Token(msg)) => msg,
            other => panic!("expected a token error, got {other:?}"),
        }
    }

    #[test]
    fn a_private_token_file_is_read_without_its_trailing_newline() {
        let file = token_file("s3cret-token\n", 0o600);
        let token = Token::from_file(file.path()).expect("loads");
        assert_eq!(token.reveal(), "s3cret-token");
    }

    #[test]
    fn a_token_file_readable_by_others_is_refused_with_the_fix() {
        let file = token_file("s3cret-token\n", 0o644);
        let msg = token_error(Token::from_file(file.path()));
        assert!(msg.contains("0644"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        let group = token_file("s3cret-token\n", 0o640);
        assert!(Token::from_file(group.path()).is_err());
    }

    #[test]
    fn an_empty_token_file_is_refused() {
        for contents in ["", "\n", "  \r\n"] {
            let file = token_file(contents, 0o600);
            let msg = token_error(Token::from_file(file.path()));
            assert!(msg.contains("empty"), "{msg}");
        }
    }

    #[test]
    fn an_oversized_or_missing_token_file_is_refused() {
        let file = token_file(&"x".repeat(5000), 0o600);
        assert!(token_error(Token::from_file(file.path())).contains("larger than"));
        let missing = Path::new("/nonexistent/sockit/token");
        assert!(token_error(Token::from_file(missing)).contains("/nonexistent/sockit/token"));
    }

    #[test]
    fn load_token_uses_a_given_file_and_does_not_fall_back_when_it_is_bad() {
        let file = token_file("from-file\n", 0o600);
        let token = load_token(Some(file.path())).expect("loads");
        assert_eq!(token.as_ref().map(Token::reveal), Some("from-file"));
        let bad = token_file("from-file\n", 0o644);
        assert!(load_token(Some(bad.path())).is_err());
    }

    #[test]
    fn an_environment_token_is_trimmed_and_an_empty_one_refused() {
        // A variable of its own, so no other test can observe it.
        let name = "SOCKIT_TOKEN_UNIT_TEST_ENV";
        assert!(from_env_var(name).expect("unset is fine").is_none());
        std::env::set_var(name, "env-secret\n");
        let token = from_env_var(name).expect("loads").expect("present");
        assert_eq!(token.reveal(), "env-secret");
        std::env::set_var(name, "");
        assert!(matches!(from_env_var(name), Err(SessionError::Token(_))));
        std::env::remove_var(name);
    }

    #[test]
    fn generated_tokens_are_64_hex_chars_and_differ() {
        let a = Token::generate().expect("rng");
        let b = Token::generate().expect("rng");
        assert_eq!(a.reveal().len(), 2 * GENERATED_TOKEN_BYTES);
        assert!(a.reveal().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.reveal(), b.reveal());
    }

    #[test]
    fn debug_output_masks_the_secret() {
        let token = Token::generate().expect("rng");
        let shown = format!("{token:?} {token:#?}");
        assert!(!shown.contains(token.reveal()), "{shown}");
        assert!(!shown.contains(&token.reveal()[..8]), "{shown}");
        assert!(shown.contains("***"));
    }
}
