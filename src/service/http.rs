//! `sockit http serve`: a directory over HTTP/1.1 and HTTP/2 on hyper, every file opened
//! relative to the root's handle, text compressed on the fly by tower-http.
//!
//! The engine accepts each connection (limits, access lists, idle timeout); its first bytes
//! choose hyper's HTTP/2 or HTTP/1 connection (conn.rs); a request goes:
//!
//! ```text
//! method  GET/HEAD -> path decoded once (path.rs) -> a small file kept in memory and
//!                     unchanged since (cache.rs), or opened below the root (open.rs), in
//!                     one blocking call with -> a file or a directory's index.html (file.rs)
//!                                              a directory: listing (listing.rs) or 404
//!         PUT, POST form (--upload, token beyond loopback) -> upload.rs -> files Store
//!         anything else -> 405
//! then tower-http's compression for text above MIN_COMPRESS_BYTES, then one log line once the
//! body is sent (body.rs).
//! ```
//!
//! With a chat carried (`--chat`), `/chat` and everything below `/chat/` go to the chat's
//! page and WebSocket (`chat::web`) instead, and HTTP/1 connections are served with hyper's
//! upgrades on.

mod body;
mod cache;
mod conn;
mod file;
mod head;
mod listing;
mod mapped;
mod open;
mod path;
mod read;
mod upload;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::engine::WaitDeadline;

use bytes::Bytes;
use http::{header, Extensions, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tower_http::compression::Compression;
use tower_service::Service;

use crate::engine::{Conn, ConnInfo, Handled, Handler};
use crate::net::splice::SpliceWrite;
use crate::net::tls::TlsAcceptor;
use crate::net::PeerAddr;
use crate::service::chat::{self, WebServer};
use crate::service::files::{Store, StoreError, StoreOptions};
use crate::session::Token;
pub use body::CHUNK_BYTES;
use body::{LogLine, SentBody};
use cache::SmallFiles;
pub use cache::{CACHE_SETTLE, MAX_CACHED_BYTES, MAX_CACHED_FILES, MAX_CACHED_FILE_BYTES};
pub use conn::PARK_AFTER;
use conn::{Builders, Driven, HeadDeadline, Opening, Parkable, Rewound};
use file::Precompressed;
pub use listing::{MAX_LISTING_ENTRIES, MAX_LISTING_SCANNED};
use open::Root;
use path::decode_path;
pub(crate) use upload::same_origin;
pub use upload::{BodyPace, MAX_FORM_FILES};
#[doc(hidden)]
pub(crate) use {file::one_range, file::RangeAsk, path::decode_path as fuzz_decode_path};

/// The service name, in logs and `sockit serve`.
pub const SERVICE: &str = "http";

/// Default listen address of `sockit http serve`: loopback only.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8000";

/// Most bytes of a request head (request line and headers) hyper buffers; a longer head is
/// answered 431.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most header fields one request may carry; more is 431.
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Time a client gets to send a whole request head, from the connection's start or, on a
/// kept-alive connection, from the head's first bytes; a slowloris is closed at it
/// (nginx's `client_header_timeout`, 60 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time an HTTP/1.1 client gets after a response to begin its next request on the same
/// connection, which waits parked meanwhile (nginx's `keepalive_timeout`, likewise 75 s).
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);

/// Longest wait for the next byte of a request body (an upload): a client stopping half way
/// is answered 408 and closed then (nginx's `client_body_timeout`, 60 s, likewise).
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time every upload gets on top of its size at [`DEFAULT_BODY_MIN_BYTES_PER_SEC`].
pub const DEFAULT_BODY_GRACE: Duration = Duration::from_secs(10);

/// The slowest average upload rate accepted: a body trickled a byte at a time, each within
/// the idle limit, is answered 408 at `grace + size / rate` (1 GiB gets 4.6 hours).
pub const DEFAULT_BODY_MIN_BYTES_PER_SEC: u64 = 64 * 1024;

