//! `PUT /path` into the files [`Store`]: the same name rules, the same atomic commit and
//! overwrite policy as `files serve`, with an RFC 9530 `sha-256` digest checked before the
//! file becomes visible.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming as Body;

use crate::service::files::store::blocking;
use crate::service::files::{FileMeta, HashAlg, RelPath, Store, StoreError, Stored};
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
    token.matches(given.as_bytes())
}

/// Whether a form's `POST` comes from a page of this server: a browser names the page's
/// origin, and a page elsewhere (which could otherwise make a visitor's browser upload into
/// a loopback server) names another. A client that names none (curl) is not a browser.
pub(crate) fn same_origin<B>(req: &http::Request<B>) -> bool {
    let Some(origin) = req.headers().get(http::header::ORIGIN) else {
        return true;
    };
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    matches!((origin_host, host), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
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
    body: Body,
    pace: BodyPace,
) -> Answer {
    let path = match RelPath::parse(&parts.join("/")) {
        Ok(path) => path,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let size = match content_length(headers) {
        Ok(size) => size,
        Err(answer) => return answer,
    };
    let Ok(declared) = declared_sha256(headers) else {
        return (
            StatusCode::BAD_REQUEST,
            "a Content-Digest or Repr-Digest sha-256 must be :base64: of 32 bytes\n".into(),
        );
    };
    let timer = pace.timer(size);
    match receive(store, path, size, declared, Source::Body(body), &timer).await {
        Ok(stored) => (
            StatusCode::CREATED,
            format!("stored {} ({} bytes)\n", stored.name, stored.size),
        ),
        Err(answer) => answer,
    }
}

/// Most files one form upload may carry.
pub const MAX_FORM_FILES: usize = 256;

/// Stores the files of a browser form (`multipart/form-data`, `POST` to a directory) under
/// the directory `dir`: each file field under its file name, each atomically; other fields
/// are skipped. The form's `Content-Length` is required, and bounds each file.
pub(crate) async fn post_form(
    store: Arc<Store>,
    dir: Vec<String>,
    headers: &HeaderMap,
    body: Body,
    pace: BodyPace,
) -> Answer {
    let Some(boundary) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
    else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a form upload is multipart/form-data\n".into(),
        );
    };
    let bound = match content_length(headers) {
        Ok(bound) => bound,
        Err(answer) => return answer,
    };
    let timer = pace.timer(bound);
    let limits = multer::SizeLimit::new().whole_stream(bound);
    let constraints = multer::Constraints::new().size_limit(limits);
    let mut form =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut stored = Vec::new();
    loop {
        let field = match timer.wait(form.next_field()).await {
            Ok(Ok(Some(field))) => field,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return form_failure(&stored, StatusCode::BAD_REQUEST, &e.to_string()),
            Err(late) => return form_failure(&stored, StatusCode::REQUEST_TIMEOUT, &late),
        };
        // A file input left empty still sends its field, with an empty file name.
        let Some(name) = field
            .file_name()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
        else {
            continue;
        };
        if stored.len() == MAX_FORM_FILES {
            let why = format!("a form may carry at most {MAX_FORM_FILES} files");
            return form_failure(&stored, StatusCode::PAYLOAD_TOO_LARGE, &why);
        }
        if name.contains(['/', '\\']) {
            let why = "a file name may not hold / or \\";
            return form_failure(&stored, StatusCode::BAD_REQUEST, why);
        }
        let mut parts = dir.clone();
        parts.push(name);
        let path = match RelPath::parse(&parts.join("/")) {
            Ok(path) => path,
            Err(e) => return form_failure(&stored, StatusCode::BAD_REQUEST, &e.to_string()),
        };
        match receive(
            store.clone(),
            path,
            bound,
            None,
            Source::Field(field),
            &timer,
        )
        .await
        {
            Ok(file) => stored.push(file),
            Err((status, why)) => return form_failure(&stored, status, why.trim_end()),
        }
    }
    if stored.is_empty() {
        return (StatusCode::BAD_REQUEST, "the form carried no file\n".into());
    }
    let mut message = String::new();
    for file in &stored {
        message.push_str(&format!("stored {} ({} bytes)\n", file.name, file.size));
    }
    (StatusCode::CREATED, message)
}

