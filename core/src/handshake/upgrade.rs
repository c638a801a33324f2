//! The WebSocket upgrade of RFC 6455 section 4.2.1: whether a request attempts one
//! ([`Request::is_upgrade`]), the validation of every rule in one pass over the fields
//! ([`Request::validate_upgrade`]) and the [`Upgrade`] view it returns (key, origin, the offered
//! subprotocols and extensions). The `101` answer to an upgrade is built in `response`.

use super::extensions::{ExtEvent, ExtensionOffer, ParamValue, parse_extension_list};
use super::request::Request;
use super::syntax::{is_token, list_items};
use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// The only `Sec-WebSocket-Version` the gateway speaks (RFC 6455).
pub const WEBSOCKET_VERSION: &str = "13";

impl<'a> Request<'a> {
    /// Whether the request attempts a WebSocket upgrade: its `Upgrade` header lists `websocket`,
    /// or it carries `Sec-WebSocket-Key`, `Sec-WebSocket-Version` or the hixie-76
    /// `Sec-WebSocket-Key1`/`Key2`. Such a request is answered through
    /// [`Request::validate_upgrade`]; any other request is plain HTTP (an `Upgrade: h2c` offer,
    /// for one, is ignored as RFC 7230 allows).
    pub fn is_upgrade(&self) -> bool {
        self.fields().iter().any(|h| {
            let n = h.name;
            (n.eq_ignore_ascii_case("upgrade")
                && list_items(h.value).any(|i| i.eq_ignore_ascii_case(b"websocket")))
                || n.eq_ignore_ascii_case("sec-websocket-key")
                || n.eq_ignore_ascii_case("sec-websocket-version")
                || n.eq_ignore_ascii_case("sec-websocket-key1")
                || n.eq_ignore_ascii_case("sec-websocket-key2")
        })
    }

    /// Validates a WebSocket upgrade as RFC 6455 section 4.2.1 requires, in this order:
    ///
    /// 1. method `GET`, else [`Error::MethodNotAllowed`] (405);
    /// 2. HTTP/1.1 or later, else [`Error::HttpVersion`] (400);
    /// 3. not a hixie-76 handshake (`Sec-WebSocket-Key1`/`Key2` without a version), else
    ///    [`Error::Hixie76`] (426);
    /// 4. exactly one `Host`, else [`Error::MissingHost`] (400);
    /// 5. `Upgrade` lists `websocket`, else [`Error::NotWebSocketUpgrade`] (400);
    /// 6. `Connection` lists `Upgrade`, else [`Error::MissingConnectionUpgrade`] (400);
    /// 7. `Sec-WebSocket-Version` is exactly `13`, else [`Error::UnsupportedVersion`] (426);
    /// 8. one `Sec-WebSocket-Key` that is base64 of 16 bytes, else [`Error::BadWebSocketKey`];
    /// 9. at most one `Origin`, as text, else [`Error::BadHeader`]`("Origin")`;
    /// 10. `Sec-WebSocket-Protocol` a list of tokens and `Sec-WebSocket-Extensions` a valid
    ///     extension list (RFC 6455 section 9.1), else [`Error::BadHeader`] naming the header.
    ///
    /// Token comparisons are case-insensitive. Whether the path is one the gateway serves is
    /// the caller's decision.
    pub fn validate_upgrade(&self) -> Result<Upgrade<'_, 'a>> {
        if self.method() != "GET" {
            return Err(Error::MethodNotAllowed);
        }
        if self.minor_version() < 1 {
            return Err(Error::HttpVersion);
        }
        let mut hosts = 0usize;
        let mut upgrade_ok = false;
        let mut connection_ok = false;
        let mut version_items = 0usize;
        let mut version_ok = false;
        let mut keys = 0usize;
        let mut key: &'a [u8] = b"";
        let mut hixie_keys = false;
        let mut origins = 0usize;
        let mut origin: &'a [u8] = b"";
        let mut protocols_ok = true;
        let mut extensions_ok = true;
        // One pass over the fields; the name length picks the one comparison worth making.
        for h in self.fields() {
            let (n, v) = (h.name, h.value);
            let is = |name: &str| n.eq_ignore_ascii_case(name);
            match n.len() {
                4 if is("host") => hosts += 1,
                6 if is("origin") => {
                    origins += 1;
                    origin = v;
                }
                7 if is("upgrade") => {
                    upgrade_ok |= list_items(v).any(|i| i.eq_ignore_ascii_case(b"websocket"));
                }
                10 if is("connection") => {
                    connection_ok |= list_items(v).any(|i| i.eq_ignore_ascii_case(b"upgrade"));
                }
                17 if is("sec-websocket-key") => {
                    keys += 1;
                    key = v;
                }
                18 if is("sec-websocket-key1") || is("sec-websocket-key2") => hixie_keys = true,
                21 if is("sec-websocket-version") => {
                    for item in list_items(v) {
                        version_items += 1;
                        version_ok = item == WEBSOCKET_VERSION.as_bytes();
                    }
                }
                22 if is("sec-websocket-protocol") => {
                    protocols_ok &= list_items(v).all(is_token);
                }
                24 if is("sec-websocket-extensions") => {
                    extensions_ok &= parse_extension_list(v, &mut |_| {}).is_ok();
                }
                _ => {}
            }
        }
        if hixie_keys && version_items == 0 {
            return Err(Error::Hixie76);
        }
        if hosts != 1 {
            return Err(Error::MissingHost);
        }
        if !upgrade_ok {
            return Err(Error::NotWebSocketUpgrade);
        }
        if !connection_ok {
            return Err(Error::MissingConnectionUpgrade);
        }
        if version_items != 1 || !version_ok {
            return Err(Error::UnsupportedVersion);
        }
        if keys != 1 || !is_valid_key(key) {
            return Err(Error::BadWebSocketKey);
        }
        let key = std::str::from_utf8(key).map_err(|_| Error::BadWebSocketKey)?;
        let origin = match origins {
            0 => None,
            1 => Some(std::str::from_utf8(origin).map_err(|_| Error::BadHeader("Origin"))?),
            _ => return Err(Error::BadHeader("Origin")),
        };
        if !protocols_ok {
            return Err(Error::BadHeader("Sec-WebSocket-Protocol"));
        }
        if !extensions_ok {
            return Err(Error::BadHeader("Sec-WebSocket-Extensions"));
        }
        Ok(Upgrade {
            request: self,
            key,
            origin,
        })
    }
}

