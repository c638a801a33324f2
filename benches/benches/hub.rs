//! The publish path: one publish of a 64-byte binary frame to 1, 100 and 10,000 subscribers
//! spread over 2 workers.
//!
//! Side by side:
//!
//! - `wsgate`: what `Worker::publish` and `Worker::take_inbox` do. The publishing worker (0)
//!   builds the frame once (`OutFrame::new` over one `Bytes` of the payload), sends one
//!   reference to the other worker with `Hub::publish_remote`, and pushes one `OutFrame` clone
//!   (a reference count) into each local subscriber's `Outbox`, checking its byte cap as
//!   `deliver_local` does; then worker 1 runs `Hub::drain` and pushes a clone into each of its
//!   subscribers' outboxes. Both sides run on this thread, one after the other, with a no-op
//!   waker, so the numbers are the CPU cost of the fanout without the cross-core cache traffic
//!   or the wake-up of a real second worker.
//! - `copy-per-subscriber`: the same hub and outboxes, but every subscriber gets its own frame
//!   built from its own copy of the payload (`Bytes::copy_from_slice` + `OutFrame::new`), as a
//!   server that encodes a message per connection does.
//! - `tokio-broadcast`: one `tokio::sync::broadcast` channel of `OutFrame` with one receiver
//!   per subscriber: `send` once, then every receiver's `try_recv` (which clones the frame, a
//!   reference count). The received frame is dropped, not queued anywhere, and no task is woken,
//!   so this is a lower bound of what a tokio task per connection pays.
//!
//! Subscriber `i` lives on worker `(i + 1) % 2`, so the lone subscriber of the 1-subscriber case
//! sits on the other worker and every case crosses the inbox. Subscribers are a plain `Vec` of
//! outboxes (the worker keeps a slab and a set of ids; both alternatives get the same `Vec`).
//!
//! Between measured batches the outboxes are flushed into `io::sink()` outside the timing, as a
//! worker flushes them after each turn of its loop; that keeps their (small) capacity, as a real
//! flush does, and keeps memory bounded. A batch holds `4096 / subscribers` publishes (at least
//! 1, at most 64), so no outbox ever holds more than 64 frames. mimalloc is the global allocator,
//! as in the gateway binary.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use wsgate::hub::{Delivery, Hub, Topic, Wake};
use wsgate::outbox::Outbox;
use wsgate_core::frame::{OpCode, OutFrame};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The gateway's default outbox cap is far above what a batch queues; the check is what counts.
const OUTBOX_LIMIT: usize = 1 << 20;

struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}

/// Two workers' subscribers of one topic, and the hub between them.
struct Fanout {
    hub: Hub,
    topic: Arc<Topic>,
    /// The outboxes of worker 0's and worker 1's subscribers.
    workers: [Vec<Outbox>; 2],
}

impl Fanout {
    fn new(subscribers: usize) -> Fanout {
        let hub = Hub::new(vec![Box::new(NoWake), Box::new(NoWake)]);
        let topic = hub.topic("news");
        let mut workers: [Vec<Outbox>; 2] = [Vec::new(), Vec::new()];
        for i in 0..subscribers {
            let w = (i + 1) % 2;
            hub.subscribed(w, &topic, workers[w].is_empty());
            workers[w].push(Outbox::new());
        }
        Fanout {
            hub,
            topic,
            workers,
        }
    }

    /// Worker 0 publishes `payload`; worker 1 then takes its inbox. `share` picks wsgate's path
    /// (one frame, cloned) or the copying one (a frame per subscriber).
    fn publish(&mut self, payload: &[u8], share: bool) {
        let frame = OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(payload));
        self.hub
            .publish_remote(0, &self.topic, &frame.clone().into());
        deliver(&mut self.workers[0], &frame, share);
        let [_, remote] = &mut self.workers;
        self.hub
            .drain(1, |d: Delivery| deliver(remote, d.frame.plain(), share));
    }

    /// Flushes every outbox into a sink; returns the bytes that were queued.
    fn flush(&mut self) -> usize {
        let mut sink = io::sink();
        let mut bytes = 0;
        for outbox in self.workers.iter_mut().flatten() {
            bytes += outbox
                .flush(&mut sink)
                .expect("a sink takes everything")
                .bytes;
        }
        bytes
    }
}

fn deliver(outboxes: &mut [Outbox], frame: &OutFrame, share: bool) {
    for outbox in outboxes {
        let f = if share {
            frame.clone()
        } else {
            OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(frame.payload()))
        };
        outbox.push(f);
        if outbox.queued_bytes() > OUTBOX_LIMIT {
            unreachable!("a batch stays under the cap");
        }
    }
}

/// Runs `iters` publishes of `payload` in batches of `batch`, timing only the publishes; the
/// outboxes are flushed between batches. Checks that every subscriber got every publish.
fn timed_batches(
    fanout: &mut Fanout,
    payload: &[u8],
    share: bool,
    iters: u64,
    batch: u64,
) -> Duration {
    let subscribers: usize = fanout.workers.iter().map(Vec::len).sum();
    let wire = OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(payload)).wire_len();
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(batch);
        let start = Instant::now();
        for _ in 0..n {
            fanout.publish(black_box(payload), share);
        }
        total += start.elapsed();
        assert_eq!(fanout.flush() as u64, n * (subscribers * wire) as u64);
        left -= n;
    }
    total
}

fn publish(c: &mut Criterion) {
    let payload = [0xa5u8; 64];
    let wire = OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(&payload)).wire_len();
    for subscribers in [1usize, 100, 10_000] {
        let batch = (4096 / subscribers).clamp(1, 64) as u64;
        let mut group = c.benchmark_group(format!("hub-publish-64B/{subscribers}-subscribers"));
        group.throughput(Throughput::Elements(subscribers as u64));

        for (name, share) in [("wsgate", true), ("copy-per-subscriber", false)] {
            let mut fanout = Fanout::new(subscribers);
            fanout.publish(&payload, share);
            assert_eq!(
                fanout.flush(),
                subscribers * wire,
                "every subscriber gets it"
            );
            group.bench_function(name, |b| {
                b.iter_custom(|iters| timed_batches(&mut fanout, &payload, share, iters, batch))
            });
        }

        let (tx, _) = broadcast::channel::<OutFrame>(64);
        let mut receivers: Vec<_> = (0..subscribers).map(|_| tx.subscribe()).collect();
        let mut broadcast_once = || {
            let frame = OutFrame::new(OpCode::Binary, Bytes::copy_from_slice(black_box(&payload)));
            tx.send(frame).expect("receivers exist");
            let mut got = 0;
            for rx in &mut receivers {
                let f = rx.try_recv().expect("one message waiting");
                got += f.wire_len();
                black_box(f);
            }
            got
        };
        assert_eq!(broadcast_once(), subscribers * wire);
        group.bench_function("tokio-broadcast", |b| b.iter(&mut broadcast_once));
        group.finish();
    }
}

criterion_group!(benches, publish);
criterion_main!(benches);
