//! End-to-end tests of the /echo endpoint: sizes, fragmentation, control frames, every close
//! path and every way a client can break the protocol.

mod common;

use common::{Gateway, RawWs, client_frame, close_payload, connect, odd_frame, upgrade_request};
use std::io::Write;
use std::time::Duration;
use wsgate_core::frame::{Message, OpCode, RSV1, RSV3};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn text_and_binary_of_every_size_come_back_unchanged() {
    let gw = Gateway::start(&["--workers", "2"]);
    let mut ws = common::ws(gw.addr, "/echo");
    for len in [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20] {
        let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        ws.send(tungstenite::Message::text(text.clone()))
            .expect("send text");
        assert_eq!(common::ws_text(&mut ws), text, "text of {len} bytes");
        let bytes = pattern(len, len as u8);
        ws.send(tungstenite::Message::binary(bytes.clone()))
            .expect("send binary");
        assert!(
            common::ws_binary(&mut ws) == bytes,
            "binary of {len} bytes differs"
        );
    }
    // multi-byte UTF-8 survives too
    let text = "héllo wörld ✓ 𝄞".repeat(1000);
    common::ws_send(&mut ws, &text);
    assert_eq!(common::ws_text(&mut ws), text);
    ws.close(None).unwrap();
}

#[test]
fn fragmented_messages_come_back_as_one_message() {
    let gw = Gateway::start(&[]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(false, OpCode::Text, b"Hel");
    ws.send(false, OpCode::Continuation, b"lo, ");
    ws.send(false, OpCode::Continuation, b"");
    ws.send(true, OpCode::Continuation, "wörld".as_bytes());
    assert_eq!(ws.recv_text(), "Hello, wörld");

    let big = pattern(200_000, 7);
    ws.send(false, OpCode::Binary, &big[..1]);
    ws.send(false, OpCode::Continuation, &big[1..100_000]);
    ws.send(true, OpCode::Continuation, &big[100_000..]);
    match ws.recv() {
        Message::Binary(b) => assert!(b[..] == big[..], "reassembled binary differs"),
        other => panic!("expected binary, got {other:?}"),
    }
    // nothing else was sent back: the next frame is the answer to this ping
    ws.send(true, OpCode::Ping, b"after");
    assert_eq!(ws.recv(), Message::Pong("after".into()));
}

#[test]
fn ping_gets_a_pong_with_the_same_payload_even_inside_a_fragmented_message() {
    let gw = Gateway::start(&[]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(true, OpCode::Ping, b"");
    assert_eq!(ws.recv(), Message::Pong("".into()));
    let payload = pattern(125, 3);
    ws.send(true, OpCode::Ping, &payload);
    assert_eq!(ws.recv(), Message::Pong(payload.into()));

    ws.send(false, OpCode::Text, b"first ");
    ws.send(true, OpCode::Ping, b"in between");
    ws.send(true, OpCode::Continuation, b"second");
    assert_eq!(ws.recv(), Message::Pong("in between".into()));
    assert_eq!(ws.recv_text(), "first second");

    // an unsolicited pong is ignored
    ws.send(true, OpCode::Pong, b"unsolicited");
    ws.send_text("still here");
    assert_eq!(ws.recv_text(), "still here");
}

#[test]
fn client_close_codes_are_echoed() {
    let gw = Gateway::start(&[]);
    for code in [1000u16, 1001, 1003, 1011, 3000, 4999] {
        let mut ws = RawWs::connect(gw.addr, "/echo");
        ws.send_text("before");
        assert_eq!(ws.recv_text(), "before");
        ws.send(true, OpCode::Close, &close_payload(code, "bye now"));
        ws.expect_close_now(code);
        assert!(ws.closes(), "connection not closed after close {code}");
    }
    // the codes clients close with are counted, the application ranges together
    for (label, n) in [
        ("1000", 1.0),
        ("1001", 1.0),
        ("1011", 1.0),
        ("3xxx", 1.0),
        ("4xxx", 1.0),
    ] {
        assert_eq!(
            gw.metric(&format!("wsgate_closes_received_total{{code=\"{label}\"}}")),
            n,
            "{label}"
        );
    }
}

#[test]
fn close_without_payload_gets_a_close_without_payload() {
    let gw = Gateway::start(&[]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(true, OpCode::Close, b"");
    match ws.recv() {
        Message::Close(c) => assert_eq!(c, None, "an empty close is answered without a code"),
        other => panic!("expected close, got {other:?}"),
    }
    assert!(ws.closes());
    assert_eq!(
        gw.metric("wsgate_closes_received_total{code=\"none\"}"),
        1.0
    );
}

#[test]
fn invalid_close_payloads_are_protocol_errors() {
    let gw = Gateway::start(&[]);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        cases.push(("invalid code", close_payload(code, "")));
    }
    cases.push(("one byte", vec![0x03]));
    let mut bad_reason = close_payload(1000, "");
    bad_reason.extend_from_slice(&[0xce, 0xba, 0xff]);
    for (what, payload) in cases {
        let mut ws = RawWs::connect(gw.addr, "/echo");
        ws.send(true, OpCode::Close, &payload);
        match ws.recv() {
            Message::Close(c) => assert_eq!(c.map(|c| c.code.0), Some(1002), "{what} {payload:?}"),
            other => panic!("{what}: expected close, got {other:?}"),
        }
        assert!(ws.closes());
    }
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(true, OpCode::Close, &bad_reason);
    ws.expect_close_now(1007);
}

#[test]
fn invalid_utf8_fails_as_soon_as_the_bad_fragment_arrives() {
    let gw = Gateway::start(&[]);
    // the first fragment ends inside a two-byte sequence; the second breaks it. The message is
    // never finished: the 1007 must come without it.
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(false, OpCode::Text, b"valid \xce");
    ws.send(false, OpCode::Continuation, b"A");
    ws.expect_close_now(1007);
    assert!(ws.closes());

    // a bad byte in the middle of one fragment
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(false, OpCode::Text, "κόσμε".as_bytes());
    ws.send(false, OpCode::Continuation, b"ok \xff more");
    ws.expect_close_now(1007);

    // a whole text message that is not UTF-8
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(true, OpCode::Text, b"\xed\xa0\x80");
    ws.expect_close_now(1007);

    // a text message whose last fragment ends inside a sequence
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send(false, OpCode::Text, b"abc");
    ws.send(true, OpCode::Continuation, b"\xe2\x82");
    ws.expect_close_now(1007);
}

#[test]
fn oversized_messages_get_1009() {
    let gw = Gateway::start(&["--max-message-size", "1MiB"]);
    // exactly the limit passes
    let mut ws = RawWs::connect(gw.addr, "/echo");
    let exact = pattern(1 << 20, 9);
    ws.send(true, OpCode::Binary, &exact);
    match ws.recv() {
        Message::Binary(b) => assert!(b[..] == exact[..]),
        other => panic!("expected binary, got {other:?}"),
    }
    // one byte more in one frame does not; the payload is sent from another thread so that a
    // server that stops reading cannot block the test
    let ws_stream = ws.stream.try_clone().unwrap();
    let frame = client_frame(true, OpCode::Binary, &pattern((1 << 20) + 1, 1));
    let writer = std::thread::spawn(move || {
        let mut s = ws_stream;
        let _ = s.write_all(&frame);
    });
    ws.expect_close_now(1009);
    assert!(ws.closes());
    writer.join().unwrap();

    // nor does a fragmented message that grows past the limit
    let mut ws = RawWs::connect(gw.addr, "/echo");
    let half = pattern(600 << 10, 2);
    ws.send(false, OpCode::Text, &vec![b'x'; 600 << 10]);
    let ws_stream = ws.stream.try_clone().unwrap();
    let frame = client_frame(true, OpCode::Continuation, &half);
    let writer = std::thread::spawn(move || {
        let mut s = ws_stream;
        let _ = s.write_all(&frame);
    });
    ws.expect_close_now(1009);
    writer.join().unwrap();
}

#[test]
fn unmasked_client_frames_are_protocol_errors() {
    let gw = Gateway::start(&[]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send_raw(&odd_frame(true, 0, OpCode::Text, b"no mask", false));
    ws.expect_close_now(1002);
    assert!(ws.closes());
}

#[test]
fn reserved_bits_and_opcodes_are_protocol_errors() {
    let gw = Gateway::start(&[]);
    for rsv in [RSV1, RSV3] {
        let mut ws = RawWs::connect(gw.addr, "/echo");
        ws.send_raw(&odd_frame(true, rsv, OpCode::Text, b"rsv", true));
        ws.expect_close_now(1002);
        assert!(ws.closes());
    }
    // reserved opcodes 0x3 and 0xB, written by hand
    for op in [0x83u8, 0x8B] {
        let mut ws = RawWs::connect(gw.addr, "/echo");
        ws.send_raw(&[op, 0x80, 1, 2, 3, 4]);
        ws.expect_close_now(1002);
    }
    // a continuation with no message open, a new message inside a fragmented one, a
    // fragmented ping, an over-long ping
    let broken: [Vec<Vec<u8>>; 4] = [
        vec![client_frame(true, OpCode::Continuation, b"x")],
        vec![
            client_frame(false, OpCode::Text, b"a"),
            client_frame(true, OpCode::Text, b"b"),
        ],
        vec![client_frame(false, OpCode::Ping, b"p")],
        vec![client_frame(true, OpCode::Ping, &[0u8; 126])],
    ];
    for frames in broken {
        let mut ws = RawWs::connect(gw.addr, "/echo");
        for f in &frames {
            ws.send_raw(f);
        }
        ws.expect_close_now(1002);
    }
}

#[test]
fn a_request_written_one_byte_at_a_time_still_upgrades() {
    let gw = Gateway::start(&[]);
    let mut stream = connect(gw.addr);
    for b in upgrade_request("/echo").bytes() {
        stream.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut ws = RawWs::finish_upgrade(stream, Vec::new());
    // and a frame written one byte at a time is decoded too
    for b in client_frame(true, OpCode::Text, b"slowly") {
        ws.send_raw(&[b]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ws.recv_text(), "slowly");
}

#[test]
fn a_frame_in_the_same_segment_as_the_upgrade_is_echoed() {
    let gw = Gateway::start(&[]);
    let mut stream = connect(gw.addr);
    let mut bytes = upgrade_request("/echo").into_bytes();
    bytes.extend(client_frame(true, OpCode::Text, b"early bird"));
    bytes.extend(client_frame(true, OpCode::Binary, b"second"));
    stream.write_all(&bytes).unwrap();
    let mut ws = RawWs::finish_upgrade(stream, Vec::new());
    assert_eq!(ws.recv_text(), "early bird");
    assert_eq!(ws.recv(), Message::Binary("second".into()));
}

#[test]
fn echo_can_be_switched_off() {
    let gw = Gateway::start(&["--echo", "false"]);
    let r = common::http(gw.addr, upgrade_request("/echo").as_bytes());
    assert_eq!(r.status, 404, "{r:?}");
}

#[test]
fn a_peer_that_sends_and_half_closes_at_once_is_closed_at_once() {
    // The gateway stops reading a socket after a short read (the receive queue is empty then);
    // a message and the peer's FIN that arrive together come with one readiness event, so the
    // end must still be read then, not at the idle timeout.
    let gw = Gateway::start(&[]);
    let mut peers: Vec<RawWs> = (0..64).map(|_| RawWs::connect(gw.addr, "/echo")).collect();
    for (i, ws) in peers.iter_mut().enumerate() {
        ws.send(true, OpCode::Binary, format!("last words {i}").as_bytes());
        ws.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    for (i, ws) in peers.iter_mut().enumerate() {
        assert!(ws.closes(), "connection {i} still open after its FIN");
    }
}

/// The write system calls (`write`, `writev` and their kin: the file layer's) the process
/// made so far, from `/proc/PID/io`; `send` and `sendmsg` are not among them.
fn file_writes(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("syscw: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("syscw in /proc/PID/io")
}

#[test]
fn plain_sockets_are_written_with_send_not_through_the_file_layer() {
    // send(2) and sendmsg(2) skip the file layer's locks and hooks, a tenth of the CPU of a
    // fanout on loopback: a single buffer goes out with send, several with sendmsg
    if !std::path::Path::new("/proc/self/io").exists() {
        // a kernel without per-task I/O accounting (CONFIG_TASK_IO_ACCOUNTING) cannot tell
        eprintln!("skipped: no /proc/self/io on this kernel");
        return;
    }
    let gw = Gateway::start(&["--workers", "1", "--log", "warn"]);
    let mut ws = common::ws(gw.addr, "/echo");
    ws.send(tungstenite::Message::binary(vec![1u8; 8]))
        .expect("send");
    assert_eq!(common::ws_binary(&mut ws), vec![1u8; 8]);
    let before = file_writes(gw.pid());
    for i in 0..200u32 {
        let small = i.to_be_bytes().to_vec();
        ws.send(tungstenite::Message::binary(small.clone()))
            .expect("send");
        assert_eq!(common::ws_binary(&mut ws), small);
    }
    for len in [200_000, 1 << 20] {
        let large = pattern(len, 7);
        ws.send(tungstenite::Message::binary(large.clone()))
            .expect("send");
        assert!(common::ws_binary(&mut ws) == large, "{len} bytes back");
    }
    let writes = file_writes(gw.pid()) - before;
    assert!(writes < 20, "{writes} write/writev calls for 202 echoes");
}
