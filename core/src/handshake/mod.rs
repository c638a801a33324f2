//! The HTTP/1.1 side of a connection: parse a request head, validate a WebSocket upgrade
//! (RFC 6455 section 4.2.1) and build the `101 Switching Protocols` answer or an error answer.
//!
//! # Design
//!
//! The module is sans-IO. The caller reads bytes into its own buffer and calls
//! [`parse_request`] on everything received so far; the answer is
//!
//! - `Ok(None)`: the head is not complete yet, read more and call again with the longer buffer;
//! - `Ok(Some(request))`: a complete head; [`Request::head_len`] says how many bytes it used, and
//!   the bytes after it (a first WebSocket frame, a POST body) belong to the caller;
//! - `Err(error)`: answer with [`error_response`] and close. Every error of this module has an
//!   HTTP status ([`Error::http_status`]).
//!
//! Parsing never looks at more than [`Limits::max_head_bytes`] bytes: a head that has not ended
//! within the limit is [`Error::HeadersTooLarge`] (431), whether the rest has arrived or not, so
//! a slow or hostile peer cannot make the caller buffer without bound. Each call parses the head
//! from its start (httparse keeps no state), which costs a few microseconds at most under the
//! default limit of 8 KiB. A peer that sends its head one byte per segment makes that quadratic,
//! bounded by the limit; a caller that wants to avoid it re-parses only when the new bytes hold a
//! `\n`, since a head can only end with one.
//!
//! A [`Request`] borrows everything from the caller's buffer: the header fields sit in a fixed
//! array of [`MAX_HEADERS`] slots inside the request (a 65th field is [`Error::TooManyHeaders`],
//! 431), so parsing and validating a request allocates nothing. [`Request::validate_upgrade`]
//! checks every rule of RFC 6455 section 4.2.1 in one pass over the fields, including the syntax
//! of `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`, and returns an [`Upgrade`] view.
//! The offered subprotocols are then read lazily ([`Upgrade::protocols`]); the offered extensions
//! are parsed into owned lists only when asked for ([`Upgrade::extensions`]), so a gateway that
//! negotiates no extension never pays for them.
//!
//! List headers (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`,
//! ...) may be split over several lines; the lines combine into one list, as RFC 7230 section 3.2.2
//! says, and empty list items are skipped.
//!
//! Answers are written into a caller-provided `Vec<u8>` ([`write_switching_protocols`],
//! [`write_error_response`], [`write_response`]) or returned as a new one. Header values given to
//! the writers cannot break the head: CR, LF and NUL bytes in them are written as spaces.
//!
//! Nothing here panics, whatever the input: malformed heads are [`Error::HttpMalformed`] (400).
//!
//! [`Error::http_status`]: crate::Error::http_status
//! [`Error::HeadersTooLarge`]: crate::Error::HeadersTooLarge
//! [`Error::TooManyHeaders`]: crate::Error::TooManyHeaders
//! [`Error::HttpMalformed`]: crate::Error::HttpMalformed

// The rooms, each using only those below it (this file re-exports their public items):
//
// - `response`: `Sec-WebSocket-Accept`, the `101` (also as `Upgrade::write_response`), general
//   answers and error answers; uses `upgrade` for `Upgrade` and `WEBSOCKET_VERSION`;
// - `upgrade`: RFC 6455 section 4.2.1: `Request::is_upgrade`, `Request::validate_upgrade` and the
//   `Upgrade` view; uses `request`, `extensions` and `syntax`;
// - `body`: `BodyFraming` and `Request::body_framing`; uses `request` and `syntax`;
// - `extensions`: `ExtensionOffer` and the `Sec-WebSocket-Extensions` parser; uses `syntax`;
// - `request`: `Limits`, `parse_request` and `Request` with its header lookups; uses `syntax`;
// - `syntax`: RFC 7230 tokens, whitespace and lists; uses nothing.

mod body;
mod extensions;
mod request;
mod response;
mod syntax;
#[cfg(test)]
mod test_support;
mod upgrade;

