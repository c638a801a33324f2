//! The Autobahn TestSuite's server cases 1 to 7, 9 and 10, replayed against wsgate-core's
//! [`Session`], the state machine the gateway runs every WebSocket connection with.
//!
//! The test plays the application of the gateway's `/echo` endpoint (every data message goes
//! back as it came); everything else (pongs, the close handshake, the close code of each
//! protocol error) is the session's own doing. It is fed the client bytes each case sends,
//! whole and in the chops the suite uses, and the test checks the frames that go out. The real
//! suite runs against the gateway binary; this layer catches a protocol regression before any
//! socket is involved.

use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Instant;
use wsgate_core::close::CloseCode;
use wsgate_core::frame::{
    DecoderConfig, Message, MessageDecoder, OpCode, OutFrame, encode_client_frame,
};
use wsgate_core::session::{Event, Session, SessionConfig, State};

const KEY: [u8; 4] = [0xa1, 0x02, 0xf3, 0x44];

/// What went back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame with this code (`None`: empty close payload).
    Close(Option<u16>),
}

/// A session with the echo application on top.
struct EchoSession {
    session: Session,
    buf: BytesMut,
    replies: Vec<Reply>,
    now: Instant,
}

impl EchoSession {
    fn new() -> EchoSession {
        EchoSession::with_config(DecoderConfig::server())
    }

    fn with_config(decoder: DecoderConfig) -> EchoSession {
        let now = Instant::now();
        let config = SessionConfig {
            decoder,
            ..SessionConfig::default()
        };
        EchoSession {
            session: Session::new(Arc::new(config), now),
            buf: BytesMut::new(),
            replies: Vec::new(),
            now,
        }
    }

    fn send(&mut self, frame: OutFrame) {
        // Check what goes out by decoding it as a client would.
        let mut d = MessageDecoder::new(DecoderConfig {
            max_frame_size: u64::MAX >> 1,
            max_message_size: u64::MAX >> 1,
            ..DecoderConfig::client()
        });
        let mut wire = BytesMut::from(&frame.to_vec()[..]);
        let reply = match d
            .decode(&mut wire)
            .expect("server frames are valid")
            .expect("whole frame")
        {
            Message::Text(b) => Reply::Text(b.to_vec()),
            Message::Binary(b) => Reply::Binary(b.to_vec()),
            Message::Pong(b) => Reply::Pong(b.to_vec()),
            Message::Close(c) => Reply::Close(c.map(|c| c.code.0)),
            Message::Ping(_) => panic!("the server does not ping here"),
        };
        assert!(wire.is_empty());
        self.replies.push(reply);
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(event) = self.session.read(&mut self.buf, self.now) {
            match event {
                Event::Text(t) if self.session.is_open() => {
                    self.send(OutFrame::new(OpCode::Text, t))
                }
                Event::Binary(b) if self.session.is_open() => {
                    self.send(OutFrame::new(OpCode::Binary, b))
                }
                Event::Failed(e) => assert!(e.close_code().is_some(), "{e}"),
                _ => {}
            }
            while let Some(frame) = self.session.poll_transmit() {
                self.send(frame);
            }
        }
        if self.session.state() == State::Closed {
            assert!(self.buf.is_empty(), "nothing is read after the close");
        }
    }
}

fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_client_frame(&mut v, fin, opcode, payload, KEY);
    v
}

fn text(payload: &[u8]) -> Vec<u8> {
    frame(true, OpCode::Text, payload)
}

fn with_rsv(mut f: Vec<u8>, rsv: u8) -> Vec<u8> {
    f[0] |= rsv << 4;
    f
}

fn with_opcode(mut f: Vec<u8>, op: u8) -> Vec<u8> {
    f[0] = (f[0] & 0xF0) | op;
    f
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    frame(true, OpCode::Close, &p)
}

/// Runs a case: the frames fed whole, in `chop`-byte pieces, and one byte at a time; all three
/// must give the same replies.
fn run(frames: &[Vec<u8>]) -> Vec<Reply> {
    let wire: Vec<u8> = frames.concat();
    let mut whole = EchoSession::new();
    for f in frames {
        whole.feed(f);
    }
    for chop in [1, 7, 997] {
        let mut s = EchoSession::new();
        for piece in wire.chunks(chop) {
            s.feed(piece);
        }
        assert_eq!(s.replies, whole.replies, "chopped into {chop}-byte pieces");
    }
    whole.replies
}

