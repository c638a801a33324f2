//! permessage-deflate (RFC 7692): which deflate library compresses the gateway's outgoing
//! messages, measured on pub/sub JSON of about 128 B, 1 KiB and 16 KiB (`json_message`, a
//! `{"type":"message","topic":"prices.eu","data":{...}}` delivery whose `data` holds an array of
//! quotes with pseudo-random numbers and symbols, deterministic, so it compresses as real market
//! data does rather than as a repeated pattern).
//!
//! `deflate-{128B,1KiB,16KiB}/{library}/L{1,2,3,6}`: one message compressed in one call, as a sender
//! without context takeover does (throughput in uncompressed bytes):
//!
//! - `flate2-reset`: flate2 over zlib-rs, raw deflate (`Compress::new(level, false)`), one
//!   `compress_vec` with `FlushCompress::Sync`, the trailing `00 00 ff ff` dropped; one
//!   `Compress` kept and `reset()` before each message (what a per-worker pool of compressors
//!   does);
//! - `flate2-new`: the same with a fresh `Compress` per message (allocation and initialisation of
//!   the deflate state included);
//! - `libdeflate`: `libdeflater::Compressor::deflate_compress` (C libdeflate), one compressor
//!   kept. Its output is a whole raw deflate stream ending with a final block (it has no sync
//!   flush), sent as it is: RFC 7692's example 7.2.3.4 sends such a block (followed by one `00`
//!   byte, the start of an empty stored block, so that a receiver that keeps inflating after it
//!   still sees a well-formed stream; not added here). The setup checks, with an assert, that
//!   flate2's `Decompress::new(false)` inflates it, `00 00 ff ff` fed after it as a receiver
//!   does, back to the same bytes (the flate2 output is checked the same way).
//!
//! Both write into an output buffer reused across messages, so neither arm pays an allocation
//! for its output. The compressed sizes and ratios of every library and level are printed once,
//! on stderr, before the measurements.
//!
//! `inflate-{128B,1KiB,16KiB}/{source}`: flate2 (zlib-rs) `Decompress::new(false)`, reset and
//! reused, inflating one compressed message and then `00 00 ff ff` (fed after it, not copied onto
//! it) into a reused buffer, as the gateway inflates its clients' messages; the sources are flate2's level 1 and level 6
//! output and libdeflate's level 6 output (throughput in uncompressed bytes).
//!
//! `fanout-1000-{1KiB,16KiB}/{compress-once,compress-per-subscriber}`: delivering one publish to
//! 1,000 subscribers. `compress-once` compresses it once into a `Bytes` and gives each subscriber
//! a clone (a reference count); `compress-per-subscriber` compresses it again for every
//! subscriber (what uWebSockets' plain `publish` with compression and no shared compressor does).
//! Both use `FANOUT_LIBRARY` at `FANOUT_LEVEL` and copy the compressed bytes into an exact-size
//! `Bytes`; the subscribers' queues are one reused `Vec<Bytes>` (the previous round's copies are
//! dropped inside the timing, as a real flush would free them).
//!
//! flate2 is built with the workspace's features (`zlib-rs` with `runtime_detection`, which the
//! gateway uses too: measured here, it inflates 10% to 25% faster with zlib-rs's AVX2 and PCLMUL
//! paths). mimalloc is the global allocator, as in the gateway binary.
//!
//! Run with:
//!
//! ```sh
//! cargo bench -p wsgate-benches --bench deflate -- --warm-up-time 1 --measurement-time 3
//! ```

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use libdeflater::{CompressionLvl, Compressor};
use std::fmt::Write as _;
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The message sizes aimed at (a message is the longest `json_message` not over its target).
const SIZES: [(&str, usize); 3] = [("128B", 128), ("1KiB", 1024), ("16KiB", 16 * 1024)];

/// The compression levels compared (zlib-rs, like zlib-ng, has a different strategy at 1, at 2-3
/// and at 4-6, so 2 is the cheapest level with dynamic Huffman codes).
const LEVELS: [u32; 4] = [1, 2, 3, 6];

/// What a sync flush ends with, and what a permessage-deflate sender drops (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The subscribers of the fanout case.
const SUBSCRIBERS: usize = 1000;

