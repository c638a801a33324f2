//! permessage-deflate (RFC 7692) end to end, over raw sockets: the offer and the answer in the
//! 101, compressed messages both ways, the ways a client can get RSV1 or the deflate stream
//! wrong (1002, 1007, 1009 for a bomb, with the gateway's memory bounded), and a publish
//! compressed once for all its subscribers.
//!
//! Everything on the wire is written and read here by hand, apart from the gateway's code: a
//! tiny masked-frame writer, a frame reader that shows RSV1 and the payload as sent, and
//! flate2 for the deflate data (raw deflate, a sync flush, the trailing `00 00 ff ff` dropped
//! when sending and put back when inflating, as RFC 7692 section 7.2 says).

mod common;

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
/// RSV1 in the first header byte: "this message is compressed".
const RSV1: u8 = 0x40;

/// What Chromium offers (every WebSocket it opens).
const CHROMIUM_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// The gateway's answer to an offer that does not limit the server's window.
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

// ---- deflate ----------------------------------------------------------------------------------

/// Compresses into `out` with a sync flush: the output ends in an empty stored block,
/// `00 00 ff ff`, on a byte boundary.
fn sync_flush(c: &mut Compress, mut input: &[u8], out: &mut Vec<u8>) {
    loop {
        out.reserve(64 * KIB);
        let before = c.total_in();
        c.compress_vec(input, out, FlushCompress::Sync)
            .expect("deflate");
        input = &input[(c.total_in() - before) as usize..];
        // done when all went in and the flush did not fill the room it had
        if input.is_empty() && out.len() < out.capacity() {
            return;
        }
    }
}

/// `data` as one permessage-deflate message payload, compressed on its own.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::new();
    sync_flush(&mut c, data, &mut out);
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// Inflates one permessage-deflate message payload (the tail put back); panics on bad data.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(4 * data.len() + KIB);
    let mut at = 0;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let (was_in, was_out) = (d.total_in(), d.total_out());
        d.decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .unwrap_or_else(|e| panic!("the gateway sent bad deflate data: {e}"));
        at += (d.total_in() - was_in) as usize;
        if at == input.len() && out.len() < out.capacity() {
            return out;
        }
        assert!(
            d.total_in() > was_in || d.total_out() > was_out,
            "inflate made no progress at byte {at} of {}",
            input.len()
        );
    }
}

/// A deflate bomb: `total` zero bytes (a multiple of 1 MiB) as one message payload of about
/// `total / 1000` bytes. The first MiB is compressed, then the second with the same
/// compressor; that second block only refers back to zeros, so repeating it adds one more MiB
/// of zeros each time (a sync flush ends each on a byte boundary).
fn bomb(total: usize) -> Vec<u8> {
    assert!(total >= 2 * MIB && total.is_multiple_of(MIB));
    let zeros = vec![0u8; MIB];
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::new();
    sync_flush(&mut c, &zeros, &mut out);
    let mut next = Vec::new();
    sync_flush(&mut c, &zeros, &mut next);
    for _ in 1..total / MIB {
        out.extend_from_slice(&next);
    }
    out.truncate(out.len() - 4);
    out
}

// ---- content ----------------------------------------------------------------------------------

/// About `n` bytes of JSON-like text with multi-byte UTF-8 (compresses about 5x).
fn json_text(n: usize) -> String {
    let mut s = String::with_capacity(n + 100);
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"sym\":\"ÉTÉ-{}\",\"px\":{}.{:02},\"qty\":{},\"note\":\"日本 ✓ 😀\"}},",
            i % 37,
            100 + i * 7 % 91,
            i * 13 % 100,
            i * 31 % 1000
        ));
        i += 1;
    }
    s
}

/// `n` bytes that deflate cannot shrink (xorshift).
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

// ---- the wire -----------------------------------------------------------------------------------

/// A masked client frame; `rsv` is the first header byte's reserved bits (e.g. [`RSV1`]).
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push((u8::from(fin) << 7) | rsv | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&KEY);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    out
}

