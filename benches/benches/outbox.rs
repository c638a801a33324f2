//! Writing queued frames to a socket: 1, 16 and 256 frames of 20 B and of 1 KiB, already encoded
//! (`OutFrame`s sharing their payloads), go out through a real socket.
//!
//! Side by side, each starting from the same slice of frames:
//!
//! - `wsgate`: push a clone of each frame into an `Outbox`, then `Outbox::flush`: `writev` with up
//!   to 128 slices (64 frames) per call;
//! - `write-per-frame`: `write_all` of each frame's header, then of its payload (two syscalls per
//!   frame, what a writer without vectored I/O or a buffer does);
//! - `copy-then-write`: copy every header and payload into one reused `Vec`, then one `write_all`
//!   (what a write buffer, as tungstenite's, does).
//!
//! Two more entries split `wsgate`'s time in two, to explain it:
//!
//! - `wsgate-to-io-sink`: the same pushes and flush into `io::sink()`, no syscall (the outbox's
//!   own cost: reference counts, queueing, gathering the slices);
//! - `writev-prebuilt`: the same `writev` calls over slices built once outside the loop (the
//!   syscalls' cost alone).
//!
//! The sink is a loopback TCP connection (`127.0.0.1`, `TCP_NODELAY` as the gateway sets it,
//! blocking, SO_SNDBUF raised to 4 MiB, which the kernel caps at `net.core.wmem_max`); a thread
//! reads the other end into a 256 KiB buffer and throws the bytes away. So every syscall is real
//! (on loopback it includes the receiving side's TCP processing), and the writer waits only when
//! the reader falls behind. At the end the bytes read are checked against the bytes written.
//! mimalloc is the global allocator, as in the gateway binary.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use wsgate::outbox::{MAX_IOVECS, Outbox};
use wsgate_core::frame::{OpCode, OutFrame};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The writing end, counting what it wrote.
struct Sink {
    stream: TcpStream,
    written: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.stream.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.stream.write_vectored(bufs)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn sink() -> (Sink, JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let writer = TcpStream::connect(listener.local_addr().expect("bound")).expect("connect");
    let (mut reader, _) = listener.accept().expect("accept");
    writer.set_nodelay(true).expect("TCP_NODELAY");
    let sock = socket2::SockRef::from(&writer);
    sock.set_send_buffer_size(4 << 20).expect("SO_SNDBUF");
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading the sink: {e}"),
            }
        }
    });
    (
        Sink {
            stream: writer,
            written: 0,
        },
        drain,
    )
}

fn wsgate(outbox: &mut Outbox, frames: &[OutFrame], sink: &mut Sink) -> usize {
    for f in frames {
        outbox.push(f.clone());
    }
    let done = outbox.flush(sink).expect("the sink is open");
    debug_assert!(outbox.is_empty(), "a blocking socket takes everything");
    done.bytes
}

fn write_per_frame(frames: &[OutFrame], sink: &mut Sink) -> usize {
    let mut n = 0;
    for f in frames {
        sink.write_all(f.header()).expect("the sink is open");
        sink.write_all(f.payload()).expect("the sink is open");
        n += f.wire_len();
    }
    n
}

fn copy_then_write(buf: &mut Vec<u8>, frames: &[OutFrame], sink: &mut Sink) -> usize {
    buf.clear();
    for f in frames {
        buf.extend_from_slice(f.header());
        buf.extend_from_slice(f.payload());
    }
    sink.write_all(buf).expect("the sink is open");
    buf.len()
}

fn flush(c: &mut Criterion) {
    let (mut sink, drain) = sink();
    let mut outbox = Outbox::new();
    let mut buf = Vec::new();
    for (size_name, size) in [("20B", 20usize), ("1KiB", 1024)] {
        for count in [1usize, 16, 256] {
            let frames: Vec<OutFrame> = (0..count)
                .map(|i| OutFrame::new(OpCode::Binary, Bytes::from(vec![i as u8; size])))
                .collect();
            let wire: usize = frames.iter().map(OutFrame::wire_len).sum();
            assert_eq!(wsgate(&mut outbox, &frames, &mut sink), wire);
            assert!(outbox.is_empty());
            assert_eq!(write_per_frame(&frames, &mut sink), wire);
            assert_eq!(copy_then_write(&mut buf, &frames, &mut sink), wire);

            let mut group = c.benchmark_group(format!("outbox-flush/{count}x{size_name}"));
            group.throughput(Throughput::Bytes(wire as u64));
            group.bench_function("wsgate", |b| {
                b.iter(|| wsgate(&mut outbox, &frames, &mut sink))
            });
            group.bench_function("write-per-frame", |b| {
                b.iter(|| write_per_frame(&frames, &mut sink))
            });
            group.bench_function("copy-then-write", |b| {
                b.iter(|| copy_then_write(&mut buf, &frames, &mut sink))
            });
            let mut null = io::sink();
            group.bench_function("wsgate-to-io-sink", |b| {
                b.iter(|| {
                    for f in &frames {
                        outbox.push(f.clone());
                    }
                    outbox
                        .flush(&mut null)
                        .expect("a sink takes everything")
                        .bytes
                })
            });
            let slices: Vec<IoSlice<'_>> = frames
                .iter()
                .flat_map(|f| [IoSlice::new(f.header()), IoSlice::new(f.payload())])
                .collect();
            assert!(slices.chunks(MAX_IOVECS).all(|c| {
                let len: usize = c.iter().map(|s| s.len()).sum();
                sink.write_vectored(c).expect("the sink is open") == len
            }));
            group.bench_function("writev-prebuilt", |b| {
                b.iter(|| {
                    let mut n = 0;
                    for chunk in slices.chunks(MAX_IOVECS) {
                        // a blocking socket with room takes the whole call (checked above)
                        n += sink.write_vectored(chunk).expect("the sink is open");
                    }
                    n
                })
            });
            group.finish();
        }
    }
    let written = sink.written;
    drop(sink);
    let read = drain.join().expect("the reader thread");
    assert_eq!(read, written, "every byte written arrived");
}

criterion_group!(benches, flush);
criterion_main!(benches);
