//! [`Batch`]: small frames published in a row to the same subscribers, written once into one
//! buffer that every subscriber's outbox then shares.
//!
//! A burst of sixteen 64-byte publishes to ten thousand subscribers would otherwise be copied
//! ten thousand times into ten thousand buffers (10 MB of writes per turn, then read again by
//! the kernel from cold memory). Batched, the frames are encoded once into one buffer of at
//! most [`BATCH_MAX`] bytes and each outbox gets a reference to it; `send` then copies from one
//! buffer that stays in the cache.
//!
//! Order on each connection is kept: the batch is queued to its subscribers before anything
//! else is queued to any connection ([`Connections`](super::Connections) does that), and it
//! only grows while its subscriber set is unchanged ([`Audience`]).
//!
//! Subscribers that negotiated permessage-deflate get a second buffer, made once when the
//! first of them is queued: the same frames, each one that compresses replaced by its shared
//! compressed variant.

use super::ConnId;
use bytes::Bytes;
use std::collections::HashSet;
use wsgate_core::deflate::SharedFrame;
use wsgate_core::frame::OpCode;

/// The largest batch: more is queued as a batch of its own.
pub(crate) const BATCH_MAX: usize = 16 * 1024;

/// Which subscriber set a batch goes to: the address of a topic's set on this worker and the
/// pub/sub's generation, which changes whenever any set changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Audience {
    set: usize,
    generation: u64,
}

impl Audience {
    /// The audience of `subscribers` at `generation`.
    pub(crate) fn of(subscribers: &HashSet<ConnId>, generation: u64) -> Audience {
        Audience {
            set: std::ptr::from_ref(subscribers) as usize,
            generation,
        }
    }
}

/// Frames waiting to be queued to one subscriber set.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) audience: Audience,
    pub(crate) subscribers: Vec<ConnId>,
    bytes: Vec<u8>,
    /// Text frames in `bytes`.
    pub(crate) text: u64,
    /// Binary frames in `bytes`.
    pub(crate) binary: u64,
    /// The frames that may have a compressed variant, with where their plain frame starts in
    /// `bytes`.
    compressible: Vec<(usize, SharedFrame)>,
    /// Payload bytes of the frames in `bytes`.
    pub(crate) payload: usize,
    /// The outbox limit the deliveries are checked against.
    pub(crate) limit: usize,
}

impl Batch {
    /// An empty batch for `subscribers`.
    pub(crate) fn new(audience: Audience, subscribers: &HashSet<ConnId>, limit: usize) -> Batch {
        Batch {
            audience,
            subscribers: subscribers.iter().copied().collect(),
            bytes: Vec::new(),
            text: 0,
            binary: 0,
            compressible: Vec::new(),
            payload: 0,
            limit,
        }
    }

    /// Whether `frame` for `audience` may join this batch.
    pub(crate) fn takes(&self, audience: Audience, frame: &SharedFrame) -> bool {
        self.audience == audience && self.bytes.len() + frame.plain().wire_len() <= BATCH_MAX
    }

    /// Adds `frame`.
    pub(crate) fn push(&mut self, shared: &SharedFrame) {
        let frame = shared.plain();
        if shared.may_compress() {
            self.compressible.push((self.bytes.len(), shared.clone()));
        }
        self.bytes.extend_from_slice(frame.header());
        self.bytes.extend_from_slice(frame.payload());
        self.payload += frame.payload().len();
        if frame.opcode() == OpCode::Text {
            self.text += 1;
        } else {
            self.binary += 1;
        }
    }

    /// The frames, one shared buffer.
    pub(crate) fn take_bytes(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.bytes))
    }

    /// The frames for subscribers that take compressed frames, given `plain` (what
    /// [`take_bytes`](Self::take_bytes) returned): each frame's shared compressed variant in
    /// its place, or `plain` itself when none compresses. Also says how many frames this call
    /// compressed and the payload bytes of the result.
    pub(crate) fn deflated(&self, plain: &Bytes) -> Deflated {
        let mut out = Vec::new();
        let mut compressed = 0;
        let mut payload = self.payload;
        let mut from = 0;
        for (at, shared) in &self.compressible {
            let (frame, made) = shared.deflated();
            compressed += u64::from(made);
            if !frame.is_deflated() {
                continue; // the plain frame stays where it is
            }
            out.extend_from_slice(&plain[from..*at]);
            out.extend_from_slice(frame.header());
            out.extend_from_slice(frame.payload());
            payload -= shared.plain().payload().len() - frame.payload().len();
            from = at + shared.plain().wire_len();
        }
        if from == 0 {
            return Deflated {
                frames: plain.clone(),
                compressed,
                payload: self.payload,
            };
        }
        out.extend_from_slice(&plain[from..]);
        Deflated {
            frames: Bytes::from(out),
            compressed,
            payload,
        }
    }
}

/// A batch's frames for subscribers that take compressed frames.
#[derive(Debug, Clone)]
pub(crate) struct Deflated {
    /// The frames.
    pub(crate) frames: Bytes,
    /// Frames compressed to make it (0 when another worker had compressed them first).
    pub(crate) compressed: u64,
    /// Payload bytes of the frames as they go out.
    pub(crate) payload: usize,
}

/// What queued batches reached, for the worker to count and to act on.
#[derive(Debug, Default)]
pub(crate) struct Reached {
    /// Text frames queued, all subscribers together.
    pub(crate) text: u64,
    /// Binary frames queued, all subscribers together.
    pub(crate) binary: u64,
    /// Subscribers whose outbox then held more than its limit.
    pub(crate) over: Vec<ConnId>,
    /// Messages compressed (once each, for every subscriber that takes them).
    pub(crate) compressions: u64,
    /// Payload bytes queued to permessage-deflate subscribers, before compression.
    pub(crate) deflate_before: u64,
    /// The same payloads as queued (compressed, or plain when that was not smaller).
    pub(crate) deflate_after: u64,
    /// Bytes written straight to idle subscribers' sockets, never queued.
    pub(crate) bytes_out: u64,
}

impl Reached {
    /// Whether nothing was reached.
    pub(crate) fn is_empty(&self) -> bool {
        self.text == 0
            && self.binary == 0
            && self.over.is_empty()
            && self.compressions == 0
            && self.bytes_out == 0
    }
}
