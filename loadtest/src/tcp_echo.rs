//! `loadtest tcp-echo-server`: the raw TCP baseline a WebSocket echo is measured against. One
//! thread, one `mio::Poll` (edge-triggered), every byte read written back as it came, in order.
//!
//! Each connection has one buffer of `--buffer` bytes: a read fills it, then it is written back
//! before the next read, so a connection holds at most that much and a peer that does not read
//! is no longer read from (its writes block in the kernel). A read shorter than the room left
//! means the socket's receive queue is drained (epoll(7)), so the next read waits for the next
//! readable edge: one `read` and one `write` per message when messages come one at a time, as a
//! well-made server does. It prints `listening on ADDR` once it accepts and runs until killed.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use wsgate_core::units::parse_size;

/// The options of `loadtest tcp-echo-server`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The address to listen on (port 0 picks a free one; the line `listening on ADDR` says
    /// which).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Bytes a connection holds between reading them and writing them back.
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    buffer: u64,
}

/// The listening socket's token; connection k has token k + 1.
const LISTENER: Token = Token(0);

/// Runs `loadtest tcp-echo-server` (until killed, or an error of the poll).
pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    if !(1..=(1 << 30)).contains(&args.buffer) {
        return Err("--buffer must be between 1 byte and 1GiB".into());
    }
    let mut listener = TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    serve(&mut poll, &mut listener, args.buffer as usize).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// One connection and the bytes it read and has not written back yet.
struct Conn {
    stream: TcpStream,
    buf: Box<[u8]>,
    /// `buf[start..end]` is still to be written back.
    start: usize,
    end: usize,
    /// The last read was short or would block: nothing more to read until the next readable
    /// edge.
    drained: bool,
    /// The peer closed its side: write back what is left, then close.
    eof: bool,
}

impl Conn {
    /// Writes back what is pending and reads more, until the socket is drained or full. Returns
    /// false when the connection is over.
    fn pump(&mut self) -> bool {
        loop {
            while self.start < self.end {
                match self.stream.write(&self.buf[self.start..self.end]) {
                    Ok(0) => return false,
                    Ok(n) => self.start += n,
                    // the next writable edge comes back here
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            self.start = 0;
            self.end = 0;
            if self.eof {
                return false;
            }
            if self.drained {
                return true;
            }
            match self.stream.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end = n;
                    self.drained = n < self.buf.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }
}

/// The event loop.
fn serve(poll: &mut Poll, listener: &mut TcpListener, buffer: usize) -> io::Result<()> {
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(poll, listener, &mut conns, &mut free, buffer);
                continue;
            }
            let k = event.token().0 - 1;
            let Some(conn) = conns.get_mut(k).and_then(Option::as_mut) else {
                continue;
            };
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                conn.drained = false;
            }
            if !conn.pump() {
                // dropping the stream closes it (and takes it out of the poll)
                conns[k] = None;
                free.push(k);
            }
        }
    }
}

/// Accepts every waiting connection.
fn accept(
    poll: &Poll,
    listener: &TcpListener,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
    buffer: usize,
) {
    loop {
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // out of descriptors or the like: the next edge tries again
                eprintln!("tcp-echo-server: accept: {e}");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let k = free.pop().unwrap_or_else(|| {
            conns.push(None);
            conns.len() - 1
        });
        if poll
            .registry()
            .register(
                &mut stream,
                Token(k + 1),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            free.push(k);
            continue;
        }
        conns[k] = Some(Conn {
            stream,
            buf: vec![0u8; buffer].into_boxed_slice(),
            start: 0,
            end: 0,
            drained: false,
            eof: false,
        });
    }
}
