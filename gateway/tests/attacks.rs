//! Memory under attack: each attack runs against the real binary next to a well-behaved client,
//! and the test checks that the gateway's resident memory stays bounded, that the attackers are
//! closed by the limit meant for them, and that the honest client keeps being served. Each test
//! prints what it measured (`cargo test -p wsgate --test attacks -- --nocapture`).

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use wsgate_core::frame::{HeaderBuf, OpCode};

const MIB: u64 = 1 << 20;

fn honest_echo_still_works(gw: &Gateway) {
    let mut ws = RawWs::connect(gw.addr, "/echo");
    ws.send_text("honest");
    assert_eq!(ws.recv_text(), "honest");
}

#[test]
fn announced_2gib_frames_that_never_arrive_cost_nothing() {
    let gw = Gateway::start_without_huge_pages(&[
        "--max-message-size",
        "2GiB",
        "--ping-interval",
        "1s",
        "--idle-timeout",
        "2s",
        "--close-timeout",
        "1s",
        "--workers",
        "2",
    ]);
    let before = gw.rss();
    let mut attackers: Vec<RawWs> = (0..1000)
        .map(|_| RawWs::connect(gw.addr, "/echo"))
        .collect();
    for a in &mut attackers {
        // a masked binary frame header announcing 2 GiB, then 1 KiB of it, then silence
        a.send_raw(HeaderBuf::new(true, 0, OpCode::Binary, 2 << 30, Some([1, 2, 3, 4])).as_bytes());
        a.send_raw(&[0u8; 1024]);
    }
    std::thread::sleep(Duration::from_millis(300));
    let during = gw.rss();
    honest_echo_still_works(&gw);
    let grown = during.saturating_sub(before);
    println!(
        "1,000 announced 2 GiB frames: RSS {:.1} MiB -> {:.1} MiB (+{:.1} KiB per attacker)",
        before as f64 / MIB as f64,
        during as f64 / MIB as f64,
        grown as f64 / 1024.0 / 1000.0
    );
    assert!(grown < 64 * MIB, "grew by {grown} bytes");
    // the idle timeout closes them (they never answer pings)
    let started = Instant::now();
    for a in attackers.iter_mut().take(20) {
        a.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert!(a.closes(), "an attacker is closed by the idle timeout");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn slowloris_handshakes_are_cut_by_the_handshake_timeout() {
    let gw = Gateway::start_without_huge_pages(&["--handshake-timeout", "2s", "--workers", "1"]);
    let before = gw.rss();
    let request = upgrade_request("/echo");
    let mut slow: Vec<TcpStream> = (0..300).map(|_| connect(gw.addr)).collect();
    // one byte per connection every 200 ms: never finishing within the timeout
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        for s in &mut slow {
            let _ = s.write_all(&request.as_bytes()[sent..sent + 1]);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    honest_echo_still_works(&gw);
    for s in slow.iter_mut().take(30) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // 408 Request Timeout, then the close
        let r = read_response(s, &mut Vec::new());
        assert!(r.as_ref().is_none_or(|r| r.status == 408), "{r:?}");
    }
    let after = gw.rss();
    println!(
        "300 slowloris handshakes: RSS {:.1} MiB -> {:.1} MiB, closed after the 2 s handshake timeout",
        before as f64 / MIB as f64,
        after as f64 / MIB as f64
    );
    assert!(after.saturating_sub(before) < 32 * MIB);
    assert!(gw.metric("wsgate_handshake_failures_total{reason=\"timeout\"}") >= 30.0);
}

#[test]
fn a_subscriber_that_never_reads_is_cut_off_and_memory_stays_bounded() {
    let gw = Gateway::start_without_huge_pages(&["--outbox-limit", "1MiB", "--workers", "1"]);
    let before = gw.rss();
    // subscribers that never read
    let stuck: Vec<RawWs> = (0..20)
        .map(|_| RawWs::connect(gw.addr, "/ws?subscribe=flood"))
        .collect();
    let mut honest = RawWs::connect(gw.addr, "/ws?subscribe=flood");
    let mut publisher = RawWs::connect(gw.addr, "/ws");
    let mut msg = vec![5u8];
    msg.extend_from_slice(b"flood");
    msg.extend(std::iter::repeat_n(0xaa, 16 * 1024));
    // 32 MiB published; the honest subscriber reads as it goes
    let mut received = 0;
    for i in 0..2048 {
        publisher.send(true, OpCode::Binary, &msg);
        if i % 16 == 15 {
            while received < i + 1 - 8 {
                if let wsgate_core::frame::Message::Binary(_) = honest.recv() {
                    received += 1;
                }
            }
        }
    }
    while received < 2048 {
        if let wsgate_core::frame::Message::Binary(_) = honest.recv() {
            received += 1;
        }
    }
    let after = gw.rss();
    println!(
        "20 subscribers that never read, 32 MiB published: RSS {:.1} MiB -> {:.1} MiB, slow-consumer closes {}",
        before as f64 / MIB as f64,
        after as f64 / MIB as f64,
        gw.metric("wsgate_slow_consumer_closes_total")
    );
    assert_eq!(gw.metric("wsgate_slow_consumer_closes_total"), 20.0);
    // 20 x (1 MiB outbox + socket buffers) at most, not 20 x 32 MiB
    assert!(
        after.saturating_sub(before) < 64 * MIB,
        "grew by {}",
        after - before
    );
    drop(stuck);
}
