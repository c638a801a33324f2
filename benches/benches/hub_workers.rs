//! The cross-worker hub end to end, with 1, 2, 4, 8 and 16 workers on real OS threads: one
//! publisher publishes 64-byte binary frames to one topic with 1,000 or 10,000 subscribers
//! spread evenly over the workers, and a batch is timed from its first publish until every
//! worker has put every publish of it into every one of its subscribers' outboxes and flushed
//! them.
//!
//! **Numbers on a 2-core machine cannot show scaling past 2 threads**: with N workers and the
//! publisher there are N + 1 threads, so from N = 2 on they share 2 cores, and the timed rates
//! below show what 2 cores do together, not how the hub scales. What carries over to a bigger
//! machine is the CPU time per delivery and per publish; the projection is built from those.
//!
//! Two entries per case: `wsgate`, the gateway's small-frame path since c984503 (deliveries in
//! a row to the same subscribers written once into a shared batch buffer of at most 16 KiB,
//! one reference per subscriber per batch), and `copy-per-subscriber`, the path before it
//! (each 66-byte frame copied into each subscriber's outbox with `push_shared`).
//!
//! One run (`cargo bench -p wsgate-benches --bench hub_workers -- --warm-up-time 1
//! --measurement-time 3`) on `lscpu` model name "AMD EPYC", 2 vCPUs in a VM, shared with other
//! engineers' builds and benches (load average 2.2 at the start, 6.0 at the end; an earlier run
//! of the same cases differed by up to 2x in either direction, so read only differences larger
//! than that). Criterion's medians, publishes/s = 1 / time per publish:
//!
//! | entry | N | 1,000 subs: publishes/s | deliveries/s | 10,000 subs: publishes/s | deliveries/s |
//! | --- | --- | --- | --- | --- | --- |
//! | wsgate | 1 | 1,170,800 | 1.17 G | 23,320 | 233 M |
//! | wsgate | 2 | 1,505,300 | 1.51 G | 20,770 | 208 M |
//! | wsgate | 4 | 1,080,800 | 1.08 G | 24,780 | 248 M |
//! | wsgate | 8 | 615,800 | 616 M | 19,990 | 200 M |
//! | wsgate | 16 | 156,200 | 156 M | 16,460 | 165 M |
//! | copy-per-subscriber | 1 | 23,130 | 23.1 M | 2,396 | 24.0 M |
//! | copy-per-subscriber | 2 | 54,010 | 54.0 M | 2,629 | 26.3 M |
//! | copy-per-subscriber | 4 | 38,160 | 38.2 M | 3,784 | 37.8 M |
//! | copy-per-subscriber | 8 | 38,640 | 38.6 M | 7,943 | 79.4 M |
//! | copy-per-subscriber | 16 | 32,240 | 32.2 M | 6,523 | 65.2 M |
//!
//! (N: workers.) CPU time of the same run (the stderr lines), for 1, 2, 4, 8, 16 workers:
//!
//! - `wsgate` workers, per delivery: 0.71, 0.91, 1.11, 2.31, 8.57 ns (1,000 subscribers, with
//!   127, 126, 115, 57, 19.5 frames per batch); 4.11, 4.54, 4.06, 4.76, 5.21 ns (10,000, 25.9
//!   frames per batch: a bench batch is 26 publishes). Per subscriber per batch that is 90 to
//!   167 ns: the cost goes with batches, not frames.
//! - `copy-per-subscriber` workers, per delivery: 43.7, 25.6, 26.9, 25.2, 28.4 ns (1,000
//!   subscribers); 41.1, 39.9, 35.0, 24.9, 26.6 ns (10,000).
//! - The publisher thread, per publish, publishing and waiting for the workers: `wsgate` 160,
//!   200, 288, 636, 2,502 ns (1,000 subscribers) and 648, 900, 1,228, 1,933, 2,660 ns (10,000);
//!   `copy-per-subscriber` 352, 241, 352, 499, 2,725 ns and 1,827, 2,103, 2,829, 4,182, 5,768 ns.
//!   Inbox wake-ups: about one per worker per bench batch (0.004 per publish per worker with
//!   batches of 256, 0.04 with 26), except `wsgate` to 1,000 subscribers at 16 workers, where
//!   the workers caught up with the publisher: 0.051 per publish per worker, 13 times as many,
//!   and its 640 us per bench batch over 209 wake-ups put one wake-up (an eventfd write that
//!   wakes a sleeping thread, with the pushes and the waits counted in) at 3 us at most.
//!
//! On paper, for 16 cores (16 workers and the publisher, from the numbers above):
//!
//! - Per delivery with 1 worker: 44 ns (1,000 subscribers) and 41 ns (10,000) copied per
//!   subscriber, 23 to 24 M deliveries per worker-second into outboxes flushed to a sink, no
//!   syscall; batched as the gateway now does, about 100 ns per subscriber per batch, so
//!   0.7 ns per delivery at 127 frames per batch and 4.1 ns at 26.
//! - Cross-worker overhead, 16 workers against 1: on the workers, per subscriber per batch,
//!   90 to 167 ns (1.9x) at 1,000 subscribers and 106 to 135 ns (1.3x) at 10,000, while a
//!   copied delivery got cheaper (44 to 28 ns, 41 to 27 ns: each worker's outboxes are a
//!   smaller working set); and with more workers each catches up sooner and its batches shrink
//!   (127 to 19.5 frames at 1,000 subscribers), so the batched cost per delivery went from
//!   0.71 to 8.57 ns. On the publisher, one push per worker per publish plus the wake-ups:
//!   0.16 to 2.5 us per publish (1,000 subscribers) and 0.65 to 2.7 us (10,000) from 1 to 16
//!   workers (`wsgate`), 2.5 and 0.27 ns per delivery.
//! - Expected on 16 cores, copied: deliveries/s = per-worker rate x workers = 16 x 23 to 24 M,
//!   370 to 390 M/s (370 K publishes/s to 1,000 subscribers, 39 K to 10,000; 560 to 600 M at
//!   the 16-worker cost per delivery); the publisher's pushes bound it at 1 / 2.7 us = 370 K
//!   publishes/s to 1,000 (as much as the workers) and 1 / 5.8 us = 170 K to 10,000 (4.5x).
//!   Batched: a worker with 625 subscribers (10,000 over 16) needs about 85 us per batch
//!   whatever the batch holds (up to 248 frames), and one with 63 about 10 us, so the workers
//!   keep up with a publisher of up to about 3 M publishes/s and the publisher is the bound:
//!   1 / 2.5 to 2.7 us, about 400 K publishes/s, 0.4 G deliveries/s to 1,000 subscribers and
//!   3.8 G to 10,000. The catch: workers that keep up go to sleep, and a publisher that must
//!   wake 16 workers per publish pays up to 16 x 3 us = 48 us, about 20 K publishes/s; it does
//!   not pay that while the inboxes stay non-empty.
//! - With real sockets the kernel's send dominates: `compare.sh` measured 1.3 to 2.5 M fanout
//!   deliveries per server CPU-second (commits 6f3475d and c984503), so a 16-core node would be
//!   bounded near 16 x 2 M = 32 M deliveries/s by its sends, far below either bound above: the
//!   hub's part (inbox, outbox, flush) is about 8% of a delivery's cost copied and 0.2 to 2%
//!   batched.
//!
//! What runs:
//!
//! - Each worker is a thread with its own `mio::Poll` and a `mio::Waker` registered in it; the
//!   wakers are the hub's (`Hub::new(wakers)`, `Wake for mio::Waker`), as `server.rs` builds
//!   them, so a push onto an empty inbox writes the worker's eventfd and the worker wakes from
//!   `epoll_wait`. Its loop is the gateway's, reduced to the hub's part: poll (no wait while
//!   its inbox still holds deliveries, as `Worker::poll_timeout`), `Hub::drain_at_most` with the
//!   gateway's budget of 1,024, each delivery looked up by topic name in the worker's own
//!   subscriber sets (a `HashSet` per topic, as `PubSub::subscribers`) and queued as
//!   `Connections::deliver` and `finish_batch` do: `wsgate` appends the frame to the open batch
//!   (or closes it and opens one for this set), and at the end of the turn pushes the batch
//!   into every subscriber's `Outbox` (`push_frames`, one `Bytes` reference each);
//!   `copy-per-subscriber` pushes the frame into each outbox (`push_shared`). Each push checks
//!   the outbox's held bytes against the default 8 MiB limit and lists the subscriber for the
//!   turn's flush; then every listed outbox is flushed into `io::sink()`
//!   (`Worker::flush_dirty`, without the socket). The slab lookup with its generation check,
//!   metrics and acks are left out.
//! - The publisher is the bench's own thread, outside the workers (as `POST /publish` or the
//!   cluster's receiver: `from` is `usize::MAX`), so every delivery crosses an inbox, the
//!   1-worker case included. Per publish it builds the frame once (`OutFrame::new` over one
//!   `Bytes`) and calls `Hub::publish_remote`, one push (an `Arc<Topic>` and a payload
//!   reference) per worker. It publishes a batch (256 publishes to 1,000 subscribers, 26 to
//!   10,000: about 256 K and 260 K deliveries, so no outbox holds more than 17 KiB) as fast as
//!   it can, then parks until every worker has delivered and flushed the whole batch (the
//!   worker whose turn completes the batch's count unparks it). Inboxes are unbounded
//!   (`Hub::new`); the batch bounds them. Subscriber `i` lives on worker `i % N`.
//! - One iteration is one publish: criterion's time per iteration is the end-to-end time per
//!   publish (publishes/s = 1 / time) and its throughput is in deliveries (one per subscriber).
//! - After each case the bench prints a line to stderr with what criterion cannot show: the
//!   CPU time the publisher thread spent per publish (from the start of the first timed batch
//!   to the end of the last: publishing and waiting) and the workers spent per delivery (their
//!   whole loop: polls, drains, pushes, flushes), from `/proc/thread-self/schedstat`
//!   (nanoseconds on a CPU, warm-up included), the inbox wake-ups (eventfd writes) per publish
//!   per worker, and for `wsgate` the frames per batch. It also checks that every subscriber
//!   got every publish, byte for byte, and that no outbox went over its limit.
//!
//! On a machine with fewer cores than workers + 1 the threads share the cores (the 1-worker case
//! already uses two: the publisher on one, the worker on the other), and the CPU times then
//! include the cost of sharing caches with the threads that run in between. mimalloc is the
//! global allocator, as in the gateway binary.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mio::{Events, Poll, Token, Waker};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};
use wsgate::hub::{Hub, Topic, Wake};
use wsgate::outbox::{COPY_MAX, Outbox};
use wsgate_core::frame::{OpCode, OutFrame};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: usize = 64;
const WORKERS: [usize; 5] = [1, 2, 4, 8, 16];
const SUBSCRIBERS: [usize; 2] = [1_000, 10_000];
/// Deliveries a worker takes from its inbox per turn of its loop (the gateway's `INBOX_BUDGET`).
const INBOX_BUDGET: usize = 1024;
/// The gateway's default outbox limit (`limits.outbox_limit`).
const OUTBOX_LIMIT: usize = 8 << 20;
/// How long an idle worker waits in `poll` before it looks at the stop flag again.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How long the publisher waits for one batch before it gives up (a lost wake-up or a dead
/// worker fails the bench instead of hanging it).
const BATCH_DEADLINE: Duration = Duration::from_secs(60);
const WAKER: Token = Token(0);
const TOPIC: &str = "news";

