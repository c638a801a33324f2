//! The server side of the opening handshake: parse a typical Chromium upgrade request, validate
//! it and write the `101 Switching Protocols` answer into a reused buffer.
//!
//! Side by side:
//!
//! - `wsgate`: `parse_request` + `validate_upgrade` (every RFC 6455 4.2.1 rule, including the
//!   syntax of `Sec-WebSocket-Extensions`) + `write_response`;
//! - `wsgate+extensions`: the same, also collecting the parsed extension offers, as a gateway
//!   that negotiates permessage-deflate would;
//! - `tungstenite`: `Request::try_parse` (httparse into an `http::Request` with a `HeaderMap`) +
//!   `create_response` (its validation, which checks fewer rules: no Host, key length or
//!   extension syntax) + `write_response` into the same kind of reused buffer;
//! - `httparse`: the bare parse both are built on, as a floor.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use tungstenite::handshake::machine::TryParse;
use wsgate_core::handshake::{Limits, parse_request};

const CHROMIUM: &[u8] = b"GET /ws?subscribe=news,sport HTTP/1.1\r\n\
    Host: gateway.example:8080\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: https://app.example\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    \r\n";

fn handshake(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("handshake/chromium");
    group.throughput(Throughput::Elements(1));

    group.bench_function("wsgate", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            let request = parse_request(black_box(CHROMIUM), &limits)
                .unwrap()
                .unwrap();
            let upgrade = request.validate_upgrade().unwrap();
            upgrade.write_response(&mut out, None, None);
            black_box(request.head_len());
            black_box(&out);
        })
    });

    group.bench_function("wsgate+extensions", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            let request = parse_request(black_box(CHROMIUM), &limits)
                .unwrap()
                .unwrap();
            let upgrade = request.validate_upgrade().unwrap();
            black_box(upgrade.extensions());
            upgrade.write_response(&mut out, None, None);
            black_box(&out);
        })
    });

    group.bench_function("tungstenite", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            let (len, request) =
                tungstenite::handshake::server::Request::try_parse(black_box(CHROMIUM))
                    .unwrap()
                    .unwrap();
            let response = tungstenite::handshake::server::create_response(&request).unwrap();
            tungstenite::handshake::server::write_response(&mut out, &response).unwrap();
            black_box(len);
            black_box(&out);
        })
    });

    group.bench_function("httparse (parse only)", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            black_box(request.parse(black_box(CHROMIUM)).unwrap());
        })
    });

    group.finish();

    let mut group = c.benchmark_group("handshake/parts");
    group.bench_function("wsgate parse_request", |b| {
        b.iter(|| {
            black_box(
                parse_request(black_box(CHROMIUM), &limits)
                    .unwrap()
                    .unwrap()
                    .head_len(),
            )
        })
    });
    group.bench_function("wsgate validate_upgrade", |b| {
        let request = parse_request(CHROMIUM, &limits).unwrap().unwrap();
        b.iter(|| black_box(black_box(&request).validate_upgrade().unwrap().key()))
    });
    group.bench_function("wsgate accept_key", |b| {
        b.iter(|| {
            black_box(wsgate_core::handshake::accept_key(black_box(
                "dGhlIHNhbXBsZSBub25jZQ==",
            )))
        })
    });
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
