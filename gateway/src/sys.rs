//! Every call into the operating system (and the allocator) that needs `unsafe`, each block
//! with its reason, plus the open-file limits (through the `rlimit` crate).

use bytes::BytesMut;
use mio::net::TcpStream;
use std::alloc::{GlobalAlloc, Layout};
use std::io;
use std::os::fd::AsRawFd;
use std::ptr;

/// The global allocator of the `wsgate` binary: mimalloc, except for blocks of
/// [`LARGE_BLOCK`] bytes and more (the buffers of large messages), which are mapped from the
/// kernel on their own, as glibc's malloc does past its mmap threshold:
///
/// - they grow with `mremap`, which moves page tables and never copies: a buffer that doubles
///   as a message arrives (a fragmented message, whose size nobody announces) never holds the
///   old and the new copy at once. mimalloc's `realloc` of a huge block allocates, copies and
///   frees, so the last doubling of a 256 MiB message held 384 MiB and copied 128 MiB;
/// - untouched pages of a reservation are not resident, so a buffer sized to a message's
///   announced length costs only what has arrived;
/// - freeing one unmaps it at once: mimalloc kept a freed 256 MiB block resident (its
///   segments are purged later, or reused), so the gateway stayed at its peak after the
///   message was gone.
///
/// They get 4 KiB pages, like the rest. Transparent huge pages (`MADV_HUGEPAGE` on these
/// blocks only) were measured and left out: on the project's VM (Firecracker, free page
/// reporting at order 9) a free 2 MiB block has been handed back to the host, so each huge
/// page is faulted in again by the host on first touch: 83% of the worker's time in
/// `clear_page_erms` and 1.5-3x the CPU of 4 KiB pages for a 256 MiB echo.
pub struct Allocator;

/// The smallest block mapped on its own rather than taken from mimalloc.
pub(crate) const LARGE_BLOCK: usize = 4 << 20;
/// The kernel's page.
const PAGE: usize = 4 << 10;

/// Whether a block of this layout is mapped on its own.
fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE_BLOCK && layout.align() <= PAGE
}

/// The bytes mapped for a large block of `size` bytes (`size` <= isize::MAX: no overflow).
fn mapped_len(size: usize) -> usize {
    size.next_multiple_of(PAGE)
}

/// Maps `len` bytes of zeroed memory (a multiple of the page); null when the kernel refuses.
#[allow(unsafe_code)]
fn map_large(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address the kernel picks touches no memory
    // of ours; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Grows or shrinks the mapping of a large block from `old` to `new` bytes (multiples of the
/// page), keeping its contents without copying them: in place when the addresses after it
/// are free, else its page tables move to new addresses. Null when the kernel refuses (the
/// old mapping is then untouched).
#[allow(unsafe_code)]
fn remap_large(p: *mut u8, old: usize, new: usize) -> *mut u8 {
    // SAFETY: `p` is the start of a mapping of `old` bytes that only the caller uses; on
    // success it is unmapped (its pages now at the result), on failure it is left as it was.
    let q = unsafe { libc::mremap(p.cast(), old, new, libc::MREMAP_MAYMOVE) };
    if q == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        q.cast()
    }
}

#[allow(unsafe_code)]
// SAFETY: every block is either mimalloc's (its layout is not large, and mimalloc's own
// GlobalAlloc gets it back with the same layout) or a mapping of exactly
// `mapped_len(size)` bytes made for it, which only its owner uses; `realloc` keeps a block on
// the side its new layout names, copying across when it changes side.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            map_large(mapped_len(layout.size()))
        } else {
            // SAFETY: the caller's contract (a layout of non-zero size) is passed on.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            // a fresh anonymous mapping reads as zeroes
            map_large(mapped_len(layout.size()))
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if is_large(layout) {
            // SAFETY: `p` is the start of the mapping made for this block, of this length.
            unsafe { libc::munmap(p.cast(), mapped_len(layout.size())) };
        } else {
            // SAFETY: a block of mimalloc's, given back with its layout.
            unsafe { mimalloc::MiMalloc.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with the old alignment makes a valid
        // layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_large(layout), is_large(new_layout)) {
            (true, true) => remap_large(p, mapped_len(layout.size()), mapped_len(new_size)),
            // SAFETY: a block of mimalloc's that stays one.
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(p, layout, new_size) },
            _ => {
                // SAFETY: a new block of the new layout; the old one's first bytes (as many
                // as both hold) are copied into it, then the old one is freed with its own
                // layout. On failure the old block is left as it was.
                unsafe {
                    let q = self.alloc(new_layout);
                    if !q.is_null() {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        self.dealloc(p, layout);
                    }
                    q
                }
            }
        }
    }
}