/// One frame from the server, as it came.
#[derive(Debug)]
struct Frame {
    fin: bool,
    /// The reserved bits as they sit in the first byte (`0x70` mask).
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
}

/// One message from the server: a whole data message (its frames joined) or a control frame.
#[derive(Debug)]
struct Msg {
    opcode: u8,
    /// RSV1 was set on its first frame.
    compressed: bool,
    /// The payload as it came on the wire.
    wire: Vec<u8>,
    /// The payload, inflated when it was compressed.
    data: Vec<u8>,
}

/// A WebSocket connection over a raw socket.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The 101.
    answer: HttpResponse,
    /// A data message whose first frames came: opcode, RSV1, payload so far.
    partial: Option<(u8, bool, Vec<u8>)>,
}

impl Conn {
    /// Upgrades a new connection to `path`, with one `Sec-WebSocket-Extensions` line per item
    /// of `offers`; panics unless the answer is 101.
    fn open(addr: SocketAddr, path: &str, offers: &[&str]) -> Conn {
        let mut stream = connect(addr);
        let mut request = upgrade_request(path);
        request.truncate(request.len() - 2);
        for offer in offers {
            request.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).expect("write upgrade");
        let mut buf = Vec::new();
        let answer = read_response(&mut stream, &mut buf).expect("an answer to the upgrade");
        assert_eq!(answer.status, 101, "{answer:?}");
        Conn {
            stream,
            buf,
            answer,
            partial: None,
        }
    }

    /// The 101's `Sec-WebSocket-Extensions`, if any.
    fn extensions(&self) -> Option<&str> {
        self.answer.header("Sec-WebSocket-Extensions")
    }

    fn negotiated(&self) -> bool {
        self.extensions().is_some()
    }

    fn send(&mut self, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&frame(fin, rsv, opcode, payload))
            .expect("write");
    }

    /// Sends one whole message compressed (RSV1 set).
    fn send_compressed(&mut self, opcode: u8, data: &[u8]) {
        self.send(true, RSV1, opcode, &deflate(data));
    }

    /// Writes `bytes` from another thread, so that a gateway that stops reading cannot block
    /// the test; write errors (the gateway closed) are ignored.
    fn send_in_background(&self, bytes: Vec<u8>) -> JoinHandle<()> {
        let mut stream = self.stream.try_clone().expect("clone the socket");
        std::thread::spawn(move || {
            let _ = stream.write_all(&bytes);
        })
    }

    /// The next frame, or why there is none (EOF, reset).
    fn frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = vec![0u8; 256 * KIB];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("EOF".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("timed out waiting for a frame ({IO_TIMEOUT:?})")
                }
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }

    /// The next message (a data message whole, or a control frame); checks the reserved bits
    /// on the way: RSV2 and RSV3 never, RSV1 only on the first frame of a data message of a
    /// session that negotiated the extension.
    fn msg(&mut self) -> Msg {
        loop {
            let f = self.frame().unwrap_or_else(|e| panic!("no message: {e}"));
            let first = f.opcode != CONTINUATION;
            assert!(
                f.rsv & !RSV1 == 0 && (f.rsv == 0 || (first && f.opcode < CLOSE)),
                "bad reserved bits {:#x} on a frame with opcode {}",
                f.rsv,
                f.opcode
            );
            if f.rsv != 0 {
                assert!(self.negotiated(), "RSV1 without permessage-deflate");
            }
            if f.opcode >= CLOSE {
                assert!(f.fin, "a fragmented control frame");
                return Msg {
                    opcode: f.opcode,
                    compressed: false,
                    data: f.payload.clone(),
                    wire: f.payload,
                };
            }
            let (opcode, compressed, mut wire) = match (f.opcode, self.partial.take()) {
                (CONTINUATION, Some(p)) => p,
                (CONTINUATION, None) => panic!("a continuation frame without a message"),
                (op, None) => (op, f.rsv != 0, Vec::new()),
                (op, Some(_)) => panic!("a new message (opcode {op}) inside a fragmented one"),
            };
            wire.extend_from_slice(&f.payload);
            if !f.fin {
                self.partial = Some((opcode, compressed, wire));
                continue;
            }
            let data = if compressed {
                inflate(&wire)
            } else {
                wire.clone()
            };
            return Msg {
                opcode,
                compressed,
                wire,
                data,
            };
        }
    }

    /// Skips data messages until a close frame; returns its code (`None`: no status code).
    /// Panics when the connection ends without one.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.frame() {
                Ok(f) if f.opcode == CLOSE => {
                    return (f.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                }
                Ok(_) => {}
                Err(e) => panic!("the connection ended without a close frame ({e})"),
            }
        }
    }

    /// Skips data messages until a close frame, which must have `code`.
    fn expect_close(&mut self, code: u16) {
        assert_eq!(self.close_code(), Some(code), "the close code");
    }

    /// Sends `data` (compressed or not) and returns the echo.
    fn echo(&mut self, opcode: u8, data: &[u8], compress: bool) -> Msg {
        if compress {
            self.send_compressed(opcode, data);
        } else {
            self.send(true, 0, opcode, data);
        }
        let m = self.msg();
        assert_eq!(m.opcode, opcode, "the echo's opcode");
        assert!(
            m.data == data,
            "the echo of {} bytes differs ({} came)",
            data.len(),
            m.data.len()
        );
        m
    }
}

