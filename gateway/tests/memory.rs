//! End-to-end tests of the gateway's memory: a peer that does not read its echoes is not
//! buffered for, an idle connection costs a few KiB, and a large message is not copied over and
//! over. Memory is the gateway process's resident set (`/proc/PID/status`); the numbers measured
//! are printed (`cargo test -- --nocapture` shows them).

mod common;

use common::{Gateway, RawWs, client_frame, connect, read_response, upgrade_request};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wsgate_core::frame::{Message, OpCode};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn mib(n: u64) -> f64 {
    n as f64 / MIB as f64
}

/// Lets the gateway settle (finish what it was doing, return freed memory) before a reading.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn echo_backpressure_stops_reading_from_a_peer_that_does_not_read() {
    let gw = Gateway::start(&["--outbox-limit", "64KiB", "--workers", "1"]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send_text("warm up");
    assert_eq!(ws.recv_text(), "warm up");
    settle();
    let rss_before = gw.rss();

    // write 64 KiB echo frames and never read the echoes, until the writes stay blocked
    let payload = vec![0xa5u8; 64 << 10];
    let frame = client_frame(true, OpCode::Binary, &payload);
    let cap = 200 * MIB;
    let mut written = 0u64;
    let mut pos = 0;
    let mut blocked_since: Option<Instant> = None;
    ws.stream.set_nonblocking(true).unwrap();
    let start = Instant::now();
    while written < cap {
        match ws.stream.write(&frame[pos..]) {
            Ok(n) => {
                written += n as u64;
                pos = (pos + n) % frame.len();
                blocked_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if blocked_since.get_or_insert_with(Instant::now).elapsed()
                    >= Duration::from_secs(1)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("write failed after {written} bytes: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still writing after 60 s"
        );
    }
    ws.stream.set_nonblocking(false).unwrap();
    settle();
    let rss_after = gw.rss();
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "backpressure: writes blocked after {:.1} MiB ({} frames of 64 KiB); gateway RSS {:.1} -> {:.1} MiB (+{:.1} MiB)",
        mib(written),
        written / frame.len() as u64,
        mib(rss_before),
        mib(rss_after),
        mib(growth)
    );
    assert!(
        written < cap / 2,
        "the gateway kept reading: {:.1} MiB written without a block",
        mib(written)
    );
    assert!(
        growth < 32 * MIB,
        "the gateway buffered for a peer that does not read: RSS +{:.1} MiB",
        mib(growth)
    );

    // the one worker is not stuck on that connection
    let mut other = RawWs::connect(gw.addr, "/echo");
    other.send_text("not stuck");
    assert_eq!(other.recv_text(), "not stuck");
    drop(ws);
}

#[test]
fn pipelined_requests_from_a_peer_that_does_not_read_are_not_buffered() {
    const REQUESTS: usize = 20_000;
    let gw = Gateway::start(&["--outbox-limit", "64KiB", "--workers", "1"]);
    let answer_len = common::get(gw.addr, "/metrics").body.len();
    settle();
    let rss_before = gw.rss();
    // 20,000 keep-alive GET /metrics (~700 KiB) in one go, answers unread: more than 50 MiB
    // of answers if the gateway answered them all at once
    let request = b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n";
    let all: Vec<u8> = request.repeat(REQUESTS);
    let mut s = connect(gw.addr);
    let mut writer = s.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&all));
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = gw.rss();
    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "{REQUESTS} pipelined requests unread (answers of ~{answer_len} bytes): gateway RSS +{:.1} MiB",
        mib(growth)
    );
    assert!(
        growth < 16 * MIB,
        "the gateway queued the answers of a peer that does not read: RSS +{:.1} MiB",
        mib(growth)
    );
    // the worker serves others meanwhile
    assert_eq!(common::get(gw.addr, "/healthz").status, 200);
    // once the peer reads, every request is answered, in order
    let mut buf = Vec::new();
    for i in 0..REQUESTS {
        let r = read_response(&mut s, &mut buf)
            .unwrap_or_else(|| panic!("the connection ended after {i} answers"));
        assert_eq!(r.status, 200, "answer {i}: {r:?}");
    }
    sender.join().unwrap().expect("write the requests");
    assert!(buf.is_empty(), "more answers than requests");
}

