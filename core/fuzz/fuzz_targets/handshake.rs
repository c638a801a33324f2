//! `handshake::parse_request` on arbitrary bytes under arbitrary limits, then everything a
//! gateway does with the result: validate the upgrade, read its offers, decide the body framing,
//! build the 101 or the error answer.
//!
//! Input: `[limit: u16][split: u16][request bytes...]`. `max_head_bytes` is the limit modulo
//! 10 000; the request is also parsed cut at `split` (modulo its length + 1), as a peer whose
//! head arrives in two reads.
//!
//! Invariants: no panic; a complete head lies within the limit and ends with `\n`; the prefix
//! gives `Ok(None)` or exactly the answer of the whole; every error has an HTTP status; a valid
//! upgrade is an upgrade; the 101 and error answers parse back as HTTP and say what they should;
//! header values given to the answer writers never add a line.
#![no_main]

mod common;

use common::Params;
use libfuzzer_sys::fuzz_target;
use wsgate_core::Error;
use wsgate_core::handshake::{self, BodyFraming, Limits, Request};

#[derive(Debug, PartialEq)]
enum Summary {
    Partial,
    Failed(Error),
    Complete {
        head_len: usize,
        method: String,
        target: String,
        minor_version: u8,
        headers: Vec<(String, Vec<u8>)>,
    },
}

