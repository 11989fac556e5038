//! The chat page (embedded, no CDN) at `/chat/` and its WebSocket at `/chat/ws`, bridged by
//! `websocket.rs`: on a listener of its own (`sockit chat serve --web-listen`, this module's
//! [`Handler`]), or carried by an HTTP server next to its files (`sockit http serve --chat`,
//! the `http` entry of `sockit serve`'s default set), which hands it the requests whose path
//! [`is_chat_path`] claims.
//!
//! ```text
//! GET /chat          -> 308 /chat/
//! GET /chat/         -> index.html   (strict Content-Security-Policy: no inline script)
//! GET /chat/chat.js, /chat/chat.css
//! GET /chat/ws       -> Origin must be this host (else 403), then 101 and the bridge
//! ```

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::warn;

use super::broker::Broker;
use super::websocket::{serve_socket, socket_config, WebConfig};
use crate::engine::{Conn, ConnInfo, Handler};
use crate::service::http::{connection_builder, same_origin, HeadLimits};

/// The page's path; everything the web listener serves lies below it.
pub const CHAT_PATH: &str = "/chat/";

/// The WebSocket's path.
pub const CHAT_WS_PATH: &str = "/chat/ws";

const INDEX_HTML: &str = include_str!("web/index.html");
const CHAT_JS: &str = include_str!("web/chat.js");
const CHAT_CSS: &str = include_str!("web/chat.css");

/// The page runs only its own script and talks only to its own origin; nothing it shows
/// can load or run anything, even if markup ever slipped into the DOM.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The chat's web listener: an engine [`Handler`] serving the page and the WebSocket.
#[derive(Debug, Clone)]
pub struct WebServer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Arc<Broker>,
    config: WebConfig,
    limits: HeadLimits,
}

/// The WebSocket an HTTP/1.1 connection was upgraded to: the connection is only done (for
/// the engine's limits and shutdown) when it is.
pub(crate) type Upgraded = Arc<Mutex<Option<JoinHandle<()>>>>;

type Body = Full<Bytes>;

/// Whether a request for `path` is the chat's: `/chat` and everything below `/chat/` (which
/// a server carrying the chat therefore never looks for on disk).
pub(crate) fn is_chat_path(path: &str) -> bool {
    path == "/chat" || path.starts_with(CHAT_PATH)
}

/// Waits for the WebSocket a connection was upgraded to, if any, to end.
pub(crate) async fn upgraded_done(upgraded: &Upgraded) {
    let socket = upgraded.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(socket) = socket {
        let _ = socket.await;
    }
}

impl WebServer {
    /// A web listener bridged to `broker`.
    pub fn new(broker: Arc<Broker>, config: WebConfig) -> Self {
        WebServer {
            inner: Arc::new(Inner {
                broker,
                config,
                limits: HeadLimits::default(),
            }),
        }
    }
}

impl Handler for WebServer {
    async fn handle(&self, conn: Conn, info: ConnInfo) -> io::Result<()> {
        let upgraded = Upgraded::default();
        let builder = connection_builder(self.inner.limits);
        let (inner, info2, slot) = (self.inner.clone(), info.clone(), upgraded.clone());
        let service = hyper::service::service_fn(move |req| {
            let response = inner.route(req, &info2, &slot);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(conn), service);
        tokio::pin!(conn);
        let served = tokio::select! {
            res = conn.as_mut() => res,
            () = info.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        upgraded_done(&upgraded).await;
        served.map_err(io::Error::other)
    }
}

impl WebServer {
    /// Answers one request for a [chat path](is_chat_path) that another HTTP server took; a
    /// WebSocket it opens is put in `upgraded`, which that server waits for before its
    /// connection counts as done ([`upgraded_done`]). The connection must be served with
    /// hyper's upgrades on.
    pub(crate) fn route(
        &self,
        req: Request<Incoming>,
        info: &ConnInfo,
        upgraded: &Upgraded,
    ) -> Response<Body> {
        self.inner.route(req, info, upgraded)
    }
}

impl Inner {
    fn route(
        &self,
        req: Request<Incoming>,
        info: &ConnInfo,
        upgraded: &Upgraded,
    ) -> Response<Body> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            let allow = HeaderValue::from_static("GET, HEAD");
            response.headers_mut().insert(header::ALLOW, allow);
            return response;
        }
        match req.uri().path() {
            "/chat" => {
                let mut response = text(StatusCode::PERMANENT_REDIRECT, "moved\n");
                let to = HeaderValue::from_static(CHAT_PATH);
                response.headers_mut().insert(header::LOCATION, to);
                response
            }
            "/chat/" | "/chat/index.html" => page(INDEX_HTML, "text/html; charset=utf-8"),
            "/chat/chat.js" => page(CHAT_JS, "text/javascript; charset=utf-8"),
            "/chat/chat.css" => page(CHAT_CSS, "text/css; charset=utf-8"),
            CHAT_WS_PATH => self.upgrade(req, info, upgraded),
            _ => text(StatusCode::NOT_FOUND, "not found: the chat is at /chat/\n"),
        }
    }

    /// Checks a WebSocket handshake and hands the connection to the bridge once hyper has
    /// sent the 101.
    fn upgrade(
        &self,
        mut req: Request<Incoming>,
        info: &ConnInfo,
        upgraded: &Upgraded,
    ) -> Response<Body> {
        let headers = req.headers();
        let has = |name: header::HeaderName, token: &str| {
            headers.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
            return text(
                StatusCode::BAD_REQUEST,
                "a WebSocket handshake is expected here\n",
            );
        }
        if !has(header::SEC_WEBSOCKET_VERSION, "13") {
            let mut response = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
            let version = HeaderValue::from_static("13");
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_VERSION, version);
            return response;
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
            return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n");
        };
        let accept = derive_accept_key(key.as_bytes());
        // A page elsewhere must not open a socket with this visitor's standing (cross-site
        // WebSocket hijacking): a browser always names the page's origin.
        if !same_origin(&req) {
            warn!(peer = %info.peer, "refused a WebSocket from another origin");
            return text(
                StatusCode::FORBIDDEN,
                "a WebSocket must come from this server's own page\n",
            );
        }
        if self.config.token.is_none() && !info.local.is_local() {
            warn!(peer = %info.peer, "refused: no token configured and the listener is not on loopback");
            return text(
                StatusCode::FORBIDDEN,
                "this server has no token configured\n",
            );
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let (broker, config) = (self.broker.clone(), self.config.clone());
        let (peer, shutdown) = (info.peer.clone(), info.shutdown.clone());
        let socket = tokio::spawn(async move {
            let io = match on_upgrade.await {
                Ok(io) => TokioIo::new(io),
                Err(e) => return tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
            };
            let ws =
                WebSocketStream::from_raw_socket(io, Role::Server, Some(socket_config())).await;
            serve_socket(ws, broker, &config, &peer, &shutdown).await;
        });
        let mut slot = upgraded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(earlier) = slot.replace(socket) {
            // One upgrade per connection; a second cannot happen, but would not be orphaned.
            earlier.abort();
        }
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

fn page(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
