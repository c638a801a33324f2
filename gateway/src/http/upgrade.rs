//! Deciding a WebSocket upgrade: the handshake's rules, the drain, the origin, the token and
//! the topics of `?subscribe=`.

use super::answer::{Answer, text};
use super::{Outcome, Upgrade};
use crate::auth::{self, Grants, TokenSource};
use crate::limits::origin_allowed;
use crate::metrics::Failure;
use crate::node::Node;
use crate::session::SessionKind;
use bytes::Bytes;
use std::time::Instant;
use wsgate_core::deflate;
use wsgate_core::handshake::Request;
use wsgate_core::message;

/// The answer to an upgrade to a session of `kind`.
pub(super) fn decide(req: &Request<'_>, kind: SessionKind, node: &Node, now: Instant) -> Outcome {
    if node.drain.get().refuses_sessions() {
        return Outcome::Answer(Answer::refuse(
            Failure::Draining,
            text(
                503,
                "draining: reconnect to another node",
                false,
                &[("Retry-After", "1")],
            ),
        ));
    }
    let up = match req.validate_upgrade() {
        Ok(up) => up,
        Err(e) => return Outcome::Answer(Answer::error(&e)),
    };
    if let Some(origin) = up.origin()
        && !origin_allowed(origin, &node.config.auth.allowed_origins)
    {
        return Outcome::Answer(Answer::refuse(
            Failure::Origin,
            text(403, "origin not allowed", false, &[]),
        ));
    }
    let (grants, protocol) = match authorize(req, node, now) {
        Ok(granted) => granted,
        Err(why) => {
            return Outcome::Answer(Answer::refuse(
                Failure::Unauthorized,
                text(
                    401,
                    &why,
                    false,
                    &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
                ),
            ));
        }
    };
    let topics = match (kind, up.query()) {
        (SessionKind::PubSub, Some(q)) => {
            match message::parse_subscribe_query(q, node.config.limits.max_topics_per_connection) {
                Ok(topics) => topics,
                Err(e) => {
                    return Outcome::Answer(Answer::refuse(
                        Failure::BadRequest,
                        text(400, &e.to_string(), false, &[]),
                    ));
                }
            }
        }
        _ => Vec::new(),
    };
    if let Some(g) = &grants
        && let Some(t) = topics.iter().find(|t| !g.may_subscribe(t))
    {
        return Outcome::Answer(Answer::refuse(
            Failure::Forbidden,
            text(
                403,
                &format!("the token does not allow subscribing to {t}"),
                false,
                &[],
            ),
        ));
    }
    let negotiated = node
        .deflate
        .and_then(|policy| deflate::negotiate(&up.extensions(), policy));
    let (deflate, extension) = match &negotiated {
        Some((agreed, answer)) => (Some(*agreed), Some(answer.as_str())),
        None => (None, None),
    };
    // a client of the wsgate.v2 subprotocol gets binary deliveries with their offset (when the
    // token came as the bearer subprotocol, the answer must name that one instead)
    let protocol = protocol.or_else(|| up.select_protocol(&[message::SUBPROTOCOL_V2]));
    let v2 = protocol == Some(message::SUBPROTOCOL_V2);
    Outcome::Upgrade(Upgrade {
        response: Bytes::from(up.response(protocol, extension)),
        v2,
        kind,
        topics,
        grants,
        deflate,
    })
}

/// Checks the token of an upgrade when authentication is on: what it allows, and the
/// subprotocol the answer must select (`bearer`, when the token came that way).
fn authorize(
    req: &Request<'_>,
    node: &Node,
    now: Instant,
) -> Result<(Option<Box<Grants>>, Option<&'static str>), String> {
    let Some(auth) = &node.auth else {
        return Ok((None, None));
    };
    let Some((token, source)) = auth::token_of(req) else {
        return Err(
            "a token is required (?token=, Authorization: Bearer, or the bearer subprotocol)"
                .into(),
        );
    };
    let grants = auth.verify(&token, now)?;
    let protocol = (source == TokenSource::Subprotocol).then_some("bearer");
    Ok((Some(Box::new(grants)), protocol))
}