fn fail(code: CloseCode) -> Reply {
    Reply::Close(Some(code.0))
}

const PROTOCOL: CloseCode = CloseCode::PROTOCOL_ERROR;

#[test]
fn group_1_framing() {
    for len in [0usize, 125, 126, 127, 128, 65535, 65536] {
        let payload = vec![b'*'; len];
        assert_eq!(
            run(&[text(&payload)]),
            vec![Reply::Text(payload.clone())],
            "1.1 text {len}"
        );
        let payload = vec![0xfe; len];
        assert_eq!(
            run(&[frame(true, OpCode::Binary, &payload)]),
            vec![Reply::Binary(payload)],
            "1.2 binary {len}"
        );
    }
}

#[test]
fn group_2_pings_and_pongs() {
    assert_eq!(
        run(&[frame(true, OpCode::Ping, b"")]),
        vec![Reply::Pong(vec![])],
        "2.1"
    );
    assert_eq!(
        run(&[frame(true, OpCode::Ping, b"Hello, world!")]),
        vec![Reply::Pong(b"Hello, world!".to_vec())],
        "2.2"
    );
    let bin = vec![0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    assert_eq!(
        run(&[frame(true, OpCode::Ping, &bin)]),
        vec![Reply::Pong(bin)],
        "2.3"
    );
    let p125 = vec![0xfe; 125];
    assert_eq!(
        run(&[frame(true, OpCode::Ping, &p125)]),
        vec![Reply::Pong(p125)],
        "2.4 and 2.6"
    );
    assert_eq!(
        run(&[frame(true, OpCode::Ping, &[0xfe; 126])]),
        vec![fail(PROTOCOL)],
        "2.5"
    );
    assert_eq!(run(&[frame(true, OpCode::Pong, b"")]), vec![], "2.7");
    assert_eq!(
        run(&[frame(true, OpCode::Pong, b"unsolicited")]),
        vec![],
        "2.8"
    );
    assert_eq!(
        run(&[
            frame(true, OpCode::Pong, b"unsolicited"),
            frame(true, OpCode::Ping, b"ping")
        ]),
        vec![Reply::Pong(b"ping".to_vec())],
        "2.9"
    );
    let pings: Vec<Vec<u8>> = (0..10)
        .map(|i| frame(true, OpCode::Ping, format!("payload-{i}").as_bytes()))
        .collect();
    let pongs: Vec<Reply> = (0..10)
        .map(|i| Reply::Pong(format!("payload-{i}").into_bytes()))
        .collect();
    assert_eq!(run(&pings), pongs, "2.10 and 2.11");
}

#[test]
fn group_3_reserved_bits() {
    assert_eq!(
        run(&[with_rsv(text(b"Hello, world!"), 0b100)]),
        vec![fail(PROTOCOL)],
        "3.1"
    );
    for (case, rsv) in [("3.2", 0b010), ("3.3", 0b001), ("3.4", 0b110)] {
        let frames = [
            text(b"Hello, world!"),
            with_rsv(text(b"Hello, world!"), rsv),
            frame(true, OpCode::Ping, b""),
        ];
        assert_eq!(
            run(&frames),
            vec![Reply::Text(b"Hello, world!".to_vec()), fail(PROTOCOL)],
            "{case}"
        );
    }
    let bin = with_rsv(frame(true, OpCode::Binary, &[0, 1, 2]), 0b101);
    assert_eq!(run(&[bin]), vec![fail(PROTOCOL)], "3.5");
    assert_eq!(
        run(&[with_rsv(frame(true, OpCode::Ping, b"p"), 0b011)]),
        vec![fail(PROTOCOL)],
        "3.6"
    );
    assert_eq!(
        run(&[with_rsv(close_frame(1000, b""), 0b111)]),
        vec![fail(PROTOCOL)],
        "3.7"
    );
}

#[test]
fn group_4_opcodes() {
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_eq!(
            run(&[with_opcode(frame(true, OpCode::Binary, b""), op)]),
            vec![fail(PROTOCOL)],
            "4.x.1 op {op}"
        );
        let frames = [
            text(b"Hello"),
            with_opcode(frame(true, OpCode::Binary, b"reserved"), op),
            frame(true, OpCode::Ping, b""),
        ];
        assert_eq!(
            run(&frames),
            vec![Reply::Text(b"Hello".to_vec()), fail(PROTOCOL)],
            "4.x.3 op {op}"
        );
    }
}