/// Nanoseconds this thread has spent on a CPU, if the kernel tells (`schedstat`). The kernel
/// brings a running thread's count up to date only at a tick or a switch, so this is read only
/// around spans of seconds, where that error (a few ms) is small.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// What one worker has done so far, on its own cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Progress {
    /// Deliveries (publishes) taken from the inbox and delivered and flushed.
    publishes: AtomicU64,
    /// Frames pushed into subscribers' outboxes.
    deliveries: AtomicU64,
    /// Bytes flushed into the sink.
    bytes: AtomicU64,
    /// Pushes that left an outbox over its limit (never, with the batches used).
    over_limit: AtomicU64,
    /// Batches of small frames queued (`Mode::Batched`), and the frames they held.
    batches: AtomicU64,
    batched_frames: AtomicU64,
    /// The worker's CPU time, recorded when it stops.
    cpu_ns: AtomicU64,
}

/// What the publisher and the workers share besides the hub.
struct Shared {
    stop: AtomicBool,
    /// The publishes every worker must have delivered for the batch in flight to be done.
    target: AtomicU64,
    progress: Box<[Progress]>,
    /// The publisher, to unpark when a worker made progress.
    publisher: Thread,
}

/// How a worker queues a small delivery to its subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The gateway's path since c984503 (`Connections::deliver` and `finish_batch`): small
    /// frames delivered in a row to the same subscriber set are written once into one batch
    /// buffer (at most 16 KiB), which every subscriber's outbox then shares
    /// (`Outbox::push_frames`), at the end of the turn or when the batch is full.
    Batched,
    /// The path before it: each delivery copied into each subscriber's outbox
    /// (`Outbox::push_shared`, which copies a frame of at most `COPY_MAX` bytes).
    Copied,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Batched => "wsgate",
            Mode::Copied => "copy-per-subscriber",
        }
    }
}

