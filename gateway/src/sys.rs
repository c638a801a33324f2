//! Every call into the operating system (and the allocator) that needs `unsafe`, each block
//! with its reason, plus the open-file limits (through the `rlimit` crate).

use bytes::BytesMut;
use mio::net::TcpStream;
use std::alloc::{GlobalAlloc, Layout};
use std::io;
use std::os::fd::AsRawFd;
use std::ptr;

/// The global allocator of the `wsgate` binary: mimalloc, except for blocks of
/// `LARGE_BLOCK` bytes and more (the buffers of large messages), which are mapped from the
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
///   message was gone. Except for a few spares (`SPARE_BYTES` together): freed blocks kept
///   for the next large buffer, whose pages are resident already (a fresh mapping is faulted
///   in page by page: echoing 32 MiB messages one after another took twice the CPU without
///   them). `release_free_memory` unmaps them.
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

/// Freed large blocks kept for reuse, at most this many bytes together.
const SPARE_BYTES: usize = 64 << 20;

/// Freed large blocks kept for reuse, their pages resident: (address, length) of page-aligned
/// ranges of our mappings that nothing uses.
struct Spares {
    blocks: [Option<(usize, usize)>; 4],
}

impl Spares {
    /// Takes the smallest spare of at least `len` bytes.
    fn take_fit(&mut self, len: usize) -> Option<(usize, usize)> {
        let i = (0..self.blocks.len())
            .filter_map(|i| Some((i, self.blocks[i]?.1)))
            .filter(|&(_, have)| have >= len)
            .min_by_key(|&(_, have)| have)?
            .0;
        self.blocks[i].take()
    }

    /// Takes the spare that starts at `addr`, when it has at least `len` bytes.
    fn take_at(&mut self, addr: usize, len: usize) -> Option<usize> {
        let slot = self
            .blocks
            .iter_mut()
            .find(|b| matches!(b, Some((a, have)) if *a == addr && *have >= len))?;
        slot.take().map(|(_, have)| have)
    }

    /// Keeps a free range, when there is room; false: the caller unmaps it.
    fn keep(&mut self, addr: usize, len: usize) -> bool {
        let kept: usize = self.blocks.iter().flatten().map(|b| b.1).sum();
        if kept + len > SPARE_BYTES {
            return false;
        }
        match self.blocks.iter_mut().find(|b| b.is_none()) {
            Some(slot) => {
                *slot = Some((addr, len));
                true
            }
            None => false,
        }
    }
}

/// The spares of the process (large blocks are rare: a lock is cheap next to a mapping).
static SPARES: std::sync::Mutex<Spares> = std::sync::Mutex::new(Spares { blocks: [None; 4] });

fn spares() -> std::sync::MutexGuard<'static, Spares> {
    SPARES.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free range of our mappings (`len` > 0, page-aligned): kept as a spare when there is
/// room, else unmapped.
#[allow(unsafe_code)]
fn release_range(addr: usize, len: usize) {
    if len == 0 || spares().keep(addr, len) {
        return;
    }
    // SAFETY: the range is ours and nothing uses it (munmap of part of a mapping leaves the
    // rest mapped).
    unsafe { libc::munmap(ptr::with_exposed_provenance_mut::<libc::c_void>(addr), len) };
}

/// A large block of `len` bytes (a multiple of the page) whose contents do not matter: the
/// start of a spare when one is large enough (its pages are resident already: a fresh
/// mapping is faulted in page by page), else a new mapping. Null when the kernel refuses.
fn large_block(len: usize) -> *mut u8 {
    let spare = spares().take_fit(len);
    if let Some((addr, have)) = spare {
        release_range(addr + len, have - len);
        return ptr::with_exposed_provenance_mut(addr);
    }
    map_large(len)
}

/// Gives back a large block of `len` bytes (a multiple of the page).
fn free_large(p: *mut u8, len: usize) {
    release_range(p.expose_provenance(), len);
}

