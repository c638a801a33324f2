//! [`SendMany`]: one buffer sent to many sockets with one system call, through an io_uring
//! submission of one `send` per socket, where the kernel allows io_uring; otherwise (an old
//! kernel, a seccomp filter, `io-uring = false`) the caller sends socket by socket.
//!
//! Every send is `MSG_DONTWAIT`: it completes within the submission (all taken, a part, or
//! `EAGAIN`), never parked in the kernel, so the buffer is borrowed only for the call and the
//! results mean what a `send(2)` on each socket would have returned.

use io_uring::IoUring;
use std::io;
use std::os::fd::RawFd;

/// Submission queue entries per ring; larger sets go in rounds of this many.
const RING_ENTRIES: u32 = 1024;

/// A worker's means of sending one buffer to many sockets at once. Made on first use, on the
/// thread that uses it (the ring is set up for a single issuer).
#[derive(Default)]
pub(crate) struct SendMany {
    state: State,
}

#[derive(Default)]
enum State {
    /// Not set up yet.
    #[default]
    Untried,
    Ready(Box<IoUring>),
    /// Turned off, or the kernel refused a ring: the caller sends one by one.
    Off,
}

impl std::fmt::Debug for SendMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Untried => "untried",
            State::Ready(_) => "io_uring",
            State::Off => "off",
        };
        f.debug_struct("SendMany").field("state", &state).finish()
    }
}

impl SendMany {
    /// Not set up: the first use tries to make a ring when `enabled`.
    pub(crate) fn new(enabled: bool) -> SendMany {
        SendMany {
            state: if enabled { State::Untried } else { State::Off },
        }
    }

    /// Whether sends can be made at once (sets the ring up on first call).
    pub(crate) fn available(&mut self) -> bool {
        if let State::Untried = self.state {
            self.state = match IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .build(RING_ENTRIES)
            {
                Ok(mut ring) => match crate::sys::ring_send_never_waits(&mut ring) {
                    Ok(true) => State::Ready(Box::new(ring)),
                    Ok(false) => {
                        tracing::info!(
                            "this kernel's io_uring parks a nonblocking send: sends go one by one"
                        );
                        State::Off
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "io_uring probe failed: sends go one by one");
                        State::Off
                    }
                },
                Err(e) => {
                    tracing::debug!(error = %e, "no io_uring: sends go one by one");
                    State::Off
                }
            };
        }
        matches!(self.state, State::Ready(_))
    }

    /// Sends `bytes` to each socket of `fds` (nonblocking, no `SIGPIPE`) and puts in `results`
    /// (cleared first), in the order of `fds`, what each took or the error it met. Call only
    /// after [`available`](Self::available) said yes; otherwise every result is an error.
    pub(crate) fn send_same(
        &mut self,
        bytes: &[u8],
        fds: &[RawFd],
        results: &mut Vec<io::Result<usize>>,
    ) {
        self.run(fds.len(), |i| (fds[i], bytes), results);
    }

    /// Sends each `(socket, bytes)` of `sends`, as [`send_same`](Self::send_same) does.
    pub(crate) fn send_each(
        &mut self,
        sends: &[(RawFd, &[u8])],
        results: &mut Vec<io::Result<usize>>,
    ) {
        self.run(sends.len(), |i| sends[i], results);
    }

    /// `count` sends, the `i`th being `send(i)`, in rounds of at most a ring's size.
    fn run<'a>(
        &mut self,
        count: usize,
        send: impl Fn(usize) -> (RawFd, &'a [u8]),
        results: &mut Vec<io::Result<usize>>,
    ) {
        results.clear();
        let State::Ready(ring) = &mut self.state else {
            results.extend((0..count).map(|_| Err(io::ErrorKind::Unsupported.into())));
            return;
        };
        let round = RING_ENTRIES as usize;
        for start in (0..count).step_by(round) {
            let end = count.min(start + round);
            results.extend((start..end).map(|_| Err(io::ErrorKind::WouldBlock.into())));
            if let Err(e) = crate::sys::ring_send(ring, |i| send(start + i), &mut results[start..])
            {
                // those not sent stay `WouldBlock`, for the caller's flush
                tracing::warn!(error = %e, "io_uring failed: sends go one by one");
                self.state = State::Off;
                results.extend((end..count).map(|_| Err(io::ErrorKind::WouldBlock.into())));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// A loopback pair: the sending end (nonblocking) and the peer's.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (s, peer)
    }

    /// A ring, or `None` (with a note) where the kernel refuses one.
    fn ring() -> Option<SendMany> {
        let mut s = SendMany::new(true);
        if s.available() {
            Some(s)
        } else {
            eprintln!("skipped: this kernel refuses io_uring");
            None
        }
    }

    #[test]
    fn each_socket_gets_the_bytes_or_says_why_not() {
        let Some(mut many) = ring() else { return };
        let ok = pair();
        let (full, full_peer) = pair();
        let mut filled = 0;
        while let Ok(n) = (&full).write(&[1u8; 65536]) {
            filled += n;
        }
        let (gone, gone_peer) = pair();
        socket2::SockRef::from(&gone_peer)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(gone_peer); // a reset: the send fails
        std::thread::sleep(std::time::Duration::from_millis(20));
        let fds = [ok.0.as_raw_fd(), full.as_raw_fd(), gone.as_raw_fd()];
        let mut results = Vec::new();
        many.send_same(b"hello", &fds, &mut results);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap(), &5);
        assert_eq!(
            results[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        let e = results[2].as_ref().unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
            "{e}"
        );
        let mut got = [0u8; 5];
        (&ok.1).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert!(filled > 0);
        drop(full_peer);
    }

    #[test]
    fn more_sockets_than_a_ring_holds_go_in_rounds() {
        let Some(mut many) = ring() else { return };
        let pairs: Vec<_> = (0..RING_ENTRIES as usize * 2 + 3).map(|_| pair()).collect();
        let fds: Vec<RawFd> = pairs.iter().map(|p| p.0.as_raw_fd()).collect();
        let mut results = Vec::new();
        for round in 0..3u8 {
            many.send_same(&[round; 3], &fds, &mut results);
            assert_eq!(results.len(), fds.len());
            assert!(results.iter().all(|r| matches!(r, Ok(3))));
        }
        for (_, mut peer) in pairs {
            let mut got = [0u8; 9];
            peer.read_exact(&mut got).unwrap();
            assert_eq!(got, [0, 0, 0, 1, 1, 1, 2, 2, 2], "in order, once each");
        }
    }

    #[test]
    fn turned_off_it_is_not_available_and_sends_nothing() {
        let mut many = SendMany::new(false);
        assert!(!many.available());
        let (s, peer) = pair();
        let mut results = Vec::new();
        many.send_same(b"x", &[s.as_raw_fd()], &mut results);
        assert!(results[0].is_err());
        peer.set_nonblocking(true).unwrap();
        assert!((&peer).read(&mut [0u8; 1]).is_err(), "nothing sent");
    }
}