/// The largest batch (the gateway's `conn::batch::BATCH_MAX`).
const BATCH_MAX: usize = 16 * 1024;

/// One subscriber: its write queue and whether it is listed for this turn's flush.
struct Subscriber {
    outbox: Outbox,
    listed: bool,
}

/// Small frames waiting to be queued to one subscriber set (the gateway's `Batch`).
struct Batch {
    /// The set's address: the worker's sets never change during a run.
    audience: usize,
    subscribers: Vec<usize>,
    bytes: Vec<u8>,
    frames: u64,
}

/// A worker's own state: its subscribers, the turn's flush list, the open batch.
struct Local {
    subscribers: Vec<Subscriber>,
    dirty: Vec<usize>,
    batch: Option<Batch>,
    /// Frames queued to outboxes, all subscribers together.
    deliveries: u64,
    /// Queueings that left an outbox over its limit.
    over: u64,
    /// Batches queued, and the frames they held.
    batches: u64,
    batched_frames: u64,
}

impl Local {
    /// Queues one outbox item to subscriber `i` and lists it for the turn's flush.
    fn queue(&mut self, i: usize, push: impl FnOnce(&mut Outbox)) {
        let s = &mut self.subscribers[i];
        push(&mut s.outbox);
        if s.outbox.held_bytes() > OUTBOX_LIMIT {
            self.over += 1;
        }
        if !s.listed {
            s.listed = true;
            self.dirty.push(i);
        }
    }

