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
//! One run (`cargo bench -p wsgate-benches --bench hub_workers -- --warm-up-time 1
//! --measurement-time 3`) on `lscpu` model name "AMD EPYC", 2 vCPUs in a VM, shared with other
//! engineers' builds (load average 2.7 at the start, 5.8 at the end: differences under 2x
//! between neighbouring rows are noise; an earlier run of a previous version of this file, with
//! an extra unpark per worker turn, gave up to 3x these rates for 10,000 subscribers at 4 to 16
//! workers). Criterion's medians, publishes/s = 1 / time per publish:
//!
//! | workers | 1,000 subs: publishes/s | deliveries/s | 10,000 subs: publishes/s | deliveries/s |
//! | --- | --- | --- | --- | --- |
//! | 1 | 22,360 | 22.4 M | 3,071 | 30.7 M |
//! | 2 | 55,960 | 56.0 M | 3,659 | 36.6 M |
//! | 4 | 68,900 | 68.9 M | 4,330 | 43.3 M |
//! | 8 | 40,530 | 40.5 M | 3,927 | 39.3 M |
//! | 16 | 44,910 | 44.9 M | 3,256 | 32.6 M |
//!
//! CPU time of the same run (the stderr lines), for 1, 2, 4, 8, 16 workers:
//!
//! - workers, per delivery: 43.7, 22.5, 21.4, 23.0, 22.5 ns (1,000 subscribers); 32.6, 27.1,
//!   22.6, 25.2, 30.0 ns (10,000);
//! - publisher, per publish: 29, 100, 164, 243, 362 ns (1,000 subscribers, batches of 256);
//!   169, 1,319, 1,705, 2,575, 3,866 ns (10,000, batches of 26); that is, per batch, about
//!   5 to 6 us per worker in both, whether the batch holds 256 or 26 publishes: so the pushes
//!   cost tens of ns and the rest is, most likely, the one inbox wake-up per worker per batch
//!   (0.004 to 0.006 per publish per worker, and 0.04): an eventfd write that wakes a sleeping
//!   thread, in a VM an inter-processor interrupt (not profiled).
//!
//! On paper, for 16 cores (16 workers and the publisher, from the numbers above):
//!
//! - Per delivery with 1 worker: 44 ns (1,000 subscribers) and 33 ns (10,000) of the worker's
//!   CPU to take a 64-byte publish from its inbox, copy it into each subscriber's outbox and
//!   flush that into a sink: 23 to 31 M deliveries per worker-second, with no syscall.
//! - Cross-worker overhead, N workers against 1: none measurable on the workers (21 to 30 ns
//!   per delivery at 2 to 16 workers, lower than at 1: each worker's outboxes are a smaller
//!   working set). On the publisher, one push per worker per publish and about one wake-up per
//!   worker per batch: at 16 workers 362 ns and 3.9 us per publish, 0.36 and 0.39 ns per
//!   delivery, 1 to 2% of a delivery's cost.
//! - Expected on 16 cores: deliveries/s = per-worker rate x workers = 16 x 23 to 31 M, about
//!   370 M deliveries/s to 1,000 subscribers (370 K publishes/s) and 490 M to 10,000 (49 K
//!   publishes/s) at the 1-worker cost per delivery (530 to 710 M at the 16-worker cost). The
//!   publisher's inbox pushes bound it at 1 / 362 ns = 2.8 M publishes/s (2.8 G deliveries/s)
//!   and 1 / 3.9 us = 260 K publishes/s (2.6 G deliveries/s): 5 to 8 times above the workers,
//!   so the workers, not the hub's publisher side, are the limit. The exception: a publisher
//!   that publishes more slowly than the workers drain finds every inbox empty and wakes every
//!   worker on every publish; at the 5 to 6 us per wake-up inferred here, 16 wake-ups cap it near
//!   12 K publishes/s (under load the inboxes stay non-empty and the wake-ups vanish, as in the
//!   batches here).
//! - With real sockets the kernel's send dominates: `compare.sh` measured 1.9 M fanout
//!   deliveries per server CPU-second (commit 6f3475d), 12 to 16 times the hub-only cost above,
//!   so a 16-core node would be bounded near 16 x 1.9 M = 30 M deliveries/s by its sends, the
//!   hub's part (inbox, copy into the outbox) being under a tenth of it.
//!
//! What runs:
//!
//! - Each worker is a thread with its own `mio::Poll` and a `mio::Waker` registered in it; the
//!   wakers are the hub's (`Hub::new(wakers)`, `Wake for mio::Waker`), as `server.rs` builds
//!   them, so a push onto an empty inbox writes the worker's eventfd and the worker wakes from
//!   `epoll_wait`. Its loop is the gateway's, reduced to the hub's part: poll (no wait while
//!   its inbox still holds deliveries, as `Worker::poll_timeout`), `Hub::drain_at_most` with the
//!   gateway's budget of 1,024, each delivery looked up by topic name in the worker's own
//!   subscriber sets (a `HashSet` per topic, as `PubSub::subscribers`) and pushed into each
//!   local subscriber's `Outbox` with `push_shared` (a 66-byte frame is copied onto the
//!   outbox's buffer), its held bytes checked against the default 8 MiB limit and the
//!   subscriber listed for the turn's flush, as `Connections::deliver` does; then every listed
//!   outbox is flushed into `io::sink()` (`Worker::flush_dirty`, without the socket). The slab
//!   lookup with its generation check, metrics and acks are left out.
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
//!   CPU time the publisher spent per publish (its publishing loops only, not its waits) and
//!   the workers spent per delivery (their whole loop: polls, drains, pushes, flushes), from
//!   `/proc/thread-self/schedstat` (nanoseconds on a CPU, warm-up included), and the inbox
//!   wake-ups (eventfd writes) per publish per worker. It also checks that every subscriber
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
use wsgate::outbox::Outbox;
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

