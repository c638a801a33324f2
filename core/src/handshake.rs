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

use crate::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use std::borrow::Cow;
use std::fmt;

/// Default limit on the size of a request head (request line, header fields and the blank line
/// that ends them): 8 KiB, as nginx and most servers allow. Browsers send 0.5 to 2 KiB; a head
/// larger than this is a misbehaving or hostile client.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 8 * 1024;

/// The most header fields a request may have; one more is [`Error::TooManyHeaders`] (431).
///
/// The fields are kept in a fixed array of this size inside [`Request`], so it is a compile-time
/// bound rather than a [`Limits`] field. Browsers send 10 to 20 fields.
pub const MAX_HEADERS: usize = 64;

/// The GUID that RFC 6455 appends to `Sec-WebSocket-Key` before hashing it.
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only `Sec-WebSocket-Version` the gateway speaks (RFC 6455).
pub const WEBSOCKET_VERSION: &str = "13";

/// Configurable limits of request parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest request head accepted, in bytes, including the blank line that ends it.
    /// Default [`DEFAULT_MAX_HEAD_BYTES`].
    pub max_head_bytes: usize,
}

impl Limits {
    /// The default limits.
    pub const DEFAULT: Limits = Limits {
        max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Parses the HTTP/1.x request head at the start of `buf`.
///
/// `buf` holds every byte received so far on the connection. Returns `Ok(None)` while the head
/// is incomplete and within the limit, `Ok(Some(request))` once it is complete (the head is
/// `buf[..request.head_len()]`; the bytes after it are left to the caller), or an error:
/// [`Error::HeadersTooLarge`] when the head does not end within `limits.max_head_bytes`,
/// [`Error::TooManyHeaders`] past [`MAX_HEADERS`] fields, [`Error::HttpMalformed`] otherwise.
pub fn parse_request<'a>(buf: &'a [u8], limits: &Limits) -> Result<Option<Request<'a>>> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(window).map_err(from_httparse)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() > limits.max_head_bytes => {
            return Err(Error::HeadersTooLarge);
        }
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Error::HttpMalformed("incomplete request line"));
    };
    // httparse has already trimmed spaces and tabs around each value (a test below checks it).
    let header_count = parsed.headers.len();
    let (path, query) = split_target(target);
    Ok(Some(Request {
        method,
        target,
        path,
        query,
        minor_version,
        head_len,
        headers,
        header_count,
    }))
}

fn from_httparse(e: httparse::Error) -> Error {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => Error::TooManyHeaders,
        E::HeaderName => Error::HttpMalformed("invalid header name"),
        E::HeaderValue => Error::HttpMalformed("invalid header value"),
        E::NewLine => Error::HttpMalformed("invalid line ending"),
        E::Version => Error::HttpMalformed("not an HTTP/1.x request"),
        E::Token | E::Status => Error::HttpMalformed("invalid request line"),
    }
}

/// Splits a request-target into path and query. The absolute form (`http://host/p?q`, which
/// RFC 7230 section 5.3.2 says servers must accept) is reduced to its path and query.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let mut rest = target;
    for scheme in ["http://", "https://"] {
        if let Some(prefix) = rest.get(..scheme.len())
            && prefix.eq_ignore_ascii_case(scheme)
        {
            let after = &rest[scheme.len()..];
            let end = after.find(['/', '?']).unwrap_or(after.len());
            rest = &after[end..];
            break;
        }
    }
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

/// A parsed request head, borrowing from the caller's buffer.
///
/// Header values are trimmed of surrounding spaces and tabs. Header names compare
/// case-insensitively.
#[derive(Clone)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    minor_version: u8,
    head_len: usize,
    headers: [httparse::Header<'a>; MAX_HEADERS],
    header_count: usize,
}

impl fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("minor_version", &self.minor_version)
            .field("head_len", &self.head_len)
            .field("headers", &self.fields())
            .finish()
    }
}

