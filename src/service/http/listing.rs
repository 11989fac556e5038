//! A directory's listing, as an HTML page or as JSON: names escaped, links percent-encoded,
//! at most [`MAX_LISTING_ENTRIES`] entries read.

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::time::SystemTime;

use nix::dir::Dir;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat, SFlag};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;

use super::open::{Node, Root};
use super::path::is_hidden;

/// Most entries a listing shows; a bigger directory's listing says it was cut short, so a
/// directory of millions of files costs a bounded read and a bounded page.
pub const MAX_LISTING_ENTRIES: usize = 10_000;

/// Most names read from one directory for a listing, hidden ones included, so a directory
/// of millions of dot files costs a bounded read too.
pub const MAX_LISTING_SCANNED: usize = 4 * MAX_LISTING_ENTRIES;

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

/// Reads the directory `dir`, found at `parts` below `root` (blocking): visible entries, a
/// symlink shown with its target's kind and size only if it would be served (it stays below
/// the root, on visible names). At most [`MAX_LISTING_SCANNED`] names are read.
pub(crate) fn read_listing(
    root: &Root,
    parts: &[&str],
    dir: OwnedFd,
    show_hidden: bool,
) -> std::io::Result<Listing> {
    let dir_fd = dir.try_clone()?;
    let mut dir = Dir::from_fd(dir)?;
    let mut entries = Vec::new();
    let mut truncated = false;
    let mut scanned = 0usize;
    for entry in dir.iter() {
        let entry = entry?;
        scanned += 1;
        if scanned > MAX_LISTING_SCANNED {
            truncated = true;
            break;
        }
        let Ok(name) = entry.file_name().to_str() else {
            continue; // not UTF-8: it could not be requested either
        };
        if name == "." || name == ".." || is_hidden(name, show_hidden) {
            continue;
        }
        if entries.len() == MAX_LISTING_ENTRIES {
            truncated = true;
            break;
        }
        let Ok(st) = fstatat(&dir_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue; // gone meanwhile
        };
        let st = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
            let mut path = parts.to_vec();
            path.push(name);
            match root.open_at(&path) {
                Some(Node::File(_, st)) => st,
                Some(Node::Dir(fd)) => match fstat(&fd) {
                    Ok(st) => st,
                    Err(_) => continue,
                },
                None => continue,
            }
        } else {
            st
        };
        let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => "dir",
            SFlag::S_IFREG => "file",
            _ => "other",
        };
        entries.push(ListedEntry {
            name: name.to_owned(),
            kind,
            size: if kind == "file" { st.st_size as u64 } else { 0 },
            mtime: u64::try_from(st.st_mtime).unwrap_or(0),
        });
    }
    let mut listing = Listing { entries, truncated };
    listing.sort(Sort::default());
    Ok(listing)
}

/// The column a listing is sorted by, from the query (`?sort=size&order=desc`); directories
/// always come first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

/// See [`Sort`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SortKey {
    #[default]
    Name,
    Size,
    Modified,
}

impl SortKey {
    fn as_str(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Size => "size",
            SortKey::Modified => "mtime",
        }
    }
}

impl Sort {
    /// The order a request's query asks for; anything not understood is the default (by
    /// name, ascending).
    pub(crate) fn from_query(query: Option<&str>) -> Sort {
        let mut sort = Sort::default();
        for pair in query.unwrap_or("").split('&') {
            match pair {
                "sort=name" => sort.key = SortKey::Name,
                "sort=size" => sort.key = SortKey::Size,
                "sort=mtime" => sort.key = SortKey::Modified,
                "order=desc" => sort.descending = true,
                "order=asc" => sort.descending = false,
                _ => {}
            }
        }
        sort
    }

    /// The link of a column header: this column ascending, or reversed if it is the
    /// current one.
    fn link(self, key: SortKey) -> String {
        let order = if key == self.key && !self.descending {
            "desc"
        } else {
            "asc"
        };
        format!("?sort={}&amp;order={order}", key.as_str())
    }
}

impl Listing {
    /// Orders the entries by `sort`, directories first.
    pub(crate) fn sort(&mut self, sort: Sort) {
        self.entries.sort_by(|a, b| {
            let by_key = match sort.key {
                SortKey::Name => a.name.cmp(&b.name),
                SortKey::Size => a.size.cmp(&b.size).then(a.name.cmp(&b.name)),
                SortKey::Modified => a.mtime.cmp(&b.mtime).then(a.name.cmp(&b.name)),
            };
            let by_key = if sort.descending {
                by_key.reverse()
            } else {
                by_key
            };
            (b.kind == "dir").cmp(&(a.kind == "dir")).then(by_key)
        });
    }

    /// The listing as JSON.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The listing as an HTML page for the directory shown as `title` (the decoded request
    /// path), sorted by `sort` (the column headers link to the other orders), with a form to
    /// upload files into it when `upload`.
    pub(crate) fn to_html(&self, title: &str, sort: Sort, upload: bool) -> String {
        let title = html_escape(title);
        let (by_name, by_size, by_time) = (
            sort.link(SortKey::Name),
            sort.link(SortKey::Size),
            sort.link(SortKey::Modified),
        );
        let mut page = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width\">\
             <title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n\
             <table><thead><tr><th><a href=\"{by_name}\">Name</a></th>\
             <th><a href=\"{by_size}\">Size</a></th>\
             <th><a href=\"{by_time}\">Modified (UTC)</a></th></tr></thead><tbody>\n"
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
        if upload {
            page.push_str(
                "<form method=\"post\" enctype=\"multipart/form-data\">\
                 <input type=\"file\" name=\"file\" multiple> \
                 <button type=\"submit\">Upload</button></form>\n",
            );
        }
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

    fn entry(name: &str, kind: &'static str, size: u64, mtime: u64) -> ListedEntry {
        ListedEntry {
            name: name.into(),
            kind,
            size,
            mtime,
        }
    }

    #[test]
    fn a_listing_sorts_by_the_query_with_directories_first() {
        let mut listing = Listing {
            entries: vec![
                entry("b", "file", 1, 30),
                entry("a", "file", 3, 10),
                entry("z", "dir", 0, 0),
                entry("c", "file", 2, 20),
            ],
            truncated: false,
        };
        let names = |l: &Listing| l.entries.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        listing.sort(Sort::from_query(Some("sort=size&order=desc")));
        assert_eq!(names(&listing), ["z", "a", "c", "b"]);
        listing.sort(Sort::from_query(Some("sort=mtime")));
        assert_eq!(names(&listing), ["z", "a", "c", "b"]);
        listing.sort(Sort::from_query(Some("order=desc")));
        assert_eq!(names(&listing), ["z", "c", "b", "a"]);
        listing.sort(Sort::from_query(Some("sort=<x>")));
        assert_eq!(names(&listing), ["z", "a", "b", "c"]);
        let html = listing.to_html("/", Sort::from_query(Some("sort=size")), false);
        assert!(
            html.contains("href=\"?sort=size&amp;order=desc\""),
            "{html}"
        );
        assert!(html.contains("href=\"?sort=name&amp;order=asc\""), "{html}");
    }

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
        let html = listing.to_html("/d/", Sort::default(), false);
        assert!(html.contains("&lt;b&gt; #?%é.txt"), "{html}");
        assert!(
            html.contains("href=\"./%3Cb%3E%20%23%3F%25%C3%A9.txt\""),
            "{html}"
        );
        assert!(!html.contains("<b>"));
    }
}
