//! HTTP on the WebSocket port: what to answer to a request, as a plain function of the request
//! and the node's state ([`respond`]). The worker frames the bytes into requests (wsgate-core's
//! `framing`: every request's body is framed, whatever the route, so none is ever read as a
//! request), asks, and acts: it writes an [`Answer`], opens the session of an [`Upgrade`], or
//! reads a [`PendingBody`] first (the body of any other request is read and thrown away).
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
pub(crate) use endpoints::{congested, publish_body, published, unavailable};

use crate::auth::Grants;
use crate::metrics::Failure;
use crate::node::Node;
use crate::session::SessionKind;
use bytes::Bytes;
use route::Route;
use std::time::Instant;
use wsgate_core::deflate::Agreed;
use wsgate_core::framing::FramingLimits;
use wsgate_core::handshake::Request;
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
    /// The permessage-deflate parameters, when the extension was negotiated.
    pub(crate) deflate: Option<Agreed>,
    /// The client speaks the `wsgate.v2` subprotocol: binary deliveries of topics with history
    /// carry their offset.
    pub(crate) v2: bool,
}

/// A `POST /publish` body to read.
#[derive(Debug)]
pub(crate) struct PendingBody {
    /// The topic, percent-decoded.
    pub(crate) topic: String,
    /// `Content-Type: application/json`.
    pub(crate) json: bool,
    /// Keep the connection open after answering.
    pub(crate) keep_alive: bool,
}

/// The answer to a connection that starts with a PROXY header when it may not: only the
/// trusted proxies may say who the client is, and their connections are framed expecting one.
/// `None` when `buf` does not start with one, or PROXY headers are not in use.
pub(crate) fn untrusted_proxy_header(buf: &[u8], node: &Node) -> Option<Answer> {
    let looks_like_one = buf.starts_with(b"PROXY ") || buf.starts_with(&proxy::V2_SIGNATURE[..4]);
    (node.config.proxy.proxy_protocol && looks_like_one).then(|| {
        Answer::error(&Error::BadProxyHeader(
            "sent by a peer that is not a trusted proxy",
        ))
    })
}

/// The framing limits of every connection's requests.
pub(crate) fn framing_limits(node: &Node) -> FramingLimits {
    FramingLimits {
        max_head_bytes: node.config.limits.max_head_size,
        max_body_bytes: node.config.limits.max_body_size as u64,
    }
}

/// What to answer to `req`, whose body is `body_len` bytes (the framer read that from its
/// head), at `now`. A `HEAD` gets what a `GET` would, without the body.
#[cfg(test)]
pub(crate) fn respond(req: &Request<'_>, body_len: u64, node: &Node, now: Instant) -> Outcome {
    respond_on(req, body_len, node, now, false)
}

/// [`respond`] for a request that came on the TLS port (`tls`): with `admin-on-plain`,
/// `/metrics`, `/stats` and the dashboard are not found there.
pub(crate) fn respond_on(
    req: &Request<'_>,
    body_len: u64,
    node: &Node,
    now: Instant,
    tls: bool,
) -> Outcome {
    let outcome = decide(
        req,
        body_len,
        node,
        now,
        tls && node.config.tls.admin_on_plain,
    );
    match outcome {
        Outcome::Answer(a) if req.method() == "HEAD" => Outcome::Answer(a.without_body()),
        other => other,
    }
}

fn decide(req: &Request<'_>, body_len: u64, node: &Node, now: Instant, no_admin: bool) -> Outcome {
    let keep_alive = route::keep_alive(req);
    let server = &node.config.server;
    let route = match route::route(req, server.echo, server.dashboard && !no_admin) {
        Route::Metrics | Route::Stats if no_admin => Route::NotFound,
        route => route,
    };
    match route {
        Route::Upgrade(_) if body_len > 0 => Outcome::Answer(Answer::refuse(
            Failure::BadRequest,
            text(400, "an upgrade request has no body", false, &[]),
        )),
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
