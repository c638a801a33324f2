//! Building answers: `Sec-WebSocket-Accept`, the `101 Switching Protocols` answer (from a key,
//! or from a validated [`Upgrade`]), general HTTP/1.1 answers and the answer to a failed request.
//! Header values cannot break the head: CR, LF and NUL bytes in them are written as spaces.

use super::upgrade::{Upgrade, WEBSOCKET_VERSION};
use crate::Error;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

/// The GUID that RFC 6455 appends to `Sec-WebSocket-Key` before hashing it.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of the key followed by
/// [`WEBSOCKET_GUID`] (RFC 6455 section 4.2.2).
pub fn accept_key(key: &str) -> String {
    BASE64.encode(accept_digest(key))
}

fn accept_digest(key: &str) -> [u8; 20] {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    sha1.finalize().into()
}

/// Appends a `101 Switching Protocols` answer for `key` to `out`:
///
/// ```text
/// HTTP/1.1 101 Switching Protocols
/// Upgrade: websocket
/// Connection: Upgrade
/// Sec-WebSocket-Accept: <accept_key(key)>
/// Sec-WebSocket-Protocol: <protocol>            (when given)
/// Sec-WebSocket-Extensions: <extensions>        (when given)
/// ```
///
/// `protocol` must be one the client offered ([`Upgrade::select_protocol`]), and `extensions`
/// the server's answer to its offers, or the client fails the connection.
pub fn write_switching_protocols(
    out: &mut Vec<u8>,
    key: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) {
    let mut accept = [0u8; 28];
    let accept = match BASE64.encode_slice(accept_digest(key), &mut accept) {
        Ok(n) => &accept[..n],
        Err(_) => &accept[..0],
    };
    out.reserve(
        130 + protocol.map_or(0, |p| p.len() + 26) + extensions.map_or(0, |e| e.len() + 28),
    );
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = protocol {
        push_header(out, "Sec-WebSocket-Protocol", protocol.as_bytes());
    }
    if let Some(extensions) = extensions {
        push_header(out, "Sec-WebSocket-Extensions", extensions.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase of an HTTP status code; a generic one for codes without a usual phrase.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// Appends a complete HTTP/1.1 answer to `out`: the status line (with [`reason_phrase`]), the
/// given header fields in order, `Content-Length` and the body.
///
/// A status outside 100..=599 is written as 500. For 1xx, 204 and 304 answers, which have no
/// body, neither `Content-Length` nor the body is written. CR, LF and NUL bytes in header names
/// and values are written as spaces, so no value can add a field or end the head.
pub fn write_response(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let status = if (100..=599).contains(&status) {
        status
    } else {
        500
    };
    let bodyless = status < 200 || status == 204 || status == 304;
    out.reserve(
        64 + headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum::<usize>()
            + body.len(),
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        push_header(out, name, value.as_bytes());
    }
    if !bodyless {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        out.extend_from_slice(body);
    }
}

/// [`write_response`] into a new buffer.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_response(&mut out, status, headers, body);
    out
}

/// Appends the answer to a request that failed with `error`, after which the caller closes the
/// connection.
///
/// The status is [`Error::http_status`] (400 for an error without one, such as a bad topic in
/// the query). The body is the error's one-line reason and a newline, as
/// `text/plain; charset=utf-8`, with `Connection: close`. A 426 also carries
/// `Sec-WebSocket-Version: 13` (RFC 6455 section 4.4) and `Upgrade: websocket`, which RFC 9110
/// requires of a 426, with `upgrade` listed in `Connection` as RFC 9110 section 7.8 requires of
/// any `Upgrade` field; a 405 carries `Allow: GET`.
pub fn write_error_response(out: &mut Vec<u8>, error: &Error) {
    let status = error.http_status().unwrap_or(400);
    let body = format!("{error}\n");
    let content_type = ("Content-Type", "text/plain; charset=utf-8");
    match status {
        426 => write_response(
            out,
            status,
            &[
                content_type,
                ("Sec-WebSocket-Version", WEBSOCKET_VERSION),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade, close"),
            ],
            body.as_bytes(),
        ),
        405 => write_response(
            out,
            status,
            &[content_type, ("Allow", "GET"), ("Connection", "close")],
            body.as_bytes(),
        ),
        _ => write_response(
            out,
            status,
            &[content_type, ("Connection", "close")],
            body.as_bytes(),
        ),
    }
}

/// [`write_error_response`] into a new buffer.
pub fn error_response(error: &Error) -> Vec<u8> {
    let mut out = Vec::new();
    write_error_response(&mut out, error);
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    push_sanitized(out, name.as_bytes());
    out.extend_from_slice(b": ");
    push_sanitized(out, value);
    out.extend_from_slice(b"\r\n");
}

fn push_sanitized(out: &mut Vec<u8>, bytes: &[u8]) {
    let bad = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
    if bytes.iter().any(bad) {
        out.extend(bytes.iter().map(|b| if bad(b) { b' ' } else { *b }));
    } else {
        out.extend_from_slice(bytes);
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

// The `101` answer to a validated upgrade lives here, with the other answers, so that `upgrade`
// needs nothing from this file.
impl Upgrade<'_, '_> {
    /// Appends the `101 Switching Protocols` answer to `out`, with the chosen subprotocol and
    /// the `Sec-WebSocket-Extensions` answer when given. See [`write_switching_protocols`].
    pub fn write_response(
        &self,
        out: &mut Vec<u8>,
        protocol: Option<&str>,
        extensions: Option<&str>,
    ) {
        write_switching_protocols(out, self.key(), protocol, extensions);
    }

    /// The `101 Switching Protocols` answer as a new buffer.
    pub fn response(&self, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        self.write_response(&mut out, protocol, extensions);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::test_support::*;

    // ---- accept key and the 101 --------------------------------------------------------------

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            accept_key("x3JJHMbDL1EzLkh9GBhXDw=="),
            "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
        );
    }

    #[test]
    fn switching_protocols_answer_is_exact() {
        let mut out = Vec::new();
        write_switching_protocols(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None, None);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        out.clear();
        write_switching_protocols(
            &mut out,
            "dGhlIHNhbXBsZSBub25jZQ==",
            Some("chat"),
            Some("permessage-deflate; server_no_context_takeover"),
        );
        let (status, fields, body) = parse_answer(&out);
        assert_eq!(status, 101);
        assert!(body.is_empty());
        assert_eq!(field(&fields, "Upgrade"), Some("websocket"));
        assert_eq!(field(&fields, "Connection"), Some("Upgrade"));
        assert_eq!(
            field(&fields, "Sec-WebSocket-Accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert_eq!(field(&fields, "Sec-WebSocket-Protocol"), Some("chat"));
        assert_eq!(
            field(&fields, "Sec-WebSocket-Extensions"),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert!(out.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn switching_protocols_appends_to_existing_buffer() {
        let mut out = b"prefix".to_vec();
        write_switching_protocols(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None, None);
        assert!(out.starts_with(b"prefixHTTP/1.1 101 "));
    }

    #[test]
    fn the_426_answer_names_version_13() {
        let answer = error_response(&Error::UnsupportedVersion);
        let (status, fields, body) = parse_answer(&answer);
        assert_eq!(status, 426);
        assert!(answer.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
        assert_eq!(field(&fields, "Sec-WebSocket-Version"), Some("13"));
        assert_eq!(field(&fields, "Upgrade"), Some("websocket"));
        assert_eq!(field(&fields, "Connection"), Some("Upgrade, close"));
        assert_eq!(
            body,
            format!("{}\n", Error::UnsupportedVersion).into_bytes()
        );
        let (status, fields, _) = parse_answer(&error_response(&Error::Hixie76));
        assert_eq!(status, 426);
        assert_eq!(field(&fields, "Sec-WebSocket-Version"), Some("13"));
    }

    // ---- answers -----------------------------------------------------------------------------------

    #[test]
    fn every_http_error_gets_a_well_formed_answer() {
        let errors = [
            Error::HttpMalformed("invalid header name"),
            Error::HeadersTooLarge,
            Error::TooManyHeaders,
            Error::MethodNotAllowed,
            Error::HttpVersion,
            Error::MissingHost,
            Error::NotWebSocketUpgrade,
            Error::MissingConnectionUpgrade,
            Error::BadWebSocketKey,
            Error::UnsupportedVersion,
            Error::Hixie76,
            Error::BodyTooLarge,
            Error::LengthRequired,
            Error::BadHeader("Content-Length"),
        ];
        for error in &errors {
            let answer = error_response(error);
            let (status, fields, body) = parse_answer(&answer);
            assert_eq!(Some(status), error.http_status(), "{error:?}");
            let line_end = answer.iter().position(|&b| b == b'\r').unwrap();
            assert_eq!(
                &answer[..line_end],
                format!("HTTP/1.1 {status} {}", reason_phrase(status)).as_bytes()
            );
            assert_eq!(
                field(&fields, "Content-Type"),
                Some("text/plain; charset=utf-8")
            );
            assert_eq!(
                field(&fields, "Content-Length"),
                Some(body.len().to_string().as_str())
            );
            assert!(
                field(&fields, "Connection")
                    .unwrap()
                    .to_ascii_lowercase()
                    .contains("close"),
                "{error:?}"
            );
            assert_eq!(body, format!("{error}\n").into_bytes());
            assert_eq!(
                field(&fields, "Sec-WebSocket-Version").is_some(),
                status == 426
            );
        }
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(413), "Content Too Large");
        assert_eq!(reason_phrase(411), "Length Required");
        assert_eq!(reason_phrase(405), "Method Not Allowed");
        let (_, fields, _) = parse_answer(&error_response(&Error::MethodNotAllowed));
        assert_eq!(field(&fields, "Allow"), Some("GET"));
        // An error without an HTTP status (a bad topic in the query) is a 400.
        let (status, _, body) = parse_answer(&error_response(&Error::InvalidTopic("empty")));
        assert_eq!(status, 400);
        assert_eq!(body, b"invalid topic: empty\n");
    }

    #[test]
    fn general_responses() {
        assert_eq!(
            response(200, &[("Content-Type", "text/plain")], b"ok\n"),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
        );
        assert_eq!(
            response(404, &[], b""),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        );
        let (status, fields, body) = parse_answer(&response(
            202,
            &[("Content-Type", "application/json")],
            br#"{"delivered":3}"#,
        ));
        assert_eq!((status, body.as_slice()), (202, &br#"{"delivered":3}"#[..]));
        assert_eq!(field(&fields, "Content-Length"), Some("15"));
        assert_eq!(
            response(503, &[("Connection", "close")], b"draining\n"),
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 9\r\n\r\ndraining\n"
        );
        assert_eq!(
            response(204, &[], b"ignored"),
            b"HTTP/1.1 204 No Content\r\n\r\n"
        );
        assert!(response(42, &[], b"").starts_with(b"HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(response(599, &[], b"").starts_with(b"HTTP/1.1 599 Server Error\r\n"));
        let mut out = Vec::new();
        write_response(&mut out, 200, &[], &vec![b'x'; 12345]);
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\nxxx"));
    }

    #[test]
    fn header_values_cannot_inject_fields() {
        let answer = response(200, &[("X-Evil", "a\r\nSet-Cookie: b\0")], b"");
        let (_, fields, _) = parse_answer(&answer);
        assert_eq!(field(&fields, "X-Evil"), Some("a  Set-Cookie: b"));
        assert_eq!(field(&fields, "Set-Cookie"), None);
        let mut out = Vec::new();
        write_switching_protocols(&mut out, "k", Some("chat\r\n\r\nHTTP/1.1 200 OK"), None);
        let (status, fields, body) = parse_answer(&out);
        assert_eq!((status, body.len()), (101, 0));
        assert_eq!(fields.len(), 4);
    }
}