/// A whole unmasked server frame at the start of `buf`, and its length.
fn parse_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    let [b0, b1, ..] = *buf else { return None };
    assert!(b1 & 0x80 == 0, "a masked frame from the server");
    let (len, at) = match b1 & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    let frame = Frame {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        opcode: b0 & 0x0f,
        payload,
    };
    Some((frame, at + len))
}

fn deflate_metrics(gw: &Gateway) -> [u64; 4] {
    let text = gw.metrics();
    [
        "wsgate_deflate_sessions_total",
        "wsgate_compressions_total",
        "wsgate_deflate_payload_bytes_before_total",
        "wsgate_deflate_payload_bytes_after_total",
    ]
    .map(|series| metric(&text, series) as u64)
}

// ---- the tests ----------------------------------------------------------------------------------

/// Chromium's offer gets the default answer; compressed and plain messages from the client
/// echo back, compressed when they are at least the minimum size and deflate shrinks them.
#[test]
fn chromiums_offer_is_answered_and_messages_echo_compressed_both_ways() {
    let gw = Gateway::start(&[]);
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    assert_eq!(c.extensions(), Some(ANSWER));

    let text = json_text(64 * KIB);
    for compress in [true, false] {
        let m = c.echo(TEXT, text.as_bytes(), compress);
        assert!(m.compressed, "a 64 KiB JSON echo comes back with RSV1");
        assert!(
            m.wire.len() < text.len() / 3,
            "{} bytes on the wire",
            m.wire.len()
        );
        let m = c.echo(BINARY, text.as_bytes(), compress);
        assert!(m.compressed);
        // under the 128-byte minimum: plain, whatever the client did
        let m = c.echo(TEXT, "ÉTÉ ✓ 😀 short".as_bytes(), compress);
        assert!(!m.compressed, "a 20-byte echo comes back plain");
        // incompressible: deflate does not shrink it, so it comes back plain
        let m = c.echo(BINARY, &noise(64 * KIB, 7), compress);
        assert!(!m.compressed, "an incompressible echo comes back plain");
    }
    // an empty message compressed: one byte, the empty stored block less its tail (RFC 7692
    // section 7.2.3.6)
    assert_eq!(deflate(b""), [0x00]);
    let m = c.echo(TEXT, b"", true);
    assert!(!m.compressed);
    // a message ended with a final block instead of a sync flush (RFC 7692 section 7.2.3.4)
    let mut whole = Compress::new(Compression::new(6), false);
    let mut packed = Vec::with_capacity(text.len());
    let status = whole.compress_vec(text.as_bytes(), &mut packed, FlushCompress::Finish);
    assert_eq!(status.unwrap(), Status::StreamEnd);
    c.send(true, RSV1, TEXT, &packed);
    let m = c.msg();
    assert!(
        m.compressed && m.data == text.as_bytes(),
        "the echo of a BFINAL message"
    );
    let [sessions, compressions, before, after] = deflate_metrics(&gw);
    assert_eq!(sessions, 1);
    assert!(compressions >= 6, "{compressions} compressions");
    assert!(
        after < before,
        "payload bytes after {after}, before {before}"
    );
}

