//! Parsing a request head: the limits, [`parse_request`] and the [`Request`] it returns, with
//! its request line and header lookups.

use super::syntax::list_items;
use crate::{Error, Result};
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

    pub(super) fn fields(&self) -> &[httparse::Header<'a>] {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::test_support::*;

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
}