/// Largest upload accepted, unless `--max-file-size` says otherwise.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// Text responses at least this long are compressed on the fly for clients that accept it
/// (`br`, `zstd` or `gzip`); smaller ones gain less than the encoding costs.
pub const MIN_COMPRESS_BYTES: u64 = 1024;

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
    /// See [`DEFAULT_KEEP_ALIVE_TIMEOUT`].
    pub keep_alive_timeout: Duration,
    /// How long an upload's body may take: [`DEFAULT_BODY_IDLE_TIMEOUT`],
    /// [`DEFAULT_BODY_GRACE`], [`DEFAULT_BODY_MIN_BYTES_PER_SEC`].
    pub body_pace: BodyPace,
    /// A chat whose page (`/chat/`) and WebSocket (`/chat/ws`) this server carries, in
    /// place of anything under `/chat/` in the directory.
    pub chat: Option<WebServer>,
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
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            body_pace: BodyPace {
                idle: DEFAULT_BODY_IDLE_TIMEOUT,
                grace: DEFAULT_BODY_GRACE,
                min_bytes_per_sec: DEFAULT_BODY_MIN_BYTES_PER_SEC,
            },
            chat: None,
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
    /// The root's handle: every file is opened relative to it.
    root: Arc<Root>,
    store: Arc<Store>,
    /// hyper's HTTP/1 and HTTP/2 settings, for every connection.
    builders: Builders,
    /// Small files' contents, checked against the file system at each use.
    cache: SmallFiles,
}