/// How the body of a (non-upgrade) request is delimited, from RFC 7230 section 3.3.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No `Content-Length` and no `Transfer-Encoding`: the request has no body.
    Empty,
    /// `Content-Length: n`: the next `n` bytes after the head are the body.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the body follows in chunks. The caller decides whether it
    /// decodes them (and enforces its body limit while it does) or answers with an error.
    Chunked,
}

impl BodyFraming {
    /// Checks a known body length against `max_body_bytes`: [`Error::BodyTooLarge`] (413) when
    /// `Content-Length` is larger. [`BodyFraming::Chunked`] passes; its size is only known while
    /// decoding, where the caller applies the same limit.
    pub fn check_max(self, max_body_bytes: u64) -> Result<Self> {
        match self {
            BodyFraming::Length(n) if n > max_body_bytes => Err(Error::BodyTooLarge),
            other => Ok(other),
        }
    }
}

impl<'a> Request<'a> {
    /// The method, e.g. `GET` (case-sensitive, as HTTP methods are).
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request-target exactly as sent, e.g. `/ws?subscribe=a,b`.
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path of the target, without the query: `/ws` for `/ws?subscribe=a`. For an
    /// absolute-form target (`http://host/ws`) the path part; `/` when it has none.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The raw query of the target, after the first `?` (still percent-encoded); `None` when the
    /// target has no `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.query
    }

    /// The minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// How many bytes of the buffer the head used, including the blank line that ends it. The
    /// bytes after it are not part of the head.
    pub fn head_len(&self) -> usize {
        self.head_len
    }

    fn fields(&self) -> &[httparse::Header<'a>] {
        &self.headers[..self.header_count]
    }

    /// Every header field in order, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.fields().iter().map(|h| (h.name, h.value))
    }

    /// The value of the first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    /// The value of the first field named `name` as text; `None` when absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of every field named `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.fields()
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// How many fields are named `name` (case-insensitive).
    pub fn header_count(&self, name: &str) -> usize {
        self.header_values(name).count()
    }

    /// The items of a comma-separated list header, over all its lines, trimmed, empty items
    /// skipped (RFC 7230 section 7).
    pub fn header_list(&self, name: &str) -> impl Iterator<Item = &'a [u8]> {
        self.header_values(name).flat_map(list_items)
    }

    /// Whether the list header `name` contains `token` (both compared case-insensitively).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_list(name)
            .any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
    }

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

    /// How the request body is delimited (RFC 7230 section 3.3.3).
    ///
    /// `Content-Length` must be digits only; repeated (on several lines or as a list) it must
    /// repeat the same value; else [`Error::BadHeader`]`("Content-Length")`. `Transfer-Encoding`
    /// must be exactly `chunked`, in HTTP/1.1, without `Content-Length` (the combination is how
    /// requests are smuggled past proxies); else [`Error::BadHeader`]`("Transfer-Encoding")`.
    pub fn body_framing(&self) -> Result<BodyFraming> {
        const TE: &str = "Transfer-Encoding";
        const CL: &str = "Content-Length";
        let mut length: Option<u64> = None;
        let mut te_lines = 0usize;
        let mut te_items = 0usize;
        let mut te_chunked = false;
        for h in self.fields() {
            if h.name.eq_ignore_ascii_case(TE) {
                te_lines += 1;
                for item in list_items(h.value) {
                    te_items += 1;
                    te_chunked = item.eq_ignore_ascii_case(b"chunked");
                }
            } else if h.name.eq_ignore_ascii_case(CL) {
                for item in h.value.split(|&b| b == b',') {
                    let n = parse_decimal(trim_ows(item)).ok_or(Error::BadHeader(CL))?;
                    if length.is_some_and(|prev| prev != n) {
                        return Err(Error::BadHeader(CL));
                    }
                    length = Some(n);
                }
            }
        }
        if te_lines > 0 {
            if te_items != 1 || !te_chunked || length.is_some() || self.minor_version == 0 {
                return Err(Error::BadHeader(TE));
            }
            return Ok(BodyFraming::Chunked);
        }
        Ok(length.map_or(BodyFraming::Empty, BodyFraming::Length))
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
        if self.method != "GET" {
            return Err(Error::MethodNotAllowed);
        }
        if self.minor_version < 1 {
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

/// One offer of `Sec-WebSocket-Extensions`: `permessage-deflate; client_max_window_bits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer<'a> {
    /// The extension name, e.g. `permessage-deflate`.
    pub name: &'a str,
    /// The parameters in order, as `(name, value)`; the value is `None` for a bare parameter
    /// and unquoted and unescaped when it was sent as a quoted-string.
    pub params: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

impl ExtensionOffer<'_> {
    /// The first parameter named `name` (case-insensitive): `None` when absent,
    /// `Some(None)` when present without a value, `Some(Some(value))` otherwise.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
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
        self.request.path
    }

    /// The raw query, without the `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.request.query
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

    /// Appends the `101 Switching Protocols` answer to `out`, with the chosen subprotocol and
    /// the `Sec-WebSocket-Extensions` answer when given. See [`write_switching_protocols`].
    pub fn write_response(
        &self,
        out: &mut Vec<u8>,
        protocol: Option<&str>,
        extensions: Option<&str>,
    ) {
        write_switching_protocols(out, self.key, protocol, extensions);
    }

    /// The `101 Switching Protocols` answer as a new buffer.
    pub fn response(&self, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        self.write_response(&mut out, protocol, extensions);
        out
    }
}

