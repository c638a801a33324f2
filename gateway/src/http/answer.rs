//! HTTP answers: what the gateway writes back to a plain request or a refused upgrade.

use crate::limits::Refusal;
use crate::metrics::Failure;
use bytes::Bytes;
use wsgate_core::Error;
use wsgate_core::handshake;

/// An answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The whole response: status line, headers, body.
    pub(crate) response: Bytes,
    /// Whether the connection stays open for the next request.
    pub(crate) keep_alive: bool,
    /// Why the request was refused, when it was (counted in
    /// `wsgate_handshake_failures_total`).
    pub(crate) refused: Option<Failure>,
}

impl Answer {
    /// A successful answer.
    pub(crate) fn ok(response: Bytes, keep_alive: bool) -> Answer {
        Answer {
            response,
            keep_alive,
            refused: None,
        }
    }

    /// A refusal, after which the connection closes.
    pub(crate) fn refuse(failure: Failure, response: Bytes) -> Answer {
        Answer {
            response,
            keep_alive: false,
            refused: Some(failure),
        }
    }

    /// A refusal of a request that breaks the rules: the status the error names (400, 405,
    /// 413, 426, 431) with a one-line reason; the connection closes.
    pub(crate) fn error(e: &Error) -> Answer {
        Answer::refuse(Failure::of(e), Bytes::from(handshake::error_response(e)))
    }

    /// The same answer without its body (for a `HEAD` request): the status line and headers,
    /// `Content-Length` included, as a `GET` would get them.
    pub(crate) fn without_body(mut self) -> Answer {
        if let Some(end) = self.response.windows(4).position(|w| w == b"\r\n\r\n") {
            self.response.truncate(end + 4);
        }
        self
    }

    /// The answer to a connection refused at admission, before the socket is closed.
    pub(crate) fn refusal(r: Refusal) -> Answer {
        let response = match r {
            Refusal::TooManyConnections => text(
                503,
                "too many connections: try again or another node",
                false,
                &[("Retry-After", "1")],
            ),
            Refusal::TooManyFromAddress => {
                text(429, "too many connections from this address", false, &[])
            }
        };
        Answer::refuse(r.failure(), response)
    }
}

/// A response with a plain-text body (a newline is added).
pub(crate) fn text(status: u16, body: &str, keep_alive: bool, extra: &[(&str, &str)]) -> Bytes {
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    headers.extend_from_slice(extra);
    headers.push((
        "Connection",
        if keep_alive { "keep-alive" } else { "close" },
    ));
    let mut body = body.as_bytes().to_vec();
    body.push(b'\n');
    Bytes::from(handshake::response(status, &headers, &body))
}

/// A response with a body of the given content type.
pub(crate) fn with_type(status: u16, content_type: &str, body: &[u8], keep_alive: bool) -> Bytes {
    let headers = [
        ("Content-Type", content_type),
        (
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        ),
    ];
    Bytes::from(handshake::response(status, &headers, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_length_matches(response: &[u8]) {
        let text = std::str::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len(), "{text}");
    }

    #[test]
    fn answers_are_well_formed() {
        let a = text(404, "no such endpoint", false, &[]);
        let s = std::str::from_utf8(&a).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("Connection: close\r\n") && s.ends_with("\r\n\r\nno such endpoint\n"));
        content_length_matches(&a);
        for r in [Refusal::TooManyConnections, Refusal::TooManyFromAddress] {
            let a = Answer::refusal(r);
            assert!(!a.keep_alive);
            assert_eq!(a.refused, Some(r.failure()));
            content_length_matches(&a.response);
        }
        let e = Answer::error(&Error::UnsupportedVersion);
        assert!(e.response.starts_with(b"HTTP/1.1 426"));
        assert_eq!(e.refused, Some(Failure::UnsupportedVersion));
    }
}
