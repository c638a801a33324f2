//! Admission limits: connections in total and per source address, the publish rate of one
//! connection, and the origin allow-list.
//!
//! The connection counts are shared by every worker but touched only when a connection is
//! accepted or closed, never per message; the per-address table is split into shards so that
//! workers accepting at the same time rarely meet on one lock.

use crate::metrics::Failure;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use wsgate_core::timer::Stamp;

const SHARDS: usize = 64;

/// Why a connection was refused at accept time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The gateway holds `max-connections` already.
    TooManyConnections,
    /// This address holds `max-connections-per-ip` already.
    TooManyFromAddress,
}

impl Refusal {
    /// What the refusal counts as.
    pub(crate) fn failure(self) -> Failure {
        match self {
            Refusal::TooManyConnections => Failure::TooManyConnections,
            Refusal::TooManyFromAddress => Failure::TooManyFromAddress,
        }
    }
}

/// Connection counts, in total and per source address.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    /// The mask of the IPv6 prefix that counts as one address.
    v6_mask: u128,
    total: AtomicUsize,
    per_ip: Box<[Mutex<HashMap<IpAddr, u32>>]>,
}

impl ConnectionLimits {
    /// Limits of `max_total` connections and `max_per_ip` per address (0: no per-address
    /// limit), where an IPv6 address counts by its first `v6_prefix` bits (a host is usually
    /// given a whole /64: counting /128s would let it open as many connections as it likes).
    pub(crate) fn new(max_total: usize, max_per_ip: usize, v6_prefix: u8) -> ConnectionLimits {
        let bits = u32::from(v6_prefix.clamp(1, 128));
        ConnectionLimits {
            max_total,
            max_per_ip,
            v6_mask: u128::MAX << (128 - bits),
            total: AtomicUsize::new(0),
            per_ip: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// The address a connection from `ip` counts against.
    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & self.v6_mask).into()),
            },
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => u128::from(*v6) as usize,
        };
        &self.per_ip[h.wrapping_mul(0x9E37_79B9) % SHARDS]
    }

    /// Counts a new connection against `max-connections`, or refuses it.
    pub(crate) fn admit_total(&self) -> Result<(), Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyConnections);
        }
        Ok(())
    }

    /// Counts a connection of client address `ip` against `max-connections-per-ip`, or refuses
    /// it. Returns whether it was counted (false when there is no per-address limit).
    pub(crate) fn admit_ip(&self, ip: IpAddr) -> Result<bool, Refusal> {
        if self.max_per_ip == 0 {
            return Ok(false);
        }
        let ip = self.key(ip);
        let mut table = self.shard(&ip).lock();
        let n = table.entry(ip).or_insert(0);
        if *n as usize >= self.max_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        Ok(true)
    }

    /// Counts a new connection from `ip` in total and per address, or says why it may not be.
    #[cfg(test)]
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.admit_total()?;
        self.admit_ip(ip)
            .map(|_| ())
            .inspect_err(|_| self.release_total())
    }

    /// Forgets a connection that [`admit_total`](Self::admit_total) counted.
    pub(crate) fn release_total(&self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    /// Forgets an address that [`admit_ip`](Self::admit_ip) counted.
    pub(crate) fn release_ip(&self, ip: IpAddr) {
        if self.max_per_ip == 0 {
            return;
        }
        let ip = self.key(ip);
        let mut table = self.shard(&ip).lock();
        if let Some(n) = table.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                table.remove(&ip);
            }
        }
    }

    /// Forgets a connection that [`admit`](Self::admit) counted.
    #[cfg(test)]
    pub(crate) fn release(&self, ip: IpAddr) {
        self.release_total();
        self.release_ip(ip);
    }

    /// Connections counted now.
    #[cfg(test)]
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// Addresses one shard of [`HandshakeRate`] keeps at most; past it, those idle for a while are
/// forgotten (and, if that is not enough, all of them: a flood of addresses costs bounded
/// memory, at worst some lenience).
const RATE_ENTRIES_PER_SHARD: usize = 4096;

