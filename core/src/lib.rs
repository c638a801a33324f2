//! wsgate-core: the WebSocket protocol of RFC 6455 and the wsgate pub/sub envelope, with no I/O,
//! no threads and no clock.
//!
//! Everything here is a deterministic function of the bytes it is given, so tests can feed it
//! any byte at any moment, as the gateway's event loop does:
//!
//! - [`handshake`]: parse an HTTP/1.1 request incrementally, validate a WebSocket upgrade and build
//!   the `101` or the 4xx answer;
//! - [`framing`]: where each request on a connection begins and ends (PROXY header, heads and
//!   `Content-Length` bodies, whatever the route), so no body is ever read as a request;
//! - [`frame`]: decode frames incrementally (unmasking in place and validating text as bytes
//!   arrive), encode frame headers;
//! - [`mask`]: SIMD unmasking chosen once at run time;
//! - [`utf8`]: incremental, fail-fast UTF-8 validation across fragments;
//! - [`close`]: close codes and close payload rules;
//! - [`deflate`]: permessage-deflate (RFC 7692): the offer and answer, inflate and compress;
//! - [`message`]: the pub/sub envelope (JSON control messages, binary publishes, deliveries,
//!   and for topics with history: offsets, recovery, acks with the position, gap notices; the
//!   client's reading of it all);
//! - [`proxy`]: the PROXY protocol header (versions 1 and 2) a load balancer sends first;
//! - [`session`]: a server's WebSocket session as a state machine: bytes and `now` in; events,
//!   frames to send and the next deadline out (pings, pongs, the close handshake, timeouts);
//! - [`timer`]: the named timers of a connection;
//! - [`units`]: sizes and durations as the gateway's settings and the load generator's flags
//!   write them.
//!
//! Errors of every module are one type, [`Error`], which knows the close code or HTTP status that
//! answers it.
#![deny(missing_docs)]

pub mod close;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod framing;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod proxy;
pub mod session;
pub mod timer;
pub mod units;
pub mod utf8;

pub use error::{Error, Result};
