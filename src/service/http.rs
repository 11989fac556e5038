//! `sockit http serve`: a directory over HTTP/1.1 and HTTP/2 on hyper, files through
//! tower-http's `ServeDir` (types, ranges, validators, precompressed siblings), listings and
//! uploads of our own, every path checked against the root first.
//!
//! The engine accepts each connection (limits, access lists, idle timeout) and hands the
//! stream to hyper; a request goes:
//!
//! ```text
//! method  GET/HEAD -> path decoded once (path.rs) -> resolved under the root, symlinks
//!                     included -> a file or a directory's index.html: ServeDir
//!                                 a directory: listing (listing.rs) or 404
//!         PUT (--upload, token beyond loopback) -> upload.rs -> files Store
//!         anything else -> 405
//! ```

mod listing;
mod path;
mod upload;

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_http::services::ServeDir;

use crate::engine::{Conn, ConnInfo, Handler};
use crate::net::tls::TlsAcceptor;
use crate::net::PeerAddr;
use crate::service::files::{Store, StoreError, StoreOptions};
use crate::session::Token;
pub use listing::MAX_LISTING_ENTRIES;
use path::decode_path;

/// The service name, in logs and `sockit serve`.
pub const SERVICE: &str = "http";

/// Default listen address of `sockit http serve`: loopback only.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8000";

/// Most bytes of a request head (request line and headers) hyper buffers; a longer head is
/// answered 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most header fields one request may carry; more is 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Time a client gets to send a whole request head; a slowloris is closed at it.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest upload accepted, unless `--max-file-size` says otherwise.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// Longest request path shown in a log line, in characters.
const LOGGED_PATH_CHARS: usize = 256;

/// Settings of an [`HttpServer`].
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The directory served.
    pub root: PathBuf,
    /// Serve a listing for a directory without `index.html` (else 404).
    pub listing: bool,
    /// List and serve dot files.
    pub show_hidden: bool,
    /// Accept `PUT` uploads into the root.
    pub upload: bool,
    /// Uploads need `Authorization: Bearer <token>` when set.
    pub token: Option<Token>,
    /// TLS for every connection when set.
    pub tls: Option<TlsAcceptor>,
    /// The upload store's policy and size cap.
    pub store: StoreOptions,
    /// See [`DEFAULT_MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// See [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

impl HttpConfig {
    /// Defaults for serving `root`: listing on, hidden files off, uploads off.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HttpConfig {
            root: root.into(),
            listing: true,
            show_hidden: false,
            upload: false,
            token: None,
            tls: None,
            store: StoreOptions {
                max_file_size: DEFAULT_MAX_UPLOAD_BYTES,
                ..StoreOptions::default()
            },
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// The HTTP server: an engine [`Handler`] serving one directory.
#[derive(Debug, Clone)]
pub struct HttpServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: HttpConfig,
    /// The root, canonical: every resolved path must stay under it.
    root: PathBuf,
    files: ServeDir,
    store: Arc<Store>,
}

/// A response body: ours (`Full`) or `ServeDir`'s stream.
type Body = UnsyncBoxBody<Bytes, io::Error>;

impl HttpServer {
    /// A server for `config.root`.
    ///
    /// # Errors
    /// The root cannot be opened or is not a directory.
    pub fn new(config: HttpConfig) -> Result<Self, StoreError> {
        let store = Store::open(&config.root, config.store.clone())?;
        let root = std::fs::canonicalize(&config.root).map_err(|source| StoreError::Io {
            path: crate::text::escape_one_line(&config.root.to_string_lossy(), 256),
            source,
        })?;
        let files = ServeDir::new(&root)
            .append_index_html_on_directories(true)
            .precompressed_br()
            .precompressed_gzip()
            .precompressed_zstd();
        Ok(HttpServer {
            inner: Arc::new(Inner {
                config,
                root,
                files,
                store: Arc::new(store),
            }),
        })
    }

    /// Serves HTTP on one stream until the client is done or `info.shutdown` fires (then
    /// in-flight requests finish and the connection closes).
    async fn serve_stream<I>(&self, io: I, info: &ConnInfo) -> io::Result<()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = &self.inner.config;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192))
            .max_headers(config.max_headers);
        builder.http2().timer(TokioTimer::new());
        let inner = self.inner.clone();
        let peer = info.peer.clone();
        let service = hyper::service::service_fn(move |req| {
            let inner = inner.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(inner.respond(req, &peer).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => return res.map_err(io::Error::other),
            () = info.shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
        }
        conn.await.map_err(io::Error::other)
    }
}

impl Handler for HttpServer {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        match &self.inner.config.tls {
            Some(tls) => {
                let stream = tls.accept(conn).await.map_err(io::Error::other)?;
                self.serve_stream(stream, &info).await
            }
            None => self.serve_stream(conn, &info).await,
        }
    }
}

