//! One file's response: type, length, validators and preconditions, a single range, a
//! precompressed sibling; the body's first chunk read in the same blocking call that opened
//! the file.

use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use headers::{
    ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfRange, IfUnmodifiedSince,
};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use nix::sys::stat::FileStat;

use super::body::{read_chunk, FileBody};
use super::cache::SmallFiles;
use super::head::{content_type, FileHead};
use super::open::{Node, Root};

use super::body::CHUNK_BYTES;

/// A precompressed sibling's encoding, by the extension it has on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    fn extension(self) -> &'static str {
        match self {
            Encoding::Br => ".br",
            Encoding::Zstd => ".zst",
            Encoding::Gzip => ".gz",
        }
    }

    fn token(self) -> &'static str {
        match self {
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
            Encoding::Gzip => "gzip",
        }
    }
}

/// What a request asks of a file, taken from its head before any I/O.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    head: bool,
    range: Option<String>,
    if_range: Option<IfRange>,
    if_match: Option<IfMatch>,
    if_none_match: Option<IfNoneMatch>,
    if_modified_since: Option<IfModifiedSince>,
    if_unmodified_since: Option<IfUnmodifiedSince>,
    /// Encodings the client takes, best first (only the ones siblings can have).
    encodings: Vec<Encoding>,
}

impl Ask {
    /// Reads the request head's method and headers.
    pub(crate) fn new(method: &Method, headers: &HeaderMap) -> Ask {
        Ask {
            head: method == Method::HEAD,
            range: headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            if_range: headers.typed_get(),
            if_match: headers.typed_get(),
            if_none_match: headers.typed_get(),
            if_modified_since: headers.typed_get(),
            if_unmodified_since: headers.typed_get(),
            encodings: accepted_encodings(headers),
        }
    }
}

/// The `br`, `zstd` and `gzip` members of `Accept-Encoding` with a non-zero weight, by weight
/// and then in that order.
fn accepted_encodings(headers: &HeaderMap) -> Vec<Encoding> {
    let mut found: Vec<(Encoding, f32)> = Vec::new();
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for member in value.split(',') {
            let mut fields = member.split(';');
            let token = fields.next().unwrap_or("").trim();
            let weight = fields
                .find_map(|f| f.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
            let encoding = match token.to_ascii_lowercase().as_str() {
                "br" => Encoding::Br,
                "zstd" => Encoding::Zstd,
                "gzip" | "x-gzip" => Encoding::Gzip,
                _ => continue,
            };
            match weight {
                Some(q) if q > 0.0 && !found.iter().any(|(e, _)| *e == encoding) => {
                    found.push((encoding, q));
                }
                _ => {}
            }
        }
    }
    let rank = |e: Encoding| {
        [Encoding::Br, Encoding::Zstd, Encoding::Gzip]
            .iter()
            .position(|x| *x == e)
    };
    found.sort_by(|a, b| b.1.total_cmp(&a.1).then(rank(a.0).cmp(&rank(b.0))));
    found.into_iter().map(|(e, _)| e).collect()
}

/// Marks a response whose `Content-Encoding` came from a sibling file, with that file's own
/// strong validator.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Precompressed;

/// A response's body as decided in the blocking call.
#[derive(Debug)]
pub(crate) enum Payload {
    /// No body (HEAD, 304, 412, 416).
    Empty,
    /// The whole body, read already.
    Whole(Bytes),
    /// A larger body, streamed.
    Stream(FileBody),
}

/// A file's response, decided with blocking I/O and turned into a hyper response by the
/// caller.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub payload: Payload,
    pub precompressed: bool,
}

/// A file's contents: opened, or kept in memory (`cache.rs`).
#[derive(Debug)]
pub(crate) enum Source {
    Open(File),
    /// Kept contents and the head made when they were read.
    Kept(Bytes, Arc<FileHead>),
}

/// Where a file opened at a path without any symlink may be kept, and under which path.
pub(crate) type Keep<'a> = Option<(&'a SmallFiles, &'a str)>;

