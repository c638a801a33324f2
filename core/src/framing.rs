//! Where each request on a connection begins and ends: the framing of HTTP/1.x requests, heads
//! and bodies, whatever their method and route.
//!
//! # Why
//!
//! A server that reads a request head, answers it and reads the next head from the bytes that
//! follow, without skipping the body the head announced, lets a client hide a second request in
//! the body of the first: `GET /healthz` with `Content-Length: 40` and, as its 40 bytes of body,
//! `GET /admin HTTP/1.1 ...`. A proxy in front of it that reuses the connection (keep-alive)
//! sees one request; the server answers two (request smuggling). The rule that closes this hole
//! is that *every* request's body is framed, whether the route wants a body or not: the caller
//! then reads the body or throws it away, but never parses it as a request.
//!
//! # Design
//!
//! [`RequestFramer`] is a small state machine, sans-IO like the rest of the crate. The caller
//! keeps the bytes received and not consumed yet in its own buffer and calls
//! [`RequestFramer::next`] on them, in a loop:
//!
//! - `Ok(Some((item, used)))`: an [`Item`] at the front of the buffer, which used `used` bytes;
//!   the caller acts on it (the item borrows from the buffer), removes those bytes and calls
//!   again;
//! - `Ok(None)`: more bytes are needed; nothing was used;
//! - `Err(error)`: answer with [`handshake::error_response`] (every error here has an HTTP
//!   status) and close the connection; the framer keeps returning the same error.
//!
//! The items come in the order of the wire: at most one [`Item::Proxy`] first (only when the
//! framer was created expecting one), then for each request an [`Item::Head`] with the body
//! length it announced, then that many bytes of body as [`Item::Body`] pieces (none when the
//! length is 0; the last piece says `last`), then the next request's head.
//!
//! The framer reads the body length from `Content-Length` only ([`Request::body_framing`]): a
//! request without it has no body, `Transfer-Encoding: chunked` is
//! [`Error::LengthRequired`] (411), and a bad, repeated-and-different or combined
//! `Content-Length`/`Transfer-Encoding` is [`Error::BadHeader`] (400): both ways of reading the
//! body must agree for a request to pass, so a proxy and the gateway cannot disagree on where it
//! ends. A length over [`FramingLimits::max_body_bytes`] is [`Error::BodyTooLarge`] (413) as soon
//! as the head arrives, before any byte of the body. A head that does not end within
//! [`FramingLimits::max_head_bytes`] is [`Error::HeadersTooLarge`] (431).
//!
//! What the framer does not decide: routes and methods. A `GET` or a `HEAD` with a body gets its
//! body framed like a `POST`'s; the caller reads it or discards it. After a head the caller
//! answers with `101 Switching Protocols`, the bytes that follow are WebSocket frames and the
//! caller stops using the framer (an upgrade with a body is the caller's to refuse).
//!
//! The state is a few words (no buffer, no allocation, whatever lengths a peer announces), the
//! body is handed out as slices of the caller's buffer as it arrives, and the items and the final
//! error do not depend on how the bytes were cut into reads (a property test and the `framing`
//! fuzz target check it). Nothing here panics, whatever the input. While a head is incomplete,
//! each call parses it again from its start, as [`handshake::parse_request`] does, which the head
//! limit bounds.

use crate::handshake::{self, BodyFraming, Limits, Request};
use crate::proxy::{self, ProxyHeader};
use crate::{Error, Result};

/// What a connection's request framing enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramingLimits {
    /// The largest request head, in bytes, including the blank line that ends it
    /// ([`Error::HeadersTooLarge`], 431, past it).
    pub max_head_bytes: usize,
    /// The largest body (`Content-Length`) a request may announce ([`Error::BodyTooLarge`], 413,
    /// past it).
    pub max_body_bytes: u64,
}

/// What the framer found at the front of the input.
// The head is large (the header slots of a `Request`, about 2 KiB) and the other items small;
// boxing it would allocate for every request, for an item that lives for one call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Item<'a> {
    /// The PROXY protocol header, first on a connection from a trusted proxy (only when the
    /// framer was created expecting one).
    Proxy(ProxyHeader),
    /// A complete request head, and the length of the body that follows it (0: none). The
    /// body's bytes come as [`Item::Body`] items, then the next request's head.
    Head {
        /// The request head; [`Request::head_len`] is the number of bytes it used.
        request: Request<'a>,
        /// The length of the body that follows the head (its `Content-Length`; 0: none).
        body_len: u64,
    },
    /// The next bytes of the current request's body: as many as the input holds, up to the
    /// body's end (never empty); `last` when they complete it.
    Body {
        /// The bytes, a slice of the input.
        bytes: &'a [u8],
        /// Whether these bytes complete the body.
        last: bool,
    },
}

