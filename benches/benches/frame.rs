//! Frame decoding: wsgate's `MessageDecoder` (unmask, validate, assemble) against tungstenite's
//! server-side `WebSocket` reading the same client bytes from memory.
//!
//! Two workloads: 1,000 small text messages (chat-sized, 20 bytes each) and one 64 KiB binary
//! message. Both decoders unmask and (for text) validate UTF-8; tungstenite also copies the
//! payload out of its read buffer, which is part of what is being compared.

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::{self, Cursor, Read, Write};
use wsgate_core::frame::{DecoderConfig, MessageDecoder, OpCode, encode_client_frame};

fn client_stream(count: usize, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..count {
        let key = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes();
        encode_client_frame(&mut wire, true, opcode, payload, key);
    }
    wire
}

/// An in-memory socket for tungstenite: reads the prepared bytes, discards writes.
struct MemStream(Cursor<Vec<u8>>);

impl Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn wsgate_decode(wire: &[u8]) -> usize {
    let mut d = MessageDecoder::new(DecoderConfig::server());
    let mut buf = BytesMut::from(wire);
    let mut n = 0;
    while let Some(m) = d.decode(&mut buf).expect("valid stream") {
        black_box(&m);
        n += 1;
    }
    n
}

fn tungstenite_decode(wire: &[u8]) -> usize {
    let stream = MemStream(Cursor::new(wire.to_vec()));
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None);
    let mut n = 0;
    while let Ok(m) = ws.read() {
        black_box(&m);
        n += 1;
    }
    n
}

fn decode(c: &mut Criterion) {
    let cases = [
        (
            "1000x20B-text",
            client_stream(1000, OpCode::Text, b"{\"type\":\"ping\",\"n\":1}"),
        ),
        (
            "64KiB-binary",
            client_stream(1, OpCode::Binary, &vec![0xab; 64 * 1024]),
        ),
    ];
    for (name, wire) in &cases {
        let mut group = c.benchmark_group(format!("frame-decode/{name}"));
        group.throughput(Throughput::Bytes(wire.len() as u64));
        let expected = wsgate_decode(wire);
        assert_eq!(
            tungstenite_decode(wire),
            expected,
            "both decoders see every message"
        );
        // both sides start from an owned copy of the bytes, as a socket read would give them
        group.bench_function("wsgate", |b| b.iter(|| wsgate_decode(black_box(wire))));
        group.bench_function("tungstenite", |b| {
            b.iter(|| tungstenite_decode(black_box(wire)))
        });
        group.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