/// A form's refusal, naming the files stored before it (each is whole: they stay).
fn form_failure(stored: &[Stored], status: StatusCode, why: &str) -> Answer {
    let mut message = format!("{why}\n");
    for file in stored {
        message.push_str(&format!("stored before that: {}\n", file.name));
    }
    (status, message)
}

/// How long a request body may take: a wait for its next byte, and the whole of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// Longest wait for the next byte (nginx's `client_body_timeout`).
    pub idle: Duration,
    /// What every body gets on top of its size at `min_bytes_per_sec`.
    pub grace: Duration,
    /// The slowest average rate accepted: a client trickling a byte now and then, each
    /// arriving within `idle`, is still cut off at its whole-body deadline.
    pub min_bytes_per_sec: u64,
}

impl BodyPace {
    /// The clock of one body of (at most) `size` bytes, started now.
    fn timer(&self, size: u64) -> BodyTimer {
        let rate = self.min_bytes_per_sec.max(1);
        let allowed = self
            .grace
            .saturating_add(Duration::from_secs(size / rate + 1));
        let now = Instant::now();
        BodyTimer {
            pace: *self,
            deadline: now
                .checked_add(allowed)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
        }
    }
}

/// One body's deadlines, as [`BodyPace::timer`] set them.
struct BodyTimer {
    pace: BodyPace,
    deadline: Instant,
}

impl BodyTimer {
    /// Waits for `step` (the next chunk or form field) up to the nearer deadline; `Err` says
    /// which one passed.
    async fn wait<F: std::future::Future>(&self, step: F) -> Result<F::Output, String> {
        let idle_end = Instant::now() + self.pace.idle;
        let end = idle_end.min(self.deadline);
        tokio::time::timeout_at(end, step).await.map_err(|_| {
            if end == self.deadline {
                format!(
                    "the body came slower than {} bytes/s",
                    self.pace.min_bytes_per_sec
                )
            } else {
                format!("no body byte came for {} s", self.pace.idle.as_secs_f64())
            }
        })
    }
}

/// The request's `Content-Length`, which every upload needs (411 without).
fn content_length(headers: &HeaderMap) -> Result<u64, Answer> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            (
                StatusCode::LENGTH_REQUIRED,
                "an upload needs a Content-Length\n".into(),
            )
        })
}

/// Where an upload's bytes come from: a `PUT` body of exactly its `Content-Length`, or one
/// field of a form, whose size is only known at its end.
enum Source {
    Body(Body),
    Field(multer::Field<'static>),
}

impl Source {
    /// The next chunk; `None` at the end; `Err` when the client cut it off or broke the form.
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            Source::Body(body) => loop {
                match body.frame().await? {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => return Some(Ok(data)),
                        Err(_) => continue, // trailers
                    },
                    Err(_) => return Some(Err("the body was cut off".into())),
                }
            },
            Source::Field(field) => field.chunk().await.map_err(|e| e.to_string()).transpose(),
        }
    }

    fn exact(&self) -> bool {
        matches!(self, Source::Body(_))
    }
}

/// Receives one file into the store: `size` is exact for a body, an upper bound for a form
/// field; `declared` the digest the client gave, checked before the file becomes visible.
async fn receive(
    store: Arc<Store>,
    path: RelPath,
    size: u64,
    declared: Option<String>,
    mut source: Source,
    timer: &BodyTimer,
) -> Result<Stored, Answer> {
    let meta = FileMeta {
        mode: 0o644,
        mtime: now_secs(),
        mtime_nsec: 0,
    };
    let opened = blocking(move || store.create(&path, size, meta, HashAlg::Sha256, None)).await;
    let mut incoming = opened.map_err(|e| refusal(&e))?;
    loop {
        let chunk = match timer.wait(source.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(why))) => {
                incoming.discard();
                return Err((StatusCode::BAD_REQUEST, format!("{why}\n")));
            }
            Err(late) => {
                incoming.discard();
                return Err((StatusCode::REQUEST_TIMEOUT, format!("{late}\n")));
            }
        };
        let written = blocking(move || incoming.write(&chunk).map(|()| incoming)).await;
        incoming = written.map_err(|e| refusal(&e))?;
    }
    let exact = source.exact();
    blocking(move || {
        if !exact {
            incoming.settle_size();
        }
        let expected = declared.unwrap_or_else(|| incoming.digest_hex());
        incoming.commit(&expected)
    })
    .await
    .map_err(|e| refusal(&e))
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
