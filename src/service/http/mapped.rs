//! Kept files' contents in sealed memory files, so that a response's body can leave by
//! sendfile(2) from the page cache, as nginx sends a file, instead of being copied from user
//! memory into the socket.
//!
//! A kept file's bytes are written once into a memfd, which is then sealed (it can never be
//! written, shrunk or grown again) and mapped read-only; the [`Bytes`] the cache hands out
//! point into that mapping. The stream under hyper ([`super::conn::Parkable`]) looks up each
//! large slice hyper asks it to write: one that lies in a mapping is sent with sendfile from
//! the memfd at the same offset, which sends exactly the bytes the slice holds (they are the
//! same pages, and the seals keep them unchanged). Nothing depends on what hyper does with
//! a body: a slice from anywhere else is written as usual.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::RwLock;

use bytes::Bytes;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// Smallest kept file put in a memory file: below it a copy costs less than the extra
/// system call sending it apart from the response head does.
pub const MIN_MAPPED_BYTES: usize = 64 * 1024;

/// The mappings alive, by their first address: their length, and their memory file's
/// descriptor (owned by the [`Mapping`], which takes its entry out before closing it).
static MAPPINGS: RwLock<BTreeMap<usize, (usize, i32)>> = RwLock::new(BTreeMap::new());

/// A sealed memory file mapped read-only.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    file: OwnedFd,
}

// SAFETY: the mapping is read-only and never changes (the file is sealed against writes,
// shrinking and growth), so it may be read from any thread; it is unmapped only on drop.
unsafe impl Send for Mapping {}
// SAFETY: as above; nothing is ever written through it.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` is a live read-only mapping of `len` bytes until `self` is dropped,
        // and its contents never change (the seals forbid it).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if let Ok(mut mappings) = MAPPINGS.write() {
            mappings.remove(&(self.ptr.as_ptr() as usize));
        }
        // SAFETY: the mapping was made by `map` with this address and length, and no slice
        // of it outlives `self` (every `Bytes` of it holds `self`).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// `bytes` copied into a sealed memory file and mapped, or `None` when that fails (no
/// memfd, no sealing, no memory): the caller keeps its own copy then.
pub(crate) fn map(bytes: &[u8]) -> Option<Bytes> {
    let len = NonZeroUsize::new(bytes.len())?;
    let file = memfd_create(
        c"sockit-kept",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .ok()?;
    let mut rest = bytes;
    while !rest.is_empty() {
        match nix::unistd::write(&file, rest) {
            Ok(0) => return None,
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    let seals = SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).ok()?;
    // SAFETY: a fresh read-only shared mapping of a file no one can truncate (sealed): no
    // access to it can fault, and it aliases no Rust memory.
    let ptr = unsafe {
        mmap(
            None,
            len,
            ProtFlags::PROT_READ,
            MapFlags::MAP_SHARED,
            &file,
            0,
        )
    }
    .ok()?;
    let mapping = Mapping {
        ptr: ptr.cast(),
        len: len.get(),
        file,
    };
    let Ok(mut mappings) = MAPPINGS.write() else {
        return None;
    };
    mappings.insert(
        mapping.ptr.as_ptr() as usize,
        (mapping.len, mapping.file.as_raw_fd()),
    );
    drop(mappings);
    Some(Bytes::from_owner(mapping))
}

/// The memory file and offset holding `slice`, if it lies within one mapping.
///
/// The descriptor is borrowed for as long as `slice` is: the mapping (and its file) lives
/// at least that long, since `slice` is part of it.
pub(crate) fn find(slice: &[u8]) -> Option<(BorrowedFd<'_>, u64)> {
    let start = slice.as_ptr() as usize;
    let mappings = MAPPINGS.read().ok()?;
    let (&base, &(len, fd)) = mappings.range(..=start).next_back()?;
    let offset = start - base;
    if offset.checked_add(slice.len())? > len {
        return None;
    }
    // SAFETY: `fd` is the memory file of the mapping `slice` lies in; the mapping's owner
    // closes it only on drop, after `slice` (borrowed from it) is gone.
    let file = unsafe { BorrowedFd::borrow_raw(fd) };
    Some((file, offset as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_slice_of_a_mapping_is_found_at_its_offset_and_others_are_not() {
        let data: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let Some(mapped) = map(&data) else {
            eprintln!("skipped: this system has no sealed memfd");
            return;
        };
        assert_eq!(&mapped[..], &data[..]);
        let part = mapped.slice(1000..5000);
        let (file, offset) = find(&part).expect("a slice of the mapping");
        assert_eq!(offset, 1000);
        let file = std::fs::File::from(file.try_clone_to_owned().unwrap());
        let mut buf = vec![0u8; 4000];
        file.read_exact_at(&mut buf, 1000).unwrap();
        assert_eq!(buf, &data[1000..5000]);
        assert!(find(&data[..]).is_none(), "a copy is not the mapping");
        // The seals hold: the file cannot be written.
        assert!(file.write_at(b"x", 0).is_err());
        let base = mapped.as_ptr() as usize;
        drop((mapped, part));
        assert!(
            !MAPPINGS.read().unwrap().contains_key(&base),
            "still registered"
        );
    }
}
