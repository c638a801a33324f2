//! How the body of a (non-upgrade) request is delimited: [`BodyFraming`] and
//! [`Request::body_framing`], with the strict `Content-Length` and `Transfer-Encoding` rules.

use super::request::Request;
use super::syntax::{list_items, trim_ows};
use crate::{Error, Result};

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

impl Request<'_> {
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
            if te_items != 1 || !te_chunked || length.is_some() || self.minor_version() == 0 {
                return Err(Error::BadHeader(TE));
            }
            return Ok(BodyFraming::Chunked);
        }
        Ok(length.map_or(BodyFraming::Empty, BodyFraming::Length))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::test_support::*;

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
}
