//! GET and HEAD: what a path names below the root, found and answered (a file, a directory's
//! `index.html`, a listing, a redirect to the slash, or 404).
//!
//! A file is opened, checked and its first chunk read right on the runtime's thread, as
//! nginx does on its event loop: a handful of syscalls on a page-cached file cost less than
//! the two thread switches a blocking-pool round trip takes (profiled: they were most of a
//! small file's cost). A listing, which may stat thousands of entries, goes to the pool.

use std::os::fd::OwnedFd;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::cache::SmallFiles;
use super::file::{self, Answer, Ask, Payload, Precompressed, Source};
use super::listing::{self, Listing, Sort};
use super::open::{rel_path, Node, Root};
use super::{empty, full, redirect, text, Body, Inner};

/// What a GET or HEAD found.
enum Outcome {
    File(Answer),
    /// A directory to list, opened, and its path's components.
    Listing(OwnedFd, Vec<String>),
    /// A directory asked for without its trailing slash.
    Redirect,
    NotFound,
}

impl Inner {
    /// GET or HEAD of a file or a directory.
    pub(super) async fn read(&self, req: Request<Incoming>, parts: Vec<String>) -> Response<Body> {
        let ask = Ask::new(req.method(), req.headers());
        let slash = req.uri().path().ends_with('/');
        match find(
            &self.root,
            &self.cache,
            &parts,
            slash,
            &ask,
            self.config.listing,
        ) {
            Outcome::File(answer) => {
                let mut response = file_response(answer);
                if self.config.upload {
                    sandbox(response.headers_mut());
                }
                response
            }
            Outcome::Listing(dir, parts) => {
                let (root, show_hidden) = (self.root.clone(), self.config.show_hidden);
                let read = tokio::task::spawn_blocking(move || {
                    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                    listing::read_listing(&root, &parts, dir, show_hidden)
                });
                match read.await {
                    Ok(Ok(listing)) => self.listing_response(&req, listing),
                    _ => text(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
            Outcome::Redirect => {
                let mut location = format!("{}/", req.uri().path());
                if let Some(query) = req.uri().query() {
                    location = format!("{location}?{query}");
                }
                redirect(&location)
            }
            Outcome::NotFound => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn listing_response(&self, req: &Request<Incoming>, mut listing: Listing) -> Response<Body> {
        listing.sort(Sort::from_query(req.uri().query()));
        let wants_json = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        let (body, kind) = if wants_json {
            (listing.to_json(), "application/json")
        } else {
            let title = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy();
            (
                listing.to_html(
                    &title,
                    Sort::from_query(req.uri().query()),
                    self.config.upload,
                ),
                "text/html; charset=utf-8",
            )
        };
        let mut response = full(StatusCode::OK, Bytes::from(body), kind);
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept"));
        if req.method() == Method::HEAD {
            let (parts, _) = response.into_parts();
            return Response::from_parts(parts, empty());
        }
        response
    }
}

/// Finds what `parts` names below the root and answers for a file (blocking, briefly).
fn find(
    root: &Root,
    cache: &SmallFiles,
    parts: &[String],
    slash: bool,
    ask: &Ask,
    listing: bool,
) -> Outcome {
    let mut parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let rel = rel_path(&parts);
    if !slash {
        if let Some((bytes, head, st)) = cache.get(&rel, || root.stat_rel(&rel)) {
            let answer = file::answer(root, &parts, Source::Kept(bytes, head), st, ask, None);
            return Outcome::File(answer);
        }
    }
    match root.open_rel(&rel, &parts) {
        // A file named with a trailing slash is not that file (as nginx answers).
        Some((Node::File(..), _)) if slash => Outcome::NotFound,
        Some((Node::File(file, st), direct)) => {
            let keep = direct.then_some((cache, rel.as_str()));
            let answer = file::answer(root, &parts, Source::Open(file), st, ask, keep);
            Outcome::File(answer)
        }
        Some((Node::Dir(_), _)) if !slash => Outcome::Redirect,
        Some((Node::Dir(dir), _)) => {
            parts.push("index.html");
            if let Some(Node::File(file, st)) = root.open_at(&parts) {
                let answer = file::answer(root, &parts, Source::Open(file), st, ask, None);
                return Outcome::File(answer);
            }
            parts.pop();
            if !listing {
                return Outcome::NotFound;
            }
            Outcome::Listing(dir, parts.iter().map(|p| (*p).to_owned()).collect())
        }
        None => Outcome::NotFound,
    }
}

/// A file's answer as a hyper response.
fn file_response(answer: Answer) -> Response<Body> {
    let body = match answer.payload {
        Payload::Empty => empty(),
        Payload::Whole(bytes) => Full::new(bytes).map_err(|e| match e {}).boxed_unsync(),
        Payload::Stream(stream) => stream.boxed_unsync(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    if answer.precompressed {
        response.extensions_mut().insert(Precompressed);
    }
    response
}

/// What a directory that takes uploads adds to every file it serves: whoever may upload can
/// put an HTML page there, and a page served on this origin could script the upload form.
/// `sandbox` gives such a page an origin of its own and no scripts; `nosniff` keeps a
/// browser from taking a text file for HTML.
fn sandbox(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}
