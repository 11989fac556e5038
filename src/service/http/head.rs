//! A file's representation headers (type, length, validators), made once from its name and
//! status: kept with a small file's contents, so serving it again formats nothing.

use std::time::{Duration, SystemTime};

use headers::{ETag, Header, LastModified};
use http::HeaderValue;
use nix::sys::stat::FileStat;

/// What a file's responses say about it, ready to be copied into each.
#[derive(Debug)]
pub(crate) struct FileHead {
    pub content_type: HeaderValue,
    /// The strong validator, typed for the preconditions and as sent.
    pub etag: Option<(ETag, HeaderValue)>,
    /// Modification time, whole seconds (as `Last-Modified` carries it).
    pub modified: SystemTime,
    pub last_modified: (LastModified, Option<HeaderValue>),
    pub size: u64,
    /// `Content-Length` of the whole file.
    pub length: HeaderValue,
}

impl FileHead {
    /// The head of a file with status `st`, served as `content_type`.
    pub(crate) fn new(content_type: HeaderValue, st: &FileStat) -> FileHead {
        let etag = etag_of(st).and_then(|etag| Some((etag.clone(), encoded(&etag)?)));
        let modified = modified_of(st);
        let last_modified = LastModified::from(modified);
        let size = u64::try_from(st.st_size).unwrap_or(0);
        FileHead {
            content_type,
            etag,
            modified,
            last_modified: (last_modified, encoded(&last_modified)),
            size,
            length: HeaderValue::from(size),
        }
    }

    /// The typed strong validator, if it could be made.
    pub(crate) fn etag(&self) -> Option<&ETag> {
        self.etag.as_ref().map(|(etag, _)| etag)
    }
}

/// A typed header's one value.
fn encoded(header: &impl Header) -> Option<HeaderValue> {
    let mut values = Vec::with_capacity(1);
    header.encode(&mut values);
    values.pop()
}

/// The `Content-Type` for a file name: by extension, text in UTF-8.
pub(crate) fn content_type(name: &str) -> HeaderValue {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT
        && mime.get_param(mime_guess::mime::CHARSET).is_none();
    let shown = if text {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&shown)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// A file's strong validator: inode, modification and change times to the nanosecond, size.
/// A file replaced by an upload's rename gets a new one even with the same size and time,
/// and so does one rewritten in place with its modification time put back (the change time
/// cannot be set back), so a client never gets a 304 or a range for other bytes.
fn etag_of(st: &FileStat) -> Option<ETag> {
    format!(
        "\"{:x}-{:x}.{:x}-{:x}.{:x}-{:x}\"",
        st.st_ino, st.st_mtime, st.st_mtime_nsec, st.st_ctime, st.st_ctime_nsec, st.st_size
    )
    .parse()
    .ok()
}

fn modified_of(st: &FileStat) -> SystemTime {
    let secs = u64::try_from(st.st_mtime).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_utf8_and_unknown_is_octet_stream() {
        assert_eq!(content_type("a.txt"), "text/plain; charset=utf-8");
        assert_eq!(content_type("a.png"), "image/png");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn a_head_carries_its_validators_as_sent() {
        let mut st = nix::sys::stat::stat(".").unwrap();
        st.st_ino = 0xab;
        st.st_size = 13;
        st.st_mtime = 784_111_777;
        let head = FileHead::new(content_type("a.txt"), &st);
        let (_, etag) = head.etag.as_ref().unwrap();
        assert!(
            etag.to_str().unwrap().starts_with("\"ab-2ebc98a1."),
            "{etag:?}"
        );
        assert_eq!(
            head.last_modified.1.unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!((head.size, &head.length), (13, &HeaderValue::from(13)));
    }
}