/// Reads from `stream` into the spare capacity of `buf` (at most `max` bytes), without zeroing
/// that capacity first. Returns the bytes read; 0 means the peer closed.
#[allow(unsafe_code)]
pub(crate) fn read_into(stream: &TcpStream, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    if buf.capacity() - buf.len() < max {
        buf.reserve(max);
    }
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    loop {
        // recv(2), not read(2): the socket call skips the file layer's checks (vfs_read,
        // fdget_pos: about 2% of an echo's CPU in perf).
        // SAFETY: `spare` is writable memory of at least `want` bytes owned by `buf`; recv(2)
        // writes at most `want` bytes into it through a raw pointer (no reference to
        // uninitialised memory is formed), and we mark as initialised only the `n` bytes the
        // kernel reports written.
        let n = unsafe { libc::recv(stream.as_raw_fd(), spare.as_mut_ptr().cast(), want, 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let n = n as usize;
        // SAFETY: the kernel initialised `n <= want` bytes right after the current length.
        unsafe { buf.set_len(buf.len() + n) };
        return Ok(n);
    }
}

/// Returns free memory to the operating system now.
///
/// mimalloc gives the pages of freed memory back lazily, on later allocations by the same
/// thread. A worker that has just closed many connections and then goes quiet would keep that
/// memory resident; it calls this a moment after connections close. This is mimalloc's
/// `mi_collect(force)`: the calling thread's free pages, and every purge that would otherwise
/// wait for its delay to pass.
#[allow(unsafe_code)]
pub(crate) fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; it trims the calling thread's heap and the
    // shared arenas, which mimalloc synchronises itself.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Raises the process's open-file soft limit to its hard limit (each connection is a file).
/// Returns the limit now in force.
pub fn raise_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|_| open_file_limit())
}

