//! Deciding answers without sockets: requests as bytes, a node as configured by flags.

use super::*;
use crate::drain::Drain;
use serde_json::json;
use wsgate_core::handshake;

fn req(text: &str) -> Request<'_> {
    handshake::parse_request(text.as_bytes(), &handshake::Limits::default())
        .unwrap()
        .unwrap()
}

fn answer(node: &Node, text: &str) -> Answer {
    match respond(&req(text), 0, node, Instant::now()) {
        Outcome::Answer(a) => a,
        other => panic!("{text:?}: {other:?}"),
    }
}

fn status(a: &Answer) -> u16 {
    std::str::from_utf8(&a.response[9..12])
        .unwrap()
        .parse()
        .unwrap()
}

fn body(a: &Answer) -> &str {
    let text = std::str::from_utf8(&a.response).unwrap();
    text.split_once("\r\n\r\n").unwrap().1
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{KEY}Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[test]
fn health_and_readiness_follow_the_drain() {
    let node = Node::for_tests(&[], 1);
    let a = answer(&node, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status(&a), a.keep_alive, a.refused), (200, true, None));
    let a = answer(&node, "GET /healthz HTTP/1.0\r\n\r\n");
    assert!(!a.keep_alive, "HTTP/1.0 closes");
    assert_eq!(status(&answer(&node, "GET /readyz HTTP/1.1\r\n\r\n")), 200);
    node.drain.set(Drain::Draining);
    let a = answer(&node, "GET /readyz HTTP/1.1\r\n\r\n");
    assert_eq!((status(&a), body(&a)), (503, "draining\n"));
    let a = answer(&node, &upgrade("/ws", ""));
    assert_eq!((status(&a), a.refused), (503, Some(Failure::Draining)));
    assert!(
        std::str::from_utf8(&a.response)
            .unwrap()
            .contains("Retry-After: 1\r\n")
    );
}

#[test]
fn upgrades_open_sessions_with_their_topics() {
    let node = Node::for_tests(&["--max-topics-per-connection", "2"], 1);
    let Outcome::Upgrade(up) = respond(
        &req(&upgrade("/ws?subscribe=a,b%2Cc", "")),
        0,
        &node,
        Instant::now(),
    ) else {
        panic!("an upgrade")
    };
    assert_eq!(up.kind, SessionKind::PubSub);
    assert_eq!(up.topics, vec!["a".to_string(), "b,c".to_string()]);
    assert!(up.response.starts_with(b"HTTP/1.1 101 "));
    assert!(up.grants.is_none());
    let Outcome::Upgrade(echo) = respond(&req(&upgrade("/echo", "")), 0, &node, Instant::now())
    else {
        panic!("an upgrade")
    };
    assert_eq!(echo.kind, SessionKind::Echo);
    let a = answer(&node, &upgrade("/ws?subscribe=a,b,c", ""));
    assert_eq!((status(&a), a.refused), (400, Some(Failure::BadRequest)));
    let bad_version = upgrade("/ws", "").replace("Version: 13", "Version: 8");
    let a = answer(&node, &bad_version);
    assert_eq!(
        (status(&a), a.refused),
        (426, Some(Failure::UnsupportedVersion))
    );
    let node = Node::for_tests(&["--echo", "false"], 1);
    assert_eq!(status(&answer(&node, &upgrade("/echo", ""))), 404);
}

#[test]
fn origins_outside_the_list_are_refused() {
    let node = Node::for_tests(&["--allowed-origins", "https://app.example.com"], 1);
    let a = answer(&node, &upgrade("/ws", "Origin: https://evil.example\r\n"));
    assert_eq!((status(&a), a.refused), (403, Some(Failure::Origin)));
    let ok = respond(
        &req(&upgrade("/ws", "Origin: https://app.example.com\r\n")),
        0,
        &node,
        Instant::now(),
    );
    assert!(matches!(ok, Outcome::Upgrade(_)));
    assert!(
        matches!(
            respond(&req(&upgrade("/ws", "")), 0, &node, Instant::now()),
            Outcome::Upgrade(_)
        ),
        "no Origin: not a browser"
    );
}

#[test]
fn tokens_decide_who_connects_and_what_it_may_subscribe_to() {
    let node = Node::for_tests(&["--jwt-secret", "s3cret", "--api-key", "k"], 1);
    let a = answer(&node, &upgrade("/ws", ""));
    assert_eq!((status(&a), a.refused), (401, Some(Failure::Unauthorized)));
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let claims = json!({"exp": exp, "sub": "ann", "subscribe": ["news.*"], "publish": []});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
    )
    .unwrap();
    let path = format!("/ws?subscribe=news.eu&token={token}");
    let Outcome::Upgrade(up) = respond(&req(&upgrade(&path, "")), 0, &node, Instant::now()) else {
        panic!("an upgrade")
    };
    let grants = up.grants.expect("grants");
    assert!(grants.may_subscribe("news.us") && !grants.may_publish("news.us"));
    let path = format!("/ws?subscribe=sport&token={token}");
    let a = answer(&node, &upgrade(&path, ""));
    assert_eq!((status(&a), a.refused), (403, Some(Failure::Forbidden)));
    // the token in the subprotocol: the answer selects `bearer`
    let Outcome::Upgrade(up) = respond(
        &req(&upgrade(
            "/ws",
            &format!("Sec-WebSocket-Protocol: bearer, {token}\r\n"),
        )),
        0,
        &node,
        Instant::now(),
    ) else {
        panic!("an upgrade")
    };
    let text = std::str::from_utf8(&up.response).unwrap();
    assert!(
        text.contains("Sec-WebSocket-Protocol: bearer\r\n"),
        "{text}"
    );
}