/// A client that limits the server's window below 15 gets `server_max_window_bits` repeated
/// and every message uncompressed (the shared frames are made with a 32 KiB window); what it
/// compresses itself is still inflated.
#[test]
fn a_narrow_server_window_is_repeated_and_gets_uncompressed_frames() {
    let gw = Gateway::start(&[]);
    let mut c = Conn::open(
        gw.addr,
        "/echo",
        &["permessage-deflate; server_max_window_bits=10; client_max_window_bits"],
    );
    assert_eq!(
        c.extensions(),
        Some(format!("{ANSWER}; server_max_window_bits=10").as_str())
    );
    let text = json_text(64 * KIB);
    for compress in [true, false] {
        let m = c.echo(TEXT, text.as_bytes(), compress);
        assert!(!m.compressed, "RSV1 set for a client with a 1 KiB window");
    }
    // a limit of 15 is no limit: repeated, and the echoes are compressed
    let mut c = Conn::open(
        gw.addr,
        "/echo",
        &["permessage-deflate; server_max_window_bits=15"],
    );
    assert_eq!(
        c.extensions(),
        Some(format!("{ANSWER}; server_max_window_bits=15").as_str())
    );
    assert!(c.echo(TEXT, text.as_bytes(), true).compressed);
    // a narrow window on a subscriber: the publish reaches it plain as well
    let mut sub = Conn::open(
        gw.addr,
        "/ws?subscribe=narrow",
        &["permessage-deflate; server_max_window_bits=9"],
    );
    let mut pubr = Conn::open(gw.addr, "/ws", &[]);
    let data = format!("[{}]", text.trim_end_matches(','));
    let publish = format!(r#"{{"type":"publish","topic":"narrow","data":{data}}}"#);
    pubr.send(true, 0, TEXT, publish.as_bytes());
    let m = sub.msg();
    assert!(!m.compressed);
    assert_eq!(
        m.data,
        format!(r#"{{"type":"message","topic":"narrow","data":{data}}}"#).into_bytes()
    );
    assert_eq!(
        deflate_metrics(&gw)[1],
        1,
        "only the echo with a window of 15 compressed"
    );
}

/// An offer the gateway cannot accept is declined and the next one tried, in one header line
/// or over several; when none is acceptable the upgrade goes on without the extension.
#[test]
fn a_malformed_offer_is_passed_over_for_the_next_good_one() {
    let gw = Gateway::start(&[]);
    let cases: &[(&[&str], Option<String>)] = &[
        (
            &[
                "permessage-deflate; server_max_window_bits=16, permessage-deflate; client_max_window_bits",
            ],
            Some(ANSWER.to_string()),
        ),
        (
            &["permessage-deflate; no_such_param", "permessage-deflate"],
            Some(ANSWER.to_string()),
        ),
        (
            &[
                "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=010, \
               permessage-deflate; server_max_window_bits=9",
            ],
            Some(format!("{ANSWER}; server_max_window_bits=9")),
        ),
        (
            &["permessage-deflate; client_no_context_takeover=1; server_no_context_takeover"],
            None,
        ),
        (&["permessage-deflate; server_max_window_bits"], None),
        (&["x-webkit-deflate-frame"], None),
    ];
    for (offers, want) in cases {
        let mut c = Conn::open(gw.addr, "/echo", offers);
        assert_eq!(c.extensions(), want.as_deref(), "answer to {offers:?}");
        let m = c.echo(TEXT, json_text(4 * KIB).as_bytes(), false);
        // compressed echoes only with the full window (server_max_window_bits=9: plain)
        assert_eq!(m.compressed, want.as_deref() == Some(ANSWER), "{offers:?}");
    }
}

/// `--compression false` declines every offer: no `Sec-WebSocket-Extensions` in the 101, RSV1
/// from the client is a protocol error, and nothing is compressed.
#[test]
fn with_compression_off_no_offer_is_accepted_and_rsv1_is_1002() {
    let gw = Gateway::start(&["--compression", "false"]);
    let text = json_text(16 * KIB);
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER, "permessage-deflate"]);
    assert_eq!(c.extensions(), None, "{:?}", c.answer);
    let m = c.echo(TEXT, text.as_bytes(), false);
    assert!(!m.compressed);
    c.send_compressed(TEXT, text.as_bytes());
    c.expect_close(1002);
    assert_eq!(deflate_metrics(&gw), [0, 0, 0, 0]);
}

