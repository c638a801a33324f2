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

/// Round trips of a 20-byte echo on `ws`: the 99th percentile of `n`.
fn echo_p99(ws: &mut RawWs, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            ws.send(true, OpCode::Binary, &[i as u8; 20]);
            loop {
                if let wsgate_core::frame::Message::Binary(b) = ws.recv() {
                    assert_eq!(b, vec![i as u8; 20]);
                    break;
                }
            }
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n * 99 / 100]
}

/// Connections that each write `chunk` over and over for `secs` and never read a byte.
fn flooders(
    gw: &Gateway,
    n: usize,
    chunk: Vec<u8>,
    secs: f64,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..n)
        .map(|_| {
            let ws = RawWs::connect(gw.addr, "/echo");
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let mut s = ws.stream;
                s.set_write_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let start = Instant::now();
                let mut written = 0u64;
                // the stream stays whole: a partial write goes on where it stopped
                let mut at = 0;
                while start.elapsed().as_secs_f64() < secs {
                    if let Ok(n) = s.write(&chunk[at..]) {
                        written += n as u64;
                        at = (at + n) % chunk.len();
                    }
                }
                written
            })
        })
        .collect()
}

/// Waits until the gateway has stopped reading control frames (its counter holds still for
/// 300 ms), at most `timeout`.
fn until_control_traffic_stops(gw: &Gateway, timeout: Duration) -> bool {
    let series = "wsgate_messages_in_total{kind=\"control\"}";
    let mut last = gw.metric(series);
    eventually(timeout, || {
        std::thread::sleep(Duration::from_millis(300));
        let now = gw.metric(series);
        std::mem::replace(&mut last, now) == now
    })
}

/// A limit that holds for every frame queued, not only for data: peers that send pings as fast
/// as they can and never read their pongs are no longer read once their outbox holds its limit,
/// so the node holds at most that per attacker, spends nothing more on them, and a neighbour is
/// served as before while they go on trying.
#[test]
fn ping_flooders_that_never_read_hold_at_most_their_outbox_limit() {
    let gw = Gateway::start_without_huge_pages(&["--outbox-limit", "1MiB", "--workers", "2"]);
    let mut neighbour = RawWs::connect(gw.addr, "/echo");
    let quiet = echo_p99(&mut neighbour, 200);
    let before = gw.rss();
    let ping = client_frame(true, OpCode::Ping, &[0x55; 125]);
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 500)
        .collect();
    let attackers = flooders(&gw, 20, chunk, 6.0);
    assert!(
        until_control_traffic_stops(&gw, Duration::from_secs(5)),
        "the gateway went on reading pings whose pongs nobody reads"
    );
    // the attackers are still writing: their sockets are full, the gateway does not read them
    let attacked = echo_p99(&mut neighbour, 200);
    let sent: u64 = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(
        gw.metric("wsgate_closes_sent_total{code=\"1002\"}"),
        0.0,
        "the pings were well formed"
    );
    let peak = gw.peak_rss();
    let grown = peak.saturating_sub(before);
    println!(
        "20 ping flooders ({:.0} MiB of pings written): RSS {:.1} MiB -> peak {:.1} MiB; \
         neighbour p99 {quiet:?} quiet, {attacked:?} under attack",
        sent as f64 / MIB as f64,
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    );
    assert!(
        grown < 64 * MIB + 20 * MIB,
        "grew by {:.1} MiB",
        grown as f64 / MIB as f64
    );
    // the floor is for scheduling jitter on a shared two-core machine, not a target
    assert!(
        attacked < quiet * 10 + Duration::from_millis(10),
        "neighbour p99 {attacked:?} under attack, {quiet:?} quiet"
    );
}

/// Echo peers that send small messages and never read the echoes: each echo is copied out of
/// the worker's read buffer (a slice of it would keep the whole buffer alive, unseen by the
/// limit), and the peer is no longer read once it holds its limit.
#[test]
fn echo_peers_that_never_read_hold_at_most_their_outbox_limit() {
    let gw = Gateway::start_without_huge_pages(&["--outbox-limit", "1MiB", "--workers", "2"]);
    let before = gw.rss();
    let message = client_frame(true, OpCode::Binary, &[0x42; 20]);
    let attackers = flooders(&gw, 20, message, 2.0);
    let sent: u64 = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    let peak = gw.peak_rss();
    let grown = peak.saturating_sub(before);
    println!(
        "20 echo peers that never read ({:.1} MiB of 20-byte messages written): RSS {:.1} MiB -> peak {:.1} MiB",
        sent as f64 / MIB as f64,
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    );
    assert!(
        grown < 64 * MIB + 20 * MIB,
        "grew by {:.1} MiB",
        grown as f64 / MIB as f64
    );
    honest_echo_still_works(&gw);
}