/// The library of both fanout arms: the faster one at `FANOUT_LEVEL` at 1 and 16 KiB here
/// (about 225 against 160 MB/s at 16 KiB on a 2-core AMD EPYC, with 4% smaller output).
const FANOUT_LIBRARY: Library = Library::Libdeflate;

/// The level of both fanout arms (the gateway's default `--compression-level`).
const FANOUT_LEVEL: u32 = 6;

#[derive(Clone, Copy, Debug)]
enum Library {
    Flate2,
    #[allow(dead_code)] // whichever one `FANOUT_LIBRARY` does not name
    Libdeflate,
}

/// A small xorshift64* generator: the same numbers on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A pub/sub delivery of market quotes as JSON, the longest such message of at most `target`
/// bytes: a `seq`, then quotes with a symbol, a venue, a bid and an ask with two decimals, a
/// quantity, a side and a timestamp, all drawn from a seeded generator. Where not even one quote
/// fits, a single tick (symbol, bid, ask, quantity, timestamp; about 110 bytes).
fn json_message(target: usize, seed: u64) -> Vec<u8> {
    const SYMBOLS: [&str; 24] = [
        "SAP", "SIE", "ALV", "DTE", "BAS", "BAYN", "BMW", "MBG", "VOW3", "ADS", "MUV2", "DBK",
        "AIR", "MC", "OR", "TTE", "SAN", "BNP", "ASML", "INGA", "PHIA", "ENEL", "ISP", "NESN",
    ];
    const VENUES: [&str; 6] = ["XETR", "XPAR", "XAMS", "XMIL", "XSWX", "CEUX"];
    let mut rng = Rng(seed | 1);
    let mut ts = 1_718_000_000_000 + rng.below(1_000_000);
    let head = format!(
        r#"{{"type":"message","topic":"prices.eu","data":{{"seq":{},"quotes":["#,
        rng.below(10_000_000)
    );
    let mut quotes: Vec<String> = Vec::new();
    let mut len = head.len() + "]}}".len();
    loop {
        let bid = 1_000 + rng.below(99_000);
        let ask = bid + 1 + rng.below(25);
        ts += rng.below(40);
        let quote = format!(
            r#"{{"sym":"{}","venue":"{}","bid":{}.{:02},"ask":{}.{:02},"qty":{},"side":"{}","ts":{}}}"#,
            SYMBOLS[rng.below(SYMBOLS.len() as u64) as usize],
            VENUES[rng.below(VENUES.len() as u64) as usize],
            bid / 100,
            bid % 100,
            ask / 100,
            ask % 100,
            1 + rng.below(20_000),
            if rng.below(2) == 0 { "buy" } else { "sell" },
            ts,
        );
        let added = quote.len() + usize::from(!quotes.is_empty());
        if !quotes.is_empty() && len + added > target {
            break;
        }
        len += added;
        quotes.push(quote);
    }
    if len > target {
        // one quote does not fit: a single tick, as a ticker topic sends
        let bid = 1_000 + rng.below(99_000);
        let ask = bid + 1 + rng.below(25);
        return format!(
            r#"{{"type":"message","topic":"prices.eu","data":{{"sym":"{}","bid":{}.{:02},"ask":{}.{:02},"qty":{},"ts":{}}}}}"#,
            SYMBOLS[rng.below(SYMBOLS.len() as u64) as usize],
            bid / 100,
            bid % 100,
            ask / 100,
            ask % 100,
            1 + rng.below(20_000),
            ts,
        )
        .into_bytes();
    }
    let mut s = head;
    s.push_str(&quotes.join(","));
    s.push_str("]}}");
    debug_assert_eq!(s.len(), len);
    s.into_bytes()
}

/// Raw deflate of `msg` by `c` (fresh or reset) with a sync flush, the trailing `00 00 ff ff`
/// dropped, into `out` (cleared first; grown only when its capacity is short).
fn flate2_deflate(c: &mut Compress, msg: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(msg.len() + msg.len() / 8 + 64);
    let start = c.total_in();
    loop {
        let consumed = (c.total_in() - start) as usize;
        c.compress_vec(&msg[consumed..], out, FlushCompress::Sync)
            .expect("deflate");
        // a flush is complete when it returns with output space left
        if out.len() < out.capacity() {
            break;
        }
        out.reserve(64);
    }
    assert_eq!((c.total_in() - start) as usize, msg.len());
    assert!(out.ends_with(&TAIL), "a sync flush ends with 00 00 ff ff");
    out.truncate(out.len() - TAIL.len());
}