/// RSV1 where RFC 7692 does not allow it closes with 1002: on a control frame, on a
/// continuation frame, and on a session that did not negotiate the extension.
#[test]
fn rsv1_on_a_ping_on_a_continuation_or_without_the_extension_is_1002() {
    let gw = Gateway::start(&[]);
    let text = json_text(4 * KIB);
    let packed = deflate(text.as_bytes());
    let half = packed.len() / 2;

    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    c.echo(TEXT, text.as_bytes(), true);
    c.send(true, RSV1, PING, b"compressed?");
    c.expect_close(1002);

    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    c.send(false, RSV1, TEXT, &packed[..half]);
    c.send(true, RSV1, CONTINUATION, &packed[half..]);
    c.expect_close(1002);

    // RSV1 on a continuation of an uncompressed message too
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    c.send(false, 0, BINARY, b"plain first");
    c.send(true, RSV1, CONTINUATION, &packed);
    c.expect_close(1002);

    let mut c = Conn::open(gw.addr, "/echo", &[]);
    assert_eq!(c.extensions(), None);
    c.send(true, RSV1, TEXT, &packed);
    c.expect_close(1002);

    // a session with a declined offer has no extension either
    let mut c = Conn::open(gw.addr, "/echo", &["permessage-deflate; bogus"]);
    assert_eq!(c.extensions(), None);
    c.send(true, RSV1, BINARY, &packed);
    c.expect_close(1002);
}

/// A compressed message whose deflate stream is cut short, or is not deflate at all, closes
/// with 1007 (binary messages, so that UTF-8 cannot be the reason); so does valid deflate
/// data that inflates to text that is not UTF-8.
#[test]
fn a_truncated_or_corrupt_deflate_stream_is_1007() {
    let gw = Gateway::start(&[]);
    let data = json_text(4 * KIB);
    let packed = deflate(data.as_bytes());
    let bad: [(&str, Vec<u8>); 4] = [
        // good deflate, bad UTF-8: the text is checked on the inflated bytes (sent as text)
        (
            "invalid UTF-8 inflated",
            deflate(b"{\"data\":\"\xff\xfe\"}"),
        ),
        ("cut in half", packed[..packed.len() / 2].to_vec()),
        ("reserved block type", vec![0xff; 32]),
        // a stored block whose length and its complement disagree
        (
            "bad stored length",
            vec![0x00, 0x05, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5],
        ),
    ];
    for (what, payload) in bad {
        let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
        c.echo(BINARY, data.as_bytes(), true);
        let opcode = if what.contains("UTF-8") { TEXT } else { BINARY };
        c.send(true, RSV1, opcode, &payload);
        assert_eq!(c.close_code(), Some(1007), "{what}");
    }
    // and the gateway still echoes on a new connection
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    c.echo(BINARY, data.as_bytes(), true);
}

