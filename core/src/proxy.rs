//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load balancer sends first on
//! a connection to pass on the client's real address.
//!
//! [`parse`] reads a header from the start of what a connection has sent so far: `Ok(None)`
//! while it is incomplete, the header and its length once complete (the bytes after it are the
//! client's own: an HTTP request), an error for anything malformed. Version 2 TLVs are skipped.
//! Whether a peer may send a header at all (a trusted proxy) is the gateway's decision.

use crate::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included (RFC: 107 bytes).
pub const V1_MAX_LEN: usize = 107;
/// The largest version 2 header accepted: 16 bytes plus addresses and TLVs.
pub const V2_MAX_LEN: usize = 16 + 1024;

/// A parsed PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address, when the proxy relayed a TCP connection.
    pub source: Option<SocketAddr>,
    /// The address the client connected to.
    pub destination: Option<SocketAddr>,
}

fn bad(why: &'static str) -> Error {
    Error::BadProxyHeader(why)
}

/// Parses a PROXY header (version 1 or 2) at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == V2_SIGNATURE[0] {
        return parse_v2(buf);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(bad("no PROXY header"));
    }
    let Some(end) = buf.iter().take(V1_MAX_LEN).position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(bad("version 1 header too long"))
        } else {
            Ok(None)
        };
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(bad("version 1 header must end with CRLF"));
    }
    let line =
        std::str::from_utf8(&buf[..end - 1]).map_err(|_| bad("version 1 header is not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let header = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxyHeader {
            source: None,
            destination: None,
        },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr> {
                let ip: IpAddr = s.parse().map_err(|_| bad("bad address"))?;
                match (family, ip) {
                    (&"TCP4", IpAddr::V4(_)) | (&"TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err(bad("address does not match the family")),
                }
            };
            let port = |s: &str| -> Result<u16> {
                if s.is_empty()
                    || s.len() > 5
                    || !s.bytes().all(|b| b.is_ascii_digit())
                    || (s.len() > 1 && s.starts_with('0'))
                {
                    return Err(bad("bad port"));
                }
                s.parse().map_err(|_| bad("bad port"))
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err(bad("malformed version 1 header")),
    };
    Ok(Some((header, end + 1)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>> {
    let n = buf.len().min(12);
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(bad("no PROXY header"));
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0F;
    if version != 2 {
        return Err(bad("unknown version"));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > V2_MAX_LEN {
        return Err(bad("version 2 header too long"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let header = match command {
        // LOCAL: the proxy's own connection (a health check); no client address
        0x0 => ProxyHeader {
            source: None,
            destination: None,
        },
        0x1 => match family {
            0x11 => {
                if len < 12 {
                    return Err(bad("address block too short"));
                }
                let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
                let (sp, dp) = (
                    u16::from_be_bytes([body[8], body[9]]),
                    u16::from_be_bytes([body[10], body[11]]),
                );
                ProxyHeader {
                    source: Some(SocketAddr::new(IpAddr::V4(src), sp)),
                    destination: Some(SocketAddr::new(IpAddr::V4(dst), dp)),
                }
            }
            0x21 => {
                if len < 36 {
                    return Err(bad("address block too short"));
                }
                let src = Ipv6Addr::from(<[u8; 16]>::try_from(&body[0..16]).expect("16 bytes"));
                let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&body[16..32]).expect("16 bytes"));
                let (sp, dp) = (
                    u16::from_be_bytes([body[32], body[33]]),
                    u16::from_be_bytes([body[34], body[35]]),
                );
                ProxyHeader {
                    source: Some(SocketAddr::new(IpAddr::V6(src), sp)),
                    destination: Some(SocketAddr::new(IpAddr::V6(dst), dp)),
                }
            }
            // UNSPEC, UDP and unix sockets: no TCP client address to use
            _ => ProxyHeader {
                source: None,
                destination: None,
            },
        },
        _ => return Err(bad("unknown command")),
    };
    Ok(Some((header, 16 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | command);
        v.push(family);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn version_1() {
        let mut b = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 8080\r\nGET / HTTP/1.1\r\n".to_vec();
        let (h, n) = parse(&b).unwrap().unwrap();
        assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
        assert_eq!(h.destination, Some("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            &b[n..],
            b"GET / HTTP/1.1\r\n",
            "the request that follows is kept"
        );
        for cut in 0..n {
            assert_eq!(
                parse(&b[..cut]).unwrap(),
                None,
                "prefix of {cut} bytes needs more"
            );
        }
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.source, Some("[2001:db8::1]:1".parse().unwrap()));
        let (h, n) = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!((h.source, n), (None, 15));
        b.truncate(0);
    }

    #[test]
    fn version_1_errors() {
        for bad_header in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                parse(bad_header).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad_header)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(
            parse(&long),
            Err(Error::BadProxyHeader("version 1 header too long"))
        );
    }

    #[test]
    fn version_2() {
        let mut body = vec![203, 0, 113, 7, 10, 0, 0, 1];
        body.extend_from_slice(&51234u16.to_be_bytes());
        body.extend_from_slice(&8080u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xAB]); // a TLV, skipped
        let mut b = v2(1, 0x11, &body);
        let header_len = b.len();
        b.extend_from_slice(b"GET /ws HTTP/1.1\r\n");
        let (h, n) = parse(&b).unwrap().unwrap();
        assert_eq!(n, header_len);
        assert_eq!(h.source, Some("203.0.113.7:51234".parse().unwrap()));
        for cut in 0..n {
            assert_eq!(
                parse(&b[..cut]).unwrap(),
                None,
                "prefix of {cut} bytes needs more"
            );
        }
        let mut body6 = [0u8; 36];
        body6[15] = 1;
        body6[31] = 2;
        body6[33] = 80;
        let (h, _) = parse(&v2(1, 0x21, &body6)).unwrap().unwrap();
        assert_eq!(h.source, Some("[::1]:80".parse().unwrap()));
        let (h, _) = parse(&v2(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!(h.source, None, "LOCAL: a health check of the proxy itself");
    }

    #[test]
    fn version_2_errors() {
        assert!(
            parse(&v2(1, 0x11, &[1, 2, 3])).is_err(),
            "short address block"
        );
        assert!(parse(&v2(2, 0x11, &[0; 12])).is_err(), "unknown command");
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(parse(&wrong_version).is_err());
        let mut too_long = V2_SIGNATURE.to_vec();
        too_long.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert_eq!(
            parse(&too_long),
            Err(Error::BadProxyHeader("version 2 header too long"))
        );
        assert!(parse(b"\r\n\r\nXXXX").is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, n))) = parse(&bytes) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn v1_round_trips(a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>()) {
            let src = SocketAddr::new(IpAddr::V4(a.into()), sp);
            let dst = SocketAddr::new(IpAddr::V4(b.into()), dp);
            let line = format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), sp, dp);
            let (h, n) = parse(line.as_bytes()).unwrap().unwrap();
            prop_assert_eq!((h.source, h.destination, n), (Some(src), Some(dst), line.len()));
        }
    }
}
