//! HTTP on the WebSocket port: what to answer to a request, as a plain function of the request
//! and the node's state ([`respond`]). The worker reads the bytes, asks, and acts: it writes
//! an [`Answer`], opens the session of an [`Upgrade`], or reads a [`PendingBody`] first.
//!
//! - [`route`]: where a request goes, and what its headers say;
//! - [`upgrade`]: the rules of a WebSocket upgrade (drain, origin, token, `?subscribe=`);
//! - [`endpoints`]: `/healthz`, `/readyz`, `/metrics`, `/stats`, the dashboard, `/client.js`,
//!   `POST /publish/{topic}`;
//! - [`answer`]: the responses themselves.

mod answer;
mod endpoints;
mod route;
mod upgrade;

pub(crate) use answer::{Answer, text};
pub(crate) use endpoints::{congested, publish_body, published};

use crate::auth::Grants;
use crate::metrics::Failure;
use crate::node::Node;
use crate::session::SessionKind;
use bytes::Bytes;
use route::Route;
use std::time::Instant;
use wsgate_core::handshake::{self, Request};
use wsgate_core::{Error, proxy};

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Write the answer; then read the next request or close, as it says.
    Answer(Answer),
    /// Open a WebSocket session.
    Upgrade(Upgrade),
    /// Read the request's body, then publish it.
    Body(PendingBody),
}

/// A WebSocket upgrade the gateway accepts.
#[derive(Debug)]
pub(crate) struct Upgrade {
    /// The `101 Switching Protocols` answer.
    pub(crate) response: Bytes,
    /// What the session serves.
    pub(crate) kind: SessionKind,
    /// The topics of `?subscribe=`, validated, to subscribe to at once.
    pub(crate) topics: Vec<String>,
    /// What the session's token allows, when authentication is on.
    pub(crate) grants: Option<Box<Grants>>,
}

/// A `POST /publish` body to read.
#[derive(Debug)]
pub(crate) struct PendingBody {
    /// The topic, percent-decoded.
    pub(crate) topic: String,
    /// `Content-Type: application/json`.
    pub(crate) json: bool,
    /// Body length from Content-Length.
    pub(crate) len: usize,
    /// Keep the connection open after answering.
    pub(crate) keep_alive: bool,
}

/// Reads the request head at the front of `buf`: `Ok(None)` until it is complete, or the answer
/// that refuses what cannot be a request.
pub(crate) fn parse<'a>(buf: &'a [u8], node: &Node) -> Result<Option<Request<'a>>, Answer> {
    if node.config.proxy.proxy_protocol
        && (buf.starts_with(b"PROXY ") || buf.starts_with(&proxy::V2_SIGNATURE[..4]))
    {
        // only trusted proxies may say who the client is, and their connections do not get
        // here: they start in the PROXY phase
        let e = Error::BadProxyHeader("sent by a peer that is not a trusted proxy");
        return Err(Answer::error(&e));
    }
    let limits = handshake::Limits {
        max_head_bytes: node.config.limits.max_head_size,
    };
    handshake::parse_request(buf, &limits).map_err(|e| Answer::error(&e))
}

/// What to answer to `req`, at `now`.
pub(crate) fn respond(req: &Request<'_>, node: &Node, now: Instant) -> Outcome {
    let keep_alive = route::keep_alive(req);
    let server = &node.config.server;
    match route::route(req, server.echo, server.dashboard) {
        Route::Upgrade(kind) => upgrade::decide(req, kind, node, now),
        Route::Healthz => Outcome::Answer(endpoints::healthz(keep_alive)),
        Route::Readyz => Outcome::Answer(endpoints::readyz(node, keep_alive)),
        Route::Metrics => Outcome::Answer(endpoints::metrics(node, keep_alive)),
        Route::Stats => Outcome::Answer(endpoints::stats(node, keep_alive)),
        Route::Dashboard => Outcome::Answer(endpoints::dashboard_page(keep_alive)),
        Route::ClientJs => Outcome::Answer(endpoints::client_js(keep_alive)),
        Route::Publish(topic) => endpoints::publish_head(req, &topic, node, keep_alive),
        Route::MethodNotAllowed(allow) => Outcome::Answer(Answer::refuse(
            Failure::MethodNotAllowed,
            text(405, "method not allowed", false, &[("Allow", allow)]),
        )),
        Route::NotFound => Outcome::Answer(Answer {
            response: text(
                404,
                "no such endpoint (try /ws, /healthz, /metrics)",
                keep_alive,
                &[],
            ),
            keep_alive,
            refused: Some(Failure::NotFound),
        }),
    }
}

#[cfg(test)]
mod tests;
