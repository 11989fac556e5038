//! Files and directories opened relative to the root directory's handle, never by a path
//! from `/`: a symlink is followed only while it stays below the root and lands on visible
//! names (Linux `openat2` with `RESOLVE_BENEATH`, checked in the kernel, so nothing can be
//! swapped between a check and the open); where `openat2` is missing none is followed.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

use super::path::is_hidden;

/// What a path below the root is, opened.
#[derive(Debug)]
pub(crate) enum Node {
    /// A regular file and its status.
    File(File, FileStat),
    /// A directory.
    Dir(OwnedFd),
}

/// The served directory's handle.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    /// The root as the kernel names it, to tell where a followed symlink landed.
    path: PathBuf,
    show_hidden: bool,
    /// Set once `openat2` answered `ENOSYS` (an old kernel or a sandbox refusing it).
    no_openat2: AtomicBool,
}

/// The components joined into one path relative to the root (`.` for the root itself).
pub(crate) fn rel_path(parts: &[&str]) -> String {
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// Flags of every open: read only, and a fifo must not wait for a writer.
fn read_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY
}

impl Root {
    /// Opens the root directory (the user's own path: a symlink there is their choice).
    ///
    /// # Errors
    /// It cannot be opened or is not a directory.
    pub(crate) fn open(root: &Path, show_hidden: bool) -> io::Result<Root> {
        let path = std::fs::canonicalize(root)?;
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root {
            fd,
            path,
            show_hidden,
            no_openat2: AtomicBool::new(false),
        })
    }

    /// Opens `parts` (decoded, checked components) below the root: `None` when missing,
    /// neither a file nor a directory, or reached through a symlink leading out of the root
    /// or onto a hidden name.
    pub(crate) fn open_at(&self, parts: &[&str]) -> Option<Node> {
        self.open_rel(&rel_path(parts), parts).map(|(node, _)| node)
    }

    /// [`Root::open_at`] with `rel` the components joined; also says whether the path was
    /// resolved without following any symlink.
    pub(crate) fn open_rel(&self, rel: &str, parts: &[&str]) -> Option<(Node, bool)> {
        let (fd, direct) = self.open_fd(rel, parts)?;
        let st = fstat(&fd).ok()?;
        let node = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => Node::File(File::from(fd), st),
            SFlag::S_IFDIR => Node::Dir(fd),
            _ => return None,
        };
        Some((node, direct))
    }

    /// The status of what `rel` names below the root, the last component not followed if
    /// it is a symlink (for checking a kept file, see `cache.rs`).
    pub(crate) fn stat_rel(&self, rel: &str) -> Option<FileStat> {
        fstatat(&self.fd, rel, AtFlags::AT_SYMLINK_NOFOLLOW).ok()
    }

    /// The opened descriptor, and whether no symlink was followed to it.
    #[cfg(target_os = "linux")]
    fn open_fd(&self, rel: &str, parts: &[&str]) -> Option<(OwnedFd, bool)> {
        use nix::fcntl::{openat2, OpenHow, ResolveFlag};
        if self.no_openat2.load(Ordering::Relaxed) {
            return self.walk(parts).map(|fd| (fd, true));
        }
        // Most paths hold no symlink: the first try follows none, and needs no check after.
        let how = OpenHow::new()
            .flags(read_flags())
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        match openat2(&self.fd, rel, how) {
            Ok(fd) => Some((fd, true)),
            Err(Errno::ELOOP) => {
                let how = OpenHow::new()
                    .flags(read_flags())
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
                let fd = openat2(&self.fd, rel, how).ok()?;
                self.lands_visible(&fd).then_some((fd, false))
            }
            Err(Errno::ENOSYS) => {
                self.no_openat2.store(true, Ordering::Relaxed);
                self.walk(parts).map(|fd| (fd, true))
            }
            Err(_) => None,
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn open_fd(&self, _rel: &str, parts: &[&str]) -> Option<(OwnedFd, bool)> {
        self.walk(parts).map(|fd| (fd, true))
    }

    /// One component at a time with `O_NOFOLLOW`: no symlink is followed at all.
    fn walk(&self, parts: &[&str]) -> Option<OwnedFd> {
        let mut fd = self.fd.try_clone().ok()?;
        for (i, part) in parts.iter().enumerate() {
            let mut flags = read_flags() | OFlag::O_NOFOLLOW;
            if i + 1 < parts.len() {
                flags |= OFlag::O_DIRECTORY;
            }
            fd = openat(&fd, *part, flags, Mode::empty()).ok()?;
        }
        Some(fd)
    }

    /// Whether an opened `fd` lies below the root on visible names, as the kernel names it.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn lands_visible(&self, fd: &impl AsFd) -> bool {
        let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
        let Ok(target) = std::fs::read_link(link) else {
            return false;
        };
        target.strip_prefix(&self.path).is_ok_and(|below| {
            !below
                .components()
                .any(|c| is_hidden(&c.as_os_str().to_string_lossy(), self.show_hidden))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn kind(root: &Root, parts: &[&str]) -> Option<&'static str> {
        root.open_at(parts).map(|n| match n {
            Node::File(..) => "file",
            Node::Dir(_) => "dir",
        })
    }

    #[test]
    fn symlinks_are_followed_only_while_they_stay_inside_on_visible_names() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a"), "a").unwrap();
        std::fs::write(d.join(".hidden"), "h").unwrap();
        symlink("sub/a", d.join("rel-inside")).unwrap();
        symlink("../sub", d.join("sub/up-and-back")).unwrap();
        symlink(outside.path().join("secret"), d.join("abs-outside")).unwrap();
        symlink("../../../../../../etc", d.join("etc")).unwrap();
        symlink("/etc/passwd", d.join("passwd")).unwrap();
        symlink(".hidden", d.join("to-hidden")).unwrap();
        let root = Root::open(d, false).unwrap();
        assert_eq!(kind(&root, &[]), Some("dir"));
        assert_eq!(kind(&root, &["sub", "a"]), Some("file"));
        assert_eq!(kind(&root, &["rel-inside"]), Some("file"));
        assert_eq!(kind(&root, &["sub", "up-and-back", "a"]), Some("file"));
        assert_eq!(kind(&root, &["abs-outside"]), None);
        assert_eq!(kind(&root, &["etc"]), None);
        assert_eq!(kind(&root, &["etc", "passwd"]), None);
        assert_eq!(kind(&root, &["passwd"]), None);
        assert_eq!(kind(&root, &["to-hidden"]), None);
        assert_eq!(kind(&root, &["missing"]), None);
        // A fifo is neither a file nor a directory, and opening it does not wait.
        nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        assert_eq!(kind(&root, &["fifo"]), None);
    }

    #[test]
    fn the_fallback_walk_follows_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "a").unwrap();
        symlink("a", dir.path().join("link")).unwrap();
        let root = Root::open(dir.path(), false).unwrap();
        root.no_openat2.store(true, Ordering::Relaxed);
        assert_eq!(kind(&root, &["a"]), Some("file"));
        assert_eq!(kind(&root, &["link"]), None);
    }
}
