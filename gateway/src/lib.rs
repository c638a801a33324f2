//! wsgate: a WebSocket pub/sub gateway.
//!
//! One worker thread per core, each with its own `mio::Poll` and SO_REUSEPORT socket, owns the
//! connections the kernel hands it. Messages are decoded in place in a shared read buffer,
//! published once as a shared frame, and fanned out across workers by reference through
//! lock-free inboxes. See `shared/DESIGN.md` for the whole data path.
#![deny(missing_docs)]

mod auth;
mod cluster;
pub mod config;
mod conn;
mod dashboard;
mod drain;
mod forwarded;
mod http;
pub mod hub;
mod limits;
mod listener;
mod metrics;
mod node;
pub mod outbox;
mod pubsub;
pub mod server;
mod session;
mod sys;
mod worker;

pub use sys::raise_file_limit;