/// A response body before compression: ours (`Full`, `Empty`) or a file's chunks.
type Body = UnsyncBoxBody<Bytes, io::Error>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl HttpServer {
    /// A server for `config.root`.
    ///
    /// # Errors
    /// The root cannot be opened or is not a directory.
    pub fn new(mut config: HttpConfig) -> Result<Self, StoreError> {
        config.tls = config.tls.take().map(|tls| tls.with_alpn(&ALPN_PROTOCOLS));
        let store = Store::open(&config.root, config.store.clone())?;
        let root =
            Root::open(&config.root, config.show_hidden).map_err(|source| StoreError::Io {
                path: crate::text::escape_one_line(&config.root.to_string_lossy(), 256),
                source,
            })?;
        let builders = Builders::new(HeadLimits {
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            header_read_timeout: config.header_read_timeout,
        });
        Ok(HttpServer {
            inner: Arc::new(Inner {
                builders,
                cache: SmallFiles::default(),
                config,
                root: Arc::new(root),
                store: Arc::new(store),
            }),
        })
    }

    /// Serves HTTP on one stream until the client is done or `info.shutdown` fires (then
    /// in-flight requests finish and the connection closes). `deadline` is the connection's
    /// (below any TLS), for the request heads' deadline; a deadline already set on it is
    /// kept (a parked connection's, served again).
    ///
    /// With `parks`, an HTTP/1 connection idle after its response, with nothing of the next
    /// request read, is given back with its next head's deadline, to wait in the engine's
    /// lot ([`Handled::Park`]); without, it waits here.
    async fn serve_stream<I>(
        &self,
        mut io: I,
        info: &ConnInfo,
        deadline: WaitDeadline,
        parks: bool,
    ) -> io::Result<Option<(I, tokio::time::Instant)>>
    where
        I: AsyncRead + AsyncWrite + SpliceWrite + Unpin + Send + 'static,
    {
        // The first bytes are part of the first head, under its deadline; on a parked
        // connection served again, under the keep-alive deadline it parked with, and the
        // head's time starts with them.
        let config = &self.inner.config;
        let resumed = deadline.get().is_some();
        let head = HeadDeadline::start(
            deadline,
            config.header_read_timeout,
            config.keep_alive_timeout,
        );
        let Some(opening) = Opening::next(&mut io, &info.shutdown).await? else {
            return Ok(None);
        };
        if resumed {
            head.begun();
        }
        let chat = self.inner.config.chat.as_ref().map(|web| {
            Arc::new(Chat {
                web: web.clone(),
                info: info.clone(),
                upgraded: chat::Upgraded::default(),
            })
        });
        if opening.is_h2() {
            // HTTP/2 has no head deadline of its own: its streams share the connection,
            // which the idle timeout bounds.
            head.head_read();
            let service = connection_service(self.routes(), info.peer.clone(), None, chat);
            let io = TokioIo::new(opening.rewind(io));
            let conn = Box::pin(self.inner.builders.h2.serve_connection(io, service));
            return conn::drive(conn, &info.shutdown, |c| c.graceful_shutdown())
                .await
                .map(|()| None);
        }
        let mut io = opening.rewind(io);
        loop {
            // Boxed: all that serving needs goes with the box when the connection parks,
            // and its task keeps only what waiting for the client needs.
            let driven = Box::pin(self.serve_h1(io, info, &head, chat.as_ref())).await;
            let (prefix, mut stream) = match driven {
                Driven::Done(res) => return res.map(|()| None),
                Driven::Parked(parked, unread) => conn::unpark(parked, unread),
            };
            io = if !prefix.is_empty() {
                head.begun();
                Rewound::new(prefix, stream)
            } else if parks {
                return Ok(Some((stream, head.head_at())));
            } else {
                match Opening::next(&mut stream, &info.shutdown).await? {
                    Some(opening) => {
                        head.begun();
                        opening.rewind(stream)
                    }
                    None => return Ok(None),
                }
            };
        }
    }

    /// Serves HTTP/1 on `io` until the connection ends or parks.
    async fn serve_h1<I>(
        &self,
        io: Rewound<I>,
        info: &ConnInfo,
        head: &HeadDeadline,
        chat: Option<&Arc<Chat>>,
    ) -> Driven<TokioIo<Parkable<Rewound<I>>>>
    where
        I: AsyncRead + AsyncWrite + SpliceWrite + Unpin + Send + 'static,
    {
        let peer = info.peer.clone();
        let service = connection_service(self.routes(), peer, Some(head.clone()), chat.cloned());
        let io = TokioIo::new(Parkable::new(io, head.clone()));
        let h1 = &self.inner.builders.h1;
        let Some(chat) = chat else {
            let conn = h1.serve_connection(io, service);
            return conn::drive_h1(Box::pin(conn), &info.shutdown, head).await;
        };
        let conn = h1.serve_connection(io, service).with_upgrades();
        let driven = conn::drive_h1(Box::pin(conn), &info.shutdown, head).await;
        if let Driven::Done(_) = &driven {
            // The connection may be the WebSocket's now: done (for the engine's limits and
            // shutdown) only when the socket is.
            chat::upgraded_done(&chat.upgraded).await;
        }
        driven
    }

    /// The routes under the compression layer, as a connection serves them.
    fn routes(&self) -> Compressed {
        Compression::new(Routes(self.inner.clone()))
            .compress_when(compressible as fn(_, _, &_, &_) -> bool)
    }
}

/// The hyper service one connection's requests are answered by.
fn connection_service(
    routes: Compressed,
    peer: PeerAddr,
    next_head: Option<HeadDeadline>,
    chat: Option<Arc<Chat>>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<SentBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<SentBody>, Infallible>> + Send,
> + Clone
       + Send {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let routes = routes.clone();
        let peer = peer.clone();
        // Handed over only for the chat's own paths.
        let chat = chat
            .as_ref()
            .filter(|_| chat::is_chat_path(req.uri().path()))
            .cloned();
        respond(routes, req, peer, next_head.clone(), chat)
    })
}

/// A carried chat, as one connection hands it requests for its paths.
#[derive(Debug)]
struct Chat {
    web: WebServer,
    info: ConnInfo,
    /// The WebSocket this connection was upgraded to, if it was.
    upgraded: chat::Upgraded,
}