/// TLS connections a second per client address (`tls-handshakes-per-ip`): a token bucket per
/// address (counted as [`ConnectionLimits`] counts them), with a burst of four seconds' worth.
#[derive(Debug)]
pub(crate) struct HandshakeRate {
    rate: u32,
    v6_mask: u128,
    shards: Box<[Mutex<HashMap<IpAddr, TokenBucket>>]>,
}

impl HandshakeRate {
    /// `rate` handshakes a second per address (0: no limit); IPv6 counted by `v6_prefix` bits.
    pub(crate) fn new(rate: u32, v6_prefix: u8) -> HandshakeRate {
        let bits = u32::from(v6_prefix.clamp(1, 128));
        HandshakeRate {
            rate,
            v6_mask: u128::MAX << (128 - bits),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn burst(&self) -> u32 {
        self.rate.saturating_mul(4).max(1)
    }

    /// Whether a TLS handshake from `ip` may start at `now`.
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let key = match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & self.v6_mask).into()),
            },
        };
        let h = match key {
            IpAddr::V4(v4) => u32::from(v4) as usize,
            IpAddr::V6(v6) => u128::from(v6) as usize,
        };
        let (rate, burst) = (self.rate, self.burst());
        let mut table = self.shards[h.wrapping_mul(0x9E37_79B9) % SHARDS].lock();
        if table.len() >= RATE_ENTRIES_PER_SHARD && !table.contains_key(&key) {
            // a full bucket is one that has not been used for its burst's time: forget those
            table.retain(|_, b| b.tokens_at(rate, burst, now) < burst as f32);
            if table.len() >= RATE_ENTRIES_PER_SHARD {
                table.clear();
            }
        }
        table
            .entry(key)
            .or_insert_with(|| TokenBucket::new(burst, now))
            .take(rate, burst, now)
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up (16 bytes: every session
/// keeps one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f32,
    last: Stamp,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            last: Stamp::of(now),
        }
    }

    /// The tokens the bucket holds at `now`.
    fn tokens_at(&self, rate: u32, burst: u32, now: Instant) -> f32 {
        let dt = now
            .saturating_duration_since(self.last.instant())
            .as_secs_f32();
        (self.tokens + dt * rate as f32).min(burst as f32)
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let dt = now
            .saturating_duration_since(self.last.instant())
            .as_secs_f32();
        self.last = Stamp::of(now);
        self.tokens = (self.tokens + dt * rate as f32).min(burst as f32);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether `origin` (an `Origin` header: `scheme://host[:port]`) is allowed by `patterns`:
/// each pattern is an exact origin (`https://app.example.com`), or a host pattern with an
/// optional scheme where a leading `*.` matches any subdomain (`*.example.com`,
/// `https://*.example.com`). Comparison ignores ASCII case. An empty list allows every origin.
pub(crate) fn origin_allowed(origin: &str, patterns: &[String]) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, host) = match origin.split_once("://") {
        Some((s, h)) => (s, h),
        None => ("", origin.as_str()),
    };
    patterns.iter().any(|p| {
        let p = p.trim().to_ascii_lowercase();
        let (p_scheme, p_host) = match p.split_once("://") {
            Some((s, h)) => (Some(s), h),
            None => (None, p.as_str()),
        };
        if p_scheme.is_some_and(|s| s != scheme) {
            return false;
        }
        match p_host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => host == p_host,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn total_and_per_address_limits() {
        let l = ConnectionLimits::new(3, 2, 64);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(a), Err(Refusal::TooManyFromAddress));
        assert_eq!(l.admit(b), Ok(()));
        assert_eq!(l.admit(b), Err(Refusal::TooManyConnections));
        assert_eq!(l.total(), 3);
        l.release(a);
        assert_eq!(l.admit(b), Ok(()));
        assert_eq!(l.admit(b), Err(Refusal::TooManyConnections));
        l.release(a);
        l.release(b);
        l.release(b);
        assert_eq!(l.total(), 0);
        assert!(
            l.per_ip.iter().all(|s| s.lock().is_empty()),
            "released addresses are forgotten"
        );
    }

    #[test]
    fn ipv6_addresses_count_by_their_prefix() {
        let l = ConnectionLimits::new(100, 2, 64);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(l.admit(a), Ok(()));
        assert_eq!(l.admit(b), Ok(()));
        assert_eq!(l.admit(a), Err(Refusal::TooManyFromAddress), "the same /64");
        assert_eq!(l.admit(other), Ok(()), "another /64");
        l.release(b);
        assert_eq!(l.admit(a), Ok(()));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(l.admit(mapped), Ok(()));
        assert_eq!(l.admit(v4), Ok(()));
        assert_eq!(
            l.admit(v4),
            Err(Refusal::TooManyFromAddress),
            "mapped is the v4 address"
        );
        let per_host = ConnectionLimits::new(100, 1, 128);
        assert_eq!(per_host.admit(a), Ok(()));
        assert_eq!(per_host.admit(b), Ok(()), "/128: each address on its own");
    }

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3, t0);
        assert!(b.take(10, 3, t0) && b.take(10, 3, t0) && b.take(10, 3, t0));
        assert!(!b.take(10, 3, t0), "burst spent");
        assert!(
            b.take(10, 3, t0 + Duration::from_millis(100)),
            "refilled at the rate"
        );
        assert!(!b.take(10, 3, t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert!(
            (0..3).all(|_| b.take(10, 3, later)),
            "never more than the burst"
        );
        assert!(!b.take(10, 3, later));
    }

    #[test]
    fn origins() {
        let p = vec![
            "https://app.example.com".to_string(),
            "*.example.org".to_string(),
            "http://*.dev.test".to_string(),
        ];
        assert!(origin_allowed("https://app.example.com", &p));
        assert!(origin_allowed("HTTPS://APP.EXAMPLE.COM", &p));
        assert!(
            !origin_allowed("http://app.example.com", &p),
            "scheme is part of an exact origin"
        );
        assert!(!origin_allowed("https://evil.com", &p));
        assert!(origin_allowed("https://a.example.org", &p));
        assert!(origin_allowed("http://a.b.example.org", &p));
        assert!(
            !origin_allowed("https://example.org", &p),
            "*. needs a subdomain"
        );
        assert!(!origin_allowed("https://badexample.org", &p));
        assert!(origin_allowed("http://x.dev.test", &p));
        assert!(!origin_allowed("https://x.dev.test", &p));
        assert!(!origin_allowed("null", &p));
        assert!(origin_allowed("https://anything", &[]));
    }

    #[test]
    fn tls_handshakes_are_limited_per_address_with_bounded_memory() {
        let t0 = Instant::now();
        let off = HandshakeRate::new(0, 64);
        assert!((0..1000).all(|_| off.allow("10.0.0.1".parse().unwrap(), t0)));

        let rate = HandshakeRate::new(5, 64);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            (0..30).filter(|_| rate.allow(a, t0)).count(),
            20,
            "a burst of 4 s"
        );
        assert!(rate.allow(b, t0), "another address has its own bucket");
        assert!(!rate.allow(a, t0 + Duration::from_millis(100)));
        assert!(
            rate.allow(a, t0 + Duration::from_millis(250)),
            "refilled at 5 a second"
        );
        // one /64 is one client
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!((0..20).filter(|_| rate.allow(v6a, t0)).count(), 20);
        assert!(!rate.allow(v6b, t0));

        // a flood of addresses: the table stays bounded
        for i in 0..200_000u32 {
            rate.allow(IpAddr::V4(i.into()), t0);
        }
        let held: usize = rate.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= SHARDS * RATE_ENTRIES_PER_SHARD, "{held}");
    }
}
