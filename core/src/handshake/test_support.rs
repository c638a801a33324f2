//! Requests and helpers the tests of every room share: two browsers' upgrade heads, a minimal
//! upgrade to edit, and a reader of answers.

use super::{ExtensionOffer, Limits, Request, parse_request};
use crate::Result;
use std::borrow::Cow;

pub(super) const CHROMIUM: &str = "GET /ws?subscribe=news,sport HTTP/1.1\r\n\
    Host: gateway.example:8080\r\n\
    Connection: Upgrade\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
    Upgrade: websocket\r\n\
    Origin: https://app.example\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Accept-Encoding: gzip, deflate, br, zstd\r\n\
    Accept-Language: en-US,en;q=0.9\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
    \r\n";

pub(super) const FIREFOX: &str = "GET /echo HTTP/1.1\r\n\
    Host: localhost:8080\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n\
    Accept: */*\r\n\
    Accept-Language: en-US,en;q=0.5\r\n\
    Accept-Encoding: gzip, deflate, br\r\n\
    Sec-WebSocket-Version: 13\r\n\
    Origin: http://localhost:8080\r\n\
    Sec-WebSocket-Protocol: chat, superchat\r\n\
    Sec-WebSocket-Extensions: permessage-deflate\r\n\
    Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
    Connection: keep-alive, Upgrade\r\n\
    Sec-Fetch-Dest: empty\r\n\
    Sec-Fetch-Mode: websocket\r\n\
    Sec-Fetch-Site: same-origin\r\n\
    Pragma: no-cache\r\n\
    Cache-Control: no-cache\r\n\
    Upgrade: websocket\r\n\
    \r\n";

pub(super) fn parse(buf: &[u8]) -> Result<Option<Request<'_>>> {
    parse_request(buf, &Limits::default())
}

pub(super) fn complete(buf: &[u8]) -> Request<'_> {
    parse(buf).expect("parses").expect("complete request")
}

/// A minimal valid upgrade with `extra` header lines inserted, and `replace` lines removed
/// (matched by name prefix).
pub(super) fn upgrade_with(remove: &[&str], extra: &str) -> String {
    let base = [
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];
    let mut s = String::from("GET /ws HTTP/1.1\r\n");
    for line in base {
        if !remove.iter().any(|r| line.starts_with(&format!("{r}:"))) {
            s.push_str(line);
            s.push_str("\r\n");
        }
    }
    s.push_str(extra);
    s.push_str("\r\n");
    s
}

pub(super) fn upgrade_result(req: &str) -> Result<()> {
    let request = complete(req.as_bytes());
    request.validate_upgrade().map(|_| ())
}

pub(super) fn status_of(req: &str) -> Option<u16> {
    upgrade_result(req).err().and_then(|e| e.http_status())
}

/// Parses an answer with httparse and returns (status, headers, body).
pub(super) fn parse_answer(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(bytes).expect("answer parses") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("answer head incomplete"),
    };
    let fields: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    (resp.code.unwrap(), fields, bytes[len..].to_vec())
}

pub(super) fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(super) fn offer(
    name: &'static str,
    params: &[(&'static str, Option<&'static str>)],
) -> ExtensionOffer<'static> {
    ExtensionOffer {
        name,
        params: params
            .iter()
            .map(|(n, v)| (*n, v.map(Cow::Borrowed)))
            .collect(),
    }
}