/// hyper's limits on a request head, as every sockit HTTP listener sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// See [`DEFAULT_MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
    /// See [`DEFAULT_MAX_HEADERS`].
    pub max_headers: usize,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        }
    }
}

/// hyper-util's HTTP/1.1-or-HTTP/2 connection builder with `limits` (shared by `http serve`
/// and the chat's web listener, so both answer hostile heads alike).
pub(crate) fn connection_builder(limits: HeadLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

impl HttpServer {
    /// Serves a connection; with `parks`, a plain one may be given back idle.
    async fn serve_conn(&self, mut conn: Conn, info: ConnInfo, parks: bool) -> Handled {
        let deadline = conn.wait_deadline();
        match &self.inner.config.tls {
            // Boxed: a TLS connection's state would otherwise make every connection's task
            // that size, TLS or not. Its connections wait in their tasks: the TLS session
            // is theirs.
            Some(tls) => Handled::Done(
                Box::pin(async {
                    let stream = tls.accept(conn).await.map_err(io::Error::other)?;
                    self.serve_stream(stream, &info, deadline, false).await
                })
                .await
                .map(|_| ()),
            ),
            None => match self.serve_stream(conn, &info, deadline, parks).await {
                Ok(Some((conn, until))) => Handled::Park(conn, until),
                served => Handled::Done(served.map(|_| ())),
            },
        }
    }
}

/// Served by the engine, an idle keep-alive connection parks in the engine's lot between
/// requests ([`Handled::Park`]); called directly, [`Handler::handle`] keeps it in its task.
impl Handler for HttpServer {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        match self.serve_conn(conn, info, false).await {
            Handled::Done(res) => res,
            Handled::Park(..) => Ok(()),
        }
    }

    async fn handle_parkable(&self, conn: Conn, info: ConnInfo) -> Handled {
        self.serve_conn(conn, info, true).await
    }
}

/// The protocols offered by ALPN under TLS, preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The routes under tower-http's compression, as each connection serves them.
type Compressed =
    Compression<Routes, fn(StatusCode, http::Version, &HeaderMap, &Extensions) -> bool>;

/// The routes as a tower service, for tower-http's compression to wrap.
#[derive(Debug, Clone)]
struct Routes(Arc<Inner>);

impl Service<Request<Incoming>> for Routes {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { Ok(inner.route(req).await) })
    }
}

/// Whether tower-http compresses a response: a whole 200 of a text type of at least
/// [`MIN_COMPRESS_BYTES`] (it already leaves ranges and encoded responses alone).
fn compressible(status: StatusCode, _: http::Version, headers: &HeaderMap, _: &Extensions) -> bool {
    let long = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len >= MIN_COMPRESS_BYTES);
    let text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            let t = t.split(';').next().unwrap_or("").trim();
            t.starts_with("text/")
                || matches!(
                    t,
                    "application/json"
                        | "application/javascript"
                        | "application/xml"
                        | "application/wasm"
                        | "image/svg+xml"
                )
        });
    status == StatusCode::OK && long && text
}