/// Echo peers that send one message at a time and never read: each message arrives in a read of
/// its own, and an echo that kept a slice of the worker's 64 KiB read buffer would keep a whole
/// buffer alive per message, unseen by a limit that counts 4 KiB. Copied out, they cost what
/// they are.
#[test]
fn echo_peers_that_trickle_and_never_read_keep_no_read_buffers_alive() {
    let gw = Gateway::start_without_huge_pages(&["--outbox-limit", "1MiB", "--workers", "2"]);
    let before = gw.rss();
    let message = client_frame(true, OpCode::Binary, &[0x42; 4000]);
    let peers: Vec<_> = (0..10)
        .map(|_| {
            // a small receive buffer: the echoes soon stay queued in the gateway
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            socket.set_nodelay(true).unwrap();
            socket.connect(&gw.addr.into()).unwrap();
            let mut stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream
                .write_all(upgrade_request("/echo").as_bytes())
                .unwrap();
            let mut ws = RawWs::finish_upgrade(stream, Vec::new());
            let message = message.clone();
            std::thread::spawn(move || {
                // the gateway stops reading a peer whose echoes pass its outbox limit; what the
                // kernel's buffers take beyond that depends on the machine's load, so a peer
                // whose writes block for a while has sent what it could
                let mut sent = 0;
                for _ in 0..2000 {
                    if ws.try_send_raw(&message, Duration::from_secs(3)).is_err() {
                        break;
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                (ws, sent)
            })
        })
        .collect();
    let (peers, sent): (Vec<RawWs>, Vec<u32>) =
        peers.into_iter().map(|t| t.join().unwrap()).unzip();
    assert!(
        sent.iter().all(|&n| n >= 300),
        "every peer sent past its 1 MiB outbox limit (256 echoes): {sent:?}"
    );
    let peak = gw.peak_rss();
    let grown = peak.saturating_sub(before);
    println!(
        "10 echo peers, 2,000 messages of 4 KB each in reads of their own, never read: RSS \
         {:.1} MiB -> peak {:.1} MiB",
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    );
    assert!(
        grown < 64 * MIB,
        "grew by {:.1} MiB",
        grown as f64 / MIB as f64
    );
    drop(peers);
}

/// A publisher faster than the workers that deliver to its subscribers: the inboxes between
/// workers are bounded (`inbox-limit`), the publisher is no longer read while one it publishes
/// to is full, and nothing is lost: every reading subscriber gets every message, in order.
#[test]
fn a_publisher_faster_than_its_subscribers_workers_waits_and_nothing_is_lost() {
    const MESSAGES: u32 = 10_000;
    let gw = Gateway::start_without_huge_pages(&[
        "--workers",
        "2",
        "--inbox-limit",
        "64KiB",
        "--outbox-limit",
        "32MiB",
    ]);
    let before = gw.rss();
    // enough subscribers that both workers have some (all on one: 1 chance in 128)
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let mut ws = ws(gw.addr, "/ws?subscribe=flood");
            std::thread::spawn(move || {
                for expected in 0..MESSAGES {
                    let b = ws_binary(&mut ws);
                    let seq = u32::from_be_bytes(b[6..10].try_into().unwrap());
                    assert_eq!(seq, expected, "in order, nothing lost");
                    assert_eq!(b.len(), 1 + 5 + 1024);
                }
            })
        })
        .collect();
    let mut publisher = RawWs::connect(gw.addr, "/ws");
    let mut wire = Vec::new();
    for seq in 0..MESSAGES {
        let mut msg = vec![5u8];
        msg.extend_from_slice(b"flood");
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.resize(1 + 5 + 1024, 0xee);
        wire.extend(client_frame(true, OpCode::Binary, &msg));
    }
    publisher.send_raw(&wire);
    for r in readers {
        r.join().expect("a reader got every message in order");
    }
    let peak = gw.peak_rss();
    let text = gw.metrics();
    let congestions: f64 = (0..2)
        .map(|w| {
            metric(
                &text,
                &format!("wsgate_inbox_congestions_total{{worker=\"{w}\"}}"),
            )
        })
        .sum();
    let paused = metric(&text, "wsgate_publishers_paused_total");
    println!(
        "{MESSAGES} publishes of 1 KiB to 8 subscribers through 64 KiB inboxes: inboxes over \
         their bound {congestions} times, publisher paused {paused} times; RSS {:.1} MiB -> \
         peak {:.1} MiB",
        before as f64 / MIB as f64,
        peak as f64 / MIB as f64
    );
    assert_eq!(
        metric(&text, "wsgate_slow_consumer_closes_total"),
        0.0,
        "readers that read are never cut off"
    );
    if congestions > 0.0 {
        assert!(paused > 0.0, "an inbox over its bound pauses its publisher");
    }
    assert!(peak.saturating_sub(before) < 128 * MIB);
}