/// Raw deflate of `msg` by libdeflate into `out` (sized to the bound once, then reused); returns
/// the compressed length.
fn libdeflate_deflate(c: &mut Compressor, msg: &[u8], out: &mut Vec<u8>) -> usize {
    let bound = c.deflate_compress_bound(msg.len());
    if out.len() < bound {
        out.resize(bound, 0);
    }
    c.deflate_compress(msg, out).expect("libdeflate")
}

/// What a permessage-deflate receiver does with `payload`: inflate it with `d` (reset first),
/// then `00 00 ff ff` after it (RFC 7692 7.2.2), into `out` (cleared; grown when short). Stops at
/// the end of the stream when the payload ends with a final block.
fn inflate(d: &mut Decompress, payload: &[u8], out: &mut Vec<u8>) {
    d.reset(false);
    out.clear();
    out.reserve(4 * payload.len() + 64);
    for chunk in [payload, &TAIL] {
        let start = d.total_in();
        loop {
            let (used, produced) = (d.total_in() - start, out.len());
            let status = d
                .decompress_vec(&chunk[used as usize..], out, FlushDecompress::Sync)
                .expect("inflate");
            if status == Status::StreamEnd {
                return;
            }
            let now_used = d.total_in() - start;
            if now_used as usize == chunk.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            } else {
                assert!(
                    now_used > used || out.len() > produced,
                    "inflate made no progress"
                );
            }
        }
    }
}

/// `msg` compressed at `level` by `library`, as one permessage-deflate payload.
fn compressed(library: Library, level: u32, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match library {
        Library::Flate2 => {
            let mut c = Compress::new(Compression::new(level), false);
            flate2_deflate(&mut c, msg, &mut out);
        }
        Library::Libdeflate => {
            let mut c = Compressor::new(libdeflate_level(level));
            let n = libdeflate_deflate(&mut c, msg, &mut out);
            out.truncate(n);
        }
    }
    out
}

fn libdeflate_level(level: u32) -> CompressionLvl {
    CompressionLvl::new(level as i32).expect("libdeflate level")
}

/// Checks that `payload` inflates back to `msg` as a receiver would inflate it.
fn assert_round_trip(what: &str, payload: &[u8], msg: &[u8]) {
    let mut d = Decompress::new(false);
    let mut out = Vec::new();
    inflate(&mut d, payload, &mut out);
    assert!(
        out == msg,
        "{what}: the inflated payload differs from the message"
    );
}

/// The messages of `SIZES`, each checked to round-trip through both libraries at every level,
/// with their compressed sizes printed on stderr.
fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let mut table = String::from("deflate: compressed size (compressed / original)\n");
    let msgs: Vec<_> = SIZES
        .iter()
        .map(|&(name, target)| {
            (
                name,
                json_message(target, 0x9e37_79b9_7f4a_7c15 ^ target as u64),
            )
        })
        .collect();
    for (name, msg) in &msgs {
        let _ = write!(table, "  {name:>5} ({:>5} B):", msg.len());
        for library in [Library::Flate2, Library::Libdeflate] {
            for level in LEVELS {
                let payload = compressed(library, level, msg);
                assert_round_trip(&format!("{library:?} L{level} {name}"), &payload, msg);
                let _ = write!(
                    table,
                    "  {library:?} L{level} {:>5} B {:.3}",
                    payload.len(),
                    payload.len() as f64 / msg.len() as f64
                );
            }
        }
        table.push('\n');
    }
    eprint!("{table}");
    msgs
}