/// A validated WebSocket upgrade request: a view over its [`Request`].
#[derive(Debug, Clone, Copy)]
pub struct Upgrade<'r, 'a> {
    request: &'r Request<'a>,
    key: &'a str,
    origin: Option<&'a str>,
}

impl<'r, 'a> Upgrade<'r, 'a> {
    /// The request this upgrade was validated from.
    pub fn request(&self) -> &'r Request<'a> {
        self.request
    }

    /// `Sec-WebSocket-Key` as sent (24 base64 characters).
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// The request path without the query.
    pub fn path(&self) -> &'a str {
        self.request.path()
    }

    /// The raw query, without the `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.request.query()
    }

    /// The `Origin` header, when sent (browsers always send it).
    pub fn origin(&self) -> Option<&'a str> {
        self.origin
    }

    /// The subprotocols the client offers, in its order of preference: every
    /// `Sec-WebSocket-Protocol` line combined, items trimmed, empty items skipped. Subprotocol
    /// names compare case-sensitively.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + use<'r, 'a> {
        let request: &'r Request<'a> = self.request;
        request
            .fields()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|h| list_items(h.value))
            .filter_map(|item| std::str::from_utf8(item).ok())
    }

    /// The first protocol the client offers that is in `supported`, the one to answer with.
    pub fn select_protocol(&self, supported: &[&str]) -> Option<&'a str> {
        self.protocols().find(|p| supported.contains(p))
    }

    /// The extensions the client offers, in its order of preference, every
    /// `Sec-WebSocket-Extensions` line combined. Parsed on each call (the syntax was checked by
    /// [`Request::validate_upgrade`]); allocates only when the header is present.
    pub fn extensions(&self) -> Vec<ExtensionOffer<'a>> {
        let mut offers: Vec<ExtensionOffer<'a>> = Vec::new();
        for value in self.request.header_values("sec-websocket-extensions") {
            let _ = parse_extension_list(value, &mut |event| match event {
                ExtEvent::Offer(name) => offers.push(ExtensionOffer {
                    name,
                    params: Vec::new(),
                }),
                ExtEvent::Param(name, value) => {
                    if let Some(offer) = offers.last_mut() {
                        offer.params.push((name, value.map(ParamValue::unescape)));
                    }
                }
            });
        }
        offers
    }
}