#[test]
fn group_5_fragmentation() {
    let ping_frags = [
        frame(false, OpCode::Ping, b"frag1"),
        frame(true, OpCode::Continuation, b"frag2"),
    ];
    assert_eq!(run(&ping_frags), vec![fail(PROTOCOL)], "5.1");
    let pong_frags = [
        frame(false, OpCode::Pong, b"frag1"),
        frame(true, OpCode::Continuation, b"frag2"),
    ];
    assert_eq!(run(&pong_frags), vec![fail(PROTOCOL)], "5.2");
    let two = [
        frame(false, OpCode::Text, b"frag1"),
        frame(true, OpCode::Continuation, b"frag2"),
    ];
    assert_eq!(
        run(&two),
        vec![Reply::Text(b"frag1frag2".to_vec())],
        "5.3-5.5"
    );
    let with_ping = [
        frame(false, OpCode::Text, b"frag1"),
        frame(true, OpCode::Ping, b"ping"),
        frame(true, OpCode::Continuation, b"frag2"),
    ];
    assert_eq!(
        run(&with_ping),
        vec![
            Reply::Pong(b"ping".to_vec()),
            Reply::Text(b"frag1frag2".to_vec())
        ],
        "5.6-5.8"
    );
    for fin in [true, false] {
        let frames = [
            frame(fin, OpCode::Continuation, b"non-continuation payload"),
            text(b"Hello, world!"),
        ];
        assert_eq!(run(&frames), vec![fail(PROTOCOL)], "5.9-5.14 fin={fin}");
        let frames = [
            frame(fin, OpCode::Continuation, b"frag1"),
            frame(false, OpCode::Text, b"frag2"),
            frame(true, OpCode::Continuation, b"frag3"),
        ];
        assert_eq!(run(&frames), vec![fail(PROTOCOL)], "5.16-5.17 fin={fin}");
    }
    let frames = [
        frame(false, OpCode::Text, b"fragment1"),
        frame(true, OpCode::Continuation, b"fragment2"),
        frame(false, OpCode::Continuation, b"fragment3"),
        text(b"fragment4"),
    ];
    assert_eq!(
        run(&frames),
        vec![Reply::Text(b"fragment1fragment2".to_vec()), fail(PROTOCOL)],
        "5.15"
    );
    let frames = [
        frame(false, OpCode::Text, b"fragment1"),
        frame(true, OpCode::Text, b"fragment2"),
    ];
    assert_eq!(run(&frames), vec![fail(PROTOCOL)], "5.18");
    let frames = [
        frame(false, OpCode::Text, b"fragment1"),
        frame(false, OpCode::Continuation, b"fragment2"),
        frame(true, OpCode::Ping, b"pongme 1!"),
        frame(false, OpCode::Continuation, b"fragment3"),
        frame(true, OpCode::Ping, b"pongme 2!"),
        frame(true, OpCode::Continuation, b"fragment4"),
    ];
    assert_eq!(
        run(&frames),
        vec![
            Reply::Pong(b"pongme 1!".to_vec()),
            Reply::Pong(b"pongme 2!".to_vec()),
            Reply::Text(b"fragment1fragment2fragment3fragment4".to_vec()),
        ],
        "5.19-5.20"
    );
}