fn summary(result: &Result<Option<Request<'_>>, Error>) -> Summary {
    match result {
        Ok(None) => Summary::Partial,
        Err(e) => Summary::Failed(e.clone()),
        Ok(Some(r)) => Summary::Complete {
            head_len: r.head_len(),
            method: r.method().to_owned(),
            target: r.target().to_owned(),
            minor_version: r.minor_version(),
            headers: r
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut p = Params::new(data);
    let limits = Limits {
        max_head_bytes: usize::from(p.u16()) % 10_000,
    };
    let split = p.u16();
    let buf = p.rest();
    let split = usize::from(split) % (buf.len() + 1);

    let whole = handshake::parse_request(buf, &limits);
    let prefix = handshake::parse_request(&buf[..split], &limits);
    let (sw, sp) = (summary(&whole), summary(&prefix));
    assert!(
        sp == Summary::Partial || sp == sw,
        "prefix of {split} bytes gave {sp:?}, the whole {sw:?}"
    );
    if let Summary::Complete { head_len, .. } = sw
        && head_len <= split
    {
        assert_eq!(sp, sw, "the head fits in the prefix");
    }

    match whole {
        Ok(None) => assert!(buf.len() <= limits.max_head_bytes),
        Err(e) => {
            assert!(e.http_status().is_some(), "{e:?} has no HTTP status");
            check_error_answer(&e);
        }
        Ok(Some(request)) => check_request(&request, &limits, buf),
    }
});

fn check_request(request: &Request<'_>, limits: &Limits, buf: &[u8]) {
    let head_len = request.head_len();
    assert!(head_len <= buf.len() && head_len <= limits.max_head_bytes);
    assert_eq!(buf[head_len - 1], b'\n', "a head ends with a newline");
    assert!(request.headers().count() <= handshake::MAX_HEADERS);
    for (name, value) in request.headers() {
        assert!(request.header(name).is_some());
        assert!(request.header_count(name) >= 1);
        let _ = request.header_str(name);
        let _ = request.has_token(name, "upgrade");
        let _ = request.header_list(name).count();
        let _ = value;
    }
    let _ = (
        request.path(),
        request.query(),
        request.target(),
        format!("{request:?}"),
    );
    assert!(request.path().starts_with('/') || !request.target().starts_with('/'));

    match request.body_framing() {
        Ok(framing) => {
            if let BodyFraming::Length(n) = framing {
                assert_eq!(framing.check_max(n), Ok(framing));
                if n > 0 {
                    assert_eq!(framing.check_max(n - 1), Err(Error::BodyTooLarge));
                }
            } else {
                assert_eq!(framing.check_max(0), Ok(framing));
            }
        }
        Err(e) => {
            assert!(e.http_status().is_some(), "{e:?} has no HTTP status");
            check_error_answer(&e);
        }
    }

    let is_upgrade = request.is_upgrade();
    match request.validate_upgrade() {
        Err(e) => {
            assert!(e.http_status().is_some(), "{e:?} has no HTTP status");
            check_error_answer(&e);
        }
        Ok(upgrade) => {
            assert!(is_upgrade, "a valid upgrade must count as an upgrade");
            assert_eq!(upgrade.key().len(), 24);
            assert_eq!(handshake::accept_key(upgrade.key()).len(), 28);
            let _ = (upgrade.path(), upgrade.query(), upgrade.origin());
            let protocols: Vec<&str> = upgrade.protocols().collect();
            for p in &protocols {
                assert!(!p.is_empty() && !p.contains([',', ' ', '\t']), "{p:?}");
            }
            let supported: Vec<&str> = protocols.iter().rev().take(2).copied().collect();
            let chosen = upgrade.select_protocol(&supported);
            assert_eq!(chosen.is_some(), !protocols.is_empty());

            let offers = upgrade.extensions();
            let mut answer = None;
            for offer in &offers {
                assert!(!offer.name.is_empty());
                for (name, value) in &offer.params {
                    assert!(!name.is_empty());
                    assert!(offer.param(name).is_some());
                    if let Some(v) = value {
                        assert!(!v.is_empty(), "a parameter value is a token");
                    }
                }
                if answer.is_none() {
                    let mut a = offer.name.to_owned();
                    for (name, value) in &offer.params {
                        a.push_str("; ");
                        a.push_str(name);
                        if let Some(v) = value {
                            a.push('=');
                            a.push_str(v);
                        }
                    }
                    answer = Some(a);
                }
            }
            let response = upgrade.response(chosen, answer.as_deref());
            check_101(&response, upgrade.key(), chosen, answer.as_deref());

            // Header values from the peer can never add a line to the answer.
            let hostile = String::from_utf8_lossy(&buf[..buf.len().min(300)]);
            let mut out = Vec::new();
            handshake::write_switching_protocols(
                &mut out,
                upgrade.key(),
                Some(&hostile),
                Some(&hostile),
            );
            assert_eq!(line_count(&out), 7, "{}", String::from_utf8_lossy(&out));
        }
    }

    // A response with any status and hostile header values: lines stay lines.
    let hostile = String::from_utf8_lossy(&buf[..head_len.min(200)]);
    let status = u16::from(buf[0]) * 3;
    let out = handshake::response(status, &[("X-Echo", &hostile), (&hostile, "v")], b"body");
    let written = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    let bodyless = written < 200 || written == 204 || written == 304;
    let expected_lines = 1 + 2 + usize::from(!bodyless) + 1;
    let head = &out[..out.len() - if bodyless { 0 } else { 4 }];
    assert_eq!(
        line_count(head),
        expected_lines,
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// The number of CRLF-ended lines; panics on a lone CR or LF.
fn line_count(head: &[u8]) -> usize {
    let mut lines = 0;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'\r' => {
                assert_eq!(head.get(i + 1), Some(&b'\n'), "lone CR at {i}");
                lines += 1;
                i += 2;
            }
            b'\n' => panic!("lone LF at {i}"),
            _ => i += 1,
        }
    }
    lines
}

fn check_101(response: &[u8], key: &str, protocol: Option<&str>, extensions: Option<&str>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = parsed.parse(response);
    assert_eq!(
        status,
        Ok(httparse::Status::Complete(response.len())),
        "{}",
        String::from_utf8_lossy(response)
    );
    assert_eq!(parsed.code, Some(101));
    let get = |name: &str| {
        let mut values = parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value);
        let first = values.next();
        assert!(values.next().is_none(), "{name} twice");
        first
    };
    let accept = handshake::accept_key(key);
    assert_eq!(get("Sec-WebSocket-Accept"), Some(accept.as_bytes()));
    assert_eq!(get("Upgrade"), Some(&b"websocket"[..]));
    assert_eq!(get("Connection"), Some(&b"Upgrade"[..]));
    assert_eq!(get("Sec-WebSocket-Protocol"), protocol.map(str::as_bytes));
    assert_eq!(
        get("Sec-WebSocket-Extensions"),
        extensions.map(str::as_bytes)
    );
}

fn check_error_answer(error: &Error) {
    let out = handshake::error_response(error);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = parsed.parse(&out) else {
        panic!(
            "error answer does not parse: {}",
            String::from_utf8_lossy(&out)
        );
    };
    assert_eq!(parsed.code, error.http_status().or(Some(400)));
    let body = &out[head_len..];
    assert_eq!(body, format!("{error}\n").as_bytes());
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value);
    assert_eq!(length, Some(body.len().to_string().as_bytes()));
}
