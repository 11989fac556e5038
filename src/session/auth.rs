//! Handshake messages and the HMAC-SHA256 transcript proofs that show each side knows the token.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{SessionError, Token};
use crate::wire::Message;

/// Random bytes in each side's nonce.
pub(crate) const NONCE_BYTES: usize = 32;

/// A nonce; fresh for every connection.
pub(crate) type Nonce = [u8; NONCE_BYTES];

/// An HMAC-SHA256 digest.
pub(crate) type Proof = [u8; 32];

/// Domain labels: a client's proof can never be reflected back as a server's, or vice versa.
const CLIENT_LABEL: &[u8] = b"sockit-auth-v1 client";
const SERVER_LABEL: &[u8] = b"sockit-auth-v1 server";

type HmacSha256 = Hmac<Sha256>;

/// What a client sends after its `hello` (the hello itself is [`crate::wire::Hello`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ClientMessage {
    /// `{"type":"auth","nonce":"<64 hex>","mac":"<64 hex>"}`: the answer to a challenge.
    Auth { nonce: String, mac: String },
    /// Any other message type: a client that skipped authentication.
    #[serde(other, skip_serializing)]
    Other,
}

impl Message for ClientMessage {}

/// What a server sends during the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ServerMessage {
    /// `{"type":"challenge","nonce":"<64 hex>"}`.
    Challenge { nonce: String },
    /// `{"type":"welcome","mac":"<64 hex>"}`; no `mac` from a server that requires no token.
    Welcome {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// `{"type":"error","code":"…","message":"…"}`, as [`crate::wire::ErrorFrame`].
    Error { code: String, message: String },
}

impl Message for ServerMessage {}

/// A fresh random nonce from the OS RNG.
pub(crate) fn fresh_nonce() -> Result<Nonce, SessionError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| SessionError::Rng(e.to_string()))?;
    Ok(nonce)
}

/// Decodes exactly 32 bytes of hex; anything else is `None`.
pub(crate) fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok().map(|()| out)
}

/// Both nonces of one handshake and the service it is for: what the proofs are bound to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transcript<'a> {
    pub service: &'a str,
    pub server_nonce: &'a Nonce,
    pub client_nonce: &'a Nonce,
}

impl Transcript<'_> {
    /// The client's proof: HMAC(token, "sockit-auth-v1 client", service, nonces).
    pub(crate) fn client_proof(&self, token: &Token) -> Result<Proof, SessionError> {
        Ok(self
            .mac(token, CLIENT_LABEL)?
            .finalize()
            .into_bytes()
            .into())
    }

    /// The server's proof: HMAC(token, "sockit-auth-v1 server", service, nonces).
    pub(crate) fn server_proof(&self, token: &Token) -> Result<Proof, SessionError> {
        Ok(self
            .mac(token, SERVER_LABEL)?
            .finalize()
            .into_bytes()
            .into())
    }

    /// Checks a client's proof in constant time.
    pub(crate) fn verify_client(&self, token: &Token, proof: &Proof) -> bool {
        self.verify(token, CLIENT_LABEL, proof)
    }

    /// Checks a server's proof in constant time.
    pub(crate) fn verify_server(&self, token: &Token, proof: &Proof) -> bool {
        self.verify(token, SERVER_LABEL, proof)
    }

    fn verify(&self, token: &Token, label: &[u8], proof: &Proof) -> bool {
        self.mac(token, label)
            .is_ok_and(|mac| mac.verify_slice(proof).is_ok())
    }

    /// Each field length-prefixed (u64, big-endian), so no two transcripts encode alike.
    fn mac(&self, token: &Token, label: &[u8]) -> Result<HmacSha256, SessionError> {
        let mut mac = HmacSha256::new_from_slice(token.key())
            .map_err(|_| SessionError::Token("the token cannot key an HMAC".into()))?;
        let fields: [&[u8]; 4] = [
            label,
            self.service.as_bytes(),
            self.server_nonce,
            self.client_nonce,
        ];
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        Ok(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Token {
        Token::for_tests(text)
    }

    #[test]
    fn auth_frames_with_unknown_fields_are_rejected() {
        let nonce = "00".repeat(32);
        let ok = format!(r#"{{"type":"auth","nonce":"{nonce}","mac":"{nonce}"}}"#);
        assert!(serde_json::from_str::<ClientMessage>(&ok).is_ok());
        let extra = format!(r#"{{"type":"auth","nonce":"{nonce}","mac":"{nonce}","role":"x"}}"#);
        assert!(serde_json::from_str::<ClientMessage>(&extra).is_err());
        let challenge = r#"{"type":"challenge","nonce":"ab","skip_auth":true}"#;
        assert!(serde_json::from_str::<ServerMessage>(challenge).is_err());
    }

    #[test]
    fn messages_have_the_documented_shapes() {
        let cases = [
            (
                serde_json::to_string(&ServerMessage::Challenge { nonce: "ab".into() }),
                r#"{"type":"challenge","nonce":"ab"}"#,
            ),
            (
                serde_json::to_string(&ServerMessage::Welcome {
                    mac: Some("cd".into()),
                }),
                r#"{"type":"welcome","mac":"cd"}"#,
            ),
            (
                serde_json::to_string(&ServerMessage::Welcome { mac: None }),
                r#"{"type":"welcome"}"#,
            ),
            (
                serde_json::to_string(&ClientMessage::Auth {
                    nonce: "01".into(),
                    mac: "02".into(),
                }),
                r#"{"type":"auth","nonce":"01","mac":"02"}"#,
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(json.expect("serializes"), expected);
        }
        let other: ClientMessage =
            serde_json::from_str(r#"{"type":"exec","argv":["ls"]}"#).expect("parses");
        assert_eq!(other, ClientMessage::Other);
    }

    #[test]
    fn proofs_depend_on_token_label_service_and_both_nonces() {
        let (a, b) = ([1u8; NONCE_BYTES], [2u8; NONCE_BYTES]);
        let base = Transcript {
            service: "exec",
            server_nonce: &a,
            client_nonce: &b,
        };
        let t = token("secret");
        let proof = base.client_proof(&t).expect("mac");
        assert!(base.verify_client(&t, &proof));
        assert!(!base.verify_server(&t, &proof));
        assert!(!base.verify_client(&token("other"), &proof));
        let variants = [
            Transcript {
                service: "files",
                ..base
            },
            Transcript {
                server_nonce: &b,
                ..base
            },
            Transcript {
                client_nonce: &a,
                ..base
            },
        ];
        for changed in variants {
            assert!(!changed.verify_client(&t, &proof));
        }
    }

    #[test]
    fn hex_nonces_must_be_exactly_32_bytes() {
        assert_eq!(decode_hex32(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode_hex32(&"ab".repeat(31)), None);
        assert_eq!(decode_hex32(&"ab".repeat(33)), None);
        assert_eq!(decode_hex32(&"zz".repeat(32)), None);
    }
}