#[test]
fn group_6_utf8() {
    let kosme = "κόσμε".as_bytes();
    // 6.1: empty text frames, alone and as fragments
    assert_eq!(run(&[text(b"")]), vec![Reply::Text(vec![])], "6.1.1");
    let frames = [
        frame(false, OpCode::Text, b""),
        frame(false, OpCode::Continuation, b""),
        frame(true, OpCode::Continuation, b""),
    ];
    assert_eq!(run(&frames), vec![Reply::Text(vec![])], "6.1.2");
    let frames = [
        frame(false, OpCode::Text, b""),
        frame(false, OpCode::Continuation, b"middle"),
        frame(true, OpCode::Continuation, b""),
    ];
    assert_eq!(run(&frames), vec![Reply::Text(b"middle".to_vec())], "6.1.3");
    // 6.2: valid text split at every byte into fragments
    let hello = "Hello-µ@ßöäüàá-UTF-8!!".as_bytes();
    for cut in 0..=hello.len() {
        let frames = [
            frame(false, OpCode::Text, &hello[..cut]),
            frame(true, OpCode::Continuation, &hello[cut..]),
        ];
        assert_eq!(
            run(&frames),
            vec![Reply::Text(hello.to_vec())],
            "6.2.2 cut {cut}"
        );
    }
    let frames: Vec<Vec<u8>> = hello
        .iter()
        .enumerate()
        .map(|(i, b)| {
            frame(
                i + 1 == hello.len(),
                if i == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                },
                &[*b],
            )
        })
        .collect();
    assert_eq!(
        run(&frames),
        vec![Reply::Text(hello.to_vec())],
        "6.2.4 one byte per fragment"
    );
    // 6.3: invalid, whole and per byte-fragment
    let bad = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
    assert_eq!(
        run(&[text(bad)]),
        vec![fail(CloseCode::INVALID_PAYLOAD)],
        "6.3.1"
    );
    // 6.4: fail fast: the session fails on the fragment with the impossible sequence, before
    // the rest of the message arrives
    let mut s = EchoSession::new();
    s.feed(&frame(false, OpCode::Text, kosme));
    assert!(s.replies.is_empty());
    s.feed(&frame(false, OpCode::Continuation, b"\xf4\x90\x80\x80"));
    assert_eq!(s.replies, vec![fail(CloseCode::INVALID_PAYLOAD)], "6.4.1");
    let mut s = EchoSession::new();
    let mut payload = kosme.to_vec();
    payload.extend_from_slice(b"\xf4\x90\x80\x80edited");
    let wire = text(&payload);
    let header = wire.len() - payload.len();
    s.feed(&wire[..header + kosme.len() + 1]); // up to the lone 0xF4: still a valid prefix
    assert!(s.replies.is_empty(), "6.4.3: no verdict on a valid prefix");
    s.feed(&wire[header + kosme.len() + 1..header + kosme.len() + 2]); // 0x90 makes it impossible
    assert_eq!(
        s.replies,
        vec![fail(CloseCode::INVALID_PAYLOAD)],
        "6.4.3/6.4.4 fail mid-frame"
    );
    // 6.5-6.23 samples: valid extremes echo, invalid ones fail with 1007
    for valid in [
        &b"\xf4\x8f\xbf\xbf"[..],
        b"\xef\xbf\xbf",
        b"\xed\x9f\xbf",
        b"\xee\x80\x80",
        b"\xef\xbf\xbd",
        b"\x7f",
    ] {
        assert_eq!(
            run(&[text(valid)]),
            vec![Reply::Text(valid.to_vec())],
            "valid {valid:x?}"
        );
    }
    for invalid in [
        &b"\xf4\x90\x80\x80"[..],
        b"\x80",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xfe",
        b"\xff",
        b"\xc2",
        b"\xf8\x88\x80\x80\x80",
    ] {
        assert_eq!(
            run(&[text(invalid)]),
            vec![fail(CloseCode::INVALID_PAYLOAD)],
            "invalid {invalid:x?}"
        );
    }
}

#[test]
fn group_7_close_handling() {
    assert_eq!(
        run(&[text(b"Hello World!"), close_frame(1000, b"")]),
        vec![
            Reply::Text(b"Hello World!".to_vec()),
            Reply::Close(Some(1000))
        ],
        "7.1.1"
    );
    assert_eq!(
        run(&[close_frame(1000, b""), close_frame(1000, b"")]),
        vec![Reply::Close(Some(1000))],
        "7.1.2"
    );
    assert_eq!(
        run(&[close_frame(1000, b""), frame(true, OpCode::Ping, b"")]),
        vec![Reply::Close(Some(1000))],
        "7.1.3"
    );
    assert_eq!(
        run(&[close_frame(1000, b""), text(b"after")]),
        vec![Reply::Close(Some(1000))],
        "7.1.4"
    );
    let frames = [
        frame(false, OpCode::Text, b"fragment1"),
        close_frame(1000, b""),
        frame(true, OpCode::Continuation, b"fragment2"),
    ];
    assert_eq!(run(&frames), vec![Reply::Close(Some(1000))], "7.1.5");
    let big = vec![b'x'; 256 * 1024];
    assert_eq!(
        run(&[
            text(&big),
            close_frame(1000, b""),
            frame(true, OpCode::Ping, b"")
        ]),
        vec![Reply::Text(big), Reply::Close(Some(1000))],
        "7.1.6"
    );
    assert_eq!(
        run(&[frame(true, OpCode::Close, b"")]),
        vec![Reply::Close(None)],
        "7.3.1"
    );
    assert_eq!(
        run(&[frame(true, OpCode::Close, b"\x03")]),
        vec![fail(PROTOCOL)],
        "7.3.2"
    );
    assert_eq!(
        run(&[close_frame(1000, b"Hello World!")]),
        vec![Reply::Close(Some(1000))],
        "7.3.4"
    );
    assert_eq!(
        run(&[close_frame(1000, &[b'*'; 123])]),
        vec![Reply::Close(Some(1000))],
        "7.3.5"
    );
    assert_eq!(
        run(&[close_frame(1000, &[b'*'; 124])]),
        vec![fail(PROTOCOL)],
        "7.3.6"
    );
    let bad_reason =
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
    assert_eq!(
        run(&[close_frame(1000, bad_reason)]),
        vec![fail(CloseCode::INVALID_PAYLOAD)],
        "7.5.1"
    );
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        assert_eq!(
            run(&[close_frame(code, b"")]),
            vec![Reply::Close(Some(code))],
            "7.7 code {code}"
        );
    }
    for code in [
        0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        assert_eq!(
            run(&[close_frame(code, b"")]),
            vec![fail(PROTOCOL)],
            "7.9 / 7.13 code {code}"
        );
    }
}