/// Answers the request `ask` for the regular file `source` with status `st` found at `parts`
/// (blocking, briefly); an opened small file's contents are kept in `keep` when read whole.
pub(crate) fn answer(
    root: &Root,
    parts: &[&str],
    source: Source,
    st: FileStat,
    ask: &Ask,
    keep: Keep<'_>,
) -> Answer {
    let name = parts.last().copied().unwrap_or("");
    // A precompressed sibling is served with the type of the file asked for, and with its
    // own validators and length.
    let (source, st, encoding, base_type) = match sibling(root, parts, ask) {
        Some((file, sibling_st, encoding)) => {
            let base_type = match &source {
                Source::Kept(_, head) => head.content_type.clone(),
                Source::Open(_) => content_type(name),
            };
            (
                Source::Open(file),
                sibling_st,
                Some(encoding),
                Some(base_type),
            )
        }
        None => (source, st, None, None),
    };
    let keep = keep.filter(|_| encoding.is_none());
    let head = match &source {
        Source::Kept(_, head) => head.clone(),
        Source::Open(_) => {
            let sent_type = base_type.unwrap_or_else(|| content_type(name));
            Arc::new(FileHead::new(sent_type, &st))
        }
    };
    // Not `with_capacity`: hyper keeps each response's map for the connection's next request
    // head, so room for twelve fields (what 8 rounds up to) cost every idle keep-alive
    // connection 0.6 KB (heaptrack); the default six fit a file's usual five.
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, head.content_type.clone());
    if let Some(encoding) = encoding {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(encoding.token()),
        );
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if let Some((_, etag)) = &head.etag {
        headers.insert(header::ETAG, etag.clone());
    }
    if let Some(last_modified) = &head.last_modified.1 {
        headers.insert(header::LAST_MODIFIED, last_modified.clone());
    }
    let size = head.size;
    let answer = |status, headers, payload| Answer {
        status,
        headers,
        payload,
        precompressed: encoding.is_some(),
    };
    if let Some(status) = precondition(ask, head.etag(), head.modified) {
        return answer(status, headers, Payload::Empty);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let wanted = ask.range.as_deref().filter(|_| {
        ask.if_range
            .as_ref()
            .is_none_or(|r| !r.is_modified(head.etag(), Some(&head.last_modified.0)))
    });
    let (status, start, len) = match wanted.map(|r| one_range(r, size)) {
        None | Some(RangeAsk::Ignored) => (StatusCode::OK, 0, size),
        Some(RangeAsk::One(start, end)) => {
            let content_range = format!("bytes {start}-{end}/{size}");
            if let Ok(value) = HeaderValue::from_str(&content_range) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Some(RangeAsk::Unsatisfiable) => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                headers.insert(header::CONTENT_RANGE, value);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            return answer(StatusCode::RANGE_NOT_SATISFIABLE, headers, Payload::Empty);
        }
    };
    let length = if len == size {
        head.length.clone()
    } else {
        HeaderValue::from(len)
    };
    headers.insert(header::CONTENT_LENGTH, length);
    if ask.head || len == 0 {
        return answer(status, headers, Payload::Empty);
    }
    let file = match source {
        Source::Open(file) => match keep.filter(|_| SmallFiles::wants(&st)) {
            Some((cache, rel)) => match read_chunk(&file, 0, size) {
                Ok(whole) => {
                    let whole = cache.put(rel, &st, whole, head);
                    return answer(status, headers, Payload::Whole(part(&whole, start, len)));
                }
                Err(_) => return failed(answer),
            },
            None => file,
        },
        Source::Kept(whole, _) => {
            return answer(status, headers, Payload::Whole(part(&whole, start, len)));
        }
    };
    let Ok(first) = read_chunk(&file, start, len.min(CHUNK_BYTES)) else {
        return failed(answer);
    };
    let payload = if first.len() as u64 == len {
        Payload::Whole(first)
    } else {
        Payload::Stream(FileBody::new(file, first, start, len))
    };
    answer(status, headers, payload)
}

/// `len` bytes of kept contents from `start` (both inside them: the range was checked
/// against the size they were read with).
fn part(whole: &Bytes, start: u64, len: u64) -> Bytes {
    let start = usize::try_from(start)
        .unwrap_or(usize::MAX)
        .min(whole.len());
    let end = usize::try_from(len)
        .map_or(whole.len(), |len| start.saturating_add(len))
        .min(whole.len());
    whole.slice(start..end)
}

