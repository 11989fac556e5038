//! `PUT /path` into the files [`Store`]: the same name rules, the same atomic commit and
//! overwrite policy as `files serve`, with an RFC 9530 `sha-256` digest checked before the
//! file becomes visible.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming as Body;
use subtle::ConstantTimeEq;

use crate::service::files::store::blocking;
use crate::service::files::{FileMeta, HashAlg, RelPath, Store, StoreError};
use crate::session::Token;

/// The outcome of an upload: a status and a one-line text body.
pub(crate) type Answer = (StatusCode, String);

/// Whether the request carries `Authorization: Bearer <token>`, compared in constant time;
/// with no token configured (loopback only) every request passes.
pub(crate) fn authorized(headers: &HeaderMap, token: Option<&Token>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.reveal().as_bytes()))
}

/// The `sha-256` digest a request declares in `Content-Digest` or `Repr-Digest`, as hex;
/// `Ok(None)` when neither names one.
///
/// # Errors
/// A `sha-256` member that is not `:base64:` of 32 bytes.
pub(crate) fn declared_sha256(headers: &HeaderMap) -> Result<Option<String>, ()> {
    for name in ["content-digest", "repr-digest"] {
        for value in headers.get_all(name) {
            let value = value.to_str().map_err(drop)?;
            for member in value.split(',') {
                let Some((alg, digest)) = member.trim().split_once('=') else {
                    continue;
                };
                if !alg.trim().eq_ignore_ascii_case("sha-256") {
                    continue;
                }
                let b64 = digest
                    .trim()
                    .strip_prefix(':')
                    .and_then(|d| d.strip_suffix(':'))
                    .ok_or(())?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(drop)?;
                if bytes.len() != 32 {
                    return Err(());
                }
                return Ok(Some(hex::encode(bytes)));
            }
        }
    }
    Ok(None)
}

/// Stores the body of a `PUT` at `parts` (already decoded and checked by the caller).
pub(crate) async fn put(
    store: Arc<Store>,
    parts: Vec<String>,
    headers: &HeaderMap,
    mut body: Body,
) -> Answer {
    let path = match RelPath::parse(&parts.join("/")) {
        Ok(path) => path,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Some(size) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return (
            StatusCode::LENGTH_REQUIRED,
            "an upload needs a Content-Length\n".into(),
        );
    };
    let Ok(declared) = declared_sha256(headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "a Content-Digest or Repr-Digest sha-256 must be :base64: of 32 bytes\n".into(),
        );
    };
    let meta = FileMeta {
        mode: 0o644,
        mtime: now_secs(),
        mtime_nsec: 0,
    };
    let opened = {
        let store = store.clone();
        let path = path.clone();
        blocking(move || store.create(&path, size, meta, HashAlg::Sha256, None)).await
    };
    let mut incoming = match opened {
        Ok(incoming) => incoming,
        Err(e) => return refusal(&e),
    };
    while let Some(frame) = body.frame().await {
        let chunk: Bytes = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
            Err(_) => {
                incoming.discard();
                return (StatusCode::BAD_REQUEST, "the body was cut off\n".into());
            }
        };
        let written = blocking(move || incoming.write(&chunk).map(|()| incoming)).await;
        incoming = match written {
            Ok(incoming) => incoming,
            Err(e) => return refusal(&e),
        };
    }
    let committed = blocking(move || {
        let expected = declared.unwrap_or_else(|| incoming.digest_hex());
        incoming.commit(&expected)
    })
    .await;
    match committed {
        Ok(stored) => (
            StatusCode::CREATED,
            format!("stored {} ({} bytes)\n", stored.name, stored.size),
        ),
        Err(e) => refusal(&e),
    }
}

/// The status a store refusal maps to.
fn refusal(e: &StoreError) -> Answer {
    let status = match e {
        StoreError::InvalidPath { .. } => StatusCode::BAD_REQUEST,
        StoreError::Exists(_) | StoreError::Busy(_) | StoreError::WrongKind(..) => {
            StatusCode::CONFLICT
        }
        StoreError::Symlink(_) | StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::SizeMismatch { .. } | StoreError::HashMismatch(..) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{}: {e}\n", e.code()))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