#[test]
fn group_9_large_messages() {
    // 9.1.6 and 9.2.6: 16 MiB in one frame
    let big_text = "Hello, wörld! ".repeat((16 << 20) / 15);
    let mut s = EchoSession::new();
    s.feed(&text(big_text.as_bytes()));
    assert_eq!(s.replies, vec![Reply::Text(big_text.clone().into_bytes())]);
    let big_bin: Vec<u8> = (0..16 << 20).map(|i: u32| (i * 31) as u8).collect();
    let mut s = EchoSession::new();
    for piece in frame(true, OpCode::Binary, &big_bin).chunks(65536) {
        s.feed(piece);
    }
    assert_eq!(s.replies, vec![Reply::Binary(big_bin.clone())]);
    // 9.3.x / 9.4.x: 4 MiB in fragments of 64 B up to 4 MiB
    let msg = &big_bin[..4 << 20];
    for frag in [
        64usize,
        256,
        1024,
        4096,
        16384,
        65536,
        262144,
        1 << 20,
        4 << 20,
    ] {
        let mut s = EchoSession::new();
        let chunks: Vec<&[u8]> = msg.chunks(frag).collect();
        for (i, c) in chunks.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            };
            s.feed(&frame(i + 1 == chunks.len(), op, c));
        }
        assert_eq!(
            s.replies,
            vec![Reply::Binary(msg.to_vec())],
            "fragments of {frag}"
        );
    }
    // over the limit: 1009
    let config = DecoderConfig {
        max_message_size: 1 << 20,
        max_frame_size: 1 << 20,
        ..DecoderConfig::server()
    };
    let mut s = EchoSession::with_config(config);
    s.feed(&frame(true, OpCode::Binary, &big_bin[..(1 << 20) + 1]));
    assert_eq!(s.replies, vec![fail(CloseCode::TOO_BIG)]);
}

#[test]
fn group_10_autofragmentation() {
    // 10.1.1: a 64 KiB text message in 1300-byte fragments comes back whole
    let payload = vec![b'*'; 65536];
    let chunks: Vec<&[u8]> = payload.chunks(1300).collect();
    let frames: Vec<Vec<u8>> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            frame(
                i + 1 == chunks.len(),
                if i == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                },
                c,
            )
        })
        .collect();
    assert_eq!(run(&frames), vec![Reply::Text(payload)]);
}

#[test]
fn echo_of_a_single_frame_shares_the_received_buffer() {
    let mut s = Session::new(Arc::new(SessionConfig::default()), Instant::now());
    let mut buf = BytesMut::from(&text(&vec![b'a'; 1000])[..]);
    let start = buf.as_ptr() as usize;
    let Some(Event::Text(payload)) = s.read(&mut buf, Instant::now()) else {
        panic!()
    };
    let ptr = payload.as_ptr();
    assert!(
        (start..start + 1010).contains(&(ptr as usize)),
        "the payload is a slice of the read buffer"
    );
    let out = OutFrame::new(OpCode::Text, payload);
    assert_eq!(out.payload().as_ptr(), ptr);
    let _: Bytes = out.payload().clone();
}