/// A 500 for a file that could not be read.
fn failed(answer: impl FnOnce(StatusCode, HeaderMap, Payload) -> Answer) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    answer(StatusCode::INTERNAL_SERVER_ERROR, headers, Payload::Empty)
}

/// The first sibling (`name.br`, `.zst`, `.gz`) the client accepts, if the request is not
/// for a range (a range is of the file as it is, never of an encoding of it).
fn sibling(root: &Root, parts: &[&str], ask: &Ask) -> Option<(File, FileStat, Encoding)> {
    let (name, parents) = parts.split_last()?;
    if ask.range.is_some() {
        return None;
    }
    ask.encodings.iter().find_map(|&encoding| {
        let name = format!("{name}{}", encoding.extension());
        let mut path = parents.to_vec();
        path.push(&name);
        match root.open_at(&path)? {
            Node::File(file, st) => Some((file, st, encoding)),
            Node::Dir(_) => None,
        }
    })
}

/// RFC 9110 §13.2.2's order: `If-Match`, else `If-Unmodified-Since` (412); then
/// `If-None-Match`, else `If-Modified-Since` (304).
fn precondition(ask: &Ask, etag: Option<&ETag>, modified: SystemTime) -> Option<StatusCode> {
    let failed = match (&ask.if_match, &ask.if_unmodified_since) {
        (Some(m), _) => etag.is_none_or(|e| !m.precondition_passes(e)),
        (None, Some(since)) => !since.precondition_passes(modified),
        (None, None) => false,
    };
    if failed {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    let fresh = match (&ask.if_none_match, &ask.if_modified_since) {
        (Some(none), _) => etag.is_some_and(|e| !none.precondition_passes(e)),
        (None, Some(since)) => !since.is_modified(modified),
        (None, None) => false,
    };
    fresh.then_some(StatusCode::NOT_MODIFIED)
}

/// What a `Range` header comes to for a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAsk {
    /// Not understood, or more than one range: the whole file (RFC 9110 §14.2 lets a
    /// server ignore `Range`).
    Ignored,
    /// One satisfiable range, first and last byte.
    One(u64, u64),
    /// Well formed, but starts past the end: 416.
    Unsatisfiable,
}

pub(crate) fn one_range(value: &str, size: u64) -> RangeAsk {
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return RangeAsk::Ignored;
    };
    match parsed.validate(size) {
        Ok(ranges)
            if size > 0
                && ranges
                    .iter()
                    .all(|r| r.start() <= r.end() && *r.end() < size) =>
        {
            match ranges.as_slice() {
                [one] => RangeAsk::One(*one.start(), *one.end()),
                _ => RangeAsk::Ignored,
            }
        }
        _ => RangeAsk::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_one_satisfiable_range_or_ignored_or_416() {
        assert_eq!(one_range("bytes=0-4", 12), RangeAsk::One(0, 4));
        assert_eq!(one_range("bytes=-6", 12), RangeAsk::One(6, 11));
        assert_eq!(one_range("bytes=4-", 12), RangeAsk::One(4, 11));
        assert_eq!(one_range("bytes=4-100", 12), RangeAsk::One(4, 11));
        assert_eq!(one_range("bytes=100-200", 12), RangeAsk::Unsatisfiable);
        assert_eq!(one_range("bytes=12-", 12), RangeAsk::Unsatisfiable);
        assert_eq!(one_range("bytes=0-", 0), RangeAsk::Unsatisfiable);
        assert_eq!(one_range("bytes=0-1,4-5", 12), RangeAsk::Ignored);
        for malformed in ["bytes=x-1", "items=0-1", "bytes=5-2-1", "0-4", "bytes="] {
            assert_eq!(one_range(malformed, 12), RangeAsk::Ignored, "{malformed}");
        }
    }

    #[test]
    fn accepted_encodings_go_by_weight_then_br_zstd_gzip() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br;q=0, zstd;q=0.5, identity"),
        );
        assert_eq!(
            accepted_encodings(&headers),
            [Encoding::Gzip, Encoding::Zstd]
        );
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, br, zstd"),
        );
        assert_eq!(
            accepted_encodings(&headers),
            [Encoding::Br, Encoding::Zstd, Encoding::Gzip]
        );
    }
}
