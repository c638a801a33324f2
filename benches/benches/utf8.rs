//! UTF-8 validation: wsgate's incremental validator against `std::str::from_utf8`, on ASCII,
//! mixed European text with emoji, and CJK, whole, and (for wsgate) in 1,500-byte pieces, one TCP
//! segment each, so most pieces end in the middle of a character. `simdutf8` is the library
//! alone, without wsgate's AVX-512BW scan of the ASCII prefix: what the scan is worth on a CPU.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use wsgate_benches::{ascii_text, cjk_text, mixed_text};
use wsgate_core::utf8::Utf8Validator;

fn validate(c: &mut Criterion) {
    for size in [1024usize, 4 * 1024, 16 * 1024, 64 * 1024] {
        let mut group = c.benchmark_group(format!("utf8/{size}"));
        for (kind, text) in [
            ("ascii", ascii_text(size)),
            ("mixed", mixed_text(size)),
            ("cjk", cjk_text(size)),
        ] {
            let bytes = text.as_bytes();
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_with_input(BenchmarkId::new("std", kind), bytes, |b, bytes| {
                b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
            });
            group.bench_with_input(BenchmarkId::new("simdutf8", kind), bytes, |b, bytes| {
                b.iter(|| simdutf8::basic::from_utf8(black_box(bytes)).is_ok())
            });
            group.bench_with_input(BenchmarkId::new("wsgate", kind), bytes, |b, bytes| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(bytes)).is_ok() && v.finish().is_ok()
                })
            });
            if size > 1500 {
                group.bench_with_input(
                    BenchmarkId::new("wsgate-pieces", kind),
                    bytes,
                    |b, bytes| {
                        b.iter(|| {
                            let mut v = Utf8Validator::new();
                            let ok = black_box(bytes).chunks(1500).all(|p| v.feed(p).is_ok());
                            ok && v.finish().is_ok()
                        })
                    },
                );
            }
        }
        group.finish();
    }
}

criterion_group!(benches, validate);
criterion_main!(benches);
