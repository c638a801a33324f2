//! `framing::RequestFramer` on an arbitrary connection: the PROXY header, request heads and
//! `Content-Length` bodies, fed whole and in pieces, under arbitrary small limits.
//!
//! Input: `[flags][head limit: u16][body limit: u16][n][n piece sizes][stream...]`.
//! `flags` bit 0: the framer expects a PROXY header; bits 1-2 pick the limits: 0 the defaults
//! (8 KiB head, 1 MiB body), 1 small (head limit mod 1024, body limit mod 512), 2 a small head
//! limit (mod 1024) and no body limit (`u64::MAX`), 3 both limits as given (up to 65 535). The
//! stream is fed as reads whose lengths cycle through the piece sizes (0 = an empty read; no
//! non-zero size: one byte per read), as the gateway feeds what each read brought.
//!
//! Invariants: no panic; the pieces give the same items (heads as method, target, version,
//! fields and body length; each body's pieces together), the same error and the same number of
//! bytes used as the stream in one piece; every item uses at least one byte and no more than the
//! input holds; a head uses exactly its `head_len`, within the head limit, and announces a body
//! within the body limit, equal to its `Content-Length`; body pieces are the next bytes of the
//! stream, never empty, and add up to the announced length before the next head, `last` on the
//! piece that completes it; `body_remaining` and `at_request_boundary` follow; `Ok(None)` changes
//! nothing; an error has an HTTP status and comes back on every later call; a framer that ends
//! inside a body has used every byte.
#![no_main]

mod common;

use common::{Params, pieces};
use libfuzzer_sys::fuzz_target;
use wsgate_core::Error;
use wsgate_core::framing::{FramingLimits, Item, RequestFramer};
use wsgate_core::handshake::{self, BodyFraming};
use wsgate_core::proxy::ProxyHeader;

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

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<Norm>,
    error: Option<Error>,
    used: usize,
}

fuzz_target!(|data: &[u8]| {
    let mut p = Params::new(data);
    let flags = p.byte();
    let (head_limit, body_limit) = (p.u16(), p.u16());
    let sizes = p.sizes(16);
    let stream = p.rest();
    let expect_proxy = flags & 1 != 0;
    let limits = match (flags >> 1) & 3 {
        0 => FramingLimits {
            max_head_bytes: handshake::DEFAULT_MAX_HEAD_BYTES,
            max_body_bytes: 1 << 20,
        },
        1 => FramingLimits {
            max_head_bytes: usize::from(head_limit) % 1024,
            max_body_bytes: u64::from(body_limit) % 512,
        },
        2 => FramingLimits {
            max_head_bytes: usize::from(head_limit) % 1024,
            max_body_bytes: u64::MAX,
        },
        _ => FramingLimits {
            max_head_bytes: usize::from(head_limit),
            max_body_bytes: u64::from(body_limit),
        },
    };

    let whole = run(limits, expect_proxy, stream, &[stream]);
    let reads = pieces(stream, sizes);
    let split = run(limits, expect_proxy, stream, &reads);
    assert_eq!(split, whole, "the stream in {} reads", reads.len());
    assert!(whole.used <= stream.len());
});

/// Feeds `reads` (which together are `stream`) to a new framer as a connection does, checking
/// every promise on the way.
fn run(limits: FramingLimits, expect_proxy: bool, stream: &[u8], reads: &[&[u8]]) -> Outcome {
    let mut framer = RequestFramer::new(limits, expect_proxy);
    assert_eq!(framer.limits(), limits);
    assert!(framer.at_request_boundary());
    let mut buf: Vec<u8> = Vec::new();
    let mut items = Vec::new();
    let mut used_total = 0usize;
    // The current body: its announced length and the bytes seen so far.
    let mut body: Option<(u64, Vec<u8>)> = None;
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            let (boundary, remaining) = (framer.at_request_boundary(), framer.body_remaining());
            match framer.next(&buf) {
                Ok(None) => {
                    assert_eq!(framer.at_request_boundary(), boundary);
                    assert_eq!(framer.body_remaining(), remaining);
                    assert!(framer.error().is_none());
                    if remaining > 0 {
                        assert!(buf.is_empty(), "a body waits only for bytes");
                    }
                    break;
                }
                Err(error) => {
                    assert!(error.http_status().is_some(), "{error:?} has no status");
                    assert_eq!(framer.error(), Some(&error));
                    assert_eq!(framer.next(&buf).err(), Some(error.clone()));
                    assert_eq!(framer.next(b"").err(), Some(error.clone()));
                    assert_eq!(
                        framer.next(b"GET / HTTP/1.1\r\n\r\n").err(),
                        Some(error.clone())
                    );
                    assert!(!framer.at_request_boundary());
                    assert_eq!(framer.body_remaining(), 0);
                    assert!(body.is_none(), "a body cannot fail");
                    return Outcome {
                        items,
                        error: Some(error),
                        used: used_total,
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
                            assert!(expect_proxy && items.is_empty() && used_total == 0);
                            assert!(framer.at_request_boundary());
                            items.push(Norm::Proxy(header));
                        }
                        Item::Head { request, body_len } => {
                            assert!(body.is_none(), "a head inside a body");
                            assert!(boundary);
                            assert_eq!(used, request.head_len());
                            assert!(used <= limits.max_head_bytes);
                            assert_eq!(buf[used - 1], b'\n');
                            assert!(body_len <= limits.max_body_bytes);
                            let announced = match request.body_framing() {
                                Ok(BodyFraming::Empty) => 0,
                                Ok(BodyFraming::Length(n)) => n,
                                other => panic!("a head handed out with framing {other:?}"),
                            };
                            assert_eq!(body_len, announced);
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
                            assert_eq!(bytes, &stream[used_total..used_total + used]);
                            let Some((len, got)) = body.as_mut() else {
                                panic!("body bytes outside a body");
                            };
                            assert_eq!(*len - got.len() as u64, remaining);
                            got.extend_from_slice(bytes);
                            assert!(got.len() as u64 <= *len);
                            assert_eq!(last, got.len() as u64 == *len);
                            assert_eq!(framer.body_remaining(), *len - got.len() as u64);
                            assert_eq!(framer.at_request_boundary(), last);
                            if !last {
                                assert_eq!(used, buf.len(), "a piece short of the end takes all");
                            }
                            if last {
                                let (_, got) = body.take().expect("in a body");
                                items.push(Norm::Body(got));
                            }
                        }
                    }
                    buf.drain(..used);
                    used_total += used;
                }
            }
        }
    }
    if let Some((_, got)) = body.take() {
        assert_eq!(used_total, stream.len(), "inside a body every byte is used");
        items.push(Norm::Body(got));
    }
    assert_eq!(used_total + buf.len(), stream.len());
    Outcome {
        items,
        error: None,
        used: used_total,
    }
}
