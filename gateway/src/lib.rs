//! wsgate: a WebSocket pub/sub gateway.
//!
//! One worker thread per core, each with its own `mio::Poll` and SO_REUSEPORT socket, owns the
//! connections the kernel hands it. Messages are decoded in place in a shared read buffer,
//! published once as a shared frame, and fanned out across workers by reference through
//! lock-free inboxes. See `shared/DESIGN.md` for the whole data path.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod auth;
pub mod cluster;
pub mod config;
#[allow(unsafe_code)]
pub mod conn;
pub mod dashboard;
pub mod forwarded;
pub mod http;
pub mod hub;
pub mod limits;
pub mod listener;
#[allow(unsafe_code)]
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod server;
pub mod worker;