/// Answers one request through the compression layer, or through `chat` when the request
/// is for a carried chat's path, with its log line written once its body is done with
/// ([`LogLine`]); `next_head` (HTTP/1) is the connection's head deadline, off while the
/// request is served and for good once the connection is a WebSocket.
async fn respond(
    mut routes: Compressed,
    req: Request<Incoming>,
    peer: PeerAddr,
    next_head: Option<HeadDeadline>,
    chat: Option<Arc<Chat>>,
) -> Result<Response<SentBody>, Infallible> {
    if let Some(head) = &next_head {
        head.head_read();
    }
    // Decoded, so a log reads as the names on disk; escaped, so no byte of it is a control.
    // Only made when the line is written (`-q` spares every request this, the clock too).
    let logged = tracing::enabled!(tracing::Level::INFO).then(|| {
        let decoded = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy();
        let shown = crate::text::escape_one_line(&decoded, LOGGED_PATH_CHARS);
        (Instant::now(), req.method().clone(), shown)
    });
    // A client that takes no encoding skips the compression layer: its body type holds the
    // encoders' state inline, kilobytes moved with every response (profiled as memcpy).
    let mut response = if let Some(chat) = chat {
        let response = chat.web.route(req, &chat.info, &chat.upgraded);
        // A WebSocket sends no more heads: its quiet is the chat's to judge (pings).
        let next_head = next_head.filter(|_| response.status() != StatusCode::SWITCHING_PROTOCOLS);
        response.map(|b| SentBody::plain(b.map_err(|e| match e {}).boxed_unsync(), next_head))
    } else if req.headers().contains_key(header::ACCEPT_ENCODING) {
        let response = routes.call(req).await?;
        response.map(|b| SentBody::compressed(b.boxed_unsync(), next_head))
    } else {
        let response = routes.get_mut().0.route(req).await;
        response.map(|b| SentBody::plain(b, next_head))
    };
    let encoded_here = response.headers().contains_key(header::CONTENT_ENCODING)
        && response.extensions().get::<Precompressed>().is_none();
    if encoded_here {
        weaken_etag(response.headers_mut());
    }
    if let Some((started, method, shown)) = logged {
        let status = response.status();
        let bodiless = method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        // The header when set, else the body's own exact size (the chat's pages).
        let announced = match response.headers().get(header::CONTENT_LENGTH) {
            Some(len) => len.to_str().ok().and_then(|len| len.parse().ok()),
            None => hyper::body::Body::size_hint(response.body()).exact(),
        }
        .filter(|_| !bodiless);
        response.body_mut().log_when_done(LogLine {
            started,
            request: format!("{method} {shown}"),
            status: status.as_u16(),
            peer,
            announced,
            sent: 0,
        });
    }
    Ok(response)
}

/// An encoding made on the fly is a different representation with the same file behind it:
/// its validator becomes weak (as nginx does), so no range is ever asked of it.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if etag.starts_with("W/") {
        return;
    }
    if let Ok(weak) = HeaderValue::from_str(&format!("W/{etag}")) {
        headers.insert(header::ETAG, weak);
    }
}

impl Inner {
    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let config = &self.config;
        let parts = match decode_path(req.uri().path(), config.show_hidden) {
            Ok(parts) => parts,
            Err(status) => return text(status, "refused path\n"),
        };
        match *req.method() {
            Method::GET | Method::HEAD => self.read(req, parts).await,
            // Boxed: hyper keeps room for this future in every connection, and an upload's
            // is the largest.
            Method::PUT | Method::POST if config.upload => Box::pin(self.upload(req, parts)).await,
            _ => {
                let allow = if config.upload {
                    "GET, HEAD, PUT, POST"
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

    /// `PUT` of one file, or a browser form's `POST` to a directory.
    async fn upload(&self, req: Request<Incoming>, parts: Vec<String>) -> Response<Body> {
        if !upload::authorized(req.headers(), self.config.token.as_ref()) {
            let mut response = text(StatusCode::UNAUTHORIZED, "a token is needed\n");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let is_post = req.method() == Method::POST;
        if is_post && !upload::same_origin(&req) {
            return text(
                StatusCode::FORBIDDEN,
                "a form upload must come from a page of this server\n",
            );
        }
        let wants_page = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        let dir_path = req.uri().path().to_owned();
        let (head, body) = req.into_parts();
        let store = self.store.clone();
        let pace = self.config.body_pace;
        let (status, message) = if is_post {
            upload::post_form(store, parts, &head.headers, body, pace).await
        } else {
            upload::put(store, parts, &head.headers, body, pace).await
        };
        // A browser's form goes back to the listing, which now shows what it sent.
        if is_post && wants_page && status == StatusCode::CREATED {
            let mut response = text(StatusCode::SEE_OTHER, &message);
            if let Ok(value) = HeaderValue::from_str(&dir_path) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            return response;
        }
        text(status, &message)
    }
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
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
