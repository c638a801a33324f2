//! In-place unmasking of WebSocket payloads (RFC 6455 section 5.3).
//!
//! `offset` is the position of `buf[0]` within the frame's payload, so a payload that arrives
//! over several reads is unmasked piece by piece: byte `i` of `buf` is XORed with
//! `key[(offset + i) % 4]`. Masking and unmasking are the same operation.
//!
//! # Design
//!
//! Every path first turns `(key, offset)` into the key rotated to start at `buf[0]`
//! ([`rotated_key`]); from then on the key of a byte depends only on its index in `buf`.
//!
//! - **Up to 32 bytes** the work never leaves [`unmask`], which is `#[inline]`: by length class,
//!   the first and the last word of 16, 8 or 4 bytes (or up to 3 single bytes), in safe Rust,
//!   with no dispatch and no loop.
//! - **Longer buffers** go through a function pointer chosen once per process (a
//!   [`OnceLock`]: one load, one test and one indirect call per call). On x86_64 the
//!   candidates are AVX-512F (which hands buffers above 48 KiB to AVX2, faster once the data
//!   streams from L2), AVX2 and SSE2 (always present there); on aarch64 NEON; elsewhere the
//!   portable [`unmask_words`].
//! - A SIMD path of vector width `W` covers the unaligned start and the partial end of `buf`
//!   with one unaligned vector each, and everything in between with `W`-aligned loads and
//!   stores, four vectors per iteration. A buffer shorter than `W` goes to the next narrower
//!   path, down to the short-input code.
//!
//! Where two pieces overlap, both are loaded before either is stored, and each store writes
//! `original ^ key`, so the shared bytes are XORed exactly once. Overlap is preferred to an
//! exact split of the ends into 32-, 16-, 8-, 4-, 2- and 1-byte pieces because that split
//! branches on the low bits of the length and address, which mispredict when lengths vary: on
//! lengths spread over 64..264 bytes the split measured about 21 ns a call against 5 ns. Its
//! price is a store-to-load forwarding stall when the very same bytes are unmasked again at
//! once, which a benchmark loop does and the gateway does not (a few ns at 125 bytes).
//!
//! `unsafe` is confined to this module: the raw-pointer vector loads and stores (each bounded by
//! the length checks above it) and the calls into `#[target_feature]` functions, which are only
//! reachable after the feature was detected at run time. [`implementations`] hands out every
//! path this CPU supports as a safe function pointer, for tests and benchmarks; the tests
//! compare each of them with [`unmask_scalar`] at every length up to 300, every offset and
//! every alignment, and on random inputs up to 100 KiB.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// The signature shared by every unmasking path: `(buf, key, offset)`.
pub type UnmaskFn = fn(&mut [u8], [u8; 4], usize);

/// A path's inner function: `buf` and the key already rotated to start at `buf[0]`.
type Kernel = fn(&mut [u8], [u8; 4]);

/// Buffers up to this length are done inline by [`unmask_small`].
const SMALL: usize = 32;

/// Unmasks (or masks: the operation is its own inverse) `buf` in place with the fastest
/// implementation this CPU supports, chosen once (see [`implementation`]).
///
/// Byte `i` of `buf` is XORed with `key[(offset + i) % 4]`.
#[inline]
pub fn unmask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = rotated_key(key, offset);
    if buf.len() <= SMALL {
        unmask_small(buf, k);
    } else {
        (chosen().kernel)(buf, k);
    }
}

/// The name of the path [`unmask`] uses on this CPU: `"avx512"`, `"avx2"`, `"sse2"`, `"neon"`
/// or `"words"`.
pub fn implementation() -> &'static str {
    chosen().name
}

/// Every unmasking path this CPU supports, slowest first, by name: `"scalar"`, `"words"`, then
/// whichever of `"sse2"`, `"avx2"`, `"avx512"` (x86_64) or `"neon"` (aarch64) the CPU has.
///
/// Each function has the contract of [`unmask`] and handles every length; it exists so that
/// tests and benchmarks can call one path on its own.
pub fn implementations() -> Vec<(&'static str, UnmaskFn)> {
    let mut list: Vec<(&'static str, UnmaskFn)> =
        vec![("scalar", unmask_scalar), ("words", unmask_words)];
    list.extend(simd_paths().into_iter().map(|p| (p.name, p.entry)));
    list
}

/// The reference implementation: one byte at a time.
pub fn unmask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

/// A portable word-at-a-time implementation: eight bytes per step, in safe Rust.
pub fn unmask_words(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let k = rotated_key(key, offset);
    let word = word64(k);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().unwrap()) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // Every chunk is 8 bytes, a multiple of 4: the remainder starts with the same key phase.
    unmask_small(chunks.into_remainder(), k);
}