/// A compressed message in three frames (RSV1 on the first only) with a ping between them: the
/// pong comes first, then the echo, inflated whole.
#[test]
fn a_fragmented_compressed_message_with_a_ping_between_echoes_back() {
    let gw = Gateway::start(&["--workers", "1"]);
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    for (opcode, data) in [
        (TEXT, json_text(64 * KIB).into_bytes()),
        (BINARY, noise(200 * KIB, 3)),
    ] {
        let packed = deflate(&data);
        let (a, b) = (packed.len() / 3, 2 * packed.len() / 3);
        c.send(false, RSV1, opcode, &packed[..a]);
        c.send(true, 0, PING, b"between");
        c.send(false, 0, CONTINUATION, &packed[a..b]);
        c.send(true, 0, CONTINUATION, &packed[b..]);
        let pong = c.msg();
        assert_eq!((pong.opcode, &pong.data[..]), (PONG, &b"between"[..]));
        let m = c.msg();
        assert_eq!(m.opcode, opcode);
        assert!(m.data == data, "the echo of {} bytes differs", data.len());
        assert_eq!(
            m.compressed,
            opcode == TEXT,
            "compressed only when it shrinks"
        );
    }
    // an empty first frame with RSV1, the data in the continuations
    let data = json_text(8 * KIB).into_bytes();
    let packed = deflate(&data);
    c.send(false, RSV1, TEXT, b"");
    c.send(false, 0, CONTINUATION, &packed[..10]);
    c.send(true, 0, CONTINUATION, &packed[10..]);
    assert_eq!(c.msg().data, data);
    // a byte at a time, as the stream allows: one-byte frames
    let data = json_text(300).into_bytes();
    let packed = deflate(&data);
    for (i, byte) in packed.iter().enumerate() {
        let (rsv, op) = if i == 0 {
            (RSV1, TEXT)
        } else {
            (0, CONTINUATION)
        };
        c.send(i + 1 == packed.len(), rsv, op, &[*byte]);
    }
    assert_eq!(c.msg().data, data);
}

/// A deflate bomb: 960 MiB of zeros compressed to under 1 MiB (deflate's best is about 1030
/// to 1, so a whole GiB would be a little over), sent as one message against a 1 MiB limit
/// that its compressed bytes are within, is closed with 1009; the gateway never holds more
/// than the limit's worth: its peak resident set grows by less than 32 MiB. The same again
/// in 64 KiB fragments.
#[test]
fn a_deflate_bomb_is_closed_with_1009_in_bounded_memory() {
    // the construction inflates to what it says (checked on a small one)
    let small = bomb(4 * MIB);
    let inflated = inflate(&small);
    assert!(inflated.len() == 4 * MIB && inflated.iter().all(|&b| b == 0));
    let bomb = bomb(960 * MIB);
    assert!(
        bomb.len() < MIB - 1024,
        "the bomb's {} bytes are not within the 1 MiB limit",
        bomb.len()
    );

    let gw = Gateway::start_without_huge_pages(&["--workers", "1", "--max-message-size", "1MiB"]);
    // exactly the limit, inflated, passes; one byte more does not
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    c.echo(BINARY, &vec![0u8; MIB], true);
    c.send_compressed(BINARY, &vec![0u8; MIB + 1]);
    c.expect_close(1009);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let before = gw.peak_rss();

    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    let writer = c.send_in_background(frame(true, RSV1, BINARY, &bomb));
    c.expect_close(1009);
    writer.join().unwrap();
    drop(c);
    let peak = gw.peak_rss();
    println!(
        "a {:.2} MB bomb of 960 MiB: gateway peak RSS {:.1} MiB before, {:.1} MiB after",
        bomb.len() as f64 / 1e6,
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert!(
        peak.saturating_sub(before) < 32 * MIB as u64,
        "the gateway's peak RSS grew by {:.1} MiB",
        (peak - before) as f64 / MIB as f64
    );
    // the same bomb in 64 KiB fragments
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    let mut frames = Vec::with_capacity(bomb.len() + bomb.len() / 1000);
    let pieces: Vec<_> = bomb.chunks(64 * KIB).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let (rsv, op) = if i == 0 {
            (RSV1, BINARY)
        } else {
            (0, CONTINUATION)
        };
        frames.extend_from_slice(&frame(i + 1 == pieces.len(), rsv, op, piece));
    }
    let writer = c.send_in_background(frames);
    c.expect_close(1009);
    writer.join().unwrap();
    let peak = gw.peak_rss();
    assert!(peak.saturating_sub(before) < 32 * MIB as u64);
    // and the gateway goes on
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    c.echo(TEXT, json_text(4 * KIB).as_bytes(), true);
}

