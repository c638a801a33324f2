//! permessage-deflate (RFC 7692): the offer and answer, inflating what clients send, and
//! compressing what the server sends, one message at a time.
//!
//! # The shape
//!
//! The server always answers `server_no_context_takeover`: every message it sends is
//! compressed on its own ([`compress`](fn@compress)), so one compressed copy of a publish is valid for
//! every subscriber that negotiated the extension, on every worker. The compressed variant is
//! made once, by whoever needs it first, and shared by reference like the plain frame.
//!
//! By default it also answers `client_no_context_takeover` ([`Policy`]): a client's message is
//! inflated with state held only while that message arrives (an [`Inflater`] taken from a
//! per-thread pool and given back at its end), so an idle connection holds no compression
//! state at all. The inflated size counts against the message limit as it grows, and text is
//! validated as UTF-8 on the inflated bytes (the frame decoder's job, see
//! [`MessageDecoder`](crate::frame::MessageDecoder)).
//!
//! Messages shorter than a minimum (a setting of the gateway), longer than [`MAX_SIZE`], or
//! that deflate does not make smaller go out uncompressed, with RSV1 clear: always allowed by
//! the extension.

pub mod compress;
mod inflate;
mod negotiate;
mod shared;

pub use compress::compress;
pub use inflate::Inflater;
pub use negotiate::{Agreed, NAME, Policy, SERVER_WINDOW_BITS, negotiate};
pub use shared::{Compression, MAX_SIZE, SharedFrame};