/// The key as seen from payload position `offset`: `rotated[i] == key[(offset + i) % 4]`.
#[inline]
pub fn rotated_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    // Little-endian byte order makes "rotate the array left by n" a right rotation by 8n bits.
    u32::from_le_bytes(key)
        .rotate_right(8 * (offset & 3) as u32)
        .to_le_bytes()
}

/// The key twice, as a native-endian `u64` to XOR with 8 bytes read natively. (Either
/// endianness puts the two halves of `w | w << 32` in memory as `k k`.)
#[inline(always)]
fn word64(k: [u8; 4]) -> u64 {
    let w = u64::from(u32::from_ne_bytes(k));
    w | (w << 32)
}

/// The key four times, as a native-endian `u128`.
#[inline(always)]
fn word128(k: [u8; 4]) -> u128 {
    let w = u128::from(word64(k));
    w | (w << 64)
}

/// Unmasks a buffer of at most [`SMALL`] bytes with `k` already rotated to `buf[0]`.
///
/// Branches on the length class only, no loop above 3 bytes: the first and the last word of
/// the class's width, both loaded before either is stored, so the bytes they share are XORed
/// once (both stores write the same `original ^ key`). A word at `len - n` (`n` a multiple of
/// 4) starts at key phase `len % 4`.
#[inline(always)]
fn unmask_small(buf: &mut [u8], k: [u8; 4]) {
    let len = buf.len();
    debug_assert!(len <= SMALL);
    let kt = rotated_key(k, len);
    if len >= 16 {
        let load = |b: &[u8], at: usize| u128::from_ne_bytes(b[at..at + 16].try_into().unwrap());
        let (head, tail) = (load(buf, 0), load(buf, len - 16));
        buf[len - 16..].copy_from_slice(&(tail ^ word128(kt)).to_ne_bytes());
        buf[..16].copy_from_slice(&(head ^ word128(k)).to_ne_bytes());
    } else if len >= 8 {
        let load = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        let (head, tail) = (load(buf, 0), load(buf, len - 8));
        buf[len - 8..].copy_from_slice(&(tail ^ word64(kt)).to_ne_bytes());
        buf[..8].copy_from_slice(&(head ^ word64(k)).to_ne_bytes());
    } else if len >= 4 {
        let load = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let (head, tail) = (load(buf, 0), load(buf, len - 4));
        buf[len - 4..].copy_from_slice(&(tail ^ u32::from_ne_bytes(kt)).to_ne_bytes());
        buf[..4].copy_from_slice(&(head ^ u32::from_ne_bytes(k)).to_ne_bytes());
    } else {
        for (b, k) in buf.iter_mut().zip(k) {
            *b ^= k;
        }
    }
}

/// One SIMD path: its name, its kernel (pre-rotated key) and its public entry (with offset).
#[derive(Clone, Copy)]
struct Path {
    name: &'static str,
    kernel: Kernel,
    entry: UnmaskFn,
}

/// The path [`unmask`] uses, detected on first use.
fn chosen() -> &'static Path {
    static CHOSEN: OnceLock<Path> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        simd_paths()
            .into_iter()
            .rfind(|p| p.name != "avx512" || prefer_avx512())
            .unwrap_or(Path {
                name: "words",
                kernel: words_kernel,
                entry: unmask_words,
            })
    })
}

/// Whether [`unmask`] picks AVX-512 over AVX2 where the CPU has both: on Intel only. On a Xeon
/// with AVX-512 it measured 1.5 times faster than AVX2 from 4 to 48 KiB (the `mask` benchmark
/// of wsgate-benches), and it hands longer buffers to AVX2 itself. On an AMD EPYC with AVX-512
/// (whose units are 256 bits wide, a 512-bit operation taking two) it gained nothing from
/// 4 KiB to 1 MiB and was slower on short buffers (125 B: 9.1 against 6.5 ns).
fn prefer_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // leaf 0 names the vendor in EBX, EDX, ECX: "Genu" "ineI" "ntel"
        let leaf = std::arch::x86_64::__cpuid(0);
        let vendor = [leaf.ebx, leaf.edx, leaf.ecx].map(u32::to_le_bytes);
        vendor.concat() == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`unmask_words`] as a kernel, for CPUs with no SIMD path here.