/// Grows or shrinks a large block at `p` from `old` to `new` bytes (multiples of the page),
/// keeping its contents without copying them: into the spare right after it, or in place
/// when the addresses after it are free, or onto a spare large enough (its pages move there),
/// or else to new addresses (its page tables move). Null when the kernel refuses (the block
/// is then as it was).
#[allow(unsafe_code)]
fn remap_large(p: *mut u8, old: usize, new: usize) -> *mut u8 {
    let addr = p.expose_provenance();
    if new <= old {
        release_range(addr + new, old - new);
        return p;
    }
    let adjacent = spares().take_at(addr + old, new - old);
    if let Some(have) = adjacent {
        release_range(addr + new, old + have - new);
        return p;
    }
    // SAFETY: without MREMAP_MAYMOVE the mapping only grows where it is, into addresses that
    // are free (else the call fails and changes nothing).
    if unsafe { libc::mremap(p.cast(), old, new, 0) } != libc::MAP_FAILED {
        return p;
    }
    let spare = spares().take_fit(new);
    if let Some((to, have)) = spare {
        let q = ptr::with_exposed_provenance_mut::<u8>(to);
        // SAFETY: `p` is `old` bytes of ours, the spare `have` >= `new` > `old` bytes of ours
        // that nothing uses (they cannot overlap: the block is in use): MREMAP_FIXED moves
        // the block's pages over the start of the spare, whose own pages there are unmapped.
        let moved = unsafe {
            libc::mremap(
                p.cast(),
                old,
                old,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                q.cast::<libc::c_void>(),
            )
        };
        if moved != libc::MAP_FAILED {
            release_range(to + new, have - new);
            return q;
        }
        release_range(to, have);
    }
    // SAFETY: `p` is the start of `old` bytes of ours that only the caller uses; on success
    // they are unmapped (their pages now at the result), on failure left as they were.
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
            large_block(mapped_len(layout.size()))
        } else {
            // SAFETY: the caller's contract (a layout of non-zero size) is passed on.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout) {
            // a fresh anonymous mapping reads as zeroes (a spare would need them written)
            map_large(mapped_len(layout.size()))
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if is_large(layout) {
            free_large(p, mapped_len(layout.size()));
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
            (true, true) => {
                let q = remap_large(p, mapped_len(layout.size()), mapped_len(new_size));
                if !q.is_null() {
                    return q;
                }
                // a block that spans two of our mappings (grown into a spare next to it that
                // came from another) cannot be remapped: it is copied, as a last resort
            }
            // SAFETY: a block of mimalloc's that stays one.
            (false, false) => return unsafe { mimalloc::MiMalloc.realloc(p, layout, new_size) },
            _ => {}
        }
        // SAFETY: a new block of the new layout; the old one's first bytes (as many as both
        // hold) are copied into it (two blocks in use do not overlap), then the old one is
        // freed with its own layout. On failure the old block is left as it was. mi_collect
        // has no preconditions.
        unsafe {
            let q = self.alloc(new_layout);
            if !q.is_null() {
                ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
                if !is_large(layout) {
                    // a buffer that grew out of mimalloc: the blocks it outgrew on the way
                    // (4 MiB, 2, 1, ...) are free but resident until mimalloc purges them;
                    // they go now rather than sit next to the message (8 MiB of a 64 MiB
                    // message assembled from fragments)
                    libmimalloc_sys::mi_collect(true);
                }
            }
            q
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
/// The spare large blocks ([`Allocator`]) are unmapped too.
#[allow(unsafe_code)]
pub(crate) fn release_free_memory() {
    // SAFETY: mi_collect has no preconditions; it trims the calling thread's heap and the
    // shared arenas, which mimalloc synchronises itself.
    unsafe { libmimalloc_sys::mi_collect(true) }
    let blocks = std::mem::take(&mut spares().blocks);
    for (addr, len) in blocks.into_iter().flatten() {
        // SAFETY: a spare is a whole mapping of ours that nothing uses; it was taken out of
        // the spares, so nobody else can take it.
        unsafe { libc::munmap(ptr::with_exposed_provenance_mut::<u8>(addr).cast(), len) };
    }
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

/// Whether `ring` completes a `MSG_DONTWAIT` send to a full socket within the submission,
/// with `EAGAIN`, rather than parking it until the socket has room: [`ring_send`] relies on
/// it (it waits for every completion). Tried on a socket pair filled first.
#[allow(unsafe_code)]
pub(crate) fn ring_send_never_waits(ring: &mut io_uring::IoUring) -> io::Result<bool> {
    use io_uring::{opcode, types};
    use std::io::Write;
    /// What the probe sends: static, as a parked entry would outlive this call (until the
    /// caller drops the ring).
    static PROBE: [u8; 1] = [0];
    let (mut full, _peer) = std::os::unix::net::UnixStream::pair()?;
    full.set_nonblocking(true)?;
    let chunk = [0u8; 16 * 1024];
    while full.write(&chunk).is_ok() {}
    let entry = opcode::Send::new(types::Fd(full.as_raw_fd()), PROBE.as_ptr(), 1)
        .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        .build()
        .user_data(0);
    // SAFETY: the entry points into a static; the socket it names outlives the submission,
    // and an entry left parked ends with the ring, which the caller then drops.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    ring.submit()?;
    let result = ring.completion().next().map(|cqe| cqe.result());
    Ok(result == Some(-libc::EAGAIN))
}

/// Sends, through `ring`, `sends(i)` (a socket and the bytes for it) for each `i` below
/// `results.len()` (at most the ring's size): one `send` entry each
/// (`MSG_DONTWAIT | MSG_NOSIGNAL`), submitted together, and puts each completion's result in
/// `results[i]`. An error means the ring failed (not a socket: those are results): the entries
/// whose results are not in were never sent, and the ring must not be used again.
#[allow(unsafe_code)]
pub(crate) fn ring_send<'a>(
    ring: &mut io_uring::IoUring,
    sends: impl Fn(usize) -> (std::os::fd::RawFd, &'a [u8]),
    results: &mut [io::Result<usize>],
) -> io::Result<()> {
    use io_uring::{opcode, types};
    let count = results.len();
    {
        let mut sq = ring.submission();
        for i in 0..count {
            let (fd, bytes) = sends(i);
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            let entry = opcode::Send::new(types::Fd(fd), bytes.as_ptr(), len)
                .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                .build()
                .user_data(i as u64);
            // SAFETY: the entry points into `bytes`, borrowed for 'a, past this call: every entry
            // completes before it returns. Each send is MSG_DONTWAIT, which io_uring completes
            // within the submission (taken, a part, or EAGAIN; never parked for later), and the
            // loop below waits for each completion. On a failed ring, entries not submitted
            // are dropped with it (the caller drops the ring), never submitted later.
            unsafe { sq.push(&entry) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
    }
    let mut done = 0;
    while done < count {
        let waited = ring.submit_and_wait(count - done);
        for cqe in ring.completion() {
            let r = cqe.result();
            results[cqe.user_data() as usize] = if r >= 0 {
                Ok(r as usize)
            } else {
                Err(io::Error::from_raw_os_error(-r))
            };
            done += 1;
        }
        if let Err(e) = waited
            && !matches!(
                e.raw_os_error(),
                Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
            )
            && done < count
        {
            return Err(e);
        }
    }
    Ok(())
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

    /// The tests that use the process's spares take turns.
    static SPARES_IN_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A freed large block is reused, resident: the next large buffer starts in it and grows
    /// into the rest of it, without a page to fault in.
    #[test]
    #[allow(unsafe_code)]
    fn freed_blocks_are_reused_warm() {
        let _turn = SPARES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
        release_free_memory();
        let big = Layout::from_size_align(32 << 20, 1).unwrap();
        // SAFETY: layouts of non-zero size; every block is written before it is read and
        // freed with its layout.
        unsafe {
            let p = Allocator.alloc(big);
            ptr::write_bytes(p, 1, big.size());
            Allocator.dealloc(p, big);
            let small = Layout::from_size_align(LARGE_BLOCK, 1).unwrap();
            let q = Allocator.alloc(small);
            assert_eq!(q, p, "the spare's start");
            ptr::write_bytes(q, 2, small.size());
            let r = Allocator.realloc(q, small, big.size());
            assert_eq!(r, p, "grown into the rest of the spare, where it is");
            assert!(
                resident_pages(r, big.size()).iter().all(|&r| r),
                "all resident"
            );
            let block = std::slice::from_raw_parts(r, big.size());
            assert!(block[..LARGE_BLOCK].iter().all(|&b| b == 2), "kept");
            Allocator.dealloc(r, big);
        }
        release_free_memory();
    }

    /// Random allocations, reallocations (growing and shrinking, across the large-block
    /// threshold both ways) and frees through [`Allocator`] keep every byte, as a `Vec` (the
    /// safe version, on the test's allocator) does for the same steps.
    #[test]
    #[allow(unsafe_code)]
    fn the_allocator_keeps_contents_like_a_vec() {
        let _turn = SPARES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
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

    /// A large block costs only the pages written: a new mapping for a whole message is
    /// resident as its bytes arrive, and growing it (mremap) keeps what was written, resident,
    /// without making the new room so. (The mappings themselves, not through [`Allocator`],
    /// whose spares, freed by other tests, are resident.)
    #[test]
    #[allow(unsafe_code)]
    fn a_large_block_is_resident_only_where_written() {
        let size = 16 << 20;
        let p = map_large(size);
        assert!(!p.is_null());
        assert!(
            resident_pages(p, size).iter().all(|r| !r),
            "nothing written yet"
        );
        // SAFETY: the first MiB of the mapping.
        unsafe { ptr::write_bytes(p, 0xab, 1 << 20) };
        let resident = resident_pages(p, size);
        assert!(resident[..256].iter().all(|&r| r) && resident[256..].iter().all(|&r| !r));
        let q = remap_large(p, size, 64 << 20);
        assert!(!q.is_null());
        let resident = resident_pages(q, 64 << 20);
        assert!(resident[..256].iter().all(|&r| r) && resident[256..].iter().all(|&r| !r));
        // SAFETY: the first MiB, written above, moved with the mapping.
        assert!(
            unsafe { std::slice::from_raw_parts(q, 1 << 20) }
                .iter()
                .all(|&b| b == 0xab)
        );
        // SAFETY: the whole mapping, which nothing else uses.
        unsafe { libc::munmap(q.cast(), 64 << 20) };
    }

    /// Spares: the smallest that fits is taken, or the one right after a block; at most four
    /// and SPARE_BYTES together are kept.
    #[test]
    fn spares_are_taken_by_best_fit_and_bounded() {
        let mut s = Spares { blocks: [None; 4] };
        let mib = 1 << 20;
        assert_eq!(s.take_fit(4 * mib), None);
        assert!(s.keep(1, 8 * mib) && s.keep(2, 32 * mib) && s.keep(3, 16 * mib));
        assert!(!s.keep(4, 16 * mib), "over SPARE_BYTES together");
        assert!(s.keep(4, 8 * mib));
        assert!(!s.keep(5, 4 * mib), "four at most");
        assert_eq!(
            s.take_fit(10 * mib),
            Some((3, 16 * mib)),
            "the smallest that fits"
        );
        assert_eq!(s.take_fit(100 * mib), None, "none that fits");
        assert_eq!(s.take_at(2, 40 * mib), None, "too short");
        assert_eq!(s.take_at(3, mib), None, "taken already");
        assert_eq!(
            s.take_at(2, 16 * mib),
            Some(32 * mib),
            "the one at that address"
        );
        assert_eq!(s.take_fit(mib).map(|b| b.1), Some(8 * mib));
        assert_eq!(s.take_fit(mib).map(|b| b.1), Some(8 * mib));
        assert_eq!(s.take_fit(mib), None);
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
