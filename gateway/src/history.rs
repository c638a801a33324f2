//! The history of one topic: its recent messages with their offsets, and its epoch.
//!
//! A topic chosen by a `[[history]]` rule numbers its messages: the first is offset 1, each next
//! one +1, with no holes. The last `size` messages younger than `ttl` are kept, as the same
//! shared frames the fanout sends (a reference each, no copy), within a node-wide memory
//! [`Budget`]: past it, the topic being appended to gives up its oldest messages (each counted
//! as evicted).
//!
//! The epoch names one unbroken sequence of offsets. It is made when the stream is made (a
//! random string), so a client that recovers with another epoch (the node restarted, the topic
//! was forgotten and made again) is told that its offsets mean nothing here.
//!
//! A client recovers from offset `O` ([`Stream::since`]): when `O` is the last offset or one
//! whose successors are all still kept, it gets every message after `O`, in order; otherwise
//! (another epoch, `O` older than what is kept, `O` ahead of the stream) it gets none and the
//! reason, never a part presented as the whole.
//!
//! A stream is plain data: the hub keeps it behind the topic's lock, which also orders the
//! offsets with the pushes to the workers' inboxes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wsgate_core::deflate::SharedFrame;

/// What keeping one message costs beyond its payload: its entry in the ring and the frame's
/// references.
pub const ENTRY_COST: usize = 64;

/// The memory every stream of the node shares.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: AtomicUsize,
    evicted: AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            held: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Bytes the streams hold now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Messages given up to stay within the budget, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.held() > self.limit
    }
}

/// Why a recovery cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's offsets belong to another epoch.
    Epoch,
    /// Messages after the client's offset are no longer kept.
    TooOld,
    /// The client's offset is past the stream's last one.
    Ahead,
}

impl Refusal {
    /// The word the acknowledgement carries.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Epoch => "epoch",
            Refusal::TooOld => "too_old",
            Refusal::Ahead => "ahead",
        }
    }
}

/// One kept message.
#[derive(Debug)]
struct Entry {
    offset: u64,
    at: Instant,
    frame: SharedFrame,
    cost: usize,
}

/// The history of one topic.
#[derive(Debug)]
pub struct Stream {
    epoch: Arc<str>,
    /// The offset of the last message (0 before the first).
    last: u64,
    entries: VecDeque<Entry>,
    size: usize,
    ttl: Duration,
    budget: Arc<Budget>,
    /// The last publish, or the last time nobody was left to hold the topic.
    touched: Option<Instant>,
}

impl Stream {
    /// An empty stream in a new epoch, keeping at most `size` messages for `ttl`.
    pub fn new(epoch: Arc<str>, size: usize, ttl: Duration, budget: Arc<Budget>) -> Stream {
        Stream {
            epoch,
            last: 0,
            entries: VecDeque::new(),
            size: size.max(1),
            ttl,
            budget,
            touched: None,
        }
    }

    /// Notes that the stream was used at `now` (it is worth keeping for a ttl after).
    pub fn touch(&mut self, now: Instant) {
        self.touched = Some(now);
    }

    /// Whether the stream is worth keeping at `now` when nobody holds its topic: it holds
    /// messages, or it was used within the ttl (forgetting it would start a new epoch, and
    /// clients that saw it would have to refetch for nothing).
    pub fn is_live(&mut self, now: Instant) -> bool {
        self.expire(now);
        !self.entries.is_empty()
            || self
                .touched
                .is_some_and(|t| now.saturating_duration_since(t) <= self.ttl)
    }

    /// The epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The offset of the last message (0 before the first).
    pub fn last_offset(&self) -> u64 {
        self.last
    }

    /// The offset the next message gets.
    pub fn next_offset(&self) -> u64 {
        self.last + 1
    }

    /// Messages kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the message of offset [`next_offset`](Self::next_offset), and gives up what it
    /// pushes past the size, the age or the node's budget.
    pub fn push(&mut self, frame: SharedFrame, now: Instant) -> u64 {
        self.last += 1;
        self.touched = Some(now);
        let cost = frame.plain().wire_len() + ENTRY_COST;
        self.budget.held.fetch_add(cost, Ordering::Relaxed);
        self.entries.push_back(Entry {
            offset: self.last,
            at: now,
            frame,
            cost,
        });
        self.expire(now);
        while self.entries.len() > self.size {
            self.pop();
        }
        while self.budget.over() && self.entries.len() > 1 {
            self.pop();
            self.budget.evicted.fetch_add(1, Ordering::Relaxed);
        }
        self.last
    }

    /// Gives up the messages older than the ttl at `now`.
    pub fn expire(&mut self, now: Instant) {
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > self.ttl)
        {
            self.pop();
        }
    }

    /// The messages after `offset` of `epoch`, in order, for a client that recovers; or why
    /// they cannot all be given.
    pub fn since(
        &mut self,
        offset: u64,
        epoch: &str,
        now: Instant,
    ) -> Result<Vec<(u64, SharedFrame)>, Refusal> {
        if epoch != &*self.epoch {
            return Err(Refusal::Epoch);
        }
        if offset > self.last {
            return Err(Refusal::Ahead);
        }
        self.expire(now);
        // the first offset still kept; with none kept, the one after the last
        let first = self.entries.front().map_or(self.last + 1, |e| e.offset);
        if offset + 1 < first {
            return Err(Refusal::TooOld);
        }
        let skip = (offset + 1 - first) as usize;
        Ok(self
            .entries
            .iter()
            .skip(skip)
            .map(|e| (e.offset, e.frame.clone()))
            .collect())
    }

    fn pop(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.budget.held.fetch_sub(e.cost, Ordering::Relaxed);
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        while !self.entries.is_empty() {
            self.pop();
        }
    }
}

