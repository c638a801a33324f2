//! Unmasking throughput: wsgate's dispatched `unmask`, each of its paths on its own,
//! `fastwebsockets::unmask`, and a `memcpy` of the same size as a yardstick.
//!
//! Every entry works in place on a buffer allocated before timing starts; one group per payload
//! size, each with `Throughput::Bytes`, so criterion reports bytes per second side by side.
//!
//! Run: `cargo bench -p wsgate-benches --bench mask -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wsgate_core::mask;

/// Payload sizes: a small chat message, the largest control frame, a page, a large message and
/// a very large one.
const SIZES: &[(&str, usize)] = &[
    ("16B", 16),
    ("125B", 125),
    ("4KiB", 4 << 10),
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
];

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn unmask(c: &mut Criterion) {
    eprintln!("wsgate unmask path on this CPU: {}", mask::implementation());
    for &(label, size) in SIZES {
        let mut group = c.benchmark_group(format!("mask/{label}"));
        group.throughput(Throughput::Bytes(size as u64));

        let mut buf: Vec<u8> = wsgate_benches::ascii_text(size).into_bytes();
        group.bench_function("wsgate", |b| {
            b.iter(|| mask::unmask(black_box(&mut buf[..]), black_box(KEY), black_box(0)))
        });
        for (name, f) in mask::implementations() {
            group.bench_function(name, |b| {
                b.iter(|| f(black_box(&mut buf[..]), black_box(KEY), black_box(0)))
            });
        }
        group.bench_function("fastwebsockets", |b| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut buf[..]), black_box(KEY)))
        });

        let src = buf.clone();
        let mut dst = vec![0u8; size];
        group.bench_function("memcpy", |b| {
            b.iter(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src[..])))
        });
        group.finish();
    }
}

/// Many small payloads of mixed lengths (1 to 300 bytes, at mixed alignments), each in its own
/// slot of one arena, unmasked one after the other as a stream of small frames would be: unlike
/// the fixed-size groups, no call repeats the length, the address or the bytes of the one
/// before it. Throughput counts the bytes of all payloads; one iteration unmasks them all.
fn unmask_mixed(c: &mut Criterion) {
    const SLOTS: usize = 1024;
    const SLOT: usize = 384;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    let pieces: Vec<(usize, usize)> = (0..SLOTS)
        .map(|i| (i * SLOT + next() % 64, 1 + next() % 300))
        .collect();
    let total: usize = pieces.iter().map(|&(_, len)| len).sum();
    let mut arena: Vec<u8> = wsgate_benches::ascii_text(SLOTS * SLOT).into_bytes();

    let mut group = c.benchmark_group("mask/mixed-1-300B");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("wsgate", |b| {
        b.iter(|| {
            for &(start, len) in &pieces {
                mask::unmask(black_box(&mut arena[start..start + len]), black_box(KEY), 0);
            }
        })
    });
    for (name, f) in mask::implementations() {
        group.bench_function(name, |b| {
            b.iter(|| {
                for &(start, len) in &pieces {
                    f(black_box(&mut arena[start..start + len]), black_box(KEY), 0);
                }
            })
        });
    }
    group.bench_function("fastwebsockets", |b| {
        b.iter(|| {
            for &(start, len) in &pieces {
                fastwebsockets::unmask(black_box(&mut arena[start..start + len]), black_box(KEY));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, unmask, unmask_mixed);
criterion_main!(benches);