impl Inner {
    /// Answers one request and logs it.
    async fn respond(&self, req: Request<Incoming>, peer: &PeerAddr) -> Response<Body> {
        let started = Instant::now();
        let method = req.method().clone();
        let shown = crate::text::escape_one_line(req.uri().path(), LOGGED_PATH_CHARS);
        let response = self.route(req).await;
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        // The peer is named here too: HTTP/2 streams run in tasks outside the connection's span.
        tracing::info!(
            %peer,
            "{method} {shown} {} {bytes} {:.1}ms",
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        response
    }

    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let config = &self.config;
        let parts = match decode_path(req.uri().path(), config.show_hidden) {
            Ok(parts) => parts,
            Err(status) => return text(status, "refused path\n"),
        };
        match *req.method() {
            Method::GET | Method::HEAD => self.read(req, parts).await,
            Method::PUT if config.upload => {
                if !upload::authorized(req.headers(), config.token.as_ref()) {
                    let mut response = text(StatusCode::UNAUTHORIZED, "a token is needed\n");
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                    return response;
                }
                let (head, body) = req.into_parts();
                let (status, message) =
                    upload::put(self.store.clone(), parts, &head.headers, body).await;
                text(status, &message)
            }
            _ => {
                let allow = if config.upload {
                    "GET, HEAD, PUT"
                } else {
                    "GET, HEAD"
                };
                let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                response
            }
        }
    }

    /// GET or HEAD of a file or a directory.
    async fn read(&self, req: Request<Incoming>, parts: Vec<String>) -> Response<Body> {
        let (root, show_hidden) = (self.root.clone(), self.config.show_hidden);
        let resolved =
            tokio::task::spawn_blocking(move || resolve(&root, &parts, show_hidden)).await;
        let Ok(Some((target, is_dir))) = resolved else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        if !is_dir {
            return self.serve_file(req).await;
        }
        let path = req.uri().path();
        if !path.ends_with('/') {
            let mut location = format!("{path}/");
            if let Some(query) = req.uri().query() {
                location = format!("{location}?{query}");
            }
            return redirect(&location);
        }
        let root = self.root.clone();
        let index = target.join("index.html");
        let has_index =
            tokio::task::spawn_blocking(move || inside(&root, &index).is_some_and(|m| m.is_file()))
                .await
                .unwrap_or(false);
        if has_index {
            return self.serve_file(req).await;
        }
        if !self.config.listing {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        self.listing(&req, target).await
    }

    async fn serve_file(&self, req: Request<Incoming>) -> Response<Body> {
        match self.files.clone().try_call(req).await {
            Ok(response) => response.map(|b| b.map_err(io::Error::other).boxed_unsync()),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n"),
        }
    }

    async fn listing(&self, req: &Request<Incoming>, dir: PathBuf) -> Response<Body> {
        let (root, show_hidden) = (self.root.clone(), self.config.show_hidden);
        let read =
            tokio::task::spawn_blocking(move || listing::read_listing(&dir, &root, show_hidden));
        let Ok(Ok(listing)) = read.await else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        let wants_json = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        let (body, kind) = if wants_json {
            (listing.to_json(), "application/json")
        } else {
            let title = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy();
            (listing.to_html(&title), "text/html; charset=utf-8")
        };
        let mut response = full(StatusCode::OK, Bytes::from(body), kind);
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept"));
        if req.method() == Method::HEAD {
            let len = response.headers().get(header::CONTENT_LENGTH).cloned();
            let mut head = full(StatusCode::OK, Bytes::new(), kind);
            if let Some(len) = len {
                head.headers_mut().insert(header::CONTENT_LENGTH, len);
            }
            return head;
        }
        response
    }
}

/// Where `parts` leads below `root` (blocking): the canonical path and whether it is a
/// directory, or `None` if it is missing, or resolves (through a symlink) outside the root
/// or onto a hidden name.
fn resolve(root: &Path, parts: &[String], show_hidden: bool) -> Option<(PathBuf, bool)> {
    let mut path = root.to_path_buf();
    path.extend(parts);
    let canonical = std::fs::canonicalize(&path).ok()?;
    let below = canonical.strip_prefix(root).ok()?;
    if below
        .components()
        .any(|c| path::is_hidden(&c.as_os_str().to_string_lossy(), show_hidden))
    {
        return None;
    }
    let meta = std::fs::metadata(&canonical).ok()?;
    Some((canonical, meta.is_dir()))
}

/// The metadata of `path` if it resolves inside `root` (blocking).
fn inside(root: &Path, path: &Path) -> Option<std::fs::Metadata> {
    let canonical = std::fs::canonicalize(path).ok()?;
    canonical.starts_with(root).then_some(())?;
    std::fs::metadata(canonical).ok()
}

fn full(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let len = body.len();
    let mut response = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    full(
        status,
        Bytes::from(message.to_owned()),
        "text/plain; charset=utf-8",
    )
}

fn redirect(location: &str) -> Response<Body> {
    let mut response = text(StatusCode::PERMANENT_REDIRECT, "moved\n");
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
