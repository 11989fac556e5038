//! A directory's listing, as an HTML page or as JSON: names escaped, links percent-encoded,
//! at most [`MAX_LISTING_ENTRIES`] entries read.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

use super::path::is_hidden;

/// Most entries a listing shows; a bigger directory's listing says it was cut short, so a
/// directory of millions of files costs a bounded read and a bounded page.
pub const MAX_LISTING_ENTRIES: usize = 10_000;

/// Everything but the unreserved characters is encoded in a link, so names with spaces,
/// `#`, `?`, `%` or non-ASCII letters link to themselves.
const LINK: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One entry of a listing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListedEntry {
    /// The name (lossy UTF-8).
    pub name: String,
    /// `file`, `dir` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

/// A directory's entries, directories first then by name.
#[derive(Debug, Serialize)]
pub(crate) struct Listing {
    /// The entries shown.
    pub entries: Vec<ListedEntry>,
    /// Whether the directory held more than [`MAX_LISTING_ENTRIES`].
    pub truncated: bool,
}

/// Reads `dir` (blocking): visible entries, symlinks resolved for their kind and size; a
/// symlink leading out of `root` (canonical) or onto a hidden name is left out, as it would
/// not be served.
pub(crate) fn read_listing(dir: &Path, root: &Path, show_hidden: bool) -> std::io::Result<Listing> {
    let mut entries = Vec::new();
    let mut truncated = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_hidden(&name, show_hidden) {
            continue;
        }
        if entries.len() == MAX_LISTING_ENTRIES {
            truncated = true;
            break;
        }
        if entry.file_type().is_ok_and(|t| t.is_symlink())
            && !link_stays_inside(&entry.path(), root, show_hidden)
        {
            continue;
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue; // a dangling link, or gone meanwhile
        };
        let kind = match (meta.is_dir(), meta.is_file()) {
            (true, _) => "dir",
            (_, true) => "file",
            _ => "other",
        };
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let size = if meta.is_file() { meta.len() } else { 0 };
        entries.push(ListedEntry {
            name,
            kind,
            size,
            mtime,
        });
    }
    entries.sort_by(|a, b| (b.kind == "dir", &a.name).cmp(&(a.kind == "dir", &b.name)));
    Ok(Listing { entries, truncated })
}

/// Whether the symlink at `path` resolves below `root` onto visible names.
fn link_stays_inside(path: &Path, root: &Path, show_hidden: bool) -> bool {
    let Ok(target) = std::fs::canonicalize(path) else {
        return false;
    };
    target.strip_prefix(root).is_ok_and(|below| {
        !below
            .components()
            .any(|c| is_hidden(&c.as_os_str().to_string_lossy(), show_hidden))
    })
}

impl Listing {
    /// The listing as JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The listing as an HTML page for the directory shown as `title` (the decoded request
    /// path).
    pub(crate) fn to_html(&self, title: &str) -> String {
        let title = html_escape(title);
        let mut page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n\
             <table><thead><tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr></thead>\
             <tbody>\n"
        );
        if title != "/" {
            page.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
        }
        for e in &self.entries {
            let slash = if e.kind == "dir" { "/" } else { "" };
            let href = utf8_percent_encode(&e.name, LINK);
            let size = if e.kind == "dir" {
                String::from("-")
            } else {
                e.size.to_string()
            };
            let when = httpdate::fmt_http_date(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(e.mtime),
            );
            let _ = writeln!(
                page,
                "<tr><td><a href=\"./{href}{slash}\">{}{slash}</a></td><td>{size}</td>\
                 <td>{when}</td></tr>",
                html_escape(&e.name)
            );
        }
        page.push_str("</tbody></table>\n");
        if self.truncated {
            let _ = writeln!(
                page,
                "<p>Only the first {MAX_LISTING_ENTRIES} entries are shown.</p>"
            );
        }
        page.push_str("</body></html>\n");
        page
    }
}

/// `text` with the HTML special characters escaped.
pub(crate) fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_in_text_and_encoded_in_links() {
        let listing = Listing {
            entries: vec![ListedEntry {
                name: "<b> #?%é.txt".into(),
                kind: "file",
                size: 3,
                mtime: 0,
            }],
            truncated: false,
        };
        let html = listing.to_html("/d/");
        assert!(html.contains("&lt;b&gt; #?%é.txt"), "{html}");
        assert!(
            html.contains("href=\"./%3Cb%3E%20%23%3F%25%C3%A9.txt\""),
            "{html}"
        );
        assert!(!html.contains("<b>"));
    }
}
