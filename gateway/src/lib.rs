//! wsgate: a WebSocket pub/sub gateway.
//!
//! One worker thread per core, each with its own `mio::Poll` and SO_REUSEPORT socket, owns the
//! connections the kernel hands it. Messages are decoded in place in a shared read buffer,
//! published once as a shared frame, and fanned out across workers by reference through
//! lock-free inboxes. See `shared/DESIGN.md` for the whole data path.
//!
//! The runtime is in rooms that decide and a worker that acts. Read the data path in this
//! order: [`server`] (the wiring) starts the workers; each `listener` socket feeds a `worker`
//! loop; the worker keeps its connections in `conn`, asks `http` what to answer to a request,
//! runs each WebSocket through a `session` (wsgate-core's protocol session plus the gateway's
//! echo and pub/sub), publishes and delivers through `pubsub` and the [`hub`], and writes
//! through each connection's [`outbox`]. `node` holds what the workers share, `cluster` is the
//! hub's uplink to other nodes, [`tls`] the certificates of a TLS port, `sys` every `unsafe`.
#![deny(missing_docs)]

mod auth;
mod cluster;
pub mod config;
mod conn;
mod dashboard;
mod drain;
mod forwarded;
pub mod history;
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
pub mod tls;
mod worker;

pub use sys::{Allocator, raise_file_limit};
