//! The named timers of a connection, in the manner of quinn-proto's `TimerTable`.
//!
//! A connection never keeps "the next deadline" and works out afterwards what it was for: each
//! deadline is armed under its [`Timer`] name, [`TimerTable::next_timeout`] is the earliest of
//! them, and [`TimerTable::take_expired`] says which one passed, most decisive first. Time is
//! always passed in (`now`); nothing here reads a clock.

use std::time::Instant;

/// A deadline of a connection, by what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The HTTP request (an upgrade, or a plain request on a kept-alive connection) must be
    /// complete by then.
    Handshake,
    /// The peer has been silent for the ping interval: ping it.
    Ping,
    /// The peer has been silent for the idle timeout: close with 1001.
    Idle,
    /// The peer has the close timeout to answer a close frame (or to take the last bytes and
    /// close TCP); then the connection is dropped.
    Close,
    /// The session's credentials expire: close with 1008.
    TokenExpiry,
}

impl Timer {
    /// Every timer, in the order [`TimerTable::take_expired`] looks at them when several passed
    /// at once: what ends the connection first, a mere ping last.
    pub const ALL: [Timer; 5] = [
        Timer::Close,
        Timer::Handshake,
        Timer::TokenExpiry,
        Timer::Idle,
        Timer::Ping,
    ];

    fn slot(self) -> usize {
        match self {
            Timer::Close => 0,
            Timer::Handshake => 1,
            Timer::TokenExpiry => 2,
            Timer::Idle => 3,
            Timer::Ping => 4,
        }
    }
}

/// An instant with its [`Stamp`] worked out once: what a caller that reads many messages at
/// the same instant hands to [`Session::read`](crate::session::Session::read) and
/// [`Session::read_small`](crate::session::Session::read_small), which otherwise convert it
/// for every message. Made from an `Instant` with `From`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    instant: Instant,
    stamp: Stamp,
}

impl Now {
    /// The instant.
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// Its stamp.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }
}

impl From<Instant> for Now {
    fn from(instant: Instant) -> Now {
        Now {
            instant,
            stamp: Stamp::of(instant),
        }
    }
}

/// An instant in 8 bytes: signed nanoseconds from a point fixed the first time any stamp is
/// made in the process (an `Instant` takes 16). Converting an `Instant` to a stamp and back
/// gives the same `Instant`, for any instant within 292 years of that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(i64);

impl Stamp {
    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// The stamp of `at`.
    pub fn of(at: Instant) -> Stamp {
        let epoch = Stamp::epoch();
        let nanos = |d: std::time::Duration| {
            i64::try_from(d.as_secs())
                .ok()
                .and_then(|s| s.checked_mul(1_000_000_000))
                .and_then(|n| n.checked_add(i64::from(d.subsec_nanos())))
                .unwrap_or(i64::MAX)
        };
        match at.checked_duration_since(epoch) {
            Some(after) => Stamp(nanos(after)),
            None => Stamp(-nanos(epoch.duration_since(at))),
        }
    }

    /// The stamp `d` after this one (saturating).
    pub fn after(self, d: std::time::Duration) -> Stamp {
        let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Stamp(self.0.saturating_add(d))
    }

    /// The instant this stamp stands for.
    pub fn instant(self) -> Instant {
        let epoch = Stamp::epoch();
        let d = std::time::Duration::from_nanos(self.0.unsigned_abs());
        if self.0 >= 0 { epoch + d } else { epoch - d }
    }
}

/// One optional deadline per [`Timer`], 8 bytes each (a session keeps one table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerTable {
    /// Each timer's deadline; `UNARMED` when it is not armed.
    at: [i64; 5],
}

/// The deadline of a timer that is not armed.
const UNARMED: i64 = i64::MIN;

impl Default for TimerTable {
    fn default() -> Self {
        TimerTable { at: [UNARMED; 5] }
    }
}

impl TimerTable {
    /// A table with no timer armed.
    pub fn new() -> TimerTable {
        TimerTable::default()
    }

    /// Arms `timer` for `at`, replacing its previous deadline.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer.slot()] = Stamp::of(at).0.max(UNARMED + 1);
    }

    /// Arms `timer` for `at`, given as a stamp.
    pub fn set_stamp(&mut self, timer: Timer, at: Stamp) {
        self.at[timer.slot()] = at.0.max(UNARMED + 1);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.at[timer.slot()] = UNARMED;
    }

    /// Disarms every timer.
    pub fn stop_all(&mut self) {
        self.at = [UNARMED; 5];
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        let at = self.at[timer.slot()];
        (at != UNARMED).then(|| Stamp(at).instant())
    }

    /// Whether `timer` is armed and its deadline is at or before `now`.
    pub fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        let at = self.at[timer.slot()];
        at != UNARMED && at <= Stamp::of(now).0
    }

    /// The earliest deadline of any armed timer.
    pub fn next_timeout(&self) -> Option<Instant> {
        let at = self.at.iter().copied().filter(|&at| at != UNARMED).min()?;
        Some(Stamp(at).instant())
    }

    /// Disarms and returns the first timer (in [`Timer::ALL`] order) whose deadline has
    /// passed at `now`, or `None` when none has.
    pub fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        let now = Stamp::of(now).0;
        let timer = Timer::ALL.into_iter().find(|t| {
            let at = self.at[t.slot()];
            at != UNARMED && at <= now
        })?;
        self.stop(timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stamp_gives_back_its_instant_exactly_before_and_after_the_epoch() {
        let now = Instant::now();
        for offset in [0u64, 1, 999, 1_000_000_007, 86_400 * 1_000_000_000 * 400] {
            let d = Duration::from_nanos(offset);
            for at in [Some(now + d), now.checked_sub(d)].into_iter().flatten() {
                assert_eq!(Stamp::of(at).instant(), at, "offset {offset} ns");
            }
        }
        assert!(Stamp::of(now) < Stamp::of(now + Duration::from_nanos(1)));
        let d = Duration::new(75, 123_456_789);
        assert_eq!(Stamp::of(now).after(d).instant(), now + d);
        assert_eq!(std::mem::size_of::<TimerTable>(), 40);
    }

    #[test]
    fn the_earliest_armed_deadline_is_the_next_timeout() {
        let t0 = Instant::now();
        let mut t = TimerTable::new();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::Idle, t0 + Duration::from_secs(75));
        t.set(Timer::Ping, t0 + Duration::from_secs(30));
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(30)));
        t.stop(Timer::Ping);
        assert_eq!(t.next_timeout(), Some(t0 + Duration::from_secs(75)));
        t.set(Timer::Idle, t0 + Duration::from_secs(100));
        assert_eq!(t.get(Timer::Idle), Some(t0 + Duration::from_secs(100)));
        t.stop_all();
        assert_eq!(t.next_timeout(), None);
    }

    #[test]
    fn expired_timers_come_out_most_decisive_first_and_once() {
        let t0 = Instant::now();
        let mut t = TimerTable::new();
        for timer in Timer::ALL {
            t.set(timer, t0);
        }
        t.set(Timer::Handshake, t0 + Duration::from_secs(1));
        let fired: Vec<Timer> = std::iter::from_fn(|| t.take_expired(t0)).collect();
        assert_eq!(
            fired,
            vec![Timer::Close, Timer::TokenExpiry, Timer::Idle, Timer::Ping]
        );
        assert_eq!(t.take_expired(t0), None, "each fires once");
        assert!(!t.is_expired(Timer::Handshake, t0));
        assert_eq!(
            t.take_expired(t0 + Duration::from_secs(1)),
            Some(Timer::Handshake)
        );
        assert_eq!(t.next_timeout(), None);
    }
}