/// Whether `key` is canonical base64 of exactly 16 bytes (24 characters, `==` padding).
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 24];
    key.len() == 24 && matches!(BASE64.decode_slice(key, &mut decoded), Ok(16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::test_support::*;

    #[test]
    fn h2c_upgrade_is_not_a_websocket_upgrade() {
        let request =
            complete(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n");
        assert!(!request.is_upgrade());
        let request = complete(b"GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Version: 13\r\n\r\n");
        assert!(request.is_upgrade());
        let request = complete(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\n\r\n");
        assert!(request.is_upgrade());
    }

    // ---- upgrade validation --------------------------------------------------------------------

    #[test]
    fn minimal_upgrade_is_valid() {
        assert_eq!(upgrade_result(&upgrade_with(&[], "")), Ok(()));
    }

    #[test]
    fn method_must_be_get() {
        let req = upgrade_with(&[], "").replacen("GET", "POST", 1);
        assert_eq!(upgrade_result(&req), Err(Error::MethodNotAllowed));
        assert_eq!(status_of(&req), Some(405));
        let req = upgrade_with(&[], "").replacen("GET", "get", 1);
        assert_eq!(upgrade_result(&req), Err(Error::MethodNotAllowed));
    }

    #[test]
    fn http_version_must_be_1_1() {
        let req = upgrade_with(&[], "").replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(upgrade_result(&req), Err(Error::HttpVersion));
        assert_eq!(status_of(&req), Some(400));
    }

    #[test]
    fn host_must_appear_once() {
        let missing = upgrade_with(&["Host"], "");
        assert_eq!(upgrade_result(&missing), Err(Error::MissingHost));
        assert_eq!(status_of(&missing), Some(400));
        let twice = upgrade_with(&[], "Host: other.example\r\n");
        assert_eq!(upgrade_result(&twice), Err(Error::MissingHost));
    }

    #[test]
    fn upgrade_must_name_websocket() {
        let missing = upgrade_with(&["Upgrade"], "");
        assert_eq!(upgrade_result(&missing), Err(Error::NotWebSocketUpgrade));
        assert_eq!(status_of(&missing), Some(400));
        for value in ["h2c", "websockets", "websocket/13", "web socket", ""] {
            let req = upgrade_with(&["Upgrade"], &format!("Upgrade: {value}\r\n"));
            assert_eq!(
                upgrade_result(&req),
                Err(Error::NotWebSocketUpgrade),
                "{value}"
            );
        }
        for value in ["WebSocket", "WEBSOCKET", "h2c, websocket", " websocket ,"] {
            let req = upgrade_with(&["Upgrade"], &format!("Upgrade: {value}\r\n"));
            assert_eq!(upgrade_result(&req), Ok(()), "{value}");
        }
        let two_lines = upgrade_with(&["Upgrade"], "Upgrade: h2c\r\nUpgrade: websocket\r\n");
        assert_eq!(upgrade_result(&two_lines), Ok(()));
    }

    #[test]
    fn connection_must_list_upgrade_token() {
        for value in [
            "Upgrade",
            "upgrade",
            "UPGRADE",
            "keep-alive, Upgrade",
            "Upgrade,close",
            ",,upgrade,",
        ] {
            let req = upgrade_with(&["Connection"], &format!("Connection: {value}\r\n"));
            assert_eq!(upgrade_result(&req), Ok(()), "{value}");
        }
        let two_lines = upgrade_with(
            &["Connection"],
            "Connection: keep-alive\r\nConnection: Upgrade\r\n",
        );
        assert_eq!(upgrade_result(&two_lines), Ok(()));
        for value in [
            "Upgrade-Insecure",
            "notupgrade",
            "keep-alive",
            "Up grade",
            "upgrade2",
            "",
        ] {
            let req = upgrade_with(&["Connection"], &format!("Connection: {value}\r\n"));
            assert_eq!(
                upgrade_result(&req),
                Err(Error::MissingConnectionUpgrade),
                "{value}"
            );
        }
        let missing = upgrade_with(&["Connection"], "");
        assert_eq!(
            upgrade_result(&missing),
            Err(Error::MissingConnectionUpgrade)
        );
        assert_eq!(status_of(&missing), Some(400));
    }

    #[test]
    fn version_must_be_13() {
        let missing = upgrade_with(&["Sec-WebSocket-Version"], "");
        assert_eq!(upgrade_result(&missing), Err(Error::UnsupportedVersion));
        assert_eq!(status_of(&missing), Some(426));
        for value in ["8", "12", "14", "013", "13, 8", "", "thirteen"] {
            let req = upgrade_with(
                &["Sec-WebSocket-Version"],
                &format!("Sec-WebSocket-Version: {value}\r\n"),
            );
            assert_eq!(
                upgrade_result(&req),
                Err(Error::UnsupportedVersion),
                "{value:?}"
            );
        }
        let twice = upgrade_with(&[], "Sec-WebSocket-Version: 13\r\n");
        assert_eq!(upgrade_result(&twice), Err(Error::UnsupportedVersion));
        let padded = upgrade_with(
            &["Sec-WebSocket-Version"],
            "Sec-WebSocket-Version:  13 \r\n",
        );
        assert_eq!(upgrade_result(&padded), Ok(()));
    }

    #[test]
    fn key_must_be_16_bytes_of_base64_once() {
        let missing = upgrade_with(&["Sec-WebSocket-Key"], "");
        assert_eq!(upgrade_result(&missing), Err(Error::BadWebSocketKey));
        assert_eq!(status_of(&missing), Some(400));
        let b64 = |n: usize| BASE64.encode(vec![7u8; n]);
        for key in [
            b64(15),
            b64(17),
            b64(0),
            b64(32),
            "dGhlIHNhbXBsZSBub25jZQ".to_owned(),    // no padding
            "dGhlIHNhbXBsZSBub25jZR==".to_owned(),  // non-zero trailing bits
            "dGhlIHNhbXBsZSBub25j!Q==".to_owned(),  // not base64
            "dGhlIHNhbXBsZSBub25jZQ-_".to_owned(),  // URL-safe alphabet
            "dGhlIHNhbXBs ZSBub25jZQ==".to_owned(), // inner space
        ] {
            let req = upgrade_with(
                &["Sec-WebSocket-Key"],
                &format!("Sec-WebSocket-Key: {key}\r\n"),
            );
            assert_eq!(upgrade_result(&req), Err(Error::BadWebSocketKey), "{key}");
        }
        let good = upgrade_with(
            &["Sec-WebSocket-Key"],
            &format!("Sec-WebSocket-Key: {}\r\n", b64(16)),
        );
        assert_eq!(upgrade_result(&good), Ok(()));
        let twice = upgrade_with(&[], "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");
        assert_eq!(upgrade_result(&twice), Err(Error::BadWebSocketKey));
    }

    #[test]
    fn hixie76_is_recognised() {
        let hixie = "GET /demo HTTP/1.1\r\n\
            Host: example.com\r\n\
            Connection: Upgrade\r\n\
            Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n\
            Sec-WebSocket-Protocol: sample\r\n\
            Upgrade: WebSocket\r\n\
            Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n\
            Origin: http://example.com\r\n\
            \r\n^n:ds[4U";
        let request = complete(hixie.as_bytes());
        assert!(request.is_upgrade());
        assert_eq!(&hixie.as_bytes()[request.head_len()..], b"^n:ds[4U");
        assert_eq!(request.validate_upgrade().unwrap_err(), Error::Hixie76);
        assert_eq!(Error::Hixie76.http_status(), Some(426));
        // With a version it is a (bad) RFC 6455 request, not hixie-76.
        let hybi = upgrade_with(&[], "Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n");
        assert_eq!(upgrade_result(&hybi), Ok(()));
    }

    #[test]
    fn origin_once_if_present() {
        let none = upgrade_with(&[], "");
        let request = complete(none.as_bytes());
        assert_eq!(request.validate_upgrade().unwrap().origin(), None);
        let twice = upgrade_with(&[], "Origin: http://a\r\nOrigin: http://b\r\n");
        assert_eq!(upgrade_result(&twice), Err(Error::BadHeader("Origin")));
        let mut binary = upgrade_with(&[], "Origin: http://\r\n").into_bytes();
        binary.splice(binary.len() - 4..binary.len() - 4, [0xff]);
        assert_eq!(
            complete(&binary).validate_upgrade().unwrap_err(),
            Error::BadHeader("Origin")
        );
    }

    #[test]
    fn protocols_combine_and_must_be_tokens() {
        let req = upgrade_with(
            &[],
            "Sec-WebSocket-Protocol: chat , ,v2.json\r\nSec-WebSocket-Protocol: mqtt\r\n",
        );
        let request = complete(req.as_bytes());
        let upgrade = request.validate_upgrade().unwrap();
        assert_eq!(
            upgrade.protocols().collect::<Vec<_>>(),
            ["chat", "v2.json", "mqtt"]
        );
        for value in ["chat room", "a;b", "\"chat\"", "a/b", "x=1"] {
            let req = upgrade_with(&[], &format!("Sec-WebSocket-Protocol: {value}\r\n"));
            assert_eq!(
                upgrade_result(&req),
                Err(Error::BadHeader("Sec-WebSocket-Protocol")),
                "{value}"
            );
        }
        let empty = upgrade_with(&[], "Sec-WebSocket-Protocol: \r\n");
        assert_eq!(upgrade_result(&empty), Ok(()));
    }

    #[test]
    fn extension_lines_combine() {
        let req = upgrade_with(
            &[],
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n",
        );
        let request = complete(req.as_bytes());
        let upgrade = request.validate_upgrade().unwrap();
        assert_eq!(
            upgrade.extensions(),
            vec![
                offer("permessage-deflate", &[("client_max_window_bits", None)]),
                offer("x-webkit-deflate-frame", &[]),
            ]
        );
        let no_ext = upgrade_with(&[], "");
        assert!(
            complete(no_ext.as_bytes())
                .validate_upgrade()
                .unwrap()
                .extensions()
                .is_empty()
        );
    }
}