/// A new epoch: 12 characters of base 32 from the clock, the process and a counter, different
/// for every stream made by any process on any node.
pub fn new_epoch() -> Arc<str> {
    use std::hash::{BuildHasher, Hasher};
    static MADE: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.write_u64(MADE.fetch_add(1, Ordering::Relaxed));
    let mut n = h.finish();
    const DIGITS: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let epoch: String = (0..12)
        .map(|_| {
            let d = DIGITS[(n & 31) as usize] as char;
            n >>= 5;
            d
        })
        .collect();
    Arc::from(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use wsgate_core::frame::{OpCode, OutFrame};

    fn frame(n: u64, len: usize) -> SharedFrame {
        let mut payload = n.to_be_bytes().to_vec();
        payload.resize(len.max(8), b'x');
        OutFrame::new(OpCode::Binary, Bytes::from(payload)).into()
    }

    fn stream(size: usize, ttl: Duration, budget: usize) -> Stream {
        Stream::new(new_epoch(), size, ttl, Arc::new(Budget::new(budget)))
    }

    fn offsets(got: &[(u64, SharedFrame)]) -> Vec<u64> {
        got.iter().map(|(o, _)| *o).collect()
    }

    #[test]
    fn offsets_count_from_one_without_holes_and_recovery_gives_what_came_after() {
        let t0 = Instant::now();
        let mut s = stream(100, Duration::from_secs(60), 1 << 20);
        assert_eq!((s.last_offset(), s.next_offset()), (0, 1));
        for n in 1..=10 {
            assert_eq!(s.push(frame(n, 16), t0), n);
        }
        let epoch = s.epoch().clone();
        let got = s.since(7, &epoch, t0).unwrap();
        assert_eq!(offsets(&got), vec![8, 9, 10]);
        assert_eq!(&got[0].1.plain().payload()[..8], &8u64.to_be_bytes());
        assert!(s.since(10, &epoch, t0).unwrap().is_empty(), "up to date");
        assert_eq!(offsets(&s.since(0, &epoch, t0).unwrap()).len(), 10);
        assert_eq!(s.since(11, &epoch, t0).unwrap_err(), Refusal::Ahead);
        assert_eq!(s.since(3, "other", t0).unwrap_err(), Refusal::Epoch);
    }

    #[test]
    fn the_size_bounds_what_is_kept_and_older_offsets_are_refused() {
        let t0 = Instant::now();
        let mut s = stream(5, Duration::from_secs(60), 1 << 20);
        for n in 1..=12 {
            s.push(frame(n, 16), t0);
        }
        assert_eq!(s.len(), 5);
        let epoch = s.epoch().clone();
        assert_eq!(
            offsets(&s.since(7, &epoch, t0).unwrap()),
            vec![8, 9, 10, 11, 12]
        );
        assert_eq!(s.since(6, &epoch, t0).unwrap_err(), Refusal::TooOld);
    }

    #[test]
    fn messages_older_than_the_ttl_are_given_up() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut s = stream(100, ttl, 1 << 20);
        s.push(frame(1, 16), t0);
        s.push(frame(2, 16), t0 + Duration::from_secs(5));
        let epoch = s.epoch().clone();
        let later = t0 + Duration::from_secs(11);
        assert_eq!(s.since(0, &epoch, later).unwrap_err(), Refusal::TooOld);
        assert_eq!(offsets(&s.since(1, &epoch, later).unwrap()), vec![2]);
        let much_later = t0 + Duration::from_secs(60);
        assert!(
            s.since(2, &epoch, much_later).unwrap().is_empty(),
            "all expired, up to date"
        );
        assert_eq!(s.since(1, &epoch, much_later).unwrap_err(), Refusal::TooOld);
        assert!(s.is_empty());
    }

    #[test]
    fn the_node_budget_is_shared_and_eviction_is_counted() {
        let t0 = Instant::now();
        let budget = Arc::new(Budget::new(10 * (1024 + 16 + ENTRY_COST)));
        let mut a = Stream::new(new_epoch(), 1000, Duration::from_secs(60), budget.clone());
        let mut b = Stream::new(new_epoch(), 1000, Duration::from_secs(60), budget.clone());
        for n in 1..=6 {
            a.push(frame(n, 1024), t0);
        }
        for n in 1..=6 {
            b.push(frame(n, 1024), t0);
        }
        assert!(budget.held() <= 10 * (1024 + 16 + ENTRY_COST));
        assert_eq!(a.len() + b.len(), 10);
        assert_eq!(budget.evicted(), 2);
        assert_eq!(
            b.len(),
            4,
            "the stream that pushed past the budget gave up its own"
        );
        drop(a);
        drop(b);
        assert_eq!(budget.held(), 0, "everything given back");
    }

    #[test]
    fn a_stream_is_worth_keeping_while_it_holds_messages_or_was_used_within_the_ttl() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut s = stream(100, ttl, 1 << 20);
        assert!(!s.is_live(t0), "never used");
        s.touch(t0);
        assert!(s.is_live(t0 + ttl));
        assert!(!s.is_live(t0 + ttl + Duration::from_secs(1)));
        s.push(frame(1, 16), t0 + Duration::from_secs(20));
        assert!(s.is_live(t0 + Duration::from_secs(29)));
        assert!(!s.is_live(t0 + Duration::from_secs(31)));
    }

    #[test]
    fn epochs_differ() {
        let epochs: std::collections::HashSet<Arc<str>> = (0..1000).map(|_| new_epoch()).collect();
        assert_eq!(epochs.len(), 1000);
        assert!(epochs.iter().all(|e| e.len() == 12));
    }
}
