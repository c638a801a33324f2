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
//!
//! **In a cluster** (`--redis`) the offsets and the epoch are Redis', and each node's stream is
//! a *mirror* of the topic's stream in Redis ([`Stream::mirror`]): the messages arrive from
//! Redis numbered ([`Stream::append`]), and the mirror is *primed* from Redis' stream
//! ([`Stream::prime`]) when the node starts listening to the topic, after its link to Redis
//! came back, and when an offset jumped. Until then arrivals are held, in order, so that the
//! mirror never shows a hole: a message that follows what the mirror has goes out; a
//! duplicate is dropped; a jump or a new epoch either is filled from Redis or becomes a
//! [`Event::Gap`] that tells the subscribers to refetch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wsgate_core::deflate::SharedFrame;

/// What keeping one message costs beyond its payload: its entry in the ring and the frame's
/// references.
pub const ENTRY_COST: usize = 64;

/// The memory every stream of the node shares: what the streams keep, and, apart from it,
/// what mirrors hold while they wait to be primed; each bounded by the limit.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: AtomicUsize,
    evicted: AtomicU64,
    waiting: AtomicUsize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            held: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
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

    /// Bytes the mirrors of the node hold while they wait to be primed.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
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
    /// For a mirror of a stream in Redis: whether it is primed, and what arrived meanwhile.
    mirror: Option<Mirror>,
}

/// The state of a mirror ([`Stream::mirror`]).
#[derive(Debug, Default)]
struct Mirror {
    primed: bool,
    /// Arrivals held until the mirror is primed, in the order they came.
    held: VecDeque<Arrival>,
    /// What the held arrivals weigh, in payload bytes.
    held_bytes: usize,
}

/// Arrivals a mirror holds at most while it waits to be primed; past them (or
/// [`MAX_HELD_BYTES`], or when the node's mirrors together would hold more than the budget's
/// limit) it lets them go, and the priming fills the hole from Redis (or tells of a gap).
pub const MAX_HELD: usize = 65_536;
/// Payload bytes a mirror holds at most while it waits to be primed.
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// A message from Redis, numbered there.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Its offset.
    pub offset: u64,
    /// The epoch of the stream it belongs to.
    pub epoch: Arc<str>,
    /// Its frame, numbered.
    pub frame: SharedFrame,
}