fn words_kernel(buf: &mut [u8], k: [u8; 4]) {
    unmask_words(buf, k, 0)
}

/// The SIMD paths this CPU supports, slowest first. A path is only listed after its
/// features were detected at run time: that is what makes its safe wrappers sound.
fn simd_paths() -> Vec<Path> {
    #[allow(unused_mut)]
    let mut paths = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        // SSE2 is part of the x86_64 baseline: always present.
        paths.push(Path {
            name: "sse2",
            kernel: x86::sse2_checked,
            entry: |b, k, o| x86::sse2_checked(b, rotated_key(k, o)),
        });
        if std::arch::is_x86_feature_detected!("avx2") {
            paths.push(Path {
                name: "avx2",
                kernel: x86::avx2_checked,
                entry: |b, k, o| x86::avx2_checked(b, rotated_key(k, o)),
            });
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            paths.push(Path {
                name: "avx512",
                kernel: x86::avx512_checked,
                entry: |b, k, o| x86::avx512_checked(b, rotated_key(k, o)),
            });
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            paths.push(Path {
                name: "neon",
                kernel: arm::neon_checked,
                entry: |b, k, o| arm::neon_checked(b, rotated_key(k, o)),
            });
        }
    }
    paths
}

/// The body shared by every SIMD path: see the module documentation.
///
/// Expands to the whole body of a function of `($buf: &mut [u8], $k: [u8; 4])` (key already
/// rotated to `$buf[0]`) that has the target features of the intrinsics it is given:
/// `$splat(k) -> V` repeats the key over a vector, `$xor`, `$loadu`/`$storeu` (unaligned) and
/// `$load`/`$store` (which may require `$w`-byte alignment) are the vector operations, and
/// `$narrower` handles buffers shorter than `$w` bytes.
///
/// Three shapes, by length (`W` is the vector width):
///
/// - `W..=2W`: the first and the last vector, both loaded before either is stored (they may
///   overlap).
/// - `2W+1..3W`: the same, plus the aligned vectors in between.
/// - `3W..`: a prologue (the unaligned first vector and the first aligned one, loaded, then
///   stored), the aligned middle four vectors at a time, then an epilogue (the last aligned
///   vector and the unaligned last vector, loaded, then stored). Storing the prologue early
///   means that nothing the next call on the same buffer loads first is still waiting in the
///   store buffer half-covered by an overlapping store (a failed store-to-load forward).
///
/// No path branches on the low bits of the length or of the address, so mixed lengths cost no
/// branch mispredictions.
macro_rules! simd_unmask {
    (
        $buf:ident, $k:ident, width: $w:literal, splat: $splat:ident, xor: $xor:ident,
        loadu: $loadu:ident, storeu: $storeu:ident, load: $load:ident, store: $store:ident,
        narrower: $narrower:expr
    ) => {{
        const W: usize = $w;
        let len = $buf.len();
        if len < W {
            return $narrower($buf, $k);
        }
        let p = $buf.as_mut_ptr();
        // Bytes from `p` to the first `W`-aligned address (`0..W`); a `W`-aligned vector at
        // `p + i` with `i ≡ a (mod W)` starts at key phase `a % 4` (`W` is a multiple of 4).
        let a = p.addr().wrapping_neg() & (W - 1);
        let (kh, ka, kt) = (
            $splat($k),
            $splat(rotated_key($k, a)),
            $splat(rotated_key($k, len)),
        );
        if len < 3 * W {
            // SAFETY: `len >= W`, so `[0, W)` and `[len - W, len)` lie inside `$buf`; the
            // unaligned loads have no alignment requirement.
            let (head, tail) = unsafe { ($loadu(p.cast()), $loadu(p.add(len - W).cast())) };
            if len > 2 * W {
                // The middle: the whole aligned vectors from `a` on. Together with the head
                // and tail (loaded above, stored below) they cover `buf`.
                let mut i = a;
                while i + W <= len {
                    // SAFETY: `i + W <= len` keeps the vector inside `$buf`, and `p + i` is
                    // `W`-aligned as the aligned ops require.
                    unsafe {
                        let q = p.add(i);
                        $store(q.cast(), $xor($load(q.cast()), ka));
                    }
                    i += W;
                }
            }
            // SAFETY: the same two in-bounds ranges as the loads above.
            unsafe {
                $storeu(p.add(len - W).cast(), $xor(tail, kt));
                $storeu(p.cast(), $xor(head, kh));
            }
            return;
        }
        // `len >= 3W > a + 2W`: the aligned region `[a, e)` holds at least two vectors, and
        // the unaligned tail `[len - W, len)` starts at or after `a + W`.
        let e = len - ((len - a) & (W - 1));
        // SAFETY: `[0, W)` and `[a, a + W)` lie inside `$buf` (`a + W < len`); `p + a` is
        // `W`-aligned. Both are loaded before either is stored, so the bytes they share are
        // XORed once.
        unsafe {
            let head = $loadu(p.cast());
            let first = $load(p.add(a).cast());
            $store(p.add(a).cast(), $xor(first, ka));
            $storeu(p.cast(), $xor(head, kh));
        }
        let mut i = a + W;
        while i + 4 * W <= e - W {
            // SAFETY: `i + 4W <= e - W <= len` keeps all four vectors inside `$buf`, and
            // `p + i` is `W`-aligned (`i ≡ a (mod W)`) as the aligned ops require.
            unsafe {
                let q = p.add(i);
                let v0 = $load(q.cast());
                let v1 = $load(q.add(W).cast());
                let v2 = $load(q.add(2 * W).cast());
                let v3 = $load(q.add(3 * W).cast());
                $store(q.cast(), $xor(v0, ka));
                $store(q.add(W).cast(), $xor(v1, ka));
                $store(q.add(2 * W).cast(), $xor(v2, ka));
                $store(q.add(3 * W).cast(), $xor(v3, ka));
            }
            i += 4 * W;
        }
        while i < e - W {
            // SAFETY: as above, for one vector (`i + W <= e - W`).
            unsafe {
                let q = p.add(i);
                $store(q.cast(), $xor($load(q.cast()), ka));
            }
            i += W;
        }
        // SAFETY: `[e - W, e)` (aligned, past the prologue) and `[len - W, len)` lie inside
        // `$buf`; both are loaded before either is stored, so the bytes they share are XORed
        // once, and neither was touched before (`len - W >= a + W`).
        unsafe {
            let last = $load(p.add(e - W).cast());
            let tail = $loadu(p.add(len - W).cast());
            $store(p.add(e - W).cast(), $xor(last, ka));
            $storeu(p.add(len - W).cast(), $xor(tail, kt));
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{rotated_key, unmask_small};
    use std::arch::x86_64::*;

    /// SSE2, 16 bytes per vector.
    #[target_feature(enable = "sse2")]
    fn sse2(buf: &mut [u8], k: [u8; 4]) {
        #[inline]
        #[target_feature(enable = "sse2")]
        fn splat(k: [u8; 4]) -> __m128i {
            _mm_set1_epi32(i32::from_ne_bytes(k))
        }
        simd_unmask!(buf, k, width: 16, splat: splat, xor: _mm_xor_si128,
            loadu: _mm_loadu_si128, storeu: _mm_storeu_si128,
            load: _mm_load_si128, store: _mm_store_si128,
            narrower: unmask_small)
    }

    /// AVX2, 32 bytes per vector.
    #[target_feature(enable = "avx2")]
    fn avx2(buf: &mut [u8], k: [u8; 4]) {
        #[inline]
        #[target_feature(enable = "avx2")]
        fn splat(k: [u8; 4]) -> __m256i {
            _mm256_set1_epi32(i32::from_ne_bytes(k))
        }
        simd_unmask!(buf, k, width: 32, splat: splat, xor: _mm256_xor_si256,
            loadu: _mm256_loadu_si256, storeu: _mm256_storeu_si256,
            load: _mm256_load_si256, store: _mm256_store_si256,
            narrower: sse2)
    }

    /// Above this length a buffer no longer fits a 48 KiB L1 data cache and the loop is bound
    /// by L2 bandwidth; there AVX2 measured about 5% faster than AVX-512 (43.3 against
    /// 41.4 GiB/s from 64 KiB to 1 MiB on a Xeon with AVX-512), while below it AVX-512 is
    /// about 1.5 times faster than AVX2.
    const AVX512_MAX: usize = 48 * 1024;

    /// AVX-512F, 64 bytes per vector (AVX2 above [`AVX512_MAX`] bytes).
    #[target_feature(enable = "avx512f")]
    fn avx512(buf: &mut [u8], k: [u8; 4]) {
        if buf.len() > AVX512_MAX {
            return avx2(buf, k);
        }
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn splat(k: [u8; 4]) -> __m512i {
            _mm512_set1_epi32(i32::from_ne_bytes(k))
        }
        simd_unmask!(buf, k, width: 64, splat: splat, xor: _mm512_xor_si512,
            loadu: _mm512_loadu_si512, storeu: _mm512_storeu_si512,
            load: _mm512_load_si512, store: _mm512_store_si512,
            narrower: avx2)
    }

    /// Safe entry to [`sse2`].
    pub(super) fn sse2_checked(buf: &mut [u8], k: [u8; 4]) {
        // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
        unsafe { sse2(buf, k) }
    }

    /// Safe entry to [`avx2`]. Only handed out by `simd_paths` after
    /// `is_x86_feature_detected!("avx2")` returned true.
    pub(super) fn avx2_checked(buf: &mut [u8], k: [u8; 4]) {
        debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
        // SAFETY: this function is only reachable (through `simd_paths`) once AVX2 was
        // detected on this CPU.
        unsafe { avx2(buf, k) }
    }

    /// Safe entry to [`avx512`]. Only handed out by `simd_paths` after
    /// `is_x86_feature_detected!("avx512f")` returned true.
    pub(super) fn avx512_checked(buf: &mut [u8], k: [u8; 4]) {
        debug_assert!(std::arch::is_x86_feature_detected!("avx512f"));
        // SAFETY: this function is only reachable (through `simd_paths`) once AVX-512F was
        // detected on this CPU (AVX-512F implies the AVX2 its narrower path uses).
        unsafe { avx512(buf, k) }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::{rotated_key, unmask_small};
    use std::arch::aarch64::*;

    /// NEON, 16 bytes per vector (NEON has no aligned-only loads; the same ops serve both).
    #[target_feature(enable = "neon")]
    fn neon(buf: &mut [u8], k: [u8; 4]) {
        #[inline]
        #[target_feature(enable = "neon")]
        fn splat(k: [u8; 4]) -> uint8x16_t {
            let pattern: [u8; 16] = std::array::from_fn(|i| k[i & 3]);
            // SAFETY: `pattern` is 16 readable bytes; `vld1q_u8` has no alignment requirement.
            unsafe { vld1q_u8(pattern.as_ptr()) }
        }
        simd_unmask!(buf, k, width: 16, splat: splat, xor: veorq_u8,
            loadu: vld1q_u8, storeu: vst1q_u8, load: vld1q_u8, store: vst1q_u8,
            narrower: unmask_small)
    }

    /// Safe entry to [`neon`]. Only handed out by `simd_paths` after
    /// `is_aarch64_feature_detected!("neon")` returned true.
    pub(super) fn neon_checked(buf: &mut [u8], k: [u8; 4]) {
        // SAFETY: this function is only reachable (through `simd_paths`) once NEON was
        // detected on this CPU.
        unsafe { neon(buf, k) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A buffer aligned to 64 bytes, so "start alignment" below means alignment in memory.
    #[repr(C, align(64))]
    struct Aligned([u8; 512]);

    /// A small deterministic generator (SplitMix64) for test data.
    fn fill(buf: &mut [u8], mut seed: u64) {
        for chunk in buf.chunks_mut(8) {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }

    fn all() -> Vec<(&'static str, UnmaskFn)> {
        let mut list = implementations();
        list.push(("dispatched", unmask));
        list
    }

    #[test]
    fn lists_the_chosen_path() {
        let names: Vec<_> = implementations().iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&implementation()), "{names:?}");
        assert_eq!(&names[..2], &["scalar", "words"]);
        #[cfg(target_arch = "x86_64")]
        assert!(names.contains(&"sse2"));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn picks_the_widest_path_that_pays_on_this_cpu() {
        let intel = std::fs::read_to_string("/proc/cpuinfo")
            .map(|c| c.contains("GenuineIntel"))
            .unwrap_or(prefer_avx512());
        assert_eq!(prefer_avx512(), intel);
        let expected = if std::arch::is_x86_feature_detected!("avx512f") && intel {
            "avx512"
        } else if std::arch::is_x86_feature_detected!("avx2") {
            "avx2"
        } else {
            "sse2"
        };
        assert_eq!(implementation(), expected);
    }

    #[test]
    fn rotated_key_rotates() {
        let key = [1, 2, 3, 4];
        assert_eq!(rotated_key(key, 0), [1, 2, 3, 4]);
        assert_eq!(rotated_key(key, 1), [2, 3, 4, 1]);
        assert_eq!(rotated_key(key, 2), [3, 4, 1, 2]);
        assert_eq!(rotated_key(key, 7), [4, 1, 2, 3]);
        assert_eq!(rotated_key(key, usize::MAX), [4, 1, 2, 3]);
    }

    #[test]
    fn known_answer() {
        let mut buf = [0u8; 9];
        unmask(&mut buf, [1, 2, 3, 4], 0);
        assert_eq!(buf, [1, 2, 3, 4, 1, 2, 3, 4, 1]);
        let mut buf = [0u8; 5];
        unmask(&mut buf, [1, 2, 3, 4], 3);
        assert_eq!(buf, [4, 1, 2, 3, 4]);
    }

    /// Every path against the byte loop, every length 0..=300, offset 0..4 and start
    /// alignment 0..64, with the bytes around the slice checked untouched.
    #[test]
    fn every_path_matches_scalar_exhaustively() {
        let mut original = Aligned([0; 512]);
        fill(&mut original.0, 1);
        let key = [0x8e, 0x1f, 0x5a, 0xc3];
        let mut expected = Aligned([0; 512]);
        let mut actual = Aligned([0; 512]);
        for (name, f) in all() {
            for len in 0..=300 {
                for offset in 0..4 {
                    for start in 0..64 {
                        expected.0 = original.0;
                        actual.0 = original.0;
                        unmask_scalar(&mut expected.0[start..start + len], key, offset);
                        f(&mut actual.0[start..start + len], key, offset);
                        assert!(
                            expected.0 == actual.0,
                            "{name}: len {len} offset {offset} start {start}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn applying_twice_is_identity() {
        let mut original = vec![0u8; 5000];
        fill(&mut original, 7);
        for (name, f) in all() {
            for len in [0, 1, 3, 15, 16, 33, 64, 65, 255, 4096, 5000] {
                for offset in 0..4 {
                    let mut buf = original[..len].to_vec();
                    f(&mut buf, [9, 8, 7, 6], offset);
                    if len > 3 {
                        assert_ne!(buf, original[..len], "{name}: nothing happened");
                    }
                    f(&mut buf, [9, 8, 7, 6], offset);
                    assert_eq!(buf, original[..len], "{name}: len {len} offset {offset}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random lengths up to ~100 KiB, offsets, alignments, keys and data.
        #[test]
        fn every_path_matches_scalar_on_random_input(
            len in 0usize..100_000,
            offset in any::<usize>(),
            start in 0usize..64,
            key in any::<[u8; 4]>(),
            seed in any::<u64>(),
        ) {
            let mut original = vec![0u8; len + 128];
            fill(&mut original, seed);
            // `work` is reused for every path, so the slice sits at the same address each time:
            // `start` bytes past a 64-byte boundary.
            let mut work = vec![0u8; len + 128];
            let base = work.as_ptr().addr().wrapping_neg() & 63;
            let range = base + start..base + start + len;
            let mut expected = original.clone();
            unmask_scalar(&mut expected[range.clone()], key, offset);
            for (name, f) in all() {
                work.copy_from_slice(&original);
                f(&mut work[range.clone()], key, offset);
                prop_assert!(work == expected, "{}", name);
            }
        }

        /// A payload unmasked in pieces, each with its running offset, equals the payload
        /// unmasked in one go.
        #[test]
        fn unmasking_in_pieces_equals_in_one_go(
            len in 0usize..20_000,
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
            first_offset in 0usize..4,
            key in any::<[u8; 4]>(),
            seed in any::<u64>(),
        ) {
            let mut original = vec![0u8; len];
            fill(&mut original, seed);
            let mut whole = original.clone();
            unmask_scalar(&mut whole, key, first_offset);
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
            cuts.push(0);
            cuts.push(len);
            cuts.sort_unstable();
            for (name, f) in all() {
                let mut pieces = original.clone();
                for w in cuts.windows(2) {
                    f(&mut pieces[w[0]..w[1]], key, first_offset + w[0]);
                }
                prop_assert!(pieces == whole, "{}", name);
            }
        }
    }
}
