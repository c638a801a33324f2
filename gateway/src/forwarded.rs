//! The client's address from `X-Forwarded-For`, on requests from a trusted proxy.
//!
//! Each proxy appends the address it received the request from, so the list reads client
//! first, nearest proxy last. Only the entries added by proxies we trust can be believed:
//! reading from the right, the first address that is not one of our proxies is the client.
//! Everything left of it was written by the client itself and may be forged.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use wsgate_core::error::{Error, Result};

/// The client's address according to the `X-Forwarded-For` items `items` (all the header's
/// lines, in order), given the trusted proxy networks. `Ok(None)` when there are no items.
/// With no trusted networks listed, only the last item (written by the peer) is believed.
pub(crate) fn client<'a>(
    items: impl DoubleEndedIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> Result<Option<IpAddr>> {
    let mut leftmost = None;
    for item in items.rev() {
        let ip = parse(item).ok_or(Error::BadHeader(
            "X-Forwarded-For must be a list of IP addresses",
        ))?;
        if trusted.is_empty() || !trusted.iter().any(|n| n.contains(&ip)) {
            return Ok(Some(ip));
        }
        leftmost = Some(ip);
    }
    // every hop is one of ours: the first of them is as far as anyone can tell
    Ok(leftmost)
}

/// One item: an address, optionally with a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`).
fn parse(item: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(item).ok()?.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn run(header: &str, trusted: &[&str]) -> Result<Option<IpAddr>> {
        let items: Vec<&[u8]> = header
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::as_bytes)
            .collect();
        client(items.into_iter(), &nets(trusted))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = ["10.0.0.0/8", "127.0.0.1/32"];
        assert_eq!(run("203.0.113.7", &trusted).unwrap(), ip("203.0.113.7"));
        assert_eq!(
            run("1.1.1.1, 203.0.113.7, 10.0.0.2", &trusted).unwrap(),
            ip("203.0.113.7"),
            "the forged 1.1.1.1 is ignored, our 10.0.0.2 skipped"
        );
        assert_eq!(run("10.0.0.9, 10.0.0.2", &trusted).unwrap(), ip("10.0.0.9"));
        assert_eq!(run("", &trusted).unwrap(), None);
    }

    #[test]
    fn without_trusted_networks_only_the_last_hop_counts() {
        assert_eq!(
            run("1.1.1.1, 198.51.100.2", &[]).unwrap(),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(run("192.0.2.1:4711", &[]).unwrap(), ip("192.0.2.1"));
        assert_eq!(run("[2001:db8::1]:4711", &[]).unwrap(), ip("2001:db8::1"));
        assert_eq!(run("[2001:db8::1]", &[]).unwrap(), ip("2001:db8::1"));
        assert_eq!(run("2001:db8::1", &[]).unwrap(), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["unknown", "1.2.3", "example.com", "1.2.3.4 5.6.7.8", "[::1"] {
            let e = run(bad, &[]).unwrap_err();
            assert_eq!(e.http_status(), Some(400), "{bad}");
        }
    }
}