    /// One delivery to the subscribers `ids`.
    fn deliver(&mut self, ids: &HashSet<usize>, frame: &OutFrame, mode: Mode) {
        if mode == Mode::Batched && frame.wire_len() <= COPY_MAX {
            let audience = std::ptr::from_ref(ids) as usize;
            if let Some(batch) = &mut self.batch
                && batch.audience == audience
                && batch.bytes.len() + frame.wire_len() <= BATCH_MAX
            {
                batch.bytes.extend_from_slice(frame.header());
                batch.bytes.extend_from_slice(frame.payload());
                batch.frames += 1;
                return;
            }
            self.finish_batch();
            let mut bytes = Vec::new();
            bytes.extend_from_slice(frame.header());
            bytes.extend_from_slice(frame.payload());
            self.batch = Some(Batch {
                audience,
                subscribers: ids.iter().copied().collect(),
                bytes,
                frames: 1,
            });
            return;
        }
        self.finish_batch();
        for &i in ids {
            self.queue(i, |outbox| outbox.push_shared(frame));
            self.deliveries += 1;
        }
    }

    /// Queues the open batch, if any, to each of its subscribers: one shared buffer each.
    fn finish_batch(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let bytes = Bytes::from(batch.bytes);
        for &i in &batch.subscribers {
            self.queue(i, |outbox| outbox.push_frames(bytes.clone()));
        }
        self.deliveries += batch.frames * batch.subscribers.len() as u64;
        self.batches += 1;
        self.batched_frames += batch.frames;
    }
}

