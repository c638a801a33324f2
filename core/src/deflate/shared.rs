//! A frame for many clients, with its compressed variant made at most once.

use super::compress;
use crate::frame::OutFrame;
use bytes::Bytes;
use std::sync::{Arc, OnceLock};

/// The largest payload the server compresses. A larger message goes out uncompressed:
/// deflating it would hold the worker away from its other connections for tens of
/// milliseconds and put a second copy of it in memory.
pub const MAX_SIZE: usize = 1 << 20;

/// How the server compresses what it sends (its settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The deflate level, 0 (stored) to 9 (smallest).
    pub level: u32,
    /// Payloads shorter than this go out uncompressed (deflate costs more than it saves).
    pub min_size: usize,
}

impl Compression {
    /// Whether a payload of `len` bytes is compressed: at least the minimum, at most
    /// [`MAX_SIZE`].
    pub fn applies_to(&self, len: usize) -> bool {
        len >= self.min_size.max(1) && len <= MAX_SIZE
    }
}

/// A frame for many clients: the plain frame and, for the clients that negotiated
/// permessage-deflate, its compressed variant, made by whoever needs it first (any worker),
/// once, and then shared by reference like the plain frame. Cloning one costs one or two
/// reference counts.
#[derive(Clone, Debug)]
pub struct SharedFrame {
    plain: OutFrame,
    /// `None`: no compressed variant will ever be made (compression is off, or the payload is
    /// under the minimum).
    deflated: Option<Arc<Variant>>,
}

#[derive(Debug)]
struct Variant {
    level: u32,
    frame: OnceLock<Option<OutFrame>>,
}

impl From<OutFrame> for SharedFrame {
    /// A frame that is always sent plain.
    fn from(plain: OutFrame) -> SharedFrame {
        SharedFrame {
            plain,
            deflated: None,
        }
    }
}

impl SharedFrame {
    /// `plain`, with a compressed variant made on first need when `compression` is on and
    /// applies to the payload's size.
    pub fn new(plain: OutFrame, compression: Option<Compression>) -> SharedFrame {
        let deflated = compression
            .filter(|c| c.applies_to(plain.payload().len()))
            .map(|c| {
                Arc::new(Variant {
                    level: c.level,
                    frame: OnceLock::new(),
                })
            });
        SharedFrame { plain, deflated }
    }

    /// The frame for clients without compression.
    pub fn plain(&self) -> &OutFrame {
        &self.plain
    }

    /// Whether clients with compression may get another frame than [`plain`](Self::plain).
    pub fn may_compress(&self) -> bool {
        self.deflated.is_some()
    }

    /// The frame for a client that takes shared compressed frames: the compressed variant
    /// (RSV1 set), or the plain frame when compressing does not make it smaller, or the
    /// payload is under the minimum. The second value is true when this call compressed it
    /// (once per frame, whoever asks first; a concurrent caller waits for it).
    pub fn deflated(&self) -> (&OutFrame, bool) {
        let Some(variant) = &self.deflated else {
            return (&self.plain, false);
        };
        let mut made = false;
        let frame = variant.frame.get_or_init(|| {
            made = true;
            compress(self.plain.payload(), variant.level)
                .map(|packed| OutFrame::deflated(self.plain.opcode(), Bytes::from(packed)))
        });
        (frame.as_ref().unwrap_or(&self.plain), made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Inflater;
    use crate::frame::OpCode;

    const ON: Option<Compression> = Some(Compression {
        level: 6,
        min_size: 128,
    });

    fn text(n: usize) -> OutFrame {
        OutFrame::new(OpCode::Text, Bytes::from("{\"v\":1}".repeat(n / 7 + 1)))
    }

    #[test]
    fn compressed_once_whoever_asks_and_shared() {
        let frame = SharedFrame::new(text(4000), ON);
        let copies: Vec<SharedFrame> = (0..4).map(|_| frame.clone()).collect();
        let made: usize = std::thread::scope(|s| {
            let handles: Vec<_> = copies
                .iter()
                .map(|f| s.spawn(move || usize::from(f.deflated().1)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(made, 1, "compressed once across threads");
        let (a, made_again) = frame.deflated();
        assert!(!made_again);
        let (b, _) = copies[3].deflated();
        assert_eq!(
            a.payload().as_ptr(),
            b.payload().as_ptr(),
            "one shared buffer"
        );
        assert!(a.is_deflated() && !frame.plain().is_deflated());
        assert_eq!(a.opcode(), OpCode::Text);
        assert_eq!(a.header()[0], 0xC1, "FIN, RSV1, text");
        let mut out = Vec::new();
        let mut inflater = Inflater::new();
        inflater.push(a.payload(), &mut out, 1 << 20).unwrap();
        inflater.finish(&mut out, 1 << 20, false).unwrap();
        assert_eq!(&out[..], &frame.plain().payload()[..]);
    }

    #[test]
    fn small_incompressible_or_uncompressed_frames_stay_plain() {
        let small = SharedFrame::new(text(100), ON);
        assert!(!small.may_compress());
        assert!(!small.deflated().0.is_deflated());
        assert!(!SharedFrame::new(text(MAX_SIZE + 1), ON).may_compress());
        assert!(SharedFrame::new(text(MAX_SIZE - 7), ON).may_compress());
        let off = SharedFrame::new(text(4000), None);
        assert!(!off.may_compress());
        assert!(!SharedFrame::from(text(4000)).may_compress());
        let mut state = 1u32;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 16) as u8
            })
            .collect();
        let noisy = SharedFrame::new(OutFrame::new(OpCode::Binary, Bytes::from(noise)), ON);
        assert!(noisy.may_compress());
        let (frame, made) = noisy.deflated();
        assert!(made && !frame.is_deflated(), "not smaller: the plain frame");
        assert_eq!(frame.payload().as_ptr(), noisy.plain().payload().as_ptr());
    }
}