#[test]
fn publish_heads_are_checked_before_their_body_is_read() {
    let node = Node::for_tests(&["--api-key", "k", "--max-body-size", "1KiB"], 1);
    let head = |extra: &str| format!("POST /publish/a%20b HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let a = answer(&node, &head("Content-Length: 2\r\n"));
    assert_eq!((status(&a), a.refused), (401, Some(Failure::Unauthorized)));
    let auth = "Authorization: Bearer k\r\n";
    // chunked bodies (411) and bodies over max-body-size (413) are the framer's to refuse
    let Outcome::Body(body) = respond(
        &req(&head(&format!(
            "{auth}Content-Length: 2\r\nContent-Type: application/json\r\n"
        ))),
        2,
        &node,
        Instant::now(),
    ) else {
        panic!("a body to read")
    };
    assert_eq!(
        (body.topic.as_str(), body.json, body.keep_alive),
        ("a b", true, true)
    );
    let a = answer(
        &node,
        &format!("POST /publish/%00 HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n"),
    );
    assert_eq!((status(&a), a.refused), (400, Some(Failure::BadRequest)));
    // the body: JSON must be JSON
    let err = publish_body(&body, b"{x").unwrap_err();
    assert_eq!(status(&err), 400);
    let frame = publish_body(&body, b"42").unwrap();
    assert_eq!(
        &frame.payload()[..],
        br#"{"type":"message","topic":"a b","data":42}"#
    );
    let a = published(3, None, true);
    assert_eq!(
        (status(&a), body_of(&a)),
        (202, r#"{"delivered":3}"#.to_string())
    );
    let a = published(2, Some((17, "q\"e".into())), true);
    assert_eq!(
        (status(&a), body_of(&a)),
        (
            202,
            r#"{"delivered":2,"offset":17,"epoch":"q\"e"}"#.to_string()
        )
    );
}

fn body_of(a: &Answer) -> String {
    body(a).to_string()
}

#[test]
fn other_requests_get_404_405_and_the_pages() {
    let node = Node::for_tests(&[], 2);
    let a = answer(&node, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (status(&a), a.keep_alive, a.refused),
        (404, true, Some(Failure::NotFound))
    );
    let a = answer(&node, "GET /publish/t HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (status(&a), a.refused),
        (405, Some(Failure::MethodNotAllowed))
    );
    assert!(
        std::str::from_utf8(&a.response)
            .unwrap()
            .contains("Allow: POST\r\n")
    );
    let a = answer(&node, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(body(&a).contains("wsgate_inbox_depth{worker=\"1\"} 0\n"));
    let a = answer(&node, "GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    let stats: serde_json::Value = serde_json::from_str(body(&a)).unwrap();
    assert_eq!(stats["workers"].as_array().unwrap().len(), 2);
    assert_eq!(status(&answer(&node, "GET / HTTP/1.1\r\n\r\n")), 200);
    let node = Node::for_tests(&["--dashboard", "false"], 1);
    assert_eq!(status(&answer(&node, "GET / HTTP/1.1\r\n\r\n")), 404);
    assert_eq!(
        status(&answer(&node, "GET /client.js HTTP/1.1\r\n\r\n")),
        200
    );
}

#[test]
fn a_proxy_header_from_a_peer_that_may_not_send_one_is_refused() {
    let node = Node::for_tests(
        &[
            "--proxy-protocol",
            "true",
            "--trusted-proxies",
            "10.0.0.0/8",
        ],
        1,
    );
    let e = untrusted_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &node).unwrap();
    assert_eq!(
        (status(&e), e.refused),
        (400, Some(Failure::BadProxyHeader))
    );
    assert!(untrusted_proxy_header(b"GET / HTTP/1.1\r\n", &node).is_none());
    let off = Node::for_tests(&[], 1);
    assert!(untrusted_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", &off).is_none());
}

#[test]
fn head_gets_the_headers_of_get_and_no_body() {
    let node = Node::for_tests(&[], 1);
    let get = answer(&node, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = answer(&node, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let get_text = std::str::from_utf8(&get.response).unwrap();
    let head_text = std::str::from_utf8(&head.response).unwrap();
    assert_eq!(body(&get), "ok\n");
    assert!(head_text.ends_with("\r\n\r\n"), "{head_text}");
    assert_eq!(head_text, get_text.strip_suffix("ok\n").unwrap());
    assert!(head_text.contains("Content-Length: 3\r\n"));
}

#[test]
fn an_upgrade_with_a_body_is_refused() {
    let node = Node::for_tests(&[], 1);
    let up = upgrade("/ws", "Content-Length: 5\r\n");
    let Outcome::Answer(a) = respond(&req(&up), 5, &node, Instant::now()) else {
        panic!("refused")
    };
    assert_eq!((status(&a), a.keep_alive), (400, false));
}
