//! Announced lengths are not trusted: decoding allocates for bytes that arrived, never for
//! bytes a header promises. Checked with a counting global allocator.
#![allow(unsafe_code)] // a global allocator is an `unsafe impl`: this one only counts

use bytes::BytesMut;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use wsgate_core::frame::{DecoderConfig, HeaderBuf, MessageDecoder, OpCode, encode_client_frame};
use wsgate_core::framing::{FramingLimits, Item, RequestFramer};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            let now = LIVE.fetch_add(new_size - layout.size(), Ordering::SeqCst) + new_size
                - layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        // SAFETY: same contract as the caller's; large blocks are remapped in place by glibc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: ptr was allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TWO_GIB: u64 = 2 << 30;

/// The counters are process-wide: the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn memory_follows_bytes_received_not_bytes_announced() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let config = DecoderConfig {
        max_frame_size: TWO_GIB,
        max_message_size: TWO_GIB,
        ..DecoderConfig::server()
    };
    // 1,000 connections, each announcing a 2 GiB frame and sending 100 bytes of it.
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut d = MessageDecoder::new(config);
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(
            HeaderBuf::new(true, 0, OpCode::Binary, TWO_GIB, Some([1, 2, 3, 4])).as_bytes(),
        );
        buf.extend_from_slice(&[0u8; 100]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.wanted(), TWO_GIB - 100);
        conns.push((d, buf));
    }
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(
        peak < 1000 * 1024,
        "1,000 announced 2 GiB frames took {peak} bytes"
    );
    drop(conns);
}

#[test]
fn a_fragmented_message_costs_about_one_copy() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // 8 MiB in 64 KiB fragments, fed as it would arrive: the peak is near one copy of the message
    // (the assembled message) plus one fragment in the read buffer.
    let size = 8 << 20;
    let payload = vec![7u8; size];
    let mut wire = Vec::new();
    let chunks: Vec<&[u8]> = payload.chunks(64 << 10).collect();
    for (i, c) in chunks.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        encode_client_frame(&mut wire, i + 1 == chunks.len(), op, c, [9, 8, 7, 6]);
    }
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let mut d = MessageDecoder::new(DecoderConfig::server());
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut got = None;
    for piece in wire.chunks(16 << 10) {
        buf.extend_from_slice(piece);
        if let Some(m) = d.decode(&mut buf).unwrap() {
            got = Some(m);
        }
    }
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(got.is_some());
    // The assembled message doubles its capacity as it grows (a realloc, done in place for large
    // blocks): allow up to 2x of capacity, most of it untouched pages, plus the read buffer.
    assert!(
        peak <= 2 * size + (1 << 20),
        "peak {peak} for a {size}-byte message"
    );
}

#[test]
fn request_framing_allocates_nothing_whatever_the_body_announced() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limits = FramingLimits {
        max_head_bytes: 8192,
        max_body_bytes: u64::MAX,
    };
    let input =
        b"POST /publish/t HTTP/1.1\r\nHost: gw\r\nContent-Length: 18446744073709551615\r\n\r\n\
                  0123456789";
    let mut framers: Vec<RequestFramer> = (0..1000)
        .map(|_| RequestFramer::new(limits, false))
        .collect();
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    for framer in &mut framers {
        let mut at = 0;
        while let Some((item, used)) = framer.next(&input[at..]).unwrap() {
            if let Item::Head { body_len, .. } = item {
                assert_eq!(body_len, u64::MAX);
            }
            at += used;
        }
        assert_eq!(at, input.len());
        assert_eq!(framer.body_remaining(), u64::MAX - 10);
        // Errors (a chunked body, here on a fresh framer) allocate nothing either.
        let mut fresh = RequestFramer::new(limits, false);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(fresh.next(chunked).is_err());
        assert!(fresh.next(chunked).is_err());
    }
    // The counters are process-wide and the test harness's threads allocate a few bytes
    // meanwhile (its report of the test before); under one byte per framer is none.
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(peak < 1000, "1,000 framers took {peak} bytes");
}
