//! The plain HTTP endpoints: `/healthz`, `/readyz`, `/metrics`, `/stats`, the dashboard,
//! `/client.js`, and `POST /publish/{topic}` (its head, then its body).

use super::answer::{Answer, text, with_type};
use super::route::{authorized, is_json};
use super::{Outcome, PendingBody};
use crate::dashboard;
use crate::metrics::Failure;
use crate::node::Node;
use wsgate_core::frame::OutFrame;
use wsgate_core::handshake::Request;
use wsgate_core::message;

/// `GET /healthz`: the process serves.
pub(super) fn healthz(keep_alive: bool) -> Answer {
    Answer::ok(text(200, "ok", keep_alive, &[]), keep_alive)
}

/// `GET /readyz`: whether the node takes new sessions (503 while it drains).
pub(super) fn readyz(node: &Node, keep_alive: bool) -> Answer {
    let response = if node.drain.get().refuses_sessions() {
        text(503, "draining", keep_alive, &[])
    } else {
        text(200, "ready", keep_alive, &[])
    };
    Answer::ok(response, keep_alive)
}

/// `GET /metrics`: the node's counters as Prometheus text.
pub(super) fn metrics(node: &Node, keep_alive: bool) -> Answer {
    let body = node.metrics_text();
    Answer::ok(
        with_type(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            body.as_bytes(),
            keep_alive,
        ),
        keep_alive,
    )
}

/// `GET /stats`: the live numbers the dashboard polls.
pub(super) fn stats(node: &Node, keep_alive: bool) -> Answer {
    let body = dashboard::stats(node);
    Answer::ok(
        with_type(200, "application/json", body.as_bytes(), keep_alive),
        keep_alive,
    )
}

/// `GET /`: the dashboard page.
pub(super) fn dashboard_page(keep_alive: bool) -> Answer {
    Answer::ok(
        with_type(
            200,
            "text/html; charset=utf-8",
            dashboard::PAGE.as_bytes(),
            keep_alive,
        ),
        keep_alive,
    )
}

/// `GET /client.js`: the JavaScript client.
pub(super) fn client_js(keep_alive: bool) -> Answer {
    Answer::ok(
        with_type(
            200,
            "text/javascript; charset=utf-8",
            dashboard::CLIENT_JS.as_bytes(),
            keep_alive,
        ),
        keep_alive,
    )
}

/// The head of `POST /publish/{topic}` (`raw_topic` still percent-encoded): the body to read
/// (its length is the framer's to know), or why not.
pub(super) fn publish_head(
    req: &Request<'_>,
    raw_topic: &str,
    node: &Node,
    keep_alive: bool,
) -> Outcome {
    if !authorized(req, node.config.auth.api_key.as_deref()) {
        return Outcome::Answer(Answer::refuse(
            Failure::Unauthorized,
            text(
                401,
                "missing or wrong API key",
                false,
                &[("WWW-Authenticate", "Bearer")],
            ),
        ));
    }
    let topic =
        message::decode_topic_path(raw_topic).and_then(|t| message::validate_topic(&t).map(|_| t));
    match topic {
        Err(e) => Outcome::Answer(Answer::refuse(
            Failure::BadRequest,
            text(400, &e.to_string(), false, &[]),
        )),
        Ok(topic) => Outcome::Body(PendingBody {
            topic,
            json: is_json(req),
            keep_alive,
        }),
    }
}

/// The frame a publish body becomes (JSON as a text delivery, anything else as a binary one),
/// or the answer that refuses it.
pub(crate) fn publish_body(pending: &PendingBody, body: &[u8]) -> Result<OutFrame, Answer> {
    let frame = if pending.json {
        message::json_body_delivery(&pending.topic, body)
    } else {
        message::binary_body_delivery(&pending.topic, body)
    };
    frame.map_err(|e| Answer::refuse(Failure::BadRequest, text(400, &e.to_string(), false, &[])))
}

/// The answer to a publish while the inboxes it would go to are full: try again in a second.
pub(crate) fn congested(keep_alive: bool) -> Answer {
    Answer {
        response: text(
            503,
            "busy: the subscribers' workers are behind; try again",
            keep_alive,
            &[("Retry-After", "1")],
        ),
        keep_alive,
        refused: Some(Failure::InboxFull),
    }
}

/// The answer to a publish that cannot be made now (`why`): try again in a second.
pub(crate) fn unavailable(why: &str, keep_alive: bool) -> Answer {
    Answer {
        response: text(503, why, keep_alive, &[("Retry-After", "1")]),
        keep_alive,
        refused: Some(Failure::Unavailable),
    }
}

/// The answer to a publish that reached `delivered` subscribers on this node:
/// `{"delivered":N}`, and `"offset"` and `"epoch"` when the node numbered it (a topic with
/// history on one node).
pub(crate) fn published(
    delivered: usize,
    position: Option<(u64, std::sync::Arc<str>)>,
    keep_alive: bool,
) -> Answer {
    let reply = match position {
        None => format!("{{\"delivered\":{delivered}}}"),
        Some((offset, epoch)) => format!(
            "{{\"delivered\":{delivered},\"offset\":{offset},\"epoch\":{}}}",
            serde_json::Value::from(&*epoch)
        ),
    };
    Answer::ok(
        with_type(202, "application/json", reply.as_bytes(), keep_alive),
        keep_alive,
    )
}
