//! The raw TCP baseline of `loadtest echo --raw-tcp` ([`echo`]) and `loadtest large --raw-tcp`
//! ([`large`]): the same bytes a WebSocket run sends, without WebSocket framing, to a TCP echo
//! server such as `loadtest tcp-echo-server`. What a WebSocket server adds to the cost of moving
//! the bytes is the difference between the two runs.
//!
//! The client does what the WebSocket client does around the framing: non-blocking sockets on
//! one `mio::Poll` per thread, Nagle off, reads through a thread's 256 KiB scratch buffer, and
//! every echoed byte checked.

pub(crate) mod echo;
pub(crate) mod large;

use crate::client::{Target, connect_blocking, start_connect};
use crate::common::{Common, check_file_limit, first_source, with_sources};
use crate::driver::Plan;
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The size of a thread's read buffer (as the WebSocket driver's).
const SCRATCH: usize = 256 * 1024;

/// Where `count` connections go: the host and port of `--url` (its path is not used), each
/// from its `--source-ips` address. Checked first: the file limit allows them and the server
/// accepts a TCP connection.
fn endpoints(common: &Common, count: usize) -> Result<Vec<(SocketAddr, Option<IpAddr>)>, String> {
    check_file_limit(count)?;
    if common
        .url
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
    {
        return Err(format!(
            "--raw-tcp measures plain TCP against a TCP echo server: give it a ws:// --url, not \
             '{}'",
            common.url
        ));
    }
    let target = Target::parse(&common.url, &common.tls)?;
    let addr = target.addr();
    connect_blocking(addr, first_source(common), Duration::from_secs(3))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let plans = with_sources(
        vec![
            Plan {
                target,
                source: None
            };
            count
        ],
        &common.source_ips,
    );
    Ok(plans.iter().map(|p| (addr, p.source)).collect())
}

/// One raw TCP connection: the socket and the bytes queued for it.
struct Link {
    /// The socket.
    stream: TcpStream,
    /// The connection is established.
    open: bool,
    out: Vec<u8>,
    out_pos: usize,
}

impl Link {
    /// Starts connecting to `addr` (non-blocking; see [`Link::check_open`]).
    fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Link> {
        Ok(Link {
            stream: start_connect(addr, source)?,
            open: false,
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// Whether the connection is established (call on its events until it is); an error when
    /// the connect failed.
    fn check_open(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.open = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The queue of bytes to write, to append to.
    fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Bytes queued and not written yet.
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes what is queued until it is all written or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// One read into `buf`: `Some(n)` bytes (`Some(0)`: the server closed the connection),
    /// `None` when nothing is waiting.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.stream.read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
