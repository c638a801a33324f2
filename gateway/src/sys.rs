//! Every call into the operating system (and the allocator) that needs `unsafe`, each block
//! with its reason, plus the open-file limits (through the `rlimit` crate).

use bytes::BytesMut;
use mio::net::TcpStream;
use std::io;
use std::os::fd::AsRawFd;

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
        // SAFETY: `spare` is writable memory of at least `want` bytes owned by `buf`; read(2)
        // writes at most `want` bytes into it through a raw pointer (no reference to
        // uninitialised memory is formed), and we mark as initialised only the `n` bytes the
        // kernel reports written.
        let n = unsafe { libc::read(stream.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
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

    #[test]
    fn the_file_limit_is_raised_to_the_hard_limit() {
        let raised = raise_file_limit();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!(raised, soft);
        assert_eq!(soft, hard);
        assert_eq!(open_file_limit(), soft);
    }
}
