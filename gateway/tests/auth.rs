//! JWT authentication and authorisation against the real binary: tokens from the query, the
//! Authorization header and the bearer subprotocol; HS256, RS256 and ES256; what a token allows;
//! a token expiring while connected.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wsgate_core::frame::OpCode;

const SECRET: &str = "test-secret-do-not-use";

fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn key_path(name: &str) -> String {
    format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Sends an upgrade with extra header lines and reads the answer.
fn upgrade(
    addr: SocketAddr,
    path: &str,
    extra: &str,
) -> (std::net::TcpStream, Vec<u8>, HttpResponse) {
    let mut s = connect(addr);
    let req = upgrade_request(path).replace("\r\n\r\n", &format!("\r\n{extra}\r\n"));
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf).expect("an answer");
    (s, buf, r)
}

fn session(addr: SocketAddr, path: &str, extra: &str) -> RawWs {
    let (s, buf, r) = upgrade(addr, path, extra);
    RawWs::finish_upgrade_after(s, buf, r)
}

#[test]
fn upgrades_need_a_valid_token() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--api-key", "backend-key"]);
    let (_, _, r) = upgrade(gw.addr, "/ws", "");
    assert_eq!(r.status, 401);
    assert!(
        r.header("WWW-Authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{r:?}"
    );
    assert!(r.text().contains("token is required"));
    let (_, _, r) = upgrade(gw.addr, "/ws?token=garbage", "");
    assert_eq!(r.status, 401);
    let expired = hs256(json!({"exp": unix() - 30, "subscribe": ["*"]}));
    let (_, _, r) = upgrade(gw.addr, &format!("/ws?token={expired}"), "");
    assert_eq!(r.status, 401, "{r:?}");
    let forged = encode(
        &Header::default(),
        &json!({"exp": unix() + 60}),
        &EncodingKey::from_secret(b"wrong"),
    )
    .unwrap();
    let (_, _, r) = upgrade(gw.addr, &format!("/ws?token={forged}"), "");
    assert_eq!(r.status, 401);
    // the three ways of presenting a good token
    let good =
        hs256(json!({"exp": unix() + 60, "sub": "alice", "subscribe": ["*"], "publish": ["*"]}));
    let (_, _, r) = upgrade(gw.addr, &format!("/ws?token={good}"), "");
    assert_eq!(r.status, 101);
    let (_, _, r) = upgrade(gw.addr, "/ws", &format!("Authorization: Bearer {good}\r\n"));
    assert_eq!(r.status, 101);
    let (_, _, r) = upgrade(
        gw.addr,
        "/ws",
        &format!("Sec-WebSocket-Protocol: bearer, {good}\r\n"),
    );
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("Sec-WebSocket-Protocol"),
        Some("bearer"),
        "browsers need the offered protocol back"
    );
    assert!(gw.metric("wsgate_handshake_failures_total{reason=\"unauthorized\"}") >= 4.0);
    // HTTP endpoints are not behind the token
    assert_eq!(get(gw.addr, "/healthz").status, 200);
}

#[test]
fn a_token_allows_only_its_topics() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--api-key", "backend-key"]);
    let token = hs256(
        json!({"exp": unix() + 60, "subscribe": ["news.*", "alerts"], "publish": ["news.alice"]}),
    );
    let mut ws = session(gw.addr, &format!("/ws?subscribe=alerts&token={token}"), "");
    ws.send_text(r#"{"type":"subscribe","topic":"news.sport","id":1}"#);
    assert_eq!(ws.recv_text(), r#"{"type":"ack","id":1}"#);
    ws.send_text(r#"{"type":"subscribe","topic":"secrets","id":2}"#);
    let e = ws.recv_text();
    assert!(
        e.contains(r#""code":"forbidden""#) && e.contains(r#""id":2"#),
        "{e}"
    );
    ws.send_text(r#"{"type":"publish","topic":"news.bob","data":1,"id":3}"#);
    assert!(ws.recv_text().contains("forbidden"));
    let mut bin = vec![8u8];
    bin.extend_from_slice(b"news.bob");
    bin.extend_from_slice(b"payload");
    ws.send(true, OpCode::Binary, &bin);
    assert!(ws.recv_text().contains("forbidden"));
    // the session is still open and allowed things work
    ws.send_text(r#"{"type":"publish","topic":"news.alice","data":"hi","id":4}"#);
    let next = ws.recv_text();
    assert_eq!(
        next, r#"{"type":"ack","id":4}"#,
        "not subscribed to news.alice, so only the ack"
    );
    // subscribing at connect to a forbidden topic refuses the upgrade
    let (_, _, r) = upgrade(gw.addr, &format!("/ws?subscribe=secrets&token={token}"), "");
    assert_eq!(r.status, 403);
    assert!(r.text().contains("secrets"));
    assert!(gw.metric("wsgate_forbidden_total") >= 3.0);
}

#[test]
fn a_token_that_expires_while_connected_closes_the_session_with_1008() {
    let gw = Gateway::start(&["--jwt-secret", SECRET, "--api-key", "backend-key"]);
    let short = hs256(json!({"exp": unix() + 1, "subscribe": ["*"]}));
    let long = hs256(json!({"exp": unix() + 600, "subscribe": ["*"]}));
    let mut expiring = session(gw.addr, &format!("/echo?token={short}"), "");
    let mut lasting = session(gw.addr, &format!("/echo?token={long}"), "");
    expiring
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(expiring.expect_close(), Some(1008));
    lasting.send_text("still valid");
    assert_eq!(lasting.recv_text(), "still valid");
}

#[test]
fn rs256_and_es256_public_keys() {
    for (alg, algorithm, private, public) in [
        (
            "RS256",
            Algorithm::RS256,
            "rs256-private.pem",
            "rs256-public.pem",
        ),
        (
            "ES256",
            Algorithm::ES256,
            "es256-private.pem",
            "es256-public.pem",
        ),
    ] {
        let public = key_path(public);
        let gw = Gateway::start(&[
            "--jwt-public-key",
            &public,
            "--jwt-algorithm",
            alg,
            "--publish-open",
            "true",
        ]);
        let pem = std::fs::read(key_path(private)).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let token = encode(
            &Header::new(algorithm),
            &json!({"exp": unix() + 60, "subscribe": ["*"]}),
            &key,
        )
        .unwrap();
        let (_, _, r) = upgrade(gw.addr, &format!("/ws?token={token}"), "");
        assert_eq!(r.status, 101, "{alg}: {r:?}");
        // an HS256 token with the public key's text as the secret must not pass (alg confusion)
        let confused = encode(
            &Header::default(),
            &json!({"exp": unix() + 60}),
            &EncodingKey::from_secret(&std::fs::read(&public).unwrap()),
        )
        .unwrap();
        let (_, _, r) = upgrade(gw.addr, &format!("/ws?token={confused}"), "");
        assert_eq!(r.status, 401, "{alg}");
    }
}

#[test]
fn bad_key_settings_exit_2_naming_the_flag() {
    for args in [
        vec!["--jwt-public-key", "/nonexistent/key.pem"],
        vec!["--jwt-public-key", "Cargo.toml"],
        vec!["--jwt-secret", "x", "--jwt-public-key", "k.pem"],
    ] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--jwt"), "{args:?}: {err}");
    }
}