/// Nanoseconds this thread has spent on a CPU, if the kernel tells (`schedstat`).
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

/// One subscriber: its write queue and whether it is listed for this turn's flush.
struct Subscriber {
    outbox: Outbox,
    listed: bool,
}

/// The loop of worker `w`: what a gateway worker does with the hub.
fn run_worker(w: usize, mut poll: Poll, hub: Arc<Hub>, shared: Arc<Shared>, local: usize) {
    let mut subscribers: Vec<Subscriber> = (0..local)
        .map(|_| Subscriber {
            outbox: Outbox::new(),
            listed: false,
        })
        .collect();
    let mut topics: HashMap<Arc<str>, HashSet<usize>> = HashMap::new();
    topics.insert(Arc::from(TOPIC), (0..local).collect());
    let mut dirty: Vec<usize> = Vec::with_capacity(local);
    let mut events = Events::with_capacity(16);
    let mut sink = io::sink();
    let progress = &shared.progress[w];
    let (mut publishes, mut deliveries, mut bytes) = (0u64, 0u64, 0u64);
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
        let mut over = 0;
        let taken = hub.drain_at_most(w, INBOX_BUDGET, |d| {
            let Some(ids) = topics.get(d.topic.name()) else {
                return;
            };
            for &i in ids {
                let s = &mut subscribers[i];
                s.outbox.push_shared(&d.frame);
                deliveries += 1;
                if s.outbox.held_bytes() > OUTBOX_LIMIT {
                    over += 1;
                }
                if !s.listed {
                    s.listed = true;
                    dirty.push(i);
                }
            }
        });
        for i in dirty.drain(..) {
            let s = &mut subscribers[i];
            s.listed = false;
            bytes += s
                .outbox
                .flush(&mut sink)
                .expect("a sink takes everything")
                .bytes as u64;
        }
        if taken > 0 {
            publishes += taken as u64;
            if over > 0 {
                progress.over_limit.fetch_add(over, Ordering::Relaxed);
            }
            progress.deliveries.store(deliveries, Ordering::Relaxed);
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
    /// Publishes made so far (every worker has delivered them all between batches).
    published: u64,
    /// Time spent in timed batches, and the publisher's CPU time publishing them.
    timed: Duration,
    publisher_cpu_ns: u64,
}

impl Workers {
    fn start(workers: usize, subscribers: usize) -> io::Result<Workers> {
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
                    .spawn(move || run_worker(w, poll, hub, shared, local))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Workers {
            hub,
            topic,
            shared,
            threads,
            workers,
            subscribers,
            published: 0,
            timed: Duration::ZERO,
            publisher_cpu_ns: 0,
        })
    }

    /// Publishes `n` frames, then waits until every worker has delivered them all; returns the
    /// time from the first publish to the last delivery.
    fn batch(&mut self, n: u64, payload: &[u8]) -> Duration {
        let target = self.published + n;
        self.shared.target.store(target, Ordering::Release);
        let cpu_start = thread_cpu_ns();
        let start = Instant::now();
        for _ in 0..n {
            let frame = OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(payload));
            self.hub.publish_remote(usize::MAX, &self.topic, &frame);
        }
        if let (Some(cpu_start), Some(cpu_end)) = (cpu_start, thread_cpu_ns()) {
            self.publisher_cpu_ns += cpu_end - cpu_start;
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
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(batch);
            total += self.batch(n, payload);
            left -= n;
        }
        self.timed += total;
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
        let expected = self.published * self.subscribers as u64;
        assert_eq!(deliveries, expected, "every subscriber got every publish");
        assert_eq!(bytes, expected * wire as u64, "and flushed every byte");
        assert_eq!(over, 0, "no outbox went over its limit");
        if self.published == 0 {
            return; // filtered out
        }
        let wakeups: u64 = (0..self.workers).map(|w| self.hub.inbox_wakeups(w)).sum();
        let secs = self.timed.as_secs_f64();
        eprintln!(
            "hub-workers {} workers x {} subscribers: {} publishes timed in {:.2} s: \
             {:.0} publishes/s, {:.3} M deliveries/s; publisher CPU {:.0} ns/publish; \
             workers CPU {:.2} ns/delivery ({:.2} M deliveries per worker CPU-s); \
             {:.3} wake-ups per publish per worker",
            self.workers,
            self.subscribers,
            self.published,
            secs,
            self.published as f64 / secs,
            deliveries as f64 / secs / 1e6,
            self.publisher_cpu_ns as f64 / self.published as f64,
            worker_cpu as f64 / deliveries as f64,
            deliveries as f64 / worker_cpu as f64 * 1e3,
            wakeups as f64 / self.published as f64 / self.workers as f64,
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
        for workers in WORKERS {
            let mut w = Workers::start(workers, subscribers).expect("poll, waker and threads");
            group.bench_function(format!("{workers}-workers"), |b| {
                b.iter_custom(|iters| w.timed(iters, batch, &payload))
            });
            w.finish(wire);
        }
        group.finish();
    }
}

criterion_group!(benches, hub_workers);
criterion_main!(benches);