pub use body::BodyFraming;
pub use extensions::ExtensionOffer;
pub use request::{DEFAULT_MAX_HEAD_BYTES, Limits, MAX_HEADERS, Request, parse_request};
pub use response::{
    WEBSOCKET_GUID, accept_key, error_response, reason_phrase, response, write_error_response,
    write_response, write_switching_protocols,
};
pub use upgrade::{Upgrade, WEBSOCKET_VERSION};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::test_support::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use proptest::prelude::*;

    // ---- browsers ----------------------------------------------------------------------------

    #[test]
    fn chromium_upgrade_is_valid() {
        let request = complete(CHROMIUM.as_bytes());
        assert_eq!(request.head_len(), CHROMIUM.len());
        assert_eq!(request.method(), "GET");
        assert_eq!(request.minor_version(), 1);
        assert_eq!(request.target(), "/ws?subscribe=news,sport");
        assert_eq!(request.path(), "/ws");
        assert_eq!(request.query(), Some("subscribe=news,sport"));
        assert!(request.is_upgrade());
        assert_eq!(request.header_str("host"), Some("gateway.example:8080"));
        assert!(
            request
                .header("USER-AGENT")
                .unwrap()
                .starts_with(b"Mozilla/5.0")
        );
        let upgrade = request.validate_upgrade().expect("valid");
        assert_eq!(upgrade.key(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(upgrade.path(), "/ws");
        assert_eq!(upgrade.query(), Some("subscribe=news,sport"));
        assert_eq!(upgrade.origin(), Some("https://app.example"));
        assert_eq!(upgrade.protocols().count(), 0);
        assert_eq!(
            upgrade.extensions(),
            vec![ExtensionOffer {
                name: "permessage-deflate",
                params: vec![("client_max_window_bits", None)],
            }]
        );
        assert_eq!(
            upgrade.extensions()[0].param("client_max_window_bits"),
            Some(None)
        );
        let answer = upgrade.response(None, None);
        let (status, fields, _) = parse_answer(&answer);
        assert_eq!(status, 101);
        assert_eq!(
            field(&fields, "Sec-WebSocket-Accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn firefox_upgrade_is_valid() {
        let request = complete(FIREFOX.as_bytes());
        assert_eq!(request.path(), "/echo");
        assert_eq!(request.query(), None);
        let upgrade = request.validate_upgrade().expect("valid");
        assert_eq!(upgrade.key(), "x3JJHMbDL1EzLkh9GBhXDw==");
        assert_eq!(upgrade.origin(), Some("http://localhost:8080"));
        assert_eq!(
            upgrade.protocols().collect::<Vec<_>>(),
            ["chat", "superchat"]
        );
        assert_eq!(
            upgrade.select_protocol(&["superchat", "chat"]),
            Some("chat")
        );
        assert_eq!(upgrade.select_protocol(&["superchat"]), Some("superchat"));
        assert_eq!(upgrade.select_protocol(&["Chat"]), None, "case-sensitive");
        assert_eq!(
            upgrade.extensions(),
            vec![ExtensionOffer {
                name: "permessage-deflate",
                params: vec![]
            }]
        );
        let (_, fields, _) = parse_answer(&upgrade.response(Some("chat"), None));
        assert_eq!(
            field(&fields, "Sec-WebSocket-Accept"),
            Some("HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
        );
        assert_eq!(field(&fields, "Sec-WebSocket-Protocol"), Some("chat"));
    }

    // ---- properties --------------------------------------------------------------------------------

    /// Exercises every accessor of whatever parses; must never panic.
    fn exercise(buf: &[u8], limits: &Limits) {
        match parse_request(buf, limits) {
            Ok(Some(request)) => {
                assert!(request.head_len() <= buf.len().min(limits.max_head_bytes));
                let _ = (request.path(), request.query(), request.is_upgrade());
                let _ = request.headers().count();
                if let Ok(framing) = request.body_framing() {
                    let _ = framing.check_max(10);
                }
                match request.validate_upgrade() {
                    Ok(upgrade) => {
                        let _ = upgrade.protocols().count();
                        let _ = upgrade.extensions();
                        let _ = upgrade.response(upgrade.protocols().next(), Some("x"));
                    }
                    Err(e) => {
                        assert!(e.http_status().is_some());
                        let _ = error_response(&e);
                    }
                }
            }
            Ok(None) => assert!(buf.len() <= limits.max_head_bytes),
            Err(e) => {
                assert!(e.http_status().is_some(), "{e:?}");
                let _ = error_response(&e);
            }
        }
    }

    fn random_case(s: &str, flips: &[bool]) -> String {
        s.chars()
            .zip(flips.iter().cycle())
            .map(|(c, &up)| {
                if up {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    prop_compose! {
        /// A valid upgrade request with random header case, whitespace, order, extra fields,
        /// protocols and extensions; returns it with its key.
        fn valid_upgrade()(
            key in proptest::array::uniform16(any::<u8>()),
            path in "/[a-z0-9]{0,12}(\\?[a-z=,&%0-9]{0,20})?",
            flips in proptest::collection::vec(any::<bool>(), 1..8),
            ows in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("\t"), Just("  ")], 8),
            connection in prop_oneof![Just("Upgrade"), Just("keep-alive, Upgrade"), Just("upgrade"), Just("Upgrade, keep-alive")],
            protocols in proptest::option::of("[a-z][a-z0-9.]{0,8}(, ?[a-z][a-z0-9.]{0,8}){0,3}"),
            extensions in proptest::option::of(prop_oneof![
                Just("permessage-deflate"),
                Just("permessage-deflate; client_max_window_bits"),
                Just("permessage-deflate; client_max_window_bits=\"15\"; server_no_context_takeover, x-foo"),
            ]),
            extra in proptest::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,40}"), 0..10),
            order in any::<proptest::sample::Index>(),
        ) -> (String, String) {
            let key = BASE64.encode(key);
            let name = |n: &str| random_case(n, &flips);
            let mut lines = vec![
                format!("{}:{}example.com{}", name("Host"), ows[0], ows[1]),
                format!("{}:{}websocket{}", name("Upgrade"), ows[2], ows[3]),
                format!("{}:{}{connection}", name("Connection"), ows[4]),
                format!("{}:{}{key}{}", name("Sec-WebSocket-Key"), ows[5], ows[6]),
                format!("{}: 13{}", name("Sec-WebSocket-Version"), ows[7]),
            ];
            if let Some(p) = protocols {
                lines.push(format!("Sec-WebSocket-Protocol: {p}"));
            }
            if let Some(e) = extensions {
                lines.push(format!("Sec-WebSocket-Extensions: {e}"));
            }
            for (n, v) in extra {
                lines.push(format!("{n}: {v}"));
            }
            let k = order.index(lines.len());
            lines.rotate_left(k);
            let mut text = format!("GET {path} HTTP/1.1\r\n");
            for line in lines {
                text.push_str(&line);
                text.push_str("\r\n");
            }
            text.push_str("\r\n");
            (text, key)
        }
    }

    /// What a validated upgrade exposes, owned, for comparisons.
    fn summary(
        request: &Request<'_>,
    ) -> (usize, String, Option<String>, String, Vec<String>, String) {
        let upgrade = request.validate_upgrade().expect("valid upgrade");
        (
            request.head_len(),
            upgrade.path().to_owned(),
            upgrade.query().map(str::to_owned),
            upgrade.key().to_owned(),
            upgrade.protocols().map(str::to_owned).collect(),
            format!("{:?}", upgrade.extensions()),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), limit in 0usize..700) {
            exercise(&bytes, &Limits::default());
            exercise(&bytes, &Limits { max_head_bytes: limit });
            let mut prefixed = b"GET /ws HTTP/1.1\r\n".to_vec();
            prefixed.extend_from_slice(&bytes);
            exercise(&prefixed, &Limits::default());
        }

        #[test]
        fn mutated_requests_never_panic(
            base in prop_oneof![Just(CHROMIUM.to_owned()), Just(FIREFOX.to_owned()), valid_upgrade().prop_map(|(t, _)| t)],
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        ) {
            let mut bytes = base.into_bytes();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ if i < bytes.len() => { bytes.remove(i); }
                    _ => bytes.push(byte),
                }
            }
            exercise(&bytes, &Limits::default());
        }

        #[test]
        fn valid_request_split_anywhere_parses_identically(
            (text, key) in valid_upgrade(),
            split in any::<proptest::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let bytes = text.as_bytes();
            let whole = complete(bytes);
            prop_assert_eq!(whole.head_len(), bytes.len());
            let expected = summary(&whole);
            prop_assert_eq!(&expected.3, &key);
            // Any prefix asks for more; the prefix plus the rest parses to the same request.
            let at = split.index(bytes.len());
            prop_assert!(parse(&bytes[..at]).unwrap().is_none());
            let mut buf = bytes[..at].to_vec();
            buf.extend_from_slice(&bytes[at..]);
            buf.extend_from_slice(&tail);
            let again = complete(&buf);
            prop_assert_eq!(summary(&again), expected);
            prop_assert_eq!(&buf[again.head_len()..], &tail[..]);
            let answer = again.validate_upgrade().unwrap().response(None, None);
            let accept = format!("Sec-WebSocket-Accept: {}\r\n", accept_key(&key));
            prop_assert!(answer.windows(accept.len()).any(|w| w == accept.as_bytes()));
        }
    }
}
