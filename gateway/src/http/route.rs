//! Where a request goes, and what its headers say: whether the connection stays open after
//! the answer, whether it carries the API key, whether its body is JSON.

use crate::session::SessionKind;
use wsgate_core::handshake::Request;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// A WebSocket upgrade to a session of this kind.
    Upgrade(SessionKind),
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /metrics`.
    Metrics,
    /// `GET /`: the dashboard page (when switched on).
    Dashboard,
    /// `GET /client.js`: the JavaScript client.
    ClientJs,
    /// `GET /stats`: live numbers as JSON, for the dashboard.
    Stats,
    /// `POST /publish/{topic}`, with the topic as it appears in the path (still encoded).
    Publish(String),
    /// A known path with the wrong method; the allowed method.
    MethodNotAllowed(&'static str),
    /// Nothing here.
    NotFound,
}

/// Routes a request. `/echo` exists only when `echo` is on, `/` only when `dashboard` is.
pub(crate) fn route(req: &Request<'_>, echo: bool, dashboard: bool) -> Route {
    let path = req.path();
    let method = req.method();
    let get = |r: Route| {
        if method == "GET" || method == "HEAD" {
            r
        } else {
            Route::MethodNotAllowed("GET")
        }
    };
    match path {
        "/ws" if req.is_upgrade() => Route::Upgrade(SessionKind::PubSub),
        "/echo" if echo && req.is_upgrade() => Route::Upgrade(SessionKind::Echo),
        "/ws" => get(Route::NotFound),
        "/echo" if echo => get(Route::NotFound),
        "/healthz" => get(Route::Healthz),
        "/readyz" => get(Route::Readyz),
        "/metrics" => get(Route::Metrics),
        "/" | "/index.html" if dashboard => get(Route::Dashboard),
        "/client.js" => get(Route::ClientJs),
        "/stats" => get(Route::Stats),
        _ => match path.strip_prefix("/publish/") {
            Some(topic) if method == "POST" => Route::Publish(topic.to_string()),
            Some(_) => Route::MethodNotAllowed("POST"),
            None => Route::NotFound,
        },
    }
}

/// Whether the connection stays open after answering this request.
pub(crate) fn keep_alive(req: &Request<'_>) -> bool {
    if req.has_token("Connection", "close") {
        return false;
    }
    req.minor_version() >= 1 || req.has_token("Connection", "keep-alive")
}

/// Whether the request carries `Authorization: Bearer KEY` with the configured key.
pub(crate) fn authorized(req: &Request<'_>, key: Option<&str>) -> bool {
    let Some(key) = key else { return true };
    let Some(given) = req
        .header_str("Authorization")
        .and_then(|v| v.trim().strip_prefix("Bearer "))
    else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), key.as_bytes())
}

/// Compares two byte strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request's content type is JSON (`application/json`, any parameters).
pub(crate) fn is_json(req: &Request<'_>) -> bool {
    req.header_str("Content-Type")
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wsgate_core::handshake::{Limits, parse_request};

    fn req(text: &str) -> Request<'_> {
        parse_request(text.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
    }

    const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    #[test]
    fn routes() {
        assert_eq!(
            route(
                &req(&format!("GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n")),
                true,
                true
            ),
            Route::Upgrade(SessionKind::PubSub)
        );
        assert_eq!(
            route(
                &req(&format!(
                    "GET /ws?subscribe=a HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n"
                )),
                true,
                true
            ),
            Route::Upgrade(SessionKind::PubSub)
        );
        assert_eq!(
            route(
                &req(&format!("GET /echo HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n")),
                true,
                true
            ),
            Route::Upgrade(SessionKind::Echo)
        );
        assert_eq!(
            route(
                &req(&format!("GET /echo HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n")),
                false,
                true
            ),
            Route::NotFound
        );
        assert_eq!(
            route(&req("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), true, true),
            Route::Healthz
        );
        assert_eq!(
            route(
                &req("POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
                true,
                true
            ),
            Route::MethodNotAllowed("GET")
        );
        assert_eq!(
            route(
                &req("POST /publish/a%20b HTTP/1.1\r\nHost: x\r\n\r\n"),
                true,
                true
            ),
            Route::Publish("a%20b".into())
        );
        assert_eq!(
            route(
                &req("GET /publish/a HTTP/1.1\r\nHost: x\r\n\r\n"),
                true,
                true
            ),
            Route::MethodNotAllowed("POST")
        );
        assert_eq!(
            route(&req("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"), true, true),
            Route::NotFound
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(keep_alive(&req("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
        assert!(!keep_alive(&req(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )));
        assert!(!keep_alive(&req("GET / HTTP/1.0\r\n\r\n")));
        assert!(keep_alive(&req(
            "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        )));
    }

    #[test]
    fn api_key() {
        let r = req("POST /publish/t HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n");
        assert!(authorized(&r, Some("s3cret")));
        assert!(!authorized(&r, Some("s3cre")));
        assert!(!authorized(
            &req("POST /publish/t HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("k")
        ));
        assert!(authorized(
            &req("POST /publish/t HTTP/1.1\r\nHost: x\r\n\r\n"),
            None
        ));
    }

    #[test]
    fn json_content_type() {
        assert!(is_json(&req(
            "POST / HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\n\r\n"
        )));
        assert!(!is_json(&req(
            "POST / HTTP/1.1\r\nContent-Type: application/octet-stream\r\n\r\n"
        )));
        assert!(!is_json(&req("POST / HTTP/1.1\r\n\r\n")));
    }
}