/// The process's open-file limit (its soft limit), which bounds the connections it can hold.
pub(crate) fn open_file_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn pair() -> (TcpStream, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (TcpStream::from_std(server), client)
    }

    /// `read_into` gives exactly what the safe `Read::read` into a zeroed buffer gives, for
    /// random payloads and random read sizes.
    #[test]
    fn read_into_matches_safe_read() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let len = (rand() % 200_000) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            let (fast, mut client) = pair();
            let (slow, mut client2) = pair();
            client.write_all(&payload).unwrap();
            client2.write_all(&payload).unwrap();
            drop(client);
            drop(client2);
            let mut a = BytesMut::new();
            let mut b = Vec::new();
            let mut slow = slow;
            loop {
                let max = 1 + (rand() % 70_000) as usize;
                match read_into(&fast, &mut a, max) {
                    Ok(0) => break,
                    Ok(n) => assert!(n <= max),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            loop {
                let mut chunk = vec![0u8; 1 + (rand() % 70_000) as usize];
                match slow.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => b.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(&a[..], &payload[..]);
            assert_eq!(b, payload);
        }
    }

    /// Which pages of `[p, p + len)` are resident (mincore(2)).
    #[allow(unsafe_code)]
    fn resident_pages(p: *mut u8, len: usize) -> Vec<bool> {
        let mut v = vec![0u8; len.div_ceil(PAGE)];
        // SAFETY: `[p, p + len)` is a mapping of the test's; `v` has a byte per page.
        let r = unsafe { libc::mincore(p.cast(), len, v.as_mut_ptr().cast()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        v.into_iter().map(|b| b & 1 == 1).collect()
    }

    /// Fills `v[from..]` with a byte of `seed`, and marks every 4 KiB of it with its offset.
    fn fill(v: &mut [u8], from: usize, seed: u64) {
        v[from..].fill(seed as u8);
        for at in (from..v.len().saturating_sub(8)).step_by(4096) {
            v[at..at + 8].copy_from_slice(&(at as u64 ^ seed).to_le_bytes());
        }
    }

    /// Random allocations, reallocations (growing and shrinking, across the large-block
    /// threshold both ways) and frees through [`Allocator`] keep every byte, as a `Vec` (the
    /// safe version, on the test's allocator) does for the same steps.
    #[test]
    #[allow(unsafe_code)]
    fn the_allocator_keeps_contents_like_a_vec() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let sizes = [
            1,
            100,
            4096,
            100_000,
            LARGE_BLOCK - 1,
            LARGE_BLOCK,
            LARGE_BLOCK + 1,
            LARGE_BLOCK + 5000,
            3 * LARGE_BLOCK,
            7 * LARGE_BLOCK + 123,
        ];
        for round in 0..40 {
            let align = [1, 8, 64, PAGE][round % 4];
            let mut size = sizes[rand() as usize % sizes.len()];
            let layout = Layout::from_size_align(size, align).unwrap();
            let zeroed = round % 3 == 0;
            // SAFETY: a layout of non-zero size.
            let mut p = unsafe {
                if zeroed {
                    Allocator.alloc_zeroed(layout)
                } else {
                    Allocator.alloc(layout)
                }
            };
            assert!(!p.is_null());
            assert_eq!(p.addr() % align, 0, "aligned");
            let mut model: Vec<u8> = vec![0; size];
            fill(&mut model, 0, round as u64);
            // SAFETY: `p` holds `size` bytes, written before they are read (or zeroed).
            let block = unsafe { std::slice::from_raw_parts_mut(p, size) };
            if zeroed {
                assert!(block.iter().all(|&b| b == 0), "zeroed");
            }
            block.copy_from_slice(&model);
            for step in 0..4 {
                let new = sizes[rand() as usize % sizes.len()];
                let old = Layout::from_size_align(size, align).unwrap();
                // SAFETY: `p` is a live block of layout `old`; `new` with `align` is a layout.
                p = unsafe { Allocator.realloc(p, old, new) };
                assert!(!p.is_null());
                assert_eq!(p.addr() % align, 0, "aligned after realloc");
                model.resize(new, 0);
                // SAFETY: `p` holds `new` bytes; the first min(size, new) were kept, the rest
                // is written before it is read.
                let block = unsafe { std::slice::from_raw_parts_mut(p, new) };
                let kept = size.min(new);
                assert!(block[..kept] == model[..kept], "round {round} step {step}");
                fill(&mut model, kept, rand());
                block[kept..].copy_from_slice(&model[kept..]);
                size = new;
            }
            // SAFETY: the live block of this layout.
            unsafe { Allocator.dealloc(p, Layout::from_size_align(size, align).unwrap()) };
        }
    }

    /// A large block costs only the pages written: a reservation for a whole message is
    /// resident as its bytes arrive, and growing it (mremap) keeps what was written resident
    /// without making the new room so.
    #[test]
    #[allow(unsafe_code)]
    fn a_large_block_is_resident_only_where_written() {
        let size = 16 << 20;
        let layout = Layout::from_size_align(size, 1).unwrap();
        // SAFETY: a layout of non-zero size.
        let p = unsafe { Allocator.alloc(layout) };
        assert!(!p.is_null());
        assert!(
            resident_pages(p, size).iter().all(|r| !r),
            "nothing written yet"
        );
        // SAFETY: the first MiB of the block.
        unsafe { ptr::write_bytes(p, 0xab, 1 << 20) };
        let resident = resident_pages(p, size);
        assert!(resident[..256].iter().all(|&r| r) && resident[256..].iter().all(|&r| !r));
        // SAFETY: `p` is live with `layout`; 64 MiB with alignment 1 is a layout.
        let q = unsafe { Allocator.realloc(p, layout, 64 << 20) };
        assert!(!q.is_null());
        let resident = resident_pages(q, 64 << 20);
        assert!(resident[..256].iter().all(|&r| r) && resident[256..].iter().all(|&r| !r));
        // SAFETY: the first MiB, written above, moved with the block.
        assert!(
            unsafe { std::slice::from_raw_parts(q, 1 << 20) }
                .iter()
                .all(|&b| b == 0xab)
        );
        // SAFETY: the live block.
        unsafe { Allocator.dealloc(q, Layout::from_size_align(64 << 20, 1).unwrap()) };
    }

    #[test]
    fn the_file_limit_is_raised_to_the_hard_limit() {
        let raised = raise_file_limit();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!(raised, soft);
        assert_eq!(soft, hard);
        assert_eq!(open_file_limit(), soft);
    }
}