/// Where the framer is on its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// At the start of a connection from a trusted proxy: a PROXY header comes first.
    Proxy,
    /// Between requests: a head comes next.
    Head,
    /// Inside a body; `remaining` > 0 bytes of it to come.
    Body { remaining: u64 },
    /// Failed: every call returns this error.
    Failed(Error),
}

/// The framing of the requests of one connection, as a state machine fed with the bytes received
/// and not consumed yet. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct RequestFramer {
    limits: FramingLimits,
    state: State,
}

impl RequestFramer {
    /// A framer at the start of a connection; `expect_proxy`: the peer is a trusted proxy whose
    /// connections start with a PROXY header (version 1 or 2).
    pub fn new(limits: FramingLimits, expect_proxy: bool) -> RequestFramer {
        RequestFramer {
            limits,
            state: if expect_proxy {
                State::Proxy
            } else {
                State::Head
            },
        }
    }

    /// The limits the framer enforces.
    pub fn limits(&self) -> FramingLimits {
        self.limits
    }

    /// Looks at the front of `input` (everything received and not consumed so far) and returns
    /// the next item with the number of bytes of `input` it used (the caller removes them before
    /// the next call; it is never 0 and never more than `input.len()`), or `Ok(None)` when more
    /// bytes are needed (nothing used). After an error the connection must be failed: every
    /// later call returns the same error.
    ///
    /// Errors: those of [`proxy::parse`] (a missing or malformed PROXY header), of
    /// [`handshake::parse_request`] with [`FramingLimits::max_head_bytes`], of
    /// [`Request::body_framing`], [`Error::LengthRequired`] for a chunked body and
    /// [`Error::BodyTooLarge`] past [`FramingLimits::max_body_bytes`]. Each has an HTTP status.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Result<Option<(Item<'a>, usize)>> {
        match self.state {
            State::Failed(ref error) => Err(error.clone()),
            State::Proxy => match proxy::parse(input) {
                Ok(None) => Ok(None),
                Ok(Some((header, used))) => {
                    self.state = State::Head;
                    Ok(Some((Item::Proxy(header), used)))
                }
                Err(error) => self.fail(error),
            },
            State::Head => {
                let limits = Limits {
                    max_head_bytes: self.limits.max_head_bytes,
                };
                let request = match handshake::parse_request(input, &limits) {
                    Ok(None) => return Ok(None),
                    Ok(Some(request)) => request,
                    Err(error) => return self.fail(error),
                };
                let body_len = match request.body_framing() {
                    Ok(BodyFraming::Empty) => 0,
                    Ok(BodyFraming::Length(n)) if n > self.limits.max_body_bytes => {
                        return self.fail(Error::BodyTooLarge);
                    }
                    Ok(BodyFraming::Length(n)) => n,
                    Ok(BodyFraming::Chunked) => return self.fail(Error::LengthRequired),
                    Err(error) => return self.fail(error),
                };
                if body_len > 0 {
                    self.state = State::Body {
                        remaining: body_len,
                    };
                }
                let used = request.head_len();
                Ok(Some((Item::Head { request, body_len }, used)))
            }
            State::Body { remaining } => {
                if input.is_empty() {
                    return Ok(None);
                }
                // `remaining` may be far larger than any buffer: compare in u64, cut in usize.
                let take = if remaining < input.len() as u64 {
                    remaining as usize
                } else {
                    input.len()
                };
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    State::Head
                } else {
                    State::Body { remaining: left }
                };
                let item = Item::Body {
                    bytes: &input[..take],
                    last: left == 0,
                };
                Ok(Some((item, take)))
            }
        }
    }

    /// Whether the framer is between requests: no head or body in progress as far as it knows
    /// (a PROXY header still awaited counts as between requests; bytes of a head the caller has
    /// buffered but not completed do not show here). `false` once failed.
    pub fn at_request_boundary(&self) -> bool {
        matches!(self.state, State::Proxy | State::Head)
    }

    /// Bytes of the current body still to come (0 between requests).
    pub fn body_remaining(&self) -> u64 {
        match self.state {
            State::Body { remaining } => remaining,
            _ => 0,
        }
    }

    /// The error the framer failed with, if it did.
    pub fn error(&self) -> Option<&Error> {
        match &self.state {
            State::Failed(error) => Some(error),
            _ => None,
        }
    }

    fn fail<T>(&mut self, error: Error) -> Result<T> {
        self.state = State::Failed(error.clone());
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    const LIMITS: FramingLimits = FramingLimits {
        max_head_bytes: 8192,
        max_body_bytes: 1 << 20,
    };

    /// An item as owned data, for comparisons: a head as method, target, minor version, header
    /// fields and body length; a body as all its pieces together.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Norm {
        Proxy(ProxyHeader),
        Head {
            method: String,
            target: String,
            minor_version: u8,
            headers: Vec<(String, Vec<u8>)>,
            body_len: u64,
        },
        Body(Vec<u8>),
    }

    /// What a connection's bytes gave: the items, normalised, the error that ended it (if one
    /// did) and the number of bytes the items used.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Outcome {
        items: Vec<Norm>,
        error: Option<Error>,
        used: usize,
    }

    /// Feeds `pieces` one after the other as a connection's reads, calling `next` until it needs
    /// more after each, and checks the framer's promises on the way.
    fn run(limits: FramingLimits, expect_proxy: bool, pieces: &[&[u8]]) -> Outcome {
        let mut framer = RequestFramer::new(limits, expect_proxy);
        let mut buf: Vec<u8> = Vec::new();
        let mut items = Vec::new();
        let mut total = 0;
        // The body of the current request: announced length and bytes seen so far.
        let mut body: Option<(u64, Vec<u8>)> = None;
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                let before = framer.clone();
                match framer.next(&buf) {
                    Ok(None) => {
                        assert_eq!(framer.state, before.state, "Ok(None) changed the state");
                        break;
                    }
                    Err(error) => {
                        assert!(error.http_status().is_some(), "{error:?}");
                        assert_eq!(framer.next(&buf).err(), Some(error.clone()));
                        assert_eq!(framer.next(b"").err(), Some(error.clone()));
                        assert_eq!(framer.error(), Some(&error));
                        assert!(!framer.at_request_boundary());
                        if let Some((_, bytes)) = body.take() {
                            items.push(Norm::Body(bytes));
                        }
                        return Outcome {
                            items,
                            error: Some(error),
                            used: total,
                        };
                    }
                    Ok(Some((item, used))) => {
                        assert!(
                            used > 0 && used <= buf.len(),
                            "used {used} of {}",
                            buf.len()
                        );
                        match item {
                            Item::Proxy(header) => {
                                assert!(expect_proxy && items.is_empty());
                                items.push(Norm::Proxy(header));
                            }
                            Item::Head { request, body_len } => {
                                assert!(body.is_none(), "a head inside a body");
                                assert_eq!(used, request.head_len());
                                assert!(used <= limits.max_head_bytes);
                                assert!(body_len <= limits.max_body_bytes);
                                assert_eq!(framer.body_remaining(), body_len);
                                assert_eq!(framer.at_request_boundary(), body_len == 0);
                                items.push(Norm::Head {
                                    method: request.method().to_owned(),
                                    target: request.target().to_owned(),
                                    minor_version: request.minor_version(),
                                    headers: request
                                        .headers()
                                        .map(|(n, v)| (n.to_owned(), v.to_vec()))
                                        .collect(),
                                    body_len,
                                });
                                if body_len > 0 {
                                    body = Some((body_len, Vec::new()));
                                }
                            }
                            Item::Body { bytes, last } => {
                                assert_eq!(bytes.len(), used);
                                assert_eq!(bytes, &buf[..used]);
                                let Some((len, got)) = body.as_mut() else {
                                    panic!("body bytes outside a body");
                                };
                                got.extend_from_slice(bytes);
                                assert!(got.len() as u64 <= *len);
                                assert_eq!(last, got.len() as u64 == *len);
                                assert_eq!(framer.body_remaining(), *len - got.len() as u64);
                                assert_eq!(framer.at_request_boundary(), last);
                                if last {
                                    let (_, got) = body.take().expect("in a body");
                                    items.push(Norm::Body(got));
                                }
                            }
                        }
                        buf.drain(..used);
                        total += used;
                    }
                }
            }
        }
        if let Some((_, bytes)) = body.take() {
            items.push(Norm::Body(bytes));
        }
        Outcome {
            items,
            error: None,
            used: total,
        }
    }

    fn whole(input: &[u8]) -> Outcome {
        run(LIMITS, false, &[input])
    }

    fn bytewise(limits: FramingLimits, expect_proxy: bool, input: &[u8]) -> Outcome {
        let pieces: Vec<&[u8]> = input.chunks(1).collect();
        run(limits, expect_proxy, &pieces)
    }

    /// `whole`, checked against byte-by-byte feeding.
    fn frame(input: &[u8]) -> Outcome {
        let outcome = whole(input);
        assert_eq!(bytewise(LIMITS, false, input), outcome);
        outcome
    }

    fn head(method: &str, target: &str, body_len: u64) -> Norm {
        head_with(method, target, &[("Host", "gw")], body_len)
    }

    fn head_with(method: &str, target: &str, fields: &[(&str, &str)], body_len: u64) -> Norm {
        Norm::Head {
            method: method.to_owned(),
            target: target.to_owned(),
            minor_version: 1,
            headers: fields
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body_len,
        }
    }

    fn body(bytes: &[u8]) -> Norm {
        Norm::Body(bytes.to_vec())
    }

    /// Every byte of `input` used, by these items.
    fn done(items: Vec<Norm>, input: &[u8]) -> Outcome {
        Outcome {
            items,
            error: None,
            used: input.len(),
        }
    }

    fn failed(items: Vec<Norm>, error: Error, used: usize) -> Outcome {
        Outcome {
            items,
            error: Some(error),
            used,
        }
    }

    /// The first item of `input` (which must give one).
    fn first(framer: &mut RequestFramer, input: &[u8]) -> (Norm, usize) {
        let (item, used) = framer.next(input).unwrap().expect("an item");
        let norm = match item {
            Item::Proxy(h) => Norm::Proxy(h),
            Item::Head { request, body_len } => Norm::Head {
                method: request.method().to_owned(),
                target: request.target().to_owned(),
                minor_version: request.minor_version(),
                headers: request
                    .headers()
                    .map(|(n, v)| (n.to_owned(), v.to_vec()))
                    .collect(),
                body_len,
            },
            Item::Body { bytes, .. } => Norm::Body(bytes.to_vec()),
        };
        (norm, used)
    }

    // ---- requests and bodies -----------------------------------------------------------------

    #[test]
    fn pipelined_requests_in_one_input() {
        let input = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n\
                      POST /publish/news HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello\
                      GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n\
                      GET /metrics HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            frame(input),
            done(
                vec![
                    head("GET", "/healthz", 0),
                    head_with(
                        "POST",
                        "/publish/news",
                        &[("Host", "gw"), ("Content-Length", "5")],
                        5
                    ),
                    body(b"hello"),
                    head("GET", "/readyz", 0),
                    head_with(
                        "GET",
                        "/metrics",
                        &[("Host", "gw"), ("Content-Length", "0")],
                        0
                    ),
                ],
                input
            )
        );
        // Item by item, with the byte counts the caller removes.
        let mut framer = RequestFramer::new(LIMITS, false);
        let mut at = 0;
        let mut used_all = Vec::new();
        while let Some((_, used)) = framer.next(&input[at..]).unwrap() {
            used_all.push(used);
            at += used;
        }
        assert_eq!(used_all, [35, 60, 5, 34, 54]);
        assert_eq!(at, input.len());
        assert!(framer.at_request_boundary());
    }

    #[test]
    fn a_request_hidden_in_a_body_is_body_bytes() {
        // The smuggling attempt: a GET whose body holds a whole second request.
        let hidden = b"GET /admin HTTP/1.1\r\nHost: gw\r\n\r\n";
        let mut input = format!(
            "GET /healthz HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n",
            hidden.len()
        )
        .into_bytes();
        input.extend_from_slice(hidden);
        input.extend_from_slice(b"GET /readyz HTTP/1.1\r\nHost: gw\r\n\r\n");
        let outcome = frame(&input);
        assert_eq!(
            outcome,
            done(
                vec![
                    head_with(
                        "GET",
                        "/healthz",
                        &[("Host", "gw"), ("Content-Length", "33")],
                        33
                    ),
                    body(hidden),
                    head("GET", "/readyz", 0),
                ],
                &input
            )
        );
        let targets: Vec<&str> = outcome
            .items
            .iter()
            .filter_map(|i| match i {
                Norm::Head { target, .. } => Some(target.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(targets, ["/healthz", "/readyz"], "/admin is never a head");

        // The body announced, the hidden request sent in pieces: still body.
        let mut framer = RequestFramer::new(LIMITS, false);
        let (_, used) = first(&mut framer, &input);
        assert_eq!(framer.body_remaining(), 33);
        assert!(!framer.at_request_boundary());
        let rest = &input[used..];
        let Some((Item::Body { bytes, last }, n)) = framer.next(&rest[..10]).unwrap() else {
            panic!("body bytes");
        };
        assert_eq!((bytes, last, n), (&hidden[..10], false, 10));
        assert_eq!(framer.body_remaining(), 23);
        let Some((Item::Body { bytes, last }, n)) = framer.next(&rest[10..]).unwrap() else {
            panic!("body bytes");
        };
        assert_eq!((bytes, last, n), (&hidden[10..], true, 23));
        assert!(framer.at_request_boundary());
        assert!(matches!(
            framer.next(&rest[33..]).unwrap(),
            Some((Item::Head { .. }, 34))
        ));

        // The same smuggling through a Content-Length too short for the hidden request: the
        // rest of it is parsed as the next head and fails as one.
        let short =
            b"GET / HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\nGET /admin HTTP/1.1\r\n\r\n";
        let outcome = frame(short);
        assert_eq!(outcome.items[1], body(b"GET "));
        assert_eq!(outcome.items.len(), 2);
        assert!(matches!(outcome.error, Some(Error::HttpMalformed(_))));
    }

    #[test]
    fn bodies_of_every_method() {
        for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
            let input = format!(
                "{method} /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc\
                 {method} /y HTTP/1.1\r\nHost: gw\r\n\r\n"
            );
            assert_eq!(
                frame(input.as_bytes()),
                done(
                    vec![
                        head_with(method, "/x", &[("Host", "gw"), ("Content-Length", "3")], 3),
                        body(b"abc"),
                        head(method, "/y", 0),
                    ],
                    input.as_bytes()
                ),
                "{method}"
            );
        }
        // HTTP/1.0 frames its body the same way.
        let outcome = frame(b"POST /p HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
        assert!(matches!(
            outcome.items[0],
            Norm::Head {
                minor_version: 0,
                body_len: 2,
                ..
            }
        ));
        assert_eq!(outcome.items[1], body(b"hi"));
    }

    #[test]
    fn zero_length_bodies_give_no_body_item() {
        let input = b"POST /publish/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n\
                      GET /b HTTP/1.1\r\nHost: gw\r\n\r\n";
        let outcome = frame(input);
        assert_eq!(outcome.items.len(), 2);
        assert!(outcome.items.iter().all(|i| matches!(i, Norm::Head { .. })));
        let mut framer = RequestFramer::new(LIMITS, false);
        let (_, used) = first(&mut framer, input);
        assert!(framer.at_request_boundary());
        assert_eq!(framer.body_remaining(), 0);
        // Nothing after the head: the framer wants the next head, not a body.
        assert!(framer.next(b"").unwrap().is_none());
        assert!(matches!(
            framer.next(&input[used..]).unwrap(),
            Some((Item::Head { body_len: 0, .. }, _))
        ));
    }

    #[test]
    fn a_body_is_handed_out_as_it_arrives() {
        let mut framer = RequestFramer::new(LIMITS, false);
        let input = b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
        let (_, used) = first(&mut framer, input);
        assert_eq!(used, input.len());
        assert_eq!(framer.body_remaining(), 10);
        assert!(framer.next(b"").unwrap().is_none(), "no bytes, no item");
        assert_eq!(framer.body_remaining(), 10);
        for (piece, left) in [(&b"0123"[..], 6), (b"4", 5), (b"56789", 0)] {
            let Some((Item::Body { bytes, last }, n)) = framer.next(piece).unwrap() else {
                panic!("body");
            };
            assert_eq!((bytes, n, last), (piece, piece.len(), left == 0));
            assert_eq!(framer.body_remaining(), left);
        }
        // The end of a body and the next head in one read: only the body's bytes are used.
        let mut framer = RequestFramer::new(LIMITS, false);
        first(&mut framer, input);
        let rest = b"0123456789GET / HTTP/1.1\r\n\r\n";
        let Some((Item::Body { bytes, last: true }, 10)) = framer.next(rest).unwrap() else {
            panic!("the whole body");
        };
        assert_eq!(bytes, b"0123456789");
        assert!(matches!(
            framer.next(&rest[10..]).unwrap(),
            Some((Item::Head { .. }, 18))
        ));
    }

    #[test]
    fn a_huge_announced_body_allocates_and_waits_for_nothing() {
        let limits = FramingLimits {
            max_head_bytes: 8192,
            max_body_bytes: u64::MAX,
        };
        let mut framer = RequestFramer::new(limits, false);
        let input = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nabc";
        let Some((Item::Head { body_len, .. }, used)) = framer.next(input).unwrap() else {
            panic!("a head");
        };
        assert_eq!(body_len, u64::MAX);
        let Some((Item::Body { bytes, last }, n)) = framer.next(&input[used..]).unwrap() else {
            panic!("body");
        };
        assert_eq!((bytes, last, n), (&b"abc"[..], false, 3));
        assert_eq!(framer.body_remaining(), u64::MAX - 3);
        assert!(
            std::mem::size_of::<RequestFramer>() <= 64,
            "a few words of state"
        );
    }

    // ---- errors ------------------------------------------------------------------------------

    #[test]
    fn chunked_is_length_required() {
        for input in [
            &b"POST /publish/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let outcome = frame(input);
            assert_eq!(outcome.error, Some(Error::LengthRequired));
            assert!(outcome.items.is_empty(), "the head is not handed out");
            assert_eq!(outcome.used, 0, "nothing used");
        }
        assert_eq!(Error::LengthRequired.http_status(), Some(411));
        // After a first request that is fine.
        let outcome = frame(
            b"GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
        assert_eq!(outcome.items.len(), 1);
        assert_eq!(outcome.error, Some(Error::LengthRequired));
        // Other codings, and chunked over HTTP/1.0, are bad headers (as body_framing says).
        for input in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(
                frame(input).error,
                Some(Error::BadHeader("Transfer-Encoding"))
            );
        }
    }

    #[test]
    fn both_length_headers_or_conflicting_lengths_are_bad_headers() {
        for (input, name) in [
            (
                &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello"
                    [..],
                "Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
                "Transfer-Encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello!",
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello",
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
                "Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                "Content-Length",
            ),
        ] {
            let outcome = frame(input);
            assert_eq!(outcome.error, Some(Error::BadHeader(name)), "{input:?}");
            assert!(outcome.items.is_empty());
        }
        // The same value repeated is one length.
        let outcome = frame(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n");
        assert_eq!(outcome.items.len(), 3);
        assert_eq!(outcome.items[1], body(b"ok"));
        assert_eq!(outcome.error, None);
    }

    #[test]
    fn an_oversize_body_is_413_before_any_of_it_arrives() {
        let limits = FramingLimits {
            max_head_bytes: 8192,
            max_body_bytes: 10,
        };
        let at_limit = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
        let outcome = run(limits, false, &[at_limit]);
        assert_eq!((outcome.items.len(), outcome.error), (2, None));
        let over = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        let outcome = bytewise(limits, false, over);
        assert_eq!(outcome, failed(vec![], Error::BodyTooLarge, 0));
        let huge = b"GET / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(run(limits, false, &[huge]).error, Some(Error::BodyTooLarge));
        let none = FramingLimits {
            max_body_bytes: 0,
            ..limits
        };
        assert_eq!(
            run(
                none,
                false,
                &[b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"]
            )
            .error,
            Some(Error::BodyTooLarge)
        );
        assert_eq!(
            run(
                none,
                false,
                &[b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"]
            )
            .error,
            None
        );
    }

    #[test]
    fn an_oversize_head_is_431() {
        let request = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
        let exact = FramingLimits {
            max_head_bytes: request.len(),
            max_body_bytes: 0,
        };
        assert_eq!(run(exact, false, &[request]).items.len(), 1);
        let short = FramingLimits {
            max_head_bytes: request.len() - 1,
            ..exact
        };
        // Complete but over the limit, whole or byte by byte.
        assert_eq!(
            run(short, false, &[request]),
            failed(vec![], Error::HeadersTooLarge, 0)
        );
        assert_eq!(
            bytewise(short, false, request),
            failed(vec![], Error::HeadersTooLarge, 0)
        );
        // Never complete: as soon as the limit has passed.
        let endless = vec![b'a'; 100];
        let mut input = b"GET /".to_vec();
        input.extend_from_slice(&endless);
        let outcome = bytewise(short, false, &input);
        assert_eq!(outcome.error, Some(Error::HeadersTooLarge));
        assert_eq!(outcome.used, 0);
        // The limit applies to each head of a connection, not to the connection.
        let twice = [&request[..], &request[..], &request[..]].concat();
        assert_eq!(run(exact, false, &[&twice]).items.len(), 3);
        assert_eq!(
            frame(&[&request[..], &b"GET / HTTP/1.1\r\n"[..], &[b'x'; 9000]].concat()).error,
            Some(Error::HeadersTooLarge)
        );
    }

    #[test]
    fn malformed_heads_fail_as_the_handshake_says() {
        for input in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\nHost: gw\r\r\n\r\n",
        ] {
            let outcome = frame(input);
            assert!(
                matches!(outcome.error, Some(Error::HttpMalformed(_))),
                "{input:?}: {outcome:?}"
            );
        }
        let many: String = (0..65).map(|i| format!("X-{i}: v\r\n")).collect();
        let input = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(frame(input.as_bytes()).error, Some(Error::TooManyHeaders));
    }

    #[test]
    fn an_error_repeats() {
        let mut framer = RequestFramer::new(LIMITS, false);
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(framer.next(input).unwrap_err(), Error::LengthRequired);
        assert_eq!(framer.error(), Some(&Error::LengthRequired));
        for later in [&b""[..], b"GET / HTTP/1.1\r\n\r\n", input, b"x"] {
            assert_eq!(framer.next(later).unwrap_err(), Error::LengthRequired);
        }
        assert!(!framer.at_request_boundary());
        assert_eq!(framer.body_remaining(), 0);
        // A clone of a failed framer is failed too.
        let mut copy = framer.clone();
        assert_eq!(
            copy.next(b"GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            Error::LengthRequired
        );
        // From a PROXY header, too.
        let mut framer = RequestFramer::new(LIMITS, true);
        let error = framer.next(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(error, Error::BadProxyHeader("no PROXY header"));
        assert_eq!(framer.next(b"PROXY UNKNOWN\r\n").unwrap_err(), error);
    }

    #[test]
    fn more_bytes_needed_uses_nothing() {
        let mut framer = RequestFramer::new(LIMITS, false);
        assert!(framer.next(b"").unwrap().is_none());
        assert!(framer.next(b"GET / HTTP/1.1\r\nHost:").unwrap().is_none());
        assert!(framer.at_request_boundary());
        let mut framer = RequestFramer::new(LIMITS, true);
        assert!(framer.next(b"").unwrap().is_none());
        assert!(framer.next(b"PROXY TCP4 1.2.3.4").unwrap().is_none());
        assert!(framer.next(&proxy::V2_SIGNATURE[..7]).unwrap().is_none());
        assert!(framer.at_request_boundary());
        assert_eq!(framer.error(), None);
    }

    // ---- PROXY header ------------------------------------------------------------------------

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut v = proxy::V2_SIGNATURE.to_vec();
        v.push(0x20 | command);
        v.push(family);
        v.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        v.extend_from_slice(addresses);
        v
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_proxy_header_first_then_requests() {
        let request = b"POST /publish/a HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\nhi\
                        GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n";
        let requests = [
            head_with(
                "POST",
                "/publish/a",
                &[("Host", "gw"), ("Content-Length", "2")],
                2,
            ),
            body(b"hi"),
            head("GET", "/healthz", 0),
        ];
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\n".to_vec();
        // The addresses, then a TLV (skipped).
        let v2_tcp4 = v2(
            1,
            0x11,
            &[
                203, 0, 113, 7, 10, 0, 0, 1, 0xC8, 0x22, 0x1F, 0x90, 0x03, 0x00, 0x04, 1, 2, 3, 4,
            ],
        );
        let mut v6 = [0u8; 36];
        v6[0..2].copy_from_slice(&[0x20, 0x01]);
        v6[15] = 1;
        v6[16..18].copy_from_slice(&[0x20, 0x01]);
        v6[31] = 2;
        v6[32..36].copy_from_slice(&[0, 1, 0xFF, 0xFF]);
        let v2_tcp6 = v2(1, 0x21, &v6);
        let client = ProxyHeader {
            source: addr("203.0.113.7:51234"),
            destination: addr("10.0.0.1:8080"),
        };
        let local = ProxyHeader {
            source: None,
            destination: None,
        };
        for (header, expected) in [
            (v1, client),
            (v2_tcp4, client),
            (
                v2_tcp6,
                ProxyHeader {
                    source: addr("[2001::1]:1"),
                    destination: addr("[2001::2]:65535"),
                },
            ),
            (v2(0, 0, &[]), local),
            (b"PROXY UNKNOWN\r\n".to_vec(), local),
        ] {
            let input = [&header[..], &request[..]].concat();
            let mut items = vec![Norm::Proxy(expected)];
            items.extend(requests.iter().cloned());
            let outcome = run(LIMITS, true, &[&input]);
            assert_eq!(outcome, done(items, &input), "{header:?}");
            assert_eq!(bytewise(LIMITS, true, &input), outcome);
            // The header's bytes are used exactly.
            let mut framer = RequestFramer::new(LIMITS, true);
            assert!(framer.at_request_boundary());
            let Some((Item::Proxy(_), used)) = framer.next(&input).unwrap() else {
                panic!("a PROXY header");
            };
            assert_eq!(used, header.len());
        }
    }

    #[test]
    fn a_proxy_header_only_where_expected_and_only_once() {
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\n";
        let request = b"GET / HTTP/1.1\r\n\r\n";
        // Not expected: it is not a request.
        let outcome = frame(&[&v1[..], &request[..]].concat());
        assert!(matches!(outcome.error, Some(Error::HttpMalformed(_))));
        assert!(outcome.items.is_empty());
        // Expected and missing.
        let outcome = run(LIMITS, true, &[request]);
        assert_eq!(
            outcome.error,
            Some(Error::BadProxyHeader("no PROXY header"))
        );
        // Twice: the second is not a request.
        let input = [&v1[..], &v1[..], &request[..]].concat();
        let outcome = run(LIMITS, true, &[&input]);
        assert_eq!(outcome.items.len(), 1);
        assert!(matches!(outcome.error, Some(Error::HttpMalformed(_))));
        // A malformed one.
        let outcome = run(LIMITS, true, &[b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"]);
        assert_eq!(outcome.error, Some(Error::BadProxyHeader("bad port")));
    }

    // ---- properties --------------------------------------------------------------------------

    /// One piece of a generated connection: mostly well-formed requests, with or without bodies,
    /// and now and then a chunked one, both length headers, a bad length or plain garbage.
    fn segment() -> impl Strategy<Value = Vec<u8>> {
        let method = prop_oneof![
            Just("GET"),
            Just("HEAD"),
            Just("POST"),
            Just("PUT"),
            Just("DELETE")
        ];
        let request = (
            method,
            "/[a-z0-9/?=&]{0,12}",
            0u8..2,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::collection::vec(("X-[A-Za-z]{1,6}", "[ -~]{0,12}"), 0..3),
            0u8..16,
        )
            .prop_map(|(method, path, minor, body, extra, oddity)| {
                let mut head = format!("{method} {path} HTTP/1.{minor}\r\nHost: gw\r\n");
                for (n, v) in extra {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                let body = body.unwrap_or_default();
                match oddity {
                    0 => head.push_str("Transfer-Encoding: chunked\r\n"),
                    1 => head.push_str(&format!(
                        "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                        body.len()
                    )),
                    2 => head.push_str(&format!("Content-Length: {}\r\n", body.len() + 7)),
                    3 if body.is_empty() => {}
                    _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
                }
                head.push_str("\r\n");
                let mut bytes = head.into_bytes();
                bytes.extend_from_slice(&body);
                bytes
            });
        prop_oneof![
            16 => request,
            1 => proptest::collection::vec(any::<u8>(), 0..30),
            1 => Just(b"\r\n".to_vec()),
        ]
    }

    fn connection() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let proxy = prop_oneof![
            Just(Vec::new()),
            Just(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\n".to_vec()),
            Just(b"PROXY UNKNOWN\r\n".to_vec()),
            Just(v2(
                1,
                0x11,
                &[203, 0, 113, 7, 10, 0, 0, 1, 0xC8, 0x22, 0x1F, 0x90]
            )),
            Just(v2(0, 0, &[])),
        ];
        (
            proxy,
            proptest::collection::vec(segment(), 0..6),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(proxy, segments, mismatch)| {
                // Mostly a PROXY header exactly when one is expected.
                let expect_proxy = proxy.is_empty() == mismatch;
                let mut bytes = proxy;
                for s in segments {
                    bytes.extend_from_slice(&s);
                }
                (bytes, expect_proxy)
            })
    }

    fn limits() -> impl Strategy<Value = FramingLimits> {
        prop_oneof![
            2 => Just(LIMITS),
            1 => (0usize..300, 0u64..64).prop_map(|(h, b)| FramingLimits {
                max_head_bytes: h,
                max_body_bytes: b,
            }),
        ]
    }

    fn cut<'a>(input: &'a [u8], points: &[proptest::sample::Index]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = points.iter().map(|p| p.index(input.len() + 1)).collect();
        at.push(0);
        at.push(input.len());
        at.sort_unstable();
        at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_cut_gives_the_same_items_and_error(
            (input, expect_proxy) in connection(),
            limits in limits(),
            points in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let whole = run(limits, expect_proxy, &[&input]);
            let pieces = cut(&input, &points);
            prop_assert_eq!(&run(limits, expect_proxy, &pieces), &whole);
            prop_assert_eq!(&bytewise(limits, expect_proxy, &input), &whole);
            // With the empty reads a connection may see.
            let mut with_empty = Vec::new();
            for p in &pieces {
                with_empty.push(&p[..]);
                with_empty.push(&b""[..]);
            }
            prop_assert_eq!(&run(limits, expect_proxy, &with_empty), &whole);
        }

        #[test]
        fn random_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..400),
            limits in limits(),
            expect_proxy in any::<bool>(),
            points in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
        ) {
            let whole = run(limits, expect_proxy, &[&input]);
            prop_assert_eq!(&run(limits, expect_proxy, &cut(&input, &points)), &whole);
            let mut prefixed = b"POST / HTTP/1.1\r\nContent-Length: 7\r\n\r\n".to_vec();
            prefixed.extend_from_slice(&input);
            let whole = run(LIMITS, false, &[&prefixed]);
            prop_assert_eq!(&bytewise(LIMITS, false, &prefixed), &whole);
        }
    }
}