// ---- token and list syntax ------------------------------------------------------------------

/// RFC 7230 `tchar`, as a table: `!#$%&'*+-.^_`|~`, digits and letters.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        i += 1;
    }
    table
};

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// RFC 7230 `token`: one or more `tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// The items of one comma-separated list value, trimmed, empty ones skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// A `Content-Length` value: ASCII digits only, no sign, no overflow.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether `key` is canonical base64 of exactly 16 bytes (24 characters, `==` padding).
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 24];
    key.len() == 24 && matches!(BASE64.decode_slice(key, &mut decoded), Ok(16))
}

// ---- Sec-WebSocket-Extensions ----------------------------------------------------------------

/// A parameter value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
enum ParamValue<'a> {
    /// A bare token, or a quoted-string without escapes (its inside, a token).
    Plain(&'a str),
    /// The inside of a quoted-string with `\` escapes still in it.
    Escaped(&'a str),
}

impl<'a> ParamValue<'a> {
    fn unescape(self) -> Cow<'a, str> {
        match self {
            ParamValue::Plain(s) => Cow::Borrowed(s),
            ParamValue::Escaped(s) => {
                let mut out = String::with_capacity(s.len());
                let mut escaped = false;
                for c in s.chars() {
                    if c == '\\' && !escaped {
                        escaped = true;
                    } else {
                        out.push(c);
                        escaped = false;
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

enum ExtEvent<'a> {
    Offer(&'a str),
    Param(&'a str, Option<ParamValue<'a>>),
}

/// Parses one `Sec-WebSocket-Extensions` line (RFC 6455 section 9.1 with the list and
/// whitespace rules of RFC 7230):
///
/// ```text
/// extension-list = 1#extension
/// extension      = extension-token *( OWS ";" OWS extension-param )
/// extension-param = token [ OWS "=" OWS ( token / quoted-string ) ]
/// ```
///
/// A quoted value must be a token once unescaped (RFC 6455 section 9.1). Empty list items are
/// skipped. Reports each offer and parameter to `sink`; `Err(())` on the first syntax error.
fn parse_extension_list<'a>(
    s: &'a [u8],
    sink: &mut impl FnMut(ExtEvent<'a>),
) -> std::result::Result<(), ()> {
    let mut c = Cursor { s, i: 0 };
    loop {
        c.skip_ows();
        match c.peek() {
            None => return Ok(()),
            Some(b',') => {
                c.i += 1;
                continue;
            }
            Some(_) => {}
        }
        sink(ExtEvent::Offer(c.token()?));
        loop {
            c.skip_ows();
            match c.peek() {
                None => return Ok(()),
                Some(b',') => {
                    c.i += 1;
                    break;
                }
                Some(b';') => {
                    c.i += 1;
                    c.skip_ows();
                    let name = c.token()?;
                    c.skip_ows();
                    let value = if c.peek() == Some(b'=') {
                        c.i += 1;
                        c.skip_ows();
                        Some(if c.peek() == Some(b'"') {
                            c.quoted_token()?
                        } else {
                            ParamValue::Plain(c.token()?)
                        })
                    } else {
                        None
                    };
                    sink(ExtEvent::Param(name, value));
                }
                Some(_) => return Err(()),
            }
        }
    }
}

/// A read position in a header value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.s.get(self.i..).unwrap_or(&[])
    }

    fn skip_ows(&mut self) {
        self.i += self.rest().iter().take_while(|&&b| is_ows(b)).count();
    }

    /// One or more `tchar`.
    fn token(&mut self) -> std::result::Result<&'a str, ()> {
        let rest = self.rest();
        let len = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if len == 0 {
            return Err(());
        }
        self.i += len;
        std::str::from_utf8(&rest[..len]).map_err(|_| ())
    }

    /// A quoted-string (at its opening `"`) whose unescaped content is a token, as RFC 6455
    /// section 9.1 requires of a quoted parameter value. A quoted-pair may escape any visible
    /// character, but the result must be a token, so only `tchar` may follow a `\`.
    fn quoted_token(&mut self) -> std::result::Result<ParamValue<'a>, ()> {
        let rest = self.rest().get(1..).ok_or(())?;
        let mut j = 0;
        let mut escaped = false;
        let mut chars = 0usize;
        loop {
            match *rest.get(j).ok_or(())? {
                b'"' => break,
                b'\\' => {
                    if !is_tchar(*rest.get(j + 1).ok_or(())?) {
                        return Err(());
                    }
                    escaped = true;
                    j += 2;
                }
                b if is_tchar(b) => j += 1,
                _ => return Err(()),
            }
            chars += 1;
        }
        if chars == 0 {
            return Err(());
        }
        let inner = std::str::from_utf8(&rest[..j]).map_err(|_| ())?;
        self.i += j + 2;
        Ok(if escaped {
            ParamValue::Escaped(inner)
        } else {
            ParamValue::Plain(inner)
        })
    }
}

// ---- answers -----------------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHROMIUM: &str = "GET /ws?subscribe=news,sport HTTP/1.1\r\n\
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

    const FIREFOX: &str = "GET /echo HTTP/1.1\r\n\
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

    fn parse(buf: &[u8]) -> Result<Option<Request<'_>>> {
        parse_request(buf, &Limits::default())
    }

    fn complete(buf: &[u8]) -> Request<'_> {
        parse(buf).expect("parses").expect("complete request")
    }

    /// A minimal valid upgrade with `extra` header lines inserted, and `replace` lines removed
    /// (matched by name prefix).
    fn upgrade_with(remove: &[&str], extra: &str) -> String {
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

    fn upgrade_result(req: &str) -> Result<()> {
        let request = complete(req.as_bytes());
        request.validate_upgrade().map(|_| ())
    }

    fn status_of(req: &str) -> Option<u16> {
        upgrade_result(req).err().and_then(|e| e.http_status())
    }

    /// Parses an answer with httparse and returns (status, headers, body).
    fn parse_answer(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
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

    fn field<'f>(fields: &'f [(String, String)], name: &str) -> Option<&'f str> {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

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

    // ---- incremental parsing ---------------------------------------------------------------

    #[test]
    fn byte_by_byte_needs_more_until_the_blank_line() {
        for text in [CHROMIUM, FIREFOX] {
            let bytes = text.as_bytes();
            for end in 0..bytes.len() {
                assert!(
                    parse(&bytes[..end])
                        .expect("prefix is not an error")
                        .is_none(),
                    "{end}"
                );
            }
            let request = complete(bytes);
            assert_eq!(request.head_len(), bytes.len());
            assert!(request.validate_upgrade().is_ok());
        }
    }

    #[test]
    fn bytes_after_the_head_are_left_to_the_caller() {
        // A masked text frame "hi" sent right behind the head, in the same segment.
        let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let mut buf = CHROMIUM.as_bytes().to_vec();
        buf.extend_from_slice(&frame);
        let request = complete(&buf);
        assert_eq!(request.head_len(), CHROMIUM.len());
        assert_eq!(&buf[request.head_len()..], &frame);
        assert!(request.validate_upgrade().is_ok());
    }

    #[test]
    fn non_upgrade_requests_parse() {
        let request = complete(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(request.path(), "/healthz");
        assert!(!request.is_upgrade());
        assert_eq!(request.body_framing(), Ok(BodyFraming::Empty));

        let body = br#"{"price":42}"#;
        let mut buf = format!(
            "POST /publish/prices HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        let head = buf.len();
        buf.extend_from_slice(body);
        let request = complete(&buf);
        assert_eq!(request.method(), "POST");
        assert_eq!(request.path(), "/publish/prices");
        assert!(!request.is_upgrade());
        assert_eq!(request.head_len(), head);
        assert_eq!(&buf[request.head_len()..], body);
        assert_eq!(request.header_str("content-type"), Some("application/json"));
        let framing = request.body_framing().unwrap();
        assert_eq!(framing, BodyFraming::Length(body.len() as u64));
        assert_eq!(framing.check_max(12), Ok(framing));
        assert_eq!(framing.check_max(11), Err(Error::BodyTooLarge));
        assert_eq!(Error::BodyTooLarge.http_status(), Some(413));
        assert_eq!(BodyFraming::Chunked.check_max(0), Ok(BodyFraming::Chunked));
        assert_eq!(BodyFraming::Empty.check_max(0), Ok(BodyFraming::Empty));
        assert_eq!(
            request.validate_upgrade().unwrap_err(),
            Error::MethodNotAllowed
        );
    }

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

    #[test]
    fn path_and_query_split() {
        let cases = [
            ("/", "/", None),
            ("/ws?", "/ws", Some("")),
            ("/ws?a=1?b", "/ws", Some("a=1?b")),
            ("/ws?subscribe=a%2Cb,c", "/ws", Some("subscribe=a%2Cb,c")),
            ("http://gw.example:8080/ws?x=1", "/ws", Some("x=1")),
            ("HTTPS://gw.example", "/", None),
            ("http://gw.example?x", "/", Some("x")),
            ("*", "*", None),
        ];
        for (target, path, query) in cases {
            let text = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            let request = complete(text.as_bytes());
            assert_eq!((request.path(), request.query()), (path, query), "{target}");
        }
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_trims() {
        let request = complete(
            b"GET / HTTP/1.1\r\nhOsT:   a.example  \r\nX-A: 1\r\nx-a: 2\r\nX-Bin: \xff\r\n\r\n",
        );
        assert_eq!(request.header("HOST"), Some(&b"a.example"[..]));
        assert_eq!(
            request.header_values("x-a").collect::<Vec<_>>(),
            [b"1", b"2"]
        );
        assert_eq!(request.header_count("X-A"), 2);
        assert_eq!(request.header("X-Bin"), Some(&b"\xff"[..]));
        assert_eq!(request.header_str("X-Bin"), None);
        assert_eq!(request.header("missing"), None);
        assert_eq!(request.headers().count(), 4);
        assert!(format!("{request:?}").contains("a.example"));
    }

    // ---- limits --------------------------------------------------------------------------------

    fn padded_request(total: usize) -> Vec<u8> {
        // A request whose head is exactly `total` bytes.
        let start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
        let end = b"\r\n\r\n";
        let mut v = start.to_vec();
        v.resize(total - end.len(), b'p');
        v.extend_from_slice(end);
        v
    }

    #[test]
    fn head_at_the_limit_is_accepted() {
        let buf = padded_request(DEFAULT_MAX_HEAD_BYTES);
        assert_eq!(complete(&buf).head_len(), DEFAULT_MAX_HEAD_BYTES);
        let mut with_body = buf.clone();
        with_body.extend_from_slice(&[0u8; 100]);
        assert_eq!(complete(&with_body).head_len(), DEFAULT_MAX_HEAD_BYTES);
    }

    #[test]
    fn complete_head_over_the_limit_is_431() {
        let buf = padded_request(DEFAULT_MAX_HEAD_BYTES + 1);
        let err = parse(&buf).unwrap_err();
        assert_eq!(err, Error::HeadersTooLarge);
        assert_eq!(err.http_status(), Some(431));
        let small = Limits {
            max_head_bytes: 100,
        };
        assert_eq!(
            parse_request(&padded_request(100), &small)
                .unwrap()
                .unwrap()
                .head_len(),
            100
        );
        assert_eq!(
            parse_request(&padded_request(101), &small).unwrap_err(),
            Error::HeadersTooLarge
        );
    }

    #[test]
    fn partial_head_over_the_limit_is_431() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        buf.resize(DEFAULT_MAX_HEAD_BYTES, b'p');
        assert!(parse(&buf).unwrap().is_none(), "at the limit: need more");
        buf.push(b'p');
        assert_eq!(parse(&buf).unwrap_err(), Error::HeadersTooLarge);
        // A peer that never ends its request line is cut off too.
        let endless = vec![b'a'; DEFAULT_MAX_HEAD_BYTES + 1];
        let mut endless_get = b"GET /".to_vec();
        endless_get.extend_from_slice(&endless);
        assert_eq!(parse(&endless_get).unwrap_err(), Error::HeadersTooLarge);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            text.push_str(&format!("X-{i}: {i}\r\n"));
        }
        let ok = format!("{text}\r\n");
        assert_eq!(complete(ok.as_bytes()).headers().count(), MAX_HEADERS);
        text.push_str("X-One-Too-Many: 1\r\n\r\n");
        let err = parse(text.as_bytes()).unwrap_err();
        assert_eq!(err, Error::TooManyHeaders);
        assert_eq!(err.http_status(), Some(431));
    }

    #[test]
    fn malformed_http_is_400() {
        let cases: &[&[u8]] = &[
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello
            b"GET /ws HTTP/1.1\r\nHost example\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"GET /ws HTTP/2.0\r\n\r\n",
            b"GET /ws FTP/1.1\r\n\r\n",
            b"GET  /ws HTTP/1.1\r\n\r\n",
            b"GET /w s HTTP/1.1\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            b"GET /ws HTTP/1.1\rX: a\r\n\r\n",
        ];
        for case in cases {
            let err = parse(case).unwrap_err();
            assert!(
                matches!(err, Error::HttpMalformed(_)),
                "{:?}: {err:?}",
                case.escape_ascii().to_string()
            );
            assert_eq!(err.http_status(), Some(400));
        }
    }

    // ---- body framing --------------------------------------------------------------------------

    fn framing(headers: &str) -> Result<BodyFraming> {
        let text = format!("POST /publish/t HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
        complete(text.as_bytes()).body_framing()
    }

    #[test]
    fn content_length_is_strict() {
        assert_eq!(framing("Content-Length: 0\r\n"), Ok(BodyFraming::Length(0)));
        assert_eq!(
            framing("Content-Length: 007\r\n"),
            Ok(BodyFraming::Length(7))
        );
        assert_eq!(framing("content-length:5 \r\n"), Ok(BodyFraming::Length(5)));
        assert_eq!(
            framing("Content-Length: 18446744073709551615\r\n"),
            Ok(BodyFraming::Length(u64::MAX))
        );
        assert_eq!(
            framing("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            framing("Content-Length: 5, 5\r\n"),
            Ok(BodyFraming::Length(5))
        );
        let bad = Err(Error::BadHeader("Content-Length"));
        for value in [
            "",
            "+5",
            "-1",
            "5a",
            "0x10",
            "1 2",
            "5.0",
            "5,",
            "5, 6",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(
                framing(&format!("Content-Length: {value}\r\n")),
                bad,
                "{value:?}"
            );
        }
        assert_eq!(framing("Content-Length: 5\r\nContent-Length: 6\r\n"), bad);
        assert_eq!(Error::BadHeader("Content-Length").http_status(), Some(400));
    }

    #[test]
    fn transfer_encoding_is_reported_or_refused() {
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            framing("Transfer-Encoding: Chunked\r\n"),
            Ok(BodyFraming::Chunked)
        );
        let bad = Err(Error::BadHeader("Transfer-Encoding"));
        assert_eq!(framing("Transfer-Encoding: gzip\r\n"), bad);
        assert_eq!(framing("Transfer-Encoding: gzip, chunked\r\n"), bad);
        assert_eq!(framing("Transfer-Encoding: chunked, chunked\r\n"), bad);
        assert_eq!(framing("Transfer-Encoding: \r\n"), bad);
        assert_eq!(
            framing("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            bad
        );
        let http10 = complete(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(http10.body_framing(), bad);
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

    // ---- extensions ------------------------------------------------------------------------------

    fn offers(value: &str) -> std::result::Result<Vec<ExtensionOffer<'static>>, ()> {
        let value: &'static str = Box::leak(value.to_owned().into_boxed_str());
        let mut out: Vec<ExtensionOffer<'static>> = Vec::new();
        parse_extension_list(value.as_bytes(), &mut |event| match event {
            ExtEvent::Offer(name) => out.push(ExtensionOffer {
                name,
                params: vec![],
            }),
            ExtEvent::Param(name, value) => out
                .last_mut()
                .unwrap()
                .params
                .push((name, value.map(ParamValue::unescape))),
        })?;
        Ok(out)
    }

    fn offer(
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

    #[test]
    fn extensions_parse_with_params_and_quoted_values() {
        assert_eq!(
            offers("permessage-deflate"),
            Ok(vec![offer("permessage-deflate", &[])])
        );
        assert_eq!(
            offers("permessage-deflate; client_max_window_bits"),
            Ok(vec![offer(
                "permessage-deflate",
                &[("client_max_window_bits", None)]
            )])
        );
        assert_eq!(
            offers(
                "permessage-deflate; client_max_window_bits=10 ;server_no_context_takeover, \
                 permessage-deflate;client_max_window_bits = \"12\", x-foo"
            ),
            Ok(vec![
                offer(
                    "permessage-deflate",
                    &[
                        ("client_max_window_bits", Some("10")),
                        ("server_no_context_takeover", None)
                    ]
                ),
                offer(
                    "permessage-deflate",
                    &[("client_max_window_bits", Some("12"))]
                ),
                offer("x-foo", &[]),
            ])
        );
        let escaped = offers(r#"x; a="\1\5", y"#).unwrap();
        assert_eq!(escaped[0].param("a"), Some(Some("15")));
        assert!(matches!(escaped[0].params[0].1, Some(Cow::Owned(_))));
        let plain = offers(r#"x; a="15""#).unwrap();
        assert!(matches!(plain[0].params[0].1, Some(Cow::Borrowed("15"))));
        assert_eq!(
            offers(" , a ,, b ,"),
            Ok(vec![offer("a", &[]), offer("b", &[])])
        );
        assert_eq!(offers(""), Ok(vec![]));
    }

    #[test]
    fn malformed_extensions_are_rejected() {
        for value in [
            ";a",
            "a;",
            "a; ",
            "a;;b",
            "a; b=",
            "a; =1",
            "a b",
            "a; b=1 2",
            "a; b=\"\"",
            "a; b=\"1 2\"",
            "a; b=\"1,2\"",
            "a; b=\"1",
            "a; b=\"1\\\"",
            "a; b=\"\\ \"",
            "a; b=\"1\"x",
            "a; b=\"é\"",
            "\"a\"",
            "a=1",
            "a; b==1",
            "a; b=1=2",
        ] {
            assert_eq!(offers(value), Err(()), "{value:?}");
            let req = upgrade_with(&[], &format!("Sec-WebSocket-Extensions: {value}\r\n"));
            let request = match parse(req.as_bytes()) {
                Ok(Some(r)) => r,
                _ => continue, // bytes httparse itself refuses
            };
            assert_eq!(
                request.validate_upgrade().unwrap_err(),
                Error::BadHeader("Sec-WebSocket-Extensions"),
                "{value:?}"
            );
        }
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