/// Raises the soft limit on open files to the hard limit (at most `want`).
fn raise_nofile(want: u64) {
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && soft < want
    {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, want.min(hard), hard);
    }
}

/// Opens `n` WebSocket sessions to `path` and keeps them open, upgrading a batch at a time.
fn open_sessions(gw: &Gateway, path: &str, n: usize) -> Vec<TcpStream> {
    let request = upgrade_request(path);
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch: Vec<TcpStream> = (0..(n - all.len()).min(200))
            .map(|_| {
                let mut s = connect(gw.addr);
                s.write_all(request.as_bytes()).expect("write upgrade");
                s
            })
            .collect();
        for mut s in batch {
            let mut buf = Vec::new();
            let r = read_response(&mut s, &mut buf).expect("an answer to the upgrade");
            assert_eq!(r.status, 101, "session {}: {r:?}", all.len());
            assert!(buf.is_empty(), "bytes after the 101: {buf:?}");
            all.push(s);
        }
    }
    all
}

#[test]
fn an_idle_connection_costs_less_than_4_kib() {
    const N: usize = 2000;
    raise_nofile(4 * N as u64);
    // 4 KiB pages: with transparent huge pages the resident set moves in 2 MiB steps, which
    // is up to 2 KiB per session at this count, one way or the other
    let gw = Gateway::start_without_huge_pages(&["--workers", "2"]);
    // warm up: the first sessions grow what every session shares (read buffers, tables)
    let warm = open_sessions(&gw, "/ws", 100);
    settle();
    let before = gw.rss();
    let idle = open_sessions(&gw, "/ws", N);
    settle();
    let after = gw.rss();
    assert_eq!(
        gw.metric("wsgate_connections_open"),
        (warm.len() + idle.len() + 1) as f64,
        "not every session is open"
    );
    let per_conn = after.saturating_sub(before) / N as u64;
    println!(
        "idle sessions: RSS {:.2} -> {:.2} MiB for {N} sessions: {per_conn} bytes per session",
        mib(before),
        mib(after)
    );
    assert!(
        per_conn < 4 * KIB,
        "{per_conn} bytes per idle session (target: under 4 KiB)"
    );
    // they are live sessions, not half-open sockets
    let mut last = idle.into_iter().last().expect("sessions");
    last.write_all(&client_frame(true, OpCode::Ping, b"alive"))
        .unwrap();
    let mut pong = [0u8; 7];
    last.read_exact(&mut pong).expect("a pong");
    assert_eq!(&pong, b"\x8a\x05alive");
}

#[test]
fn a_32_mib_message_peaks_below_3x_its_size() {
    const SIZE: usize = 32 << 20;
    let gw = Gateway::start(&["--max-message-size", "64MiB", "--workers", "1"]);
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send_text("warm up");
    assert_eq!(ws.recv_text(), "warm up");
    settle();
    let start_rss = gw.rss();

    let payload: Vec<u8> = (0..SIZE)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 16) as u8)
        .collect();
    let frame = client_frame(true, OpCode::Binary, &payload);
    // write from a second thread, so that neither side waits on the other
    let mut writer = ws.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&frame));
    let echoed = match ws.recv() {
        Message::Binary(b) => b,
        other => panic!("expected the binary echo, got {other:?}"),
    };
    sender.join().unwrap().expect("write the message");
    assert_eq!(echoed.len(), SIZE);
    assert!(echoed[..] == payload[..], "the echo differs");
    drop(echoed);

    let peak = gw.peak_rss();
    let ratio = peak.saturating_sub(start_rss) as f64 / SIZE as f64;
    println!(
        "32 MiB echo: RSS at start {:.1} MiB, peak {:.1} MiB: peak growth {ratio:.2}x the message",
        mib(start_rss),
        mib(peak)
    );
    assert!(
        ratio < 3.0,
        "peak RSS grew {ratio:.2}x the message size (bound 3x)"
    );
}