/// Reads one delivery on every subscriber: the ones that negotiated the extension must get the
/// very same compressed payload (`compressed`) or plain frames (not), the others plain frames;
/// each inflates to `want`. Returns the payload the deflate subscribers got on the wire.
fn delivered_alike(
    deflating: &mut [Conn],
    plain: &mut [Conn],
    want: &[u8],
    compressed: bool,
) -> Vec<u8> {
    let mut wire: Option<Vec<u8>> = None;
    for c in deflating.iter_mut() {
        let m = c.msg();
        assert_eq!(
            m.compressed,
            compressed,
            "RSV1 on a {}-byte delivery",
            want.len()
        );
        assert!(m.data == want, "the delivery inflates to something else");
        let first = wire.get_or_insert_with(|| m.wire.clone());
        assert!(*first == m.wire, "subscribers got different bytes");
    }
    for c in plain.iter_mut() {
        let m = c.msg();
        assert!(!m.compressed && m.data == want);
    }
    wire.expect("subscribers")
}

/// One publish of 4 KiB to 50 subscribers that negotiated the extension (over two workers) is
/// compressed once: every one gets the very same RSV1 payload, the compression counter goes
/// up by exactly 1, and the payload byte counters by 50 times the plain and the compressed
/// size. So for a JSON publish over WebSocket, a binary one, and one by HTTP POST.
/// Subscribers without the extension get them plain; a publish under the minimum size goes
/// out plain to everyone.
#[test]
fn a_publish_is_compressed_once_for_all_its_subscribers() {
    const DEFLATE_SUBS: usize = 50;
    let gw = Gateway::start(&["--workers", "2"]);
    let mut deflating: Vec<_> = (0..DEFLATE_SUBS)
        .map(|_| Conn::open(gw.addr, "/ws?subscribe=prices", &[CHROMIUM_OFFER]))
        .collect();
    let mut plain: Vec<_> = (0..3)
        .map(|_| Conn::open(gw.addr, "/ws?subscribe=prices", &[]))
        .collect();
    let mut publisher = Conn::open(gw.addr, "/ws", &[]);
    let [sessions, compressions, _, _] = deflate_metrics(&gw);
    assert_eq!((sessions, compressions), (DEFLATE_SUBS as u64, 0));

    let data = format!("[{}]", json_text(4 * KIB).trim_end_matches(','));
    let json_delivery = format!(r#"{{"type":"message","topic":"prices","data":{data}}}"#);
    let mut binary = vec![6u8];
    binary.extend_from_slice(b"prices");
    binary.extend_from_slice(json_text(4 * KIB).as_bytes());
    type Publish<'a> = Box<dyn Fn(&mut Conn) + 'a>;
    let publishes: [(&str, Publish, &[u8]); 3] = [
        (
            "a WebSocket JSON publish",
            Box::new(|p: &mut Conn| {
                let msg = format!(r#"{{"type":"publish","topic":"prices","data":{data}}}"#);
                p.send(true, 0, TEXT, msg.as_bytes());
            }),
            json_delivery.as_bytes(),
        ),
        (
            "a WebSocket binary publish",
            Box::new(|p: &mut Conn| p.send(true, 0, BINARY, &binary)),
            &binary,
        ),
        (
            "an HTTP JSON publish",
            Box::new(|_: &mut Conn| {
                let r = post(
                    gw.addr,
                    "/publish/prices",
                    "Content-Type: application/json\r\n",
                    data.as_bytes(),
                );
                assert_eq!(r.status, 202, "{r:?}");
            }),
            json_delivery.as_bytes(),
        ),
    ];
    for (what, publish, want) in publishes {
        let [_, compressions, before, after] = deflate_metrics(&gw);
        publish(&mut publisher);
        let wire = delivered_alike(&mut deflating, &mut plain, want, true);
        assert!(
            wire.len() < want.len() / 2,
            "{what}: {} -> {}",
            want.len(),
            wire.len()
        );
        assert!(
            eventually(Duration::from_secs(2), || deflate_metrics(&gw)[1]
                > compressions),
            "{what}: no compression counted"
        );
        std::thread::sleep(Duration::from_millis(100));
        let [_, compressions_now, before_now, after_now] = deflate_metrics(&gw);
        assert_eq!(compressions_now, compressions + 1, "{what}: compressions");
        assert_eq!(
            before_now - before,
            (DEFLATE_SUBS * want.len()) as u64,
            "{what}: payload bytes before compression"
        );
        assert_eq!(
            after_now - after,
            (DEFLATE_SUBS * wire.len()) as u64,
            "{what}: payload bytes after compression"
        );
    }

    // a delivery of 100 bytes: under the 128-byte minimum, plain to everyone
    let [_, compressions, _, _] = deflate_metrics(&gw);
    let envelope = r#"{"type":"message","topic":"prices","data":""}"#.len();
    let small = "x".repeat(100 - envelope);
    publisher.send(
        true,
        0,
        TEXT,
        format!(r#"{{"type":"publish","topic":"prices","data":"{small}"}}"#).as_bytes(),
    );
    let want = format!(r#"{{"type":"message","topic":"prices","data":"{small}"}}"#).into_bytes();
    assert_eq!(want.len(), 100);
    assert_eq!(
        delivered_alike(&mut deflating, &mut plain, &want, false),
        want
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(deflate_metrics(&gw)[1], compressions, "compressions");
}

/// The settings: `--compression-min-size` moves the size from which echoes are compressed, and
/// `--compression-client-context true` answers without `client_no_context_takeover` (unless
/// the client offered it) and inflates messages that refer back to the client's earlier ones.
#[test]
fn min_size_and_client_context_settings_are_honoured() {
    let gw = Gateway::start(&[
        "--compression-min-size",
        "1KiB",
        "--compression-client-context",
        "true",
        "--compression-level",
        "1",
    ]);
    let mut c = Conn::open(gw.addr, "/echo", &[CHROMIUM_OFFER]);
    assert_eq!(
        c.extensions(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    let text = json_text(4 * KIB).into_bytes();
    assert!(!c.echo(BINARY, &text[..KIB - 1], false).compressed);
    assert!(c.echo(BINARY, &text[..KIB], false).compressed);

    // one compressor for the whole connection: the second and third messages are mostly
    // references into the first
    let mut context = Compress::new(Compression::new(6), false);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let mut packed = Vec::new();
        sync_flush(&mut context, &text, &mut packed);
        packed.truncate(packed.len() - 4);
        sizes.push(packed.len());
        c.send(true, RSV1, TEXT, &packed);
        let m = c.msg();
        assert!(
            m.data == text,
            "a message compressed with the context of the last"
        );
    }
    assert!(sizes[1] < sizes[0] / 4, "compressed sizes {sizes:?}");

    // a client that offers client_no_context_takeover gets it answered
    let c = Conn::open(
        gw.addr,
        "/echo",
        &["permessage-deflate; client_no_context_takeover"],
    );
    assert_eq!(c.extensions(), Some(ANSWER));
}