/// The loop of worker `w`: what a gateway worker does with the hub.
fn run_worker(
    w: usize,
    mut poll: Poll,
    hub: Arc<Hub>,
    shared: Arc<Shared>,
    local: usize,
    mode: Mode,
) {
    let mut state = Local {
        subscribers: (0..local)
            .map(|_| Subscriber {
                outbox: Outbox::new(),
                listed: false,
            })
            .collect(),
        dirty: Vec::with_capacity(local),
        batch: None,
        deliveries: 0,
        over: 0,
        batches: 0,
        batched_frames: 0,
    };
    let mut topics: HashMap<Arc<str>, HashSet<usize>> = HashMap::new();
    topics.insert(Arc::from(TOPIC), (0..local).collect());
    let mut events = Events::with_capacity(16);
    let mut sink = io::sink();
    let progress = &shared.progress[w];
    let (mut publishes, mut bytes) = (0u64, 0u64);
    let cpu_start = thread_cpu_ns();
    loop {
        let timeout = if hub.inbox_depth(w) > 0 {
            Duration::ZERO
        } else {
            IDLE_POLL
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            panic!("worker {w}: poll: {e}");
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let taken = hub.drain_at_most(w, INBOX_BUDGET, |d| {
            if let Some(ids) = topics.get(d.topic.name()) {
                state.deliver(ids, d.frame.plain(), mode);
            }
        });
        // the end of the turn: the open batch is queued, then every listed outbox flushed
        state.finish_batch();
        let mut dirty = std::mem::take(&mut state.dirty);
        for i in dirty.drain(..) {
            let s = &mut state.subscribers[i];
            s.listed = false;
            bytes += s
                .outbox
                .flush(&mut sink)
                .expect("a sink takes everything")
                .bytes as u64;
        }
        state.dirty = dirty;
        if taken > 0 {
            publishes += taken as u64;
            progress.over_limit.store(state.over, Ordering::Relaxed);
            progress.batches.store(state.batches, Ordering::Relaxed);
            progress
                .batched_frames
                .store(state.batched_frames, Ordering::Relaxed);
            progress
                .deliveries
                .store(state.deliveries, Ordering::Relaxed);
            progress.bytes.store(bytes, Ordering::Relaxed);
            progress.publishes.store(publishes, Ordering::Release);
            // the batch's target was stored before its first push, which this drain saw
            if publishes >= shared.target.load(Ordering::Acquire) {
                shared.publisher.unpark();
            }
        }
    }
    if let (Some(start), Some(end)) = (cpu_start, thread_cpu_ns()) {
        progress.cpu_ns.store(end - start, Ordering::Relaxed);
    }
}

/// N worker threads with their subscribers of one topic, and the publisher's side.
struct Workers {
    hub: Arc<Hub>,
    topic: Arc<Topic>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    workers: usize,
    subscribers: usize,
    mode: Mode,
    /// Publishes made so far (every worker has delivered them all between batches).
    published: u64,
    /// Time spent in timed batches.
    timed: Duration,
    /// The publisher thread's CPU time at the start of the first timed batch and at the end of
    /// the last.
    publisher_cpu: Option<(u64, u64)>,
}

impl Workers {
    fn start(workers: usize, subscribers: usize, mode: Mode) -> io::Result<Workers> {
        let mut polls = Vec::with_capacity(workers);
        let mut wakers: Vec<Box<dyn Wake>> = Vec::with_capacity(workers);
        for _ in 0..workers {
            let poll = Poll::new()?;
            wakers.push(Box::new(Waker::new(poll.registry(), WAKER)?));
            polls.push(poll);
        }
        let hub = Arc::new(Hub::new(wakers));
        let topic = hub.topic(TOPIC);
        let mut local = vec![0usize; workers];
        for i in 0..subscribers {
            let w = i % workers;
            hub.subscribed(w, &topic, local[w] == 0);
            local[w] += 1;
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            target: AtomicU64::new(0),
            progress: (0..workers).map(|_| Progress::default()).collect(),
            publisher: std::thread::current(),
        });
        let threads = polls
            .into_iter()
            .enumerate()
            .map(|(w, poll)| {
                let (hub, shared, local) = (hub.clone(), shared.clone(), local[w]);
                std::thread::Builder::new()
                    .name(format!("hub-worker-{w}"))
                    .spawn(move || run_worker(w, poll, hub, shared, local, mode))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Workers {
            hub,
            topic,
            shared,
            threads,
            workers,
            subscribers,
            mode,
            published: 0,
            timed: Duration::ZERO,
            publisher_cpu: None,
        })
    }

    /// Publishes `n` frames, then waits until every worker has delivered them all; returns the
    /// time from the first publish to the last delivery.
    fn batch(&mut self, n: u64, payload: &[u8]) -> Duration {
        let target = self.published + n;
        self.shared.target.store(target, Ordering::Release);
        let start = Instant::now();
        for _ in 0..n {
            let frame = OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(payload));
            self.hub
                .publish_remote(usize::MAX, &self.topic, &frame.clone().into());
        }
        let deadline = start + BATCH_DEADLINE;
        let progress = &self.shared.progress;
        while !progress
            .iter()
            .all(|p| p.publishes.load(Ordering::Acquire) >= target)
        {
            let now = Instant::now();
            assert!(
                now < deadline,
                "{} workers: a batch was not delivered within {BATCH_DEADLINE:?}",
                self.workers
            );
            std::thread::park_timeout((deadline - now).min(Duration::from_millis(100)));
        }
        let elapsed = start.elapsed();
        self.published = target;
        elapsed
    }

    /// Criterion's `iter_custom`: `iters` publishes in batches of `batch`.
    fn timed(&mut self, iters: u64, batch: u64, payload: &[u8]) -> Duration {
        let cpu_start = thread_cpu_ns();
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(batch);
            total += self.batch(n, payload);
            left -= n;
        }
        self.timed += total;
        // criterion does next to nothing between two calls: the span from the first call's start
        // to the last call's end is the publisher's
        if let (Some(start), Some(end)) = (cpu_start, thread_cpu_ns()) {
            let first = self.publisher_cpu.map_or(start, |(first, _)| first);
            self.publisher_cpu = Some((first, end));
        }
        total
    }

    /// Stops and joins the workers; checks that every subscriber got every publish; prints the
    /// case's summary line.
    fn finish(mut self, wire: usize) {
        self.stop();
        let p = &self.shared.progress;
        let deliveries: u64 = p.iter().map(|p| p.deliveries.load(Ordering::Relaxed)).sum();
        let bytes: u64 = p.iter().map(|p| p.bytes.load(Ordering::Relaxed)).sum();
        let over: u64 = p.iter().map(|p| p.over_limit.load(Ordering::Relaxed)).sum();
        let worker_cpu: u64 = p.iter().map(|p| p.cpu_ns.load(Ordering::Relaxed)).sum();
        let batches: u64 = p.iter().map(|p| p.batches.load(Ordering::Relaxed)).sum();
        let batched: u64 = p
            .iter()
            .map(|p| p.batched_frames.load(Ordering::Relaxed))
            .sum();
        let expected = self.published * self.subscribers as u64;
        assert_eq!(deliveries, expected, "every subscriber got every publish");
        assert_eq!(bytes, expected * wire as u64, "and flushed every byte");
        assert_eq!(over, 0, "no outbox went over its limit");
        if self.published == 0 {
            return; // filtered out
        }
        let wakeups: u64 = (0..self.workers).map(|w| self.hub.inbox_wakeups(w)).sum();
        let secs = self.timed.as_secs_f64();
        let publisher_cpu = self.publisher_cpu.map_or(0, |(first, last)| last - first);
        let per_batch = if batches > 0 {
            format!("; {:.1} frames per batch", batched as f64 / batches as f64)
        } else {
            String::new()
        };
        eprintln!(
            "hub-workers {} {} workers x {} subscribers: {} publishes timed in {:.2} s: \
             {:.0} publishes/s, {:.3} M deliveries/s; publisher thread CPU {:.0} ns/publish; \
             workers CPU {:.2} ns/delivery ({:.2} M deliveries per worker CPU-s); \
             {:.3} wake-ups per publish per worker{}",
            self.mode.name(),
            self.workers,
            self.subscribers,
            self.published,
            secs,
            self.published as f64 / secs,
            deliveries as f64 / secs / 1e6,
            publisher_cpu as f64 / self.published as f64,
            worker_cpu as f64 / deliveries as f64,
            deliveries as f64 / worker_cpu as f64 * 1e3,
            wakeups as f64 / self.published as f64 / self.workers as f64,
            per_batch,
        );
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.hub.wake_all();
        for t in self.threads.drain(..) {
            if let Err(e) = t.join()
                && !std::thread::panicking()
            {
                std::panic::resume_unwind(e);
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // on a panic too: no thread is left behind
        self.stop();
    }
}

fn hub_workers(c: &mut Criterion) {
    let payload = [0xa5u8; PAYLOAD];
    let wire = OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(&payload)).wire_len();
    for subscribers in SUBSCRIBERS {
        // about 256 K deliveries per batch; at most 256 frames (17 KiB) in an outbox
        let batch = (262_144 / subscribers).clamp(1, 256) as u64;
        let mut group = c.benchmark_group(format!("hub-workers-64B/{subscribers}-subscribers"));
        group.throughput(Throughput::Elements(subscribers as u64));
        group.sample_size(10);
        for mode in [Mode::Batched, Mode::Copied] {
            for workers in WORKERS {
                let mut w =
                    Workers::start(workers, subscribers, mode).expect("poll, waker and threads");
                group.bench_function(format!("{}/{workers}-workers", mode.name()), |b| {
                    b.iter_custom(|iters| w.timed(iters, batch, &payload))
                });
                w.finish(wire);
            }
        }
        group.finish();
    }
}

criterion_group!(benches, hub_workers);
criterion_main!(benches);