/// What the subscribers of a mirrored topic are to get, in this order.
#[derive(Debug, Clone)]
pub enum Event {
    /// The message of this offset.
    Message(u64, SharedFrame),
    /// A notice that messages are missing before what follows (an epoch changed, an offset
    /// jumped past what Redis still keeps).
    Gap,
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
            mirror: None,
        }
    }

    /// An empty mirror of a stream in Redis, not primed: its epoch is empty until it is.
    pub fn mirror(size: usize, ttl: Duration, budget: Arc<Budget>) -> Stream {
        let mut stream = Stream::new(Arc::from(""), size, ttl, budget);
        stream.mirror = Some(Mirror::default());
        stream
    }

    /// Whether the stream mirrors one in Redis.
    pub fn is_mirror(&self) -> bool {
        self.mirror.is_some()
    }

    /// Whether the stream follows its source: always for a node's own stream; for a mirror,
    /// once primed and until [`unprime`](Self::unprime)d.
    pub fn is_primed(&self) -> bool {
        self.mirror.as_ref().is_none_or(|m| m.primed)
    }

    /// Whether the stream has a position clients may hold: an epoch (a mirror has none until
    /// first primed).
    pub fn has_position(&self) -> bool {
        !self.epoch.is_empty()
    }

    /// Marks a mirror as no longer following Redis (this node stopped listening to the topic,
    /// or its link to Redis was replaced): arrivals are held until it is primed again.
    pub fn unprime(&mut self) {
        if let Some(m) = &mut self.mirror {
            m.primed = false;
        }
    }

    /// Takes a message that arrived from Redis into a mirror, and says what the subscribers
    /// get (`out`). Returns true when the mirror needs priming: it was not primed (the arrival
    /// is held) or the offset jumped (held too; the mirror is no longer primed).
    pub fn append(&mut self, arrival: Arrival, now: Instant, out: &mut Vec<Event>) -> bool {
        if self.mirror.is_none() {
            return false;
        }
        if !self.is_primed() {
            self.hold(arrival);
            return true;
        }
        if arrival.epoch != self.epoch {
            // Redis' stream is not the one the subscribers followed
            out.push(Event::Gap);
            self.restart(arrival.epoch.clone(), arrival.offset - 1);
        }
        if arrival.offset <= self.last {
            return false; // had it
        }
        if arrival.offset > self.last + 1 {
            self.unprime();
            self.hold(arrival);
            return true;
        }
        self.push(arrival.frame.clone(), now);
        out.push(Event::Message(arrival.offset, arrival.frame));
        false
    }

    fn hold(&mut self, arrival: Arrival) {
        let size = arrival.frame.plain().payload().len() + ENTRY_COST;
        let Some(m) = &self.mirror else {
            return;
        };
        let node_full = self.budget.waiting() + size > self.budget.limit;
        if m.held.len() >= MAX_HELD || m.held_bytes + size > MAX_HELD_BYTES || node_full {
            // the priming reads them from Redis (or tells of a gap)
            drop(self.take_held());
        }
        let Some(m) = &mut self.mirror else {
            return;
        };
        m.held_bytes += size;
        self.budget.waiting.fetch_add(size, Ordering::Relaxed);
        m.held.push_back(arrival);
    }

    /// Takes what the mirror held, giving its bytes back to the node's budget.
    fn take_held(&mut self) -> VecDeque<Arrival> {
        let Some(m) = &mut self.mirror else {
            return VecDeque::new();
        };
        self.budget
            .waiting
            .fetch_sub(std::mem::take(&mut m.held_bytes), Ordering::Relaxed);
        std::mem::take(&mut m.held)
    }

    /// Forgets every kept message and starts over in `epoch` after offset `last`.
    fn restart(&mut self, epoch: Arc<str>, last: u64) {
        while !self.entries.is_empty() {
            self.pop();
        }
        self.epoch = epoch;
        self.last = last;
    }

    /// Primes a mirror with what Redis has: the stream's `epoch` and `last` offset, and the
    /// kept messages after the mirror's last offset (every kept one when the epoch is not the
    /// mirror's), in order. Messages that follow what the mirror had are for the subscribers
    /// (`out`); a stream that changed epoch, or lost messages the mirror did not have, gives a
    /// [`Event::Gap`] first (when the mirror had a position) and starts over. Then the held
    /// arrivals go through [`append`](Self::append). Returns true when they need another
    /// priming (an offset jumped among them).
    pub fn prime(
        &mut self,
        epoch: &str,
        last: u64,
        entries: Vec<(u64, SharedFrame)>,
        now: Instant,
        out: &mut Vec<Event>,
    ) -> bool {
        if self.mirror.is_none() {
            return false;
        }
        let same = self.has_position() && *self.epoch == *epoch;
        let follows = match entries.iter().find(|(o, _)| *o > self.last) {
            Some((first, _)) => *first == self.last + 1,
            None => last == self.last,
        };
        if same && last >= self.last && follows {
            for (offset, frame) in entries {
                if offset == self.last + 1 {
                    self.push(frame.clone(), now);
                    out.push(Event::Message(offset, frame));
                }
            }
        } else {
            if self.has_position() {
                out.push(Event::Gap);
            }
            let start = entries.first().map_or(last, |(o, _)| o - 1);
            self.restart(Arc::from(epoch), start);
            for (offset, frame) in entries {
                if offset == self.last + 1 {
                    self.push(frame, now);
                }
            }
            if self.last != last {
                // what is kept must run up to the last offset, or recoveries would miss the end
                self.restart(Arc::from(epoch), last);
            }
        }
        // what Redis dropped from the end (ttl) is older than its last: the mirror is at it
        self.last = self.last.max(last);
        self.touched = Some(now);
        if let Some(m) = &mut self.mirror {
            m.primed = true;
        }
        let held = self.take_held();
        let mut held = held.into_iter();
        while let Some(arrival) = held.next() {
            if self.append(arrival, now, out) {
                for rest in held {
                    self.hold(rest);
                }
                return true;
            }
        }
        false
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

    /// The most messages kept.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How long a message is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
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
        drop(self.take_held());
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

    // ---- mirrors of a stream in Redis ----

    fn mirror() -> Stream {
        Stream::mirror(100, Duration::from_secs(60), Arc::new(Budget::new(1 << 20)))
    }

    fn arrival(offset: u64, epoch: &str) -> Arrival {
        Arrival {
            offset,
            epoch: Arc::from(epoch),
            frame: frame(offset, 8),
        }
    }

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, SharedFrame)> {
        range.map(|o| (o, frame(o, 8))).collect()
    }

    /// The events as text: `m4` for the message of offset 4, `gap`.
    fn told(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Message(o, f) => {
                    assert_eq!(&f.plain().payload()[..8], &o.to_be_bytes(), "its own frame");
                    format!("m{o}")
                }
                Event::Gap => "gap".into(),
            })
            .collect()
    }

    #[test]
    fn a_mirror_holds_arrivals_until_primed_then_keeps_what_redis_has_and_sends_what_follows() {
        let t = Instant::now();
        let mut m = mirror();
        let mut out = Vec::new();
        assert!(!m.is_primed() && !m.has_position());
        assert!(m.append(arrival(3, "E"), t, &mut out), "needs priming");
        assert!(m.append(arrival(4, "E"), t, &mut out));
        assert!(out.is_empty(), "nothing goes out before the priming");
        // Redis had 1..=3 when the priming read it: kept, not sent (nobody had a position)
        assert!(!m.prime("E", 3, entries(1..=3), t, &mut out));
        assert_eq!(told(&out), ["m4"], "the held 3 was a duplicate; 4 follows");
        assert!(m.is_primed() && m.has_position());
        assert_eq!((m.last_offset(), &**m.epoch()), (4, "E"));
        assert_eq!(offsets(&m.since(0, "E", t).unwrap()), [1, 2, 3, 4]);

        out.clear();
        assert!(!m.append(arrival(5, "E"), t, &mut out));
        assert!(!m.append(arrival(5, "E"), t, &mut out), "a duplicate");
        assert!(!m.append(arrival(2, "E"), t, &mut out), "an old one");
        assert_eq!(told(&out), ["m5"]);
    }

    #[test]
    fn a_jump_is_held_and_filled_by_the_next_priming_in_order() {
        let t = Instant::now();
        let mut m = mirror();
        let mut out = Vec::new();
        m.prime("E", 2, entries(1..=2), t, &mut out);
        assert!(
            m.append(arrival(5, "E"), t, &mut out),
            "3 and 4 are missing"
        );
        assert!(!m.is_primed());
        assert!(
            m.append(arrival(6, "E"), t, &mut out),
            "held behind the hole"
        );
        assert!(out.is_empty());
        assert_eq!(
            m.last_offset(),
            2,
            "recoveries still end where the mirror is whole"
        );
        // the priming reads what follows 2: 3..=5 (6 was published after the read)
        assert!(!m.prime("E", 5, entries(3..=5), t, &mut out));
        assert_eq!(told(&out), ["m3", "m4", "m5", "m6"]);
        assert_eq!(offsets(&m.since(2, "E", t).unwrap()), [3, 4, 5, 6]);
    }

    #[test]
    fn a_hole_redis_no_longer_keeps_is_a_gap_never_a_silent_one() {
        let t = Instant::now();
        let mut m = mirror();
        let mut out = Vec::new();
        m.prime("E", 2, entries(1..=2), t, &mut out);
        m.unprime(); // the link to Redis was replaced
        assert!(m.append(arrival(40, "E"), t, &mut out));
        // Redis keeps 30..=40 only
        assert!(!m.prime("E", 40, entries(30..=40), t, &mut out));
        assert_eq!(
            told(&out),
            ["gap"],
            "3..=29 are lost: told, and 30..=40 not sent as if whole"
        );
        assert_eq!(m.last_offset(), 40);
        assert_eq!(m.since(2, "E", t).err(), Some(Refusal::TooOld));
        assert_eq!(
            offsets(&m.since(29, "E", t).unwrap()),
            (30..=40).collect::<Vec<_>>()
        );

        // every message expired in Redis: nothing to fill with
        out.clear();
        m.unprime();
        assert!(!m.prime("E", 50, Vec::new(), t, &mut out));
        assert_eq!(told(&out), ["gap"]);
        assert_eq!((m.last_offset(), m.len()), (50, 0));
        assert_eq!(m.since(49, "E", t).err(), Some(Refusal::TooOld));
        assert_eq!(m.since(50, "E", t).map(|v| v.len()), Ok(0));
    }

    #[test]
    fn a_new_epoch_is_a_gap_and_starts_the_mirror_over() {
        let t = Instant::now();
        let mut m = mirror();
        let mut out = Vec::new();
        m.prime("E", 7, entries(1..=7), t, &mut out);
        // Redis restarted without its data: offsets start again in a new epoch
        assert!(!m.append(arrival(1, "F"), t, &mut out));
        assert_eq!(told(&out), ["gap", "m1"]);
        assert_eq!((m.last_offset(), &**m.epoch(), m.len()), (1, "F", 1));
        assert_eq!(m.since(7, "E", t).err(), Some(Refusal::Epoch));

        // found by the priming
        out.clear();
        m.unprime();
        assert!(!m.prime("G", 0, Vec::new(), t, &mut out));
        assert_eq!(told(&out), ["gap"]);
        assert_eq!((m.last_offset(), &**m.epoch(), m.len()), (0, "G", 0));

        // a mirror with no position yet tells nobody
        let mut fresh = mirror();
        out.clear();
        fresh.prime("H", 3, entries(1..=3), t, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_primed_mirror_with_nothing_new_sends_nothing_and_held_arrivals_are_bounded() {
        let t = Instant::now();
        let mut m = mirror();
        let mut out = Vec::new();
        m.prime("E", 3, entries(1..=3), t, &mut out);
        m.unprime();
        assert!(
            !m.prime("E", 3, entries(1..=3), t, &mut out),
            "read from 0 again"
        );
        assert!(out.is_empty());
        assert_eq!(m.len(), 3);

        m.unprime();
        for o in 4..4 + MAX_HELD as u64 + 10 {
            m.append(arrival(o, "E"), t, &mut out);
        }
        let held = m.mirror.as_ref().unwrap().held.len();
        assert!(held <= MAX_HELD, "{held}");
        // the priming fills what was let go
        let last = 3 + MAX_HELD as u64 + 10;
        assert!(!m.prime("E", last, entries(4..=last), t, &mut out));
        assert_eq!(out.len(), MAX_HELD + 10);
        assert!(matches!(out.last(), Some(Event::Message(o, _)) if *o == last));
    }

    #[test]
    fn what_the_node_s_mirrors_hold_together_is_bounded_by_the_budget() {
        let t = Instant::now();
        let cost = 8 + ENTRY_COST; // each arrival: 8 bytes of payload and its entry
        let budget = Arc::new(Budget::new(100 * cost));
        let ttl = Duration::from_secs(60);
        let (mut a, mut b) = (
            Stream::mirror(1000, ttl, budget.clone()),
            Stream::mirror(1000, ttl, budget.clone()),
        );
        let mut out = Vec::new();
        for o in 1..=80 {
            assert!(a.append(arrival(o, "E"), t, &mut out), "held");
        }
        assert_eq!(budget.waiting(), 80 * cost);
        // b was primed before (at offset 0 of F) and waits for a priming again
        assert!(!b.prime("F", 0, Vec::new(), t, &mut out));
        b.unprime();
        // b pushes the node past its limit: what b held is let go, never more than the limit
        for o in 1..=300 {
            b.append(arrival(o, "F"), t, &mut out);
            assert!(budget.waiting() <= 100 * cost, "{}", budget.waiting());
        }
        assert!(out.is_empty(), "nothing delivered before a priming");
        // a's priming hands out what it held, in order, and gives its bytes back
        assert!(!a.prime("E", 0, Vec::new(), t, &mut out));
        assert_eq!(out.len(), 80);
        let b_held = b.mirror.as_ref().unwrap().held.len();
        assert!(b_held < 300, "b let some go: {b_held}");
        assert_eq!(budget.waiting(), b_held * cost);
        // b's priming fills the hole from Redis' stream: every offset once, in order
        out.clear();
        assert!(!b.prime("F", 300, entries(1..=300), t, &mut out));
        let got: Vec<u64> = out
            .iter()
            .filter_map(|e| match e {
                Event::Message(o, _) => Some(*o),
                Event::Gap => None,
            })
            .collect();
        assert_eq!(got, (1..=300).collect::<Vec<_>>());
        assert_eq!(budget.waiting(), 0);
        // a dropped mirror gives back what it held
        a.unprime();
        a.append(arrival(81, "E"), t, &mut out);
        assert_eq!(budget.waiting(), cost);
        drop(a);
        assert_eq!(budget.waiting(), 0);
    }

    #[test]
    fn a_local_stream_is_always_primed_and_takes_no_arrivals() {
        let t = Instant::now();
        let mut s = stream(10, Duration::from_secs(60), 1 << 20);
        let mut out = Vec::new();
        assert!(s.is_primed() && !s.is_mirror());
        assert!(!s.append(arrival(1, "E"), t, &mut out));
        assert!(!s.prime("E", 1, entries(1..=1), t, &mut out));
        assert!(out.is_empty() && s.is_empty());
    }
}