fn deflate(c: &mut Criterion) {
    for (name, msg) in messages() {
        let mut group = c.benchmark_group(format!("deflate-{name}"));
        group.throughput(Throughput::Bytes(msg.len() as u64));
        for level in LEVELS {
            let id = format!("L{level}");
            let mut out = Vec::new();
            let mut comp = Compress::new(Compression::new(level), false);
            group.bench_function(BenchmarkId::new("flate2-reset", &id), |b| {
                b.iter(|| {
                    comp.reset();
                    flate2_deflate(&mut comp, black_box(&msg), &mut out);
                    black_box(out.len())
                })
            });
            group.bench_function(BenchmarkId::new("flate2-new", &id), |b| {
                b.iter(|| {
                    let mut comp = Compress::new(Compression::new(level), false);
                    flate2_deflate(&mut comp, black_box(&msg), &mut out);
                    black_box(out.len())
                })
            });
            let mut comp = Compressor::new(libdeflate_level(level));
            group.bench_function(BenchmarkId::new("libdeflate", &id), |b| {
                b.iter(|| black_box(libdeflate_deflate(&mut comp, black_box(&msg), &mut out)))
            });
        }
        group.finish();
    }
}

fn inflate_bench(c: &mut Criterion) {
    for (name, msg) in messages() {
        let mut group = c.benchmark_group(format!("inflate-{name}"));
        group.throughput(Throughput::Bytes(msg.len() as u64));
        let sources = [
            ("flate2-L1", Library::Flate2, 1),
            ("flate2-L6", Library::Flate2, 6),
            ("libdeflate-L6", Library::Libdeflate, 6),
        ];
        for (source, library, level) in sources {
            let payload = compressed(library, level, &msg);
            let mut d = Decompress::new(false);
            let mut out = Vec::new();
            inflate(&mut d, &payload, &mut out);
            assert!(out == msg);
            group.bench_function(source, |b| {
                b.iter(|| {
                    inflate(&mut d, black_box(&payload), &mut out);
                    black_box(out.len())
                })
            });
        }
        group.finish();
    }
}

/// One message compressed by `FANOUT_LIBRARY` at `FANOUT_LEVEL` into an exact-size `Bytes`.
struct FanoutDeflater {
    flate2: Compress,
    libdeflate: Compressor,
    scratch: Vec<u8>,
}

impl FanoutDeflater {
    fn new() -> FanoutDeflater {
        FanoutDeflater {
            flate2: Compress::new(Compression::new(FANOUT_LEVEL), false),
            libdeflate: Compressor::new(libdeflate_level(FANOUT_LEVEL)),
            scratch: Vec::new(),
        }
    }

    fn compress(&mut self, msg: &[u8]) -> Bytes {
        match FANOUT_LIBRARY {
            Library::Flate2 => {
                self.flate2.reset();
                flate2_deflate(&mut self.flate2, msg, &mut self.scratch);
                Bytes::copy_from_slice(&self.scratch)
            }
            Library::Libdeflate => {
                let n = libdeflate_deflate(&mut self.libdeflate, msg, &mut self.scratch);
                Bytes::copy_from_slice(&self.scratch[..n])
            }
        }
    }
}

fn fanout(c: &mut Criterion) {
    let msgs = messages();
    eprintln!("fanout: {FANOUT_LIBRARY:?} at level {FANOUT_LEVEL}, {SUBSCRIBERS} subscribers");
    for (name, msg) in msgs.into_iter().filter(|(name, _)| *name != "128B") {
        let mut group = c.benchmark_group(format!("fanout-{SUBSCRIBERS}-{name}"));
        group.sample_size(10);
        let mut deflater = FanoutDeflater::new();
        assert_round_trip("fanout", &deflater.compress(&msg), &msg);
        let mut queues: Vec<Bytes> = Vec::with_capacity(SUBSCRIBERS);
        group.bench_function("compress-once", |b| {
            b.iter(|| {
                queues.clear();
                let frame = deflater.compress(black_box(&msg));
                for _ in 0..SUBSCRIBERS {
                    queues.push(frame.clone());
                }
                black_box(queues.len())
            })
        });
        queues.clear();
        group.bench_function("compress-per-subscriber", |b| {
            b.iter(|| {
                queues.clear();
                for _ in 0..SUBSCRIBERS {
                    queues.push(deflater.compress(black_box(&msg)));
                }
                black_box(queues.len())
            })
        });
        group.finish();
    }
}

criterion_group!(benches, deflate, inflate_bench, fanout);
criterion_main!(benches);
