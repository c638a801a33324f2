//! Frame encoding: the header of a server frame, a whole frame ready to send, and the JSON text
//! delivery of a publish.
//!
//! `encode-header/{20B,125B,64KiB}` (payload sizes; 2-, 2- and 10-byte headers):
//!
//! - `wsgate`: `HeaderBuf::server`, an inline header with no allocation;
//! - `tungstenite`: `FrameHeader::format` into a 14-byte stack buffer (`&mut [u8]` as `Write`);
//! - `fastwebsockets`: `Frame::fmt_head` into a 14-byte stack buffer (it takes the length from a
//!   frame, so a `Frame` borrowing the payload is built first, which costs nothing).
//!
//! `encode-frame/{20B,125B,64KiB}`, a whole server frame from a payload the caller already holds
//! as `Bytes` (as a received message is):
//!
//! - `wsgate`: `OutFrame::new`, the inline header plus a reference to the payload (what the
//!   outbox queues and `writev` sends; nothing is copied);
//! - `wsgate-contiguous`: the same header and the payload copied into one reused `Vec`, for
//!   comparison with encoders whose output is one buffer;
//! - `tungstenite`: `Frame::message(payload, Binary, true).format(&mut vec)` into a reused `Vec`
//!   (0.26's public encoder; `format_into_buf` is crate-private);
//! - `fastwebsockets`: `Frame::write(&mut vec)` into a reused `Vec` (public; no socket needed).
//!
//! `text-delivery/{small,1KiB}` (`data` of 32 and 1,018 bytes): the frame a text publish sends
//! to subscribers, `{"type":"message","topic":...,"data":...}` with `data` the publisher's JSON:
//!
//! - `wsgate`: `message::text_delivery(topic, &RawValue)`, the publisher's text spliced in
//!   verbatim, one exact-size allocation;
//! - `serde_json-json!`: `serde_json::to_vec(&json!({...}))` with `data` a parsed `Value`, which
//!   rebuilds a `Value` tree and serialises it again (what a server that parses publishes into
//!   `Value` writes);
//! - `serde_json-struct`: `to_vec` of a `#[derive(Serialize)]` struct borrowing the topic and the
//!   parsed `Value` (re-serialises `data`, builds no tree);
//! - `serde_json-struct-raw`: the same struct with `data: &RawValue` (serde's way of splicing).
//!
//! Each alternative then wraps its bytes in an `OutFrame`, as `text_delivery` returns one. Parsing
//! the publish is not measured (both sides start from an already parsed `data`). mimalloc is the
//! global allocator, as in the gateway binary.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::hint::black_box;
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::frame::{Frame as TFrame, FrameHeader};
use wsgate_core::frame::{HeaderBuf, MAX_HEADER_LEN, OpCode, OutFrame};
use wsgate_core::message::text_delivery;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [(&str, usize); 3] = [("20B", 20), ("125B", 125), ("64KiB", 64 * 1024)];

fn tungstenite_header(len: usize) -> [u8; MAX_HEADER_LEN] {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let header = FrameHeader {
        opcode: TOpCode::Data(Data::Binary),
        ..FrameHeader::default()
    };
    header
        .format(len as u64, &mut &mut buf[..])
        .expect("14 bytes hold any header");
    buf
}

fn fastwebsockets_header(payload: &[u8]) -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    let mut frame = fastwebsockets::Frame::new(
        true,
        fastwebsockets::OpCode::Binary,
        None,
        fastwebsockets::Payload::Borrowed(payload),
    );
    let n = frame.fmt_head(&mut buf);
    (buf, n)
}

fn header(c: &mut Criterion) {
    for (name, len) in SIZES {
        let payload = vec![0x5au8; len];
        let ours = HeaderBuf::server(OpCode::Binary, len);
        let theirs = tungstenite_header(len);
        assert_eq!(ours.as_bytes(), &theirs[..ours.as_bytes().len()]);
        let (fast, n) = fastwebsockets_header(&payload);
        assert_eq!(ours.as_bytes(), &fast[..n]);

        let mut group = c.benchmark_group(format!("encode-header/{name}"));
        group.bench_function("wsgate", |b| {
            b.iter(|| HeaderBuf::server(OpCode::Binary, black_box(len)))
        });
        group.bench_function("tungstenite", |b| {
            b.iter(|| tungstenite_header(black_box(len)))
        });
        group.bench_function("fastwebsockets", |b| {
            b.iter(|| fastwebsockets_header(black_box(&payload)))
        });
        group.finish();
    }
}

fn frame(c: &mut Criterion) {
    for (name, len) in SIZES {
        let payload = Bytes::from(vec![0x5au8; len]);
        let expected = OutFrame::new(OpCode::Binary, payload.clone()).to_vec();
        let mut buf = Vec::with_capacity(len + 16);

        let mut group = c.benchmark_group(format!("encode-frame/{name}"));
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function("wsgate", |b| {
            b.iter(|| OutFrame::new(OpCode::Binary, black_box(&payload).clone()))
        });

        let contiguous = |buf: &mut Vec<u8>, payload: &Bytes| {
            buf.clear();
            buf.extend_from_slice(HeaderBuf::server(OpCode::Binary, payload.len()).as_bytes());
            buf.extend_from_slice(payload);
        };
        contiguous(&mut buf, &payload);
        assert_eq!(buf, expected);
        group.bench_function("wsgate-contiguous", |b| {
            b.iter(|| {
                contiguous(&mut buf, black_box(&payload));
                black_box(buf.len())
            })
        });

        let tungstenite = |buf: &mut Vec<u8>, payload: &Bytes| {
            buf.clear();
            TFrame::message(payload.clone(), TOpCode::Data(Data::Binary), true)
                .format(buf)
                .expect("a Vec takes everything");
        };
        tungstenite(&mut buf, &payload);
        assert_eq!(buf, expected);
        group.bench_function("tungstenite", |b| {
            b.iter(|| {
                tungstenite(&mut buf, black_box(&payload));
                black_box(buf.len())
            })
        });

        let fastwebsockets = |buf: &mut Vec<u8>, payload: &[u8]| {
            let mut frame = fastwebsockets::Frame::new(
                true,
                fastwebsockets::OpCode::Binary,
                None,
                fastwebsockets::Payload::Borrowed(payload),
            );
            frame.write(buf).len()
        };
        let n = fastwebsockets(&mut buf, &payload);
        assert_eq!(buf[..n], expected[..]);
        group.bench_function("fastwebsockets", |b| {
            b.iter(|| fastwebsockets(&mut buf, black_box(&payload)))
        });
        group.finish();
    }
}

/// The delivery as a serde user writes it, `data` borrowed.
#[derive(Serialize)]
struct DeliveryOut<'a, D: ?Sized> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: &'a str,
    data: &'a D,
}

fn to_frame(v: Vec<u8>) -> OutFrame {
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

fn text(c: &mut Criterion) {
    let small = r#"{"user":"ana","text":"hi there"}"#.to_string();
    let records: Vec<String> = (0..15)
        .map(|i| {
            format!(
                r#"{{"id":{i},"sym":"ACME","px":{}.25,"qty":{},"side":"buy","ok":true}}"#,
                100 + i,
                i * 10
            )
        })
        .collect();
    let large = format!(r#"{{"seq":7,"items":[{}]}}"#, records.join(","));
    let topic = "market/acme";
    for (name, data) in [("small", &small), ("1KiB", &large)] {
        let raw: &RawValue = serde_json::from_str(data).expect("valid JSON");
        let value: Value = serde_json::from_str(data).expect("valid JSON");
        let ours = text_delivery(topic, raw);
        let expected: Value = serde_json::from_slice(ours.payload()).expect("valid JSON out");
        let by_json = to_frame(
            serde_json::to_vec(&json!({"type": "message", "topic": topic, "data": value})).unwrap(),
        );
        let by_struct = |data: &Value| {
            to_frame(
                serde_json::to_vec(&DeliveryOut {
                    kind: "message",
                    topic,
                    data,
                })
                .unwrap(),
            )
        };
        let by_raw = |data: &RawValue| {
            to_frame(
                serde_json::to_vec(&DeliveryOut {
                    kind: "message",
                    topic,
                    data,
                })
                .unwrap(),
            )
        };
        for other in [&by_json, &by_struct(&value), &by_raw(raw)] {
            let v: Value = serde_json::from_slice(other.payload()).expect("valid JSON out");
            assert_eq!(v, expected, "the same delivery");
        }
        assert_eq!(by_raw(raw).payload(), ours.payload(), "the same bytes");

        let mut group = c.benchmark_group(format!("text-delivery/{name}"));
        group.throughput(Throughput::Bytes(ours.payload().len() as u64));
        group.bench_function("wsgate", |b| {
            b.iter(|| text_delivery(black_box(topic), black_box(raw)))
        });
        group.bench_function("serde_json-json!", |b| {
            b.iter(|| {
                let v = black_box(&value);
                to_frame(
                    serde_json::to_vec(
                        &json!({"type": "message", "topic": black_box(topic), "data": v}),
                    )
                    .unwrap(),
                )
            })
        });
        group.bench_function("serde_json-struct", |b| {
            b.iter(|| by_struct(black_box(&value)))
        });
        group.bench_function("serde_json-struct-raw", |b| {
            b.iter(|| by_raw(black_box(raw)))
        });
        group.finish();
    }
}

criterion_group!(benches, header, frame, text);
criterion_main!(benches);
