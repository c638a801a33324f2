//! Per-second samples of a run: how many latency samples (echoes, deliveries, handshakes) each
//! second of the run saw, and their latency distribution, for the throughput and latency over
//! time of a `--report`.
//!
//! The hot path costs one relaxed atomic load and one histogram increment: instead of reading
//! the system clock, [`Timeline::record`] reads a coarse clock that a thread of its own advances
//! ten times a second ([`start_clock`]). Nothing is allocated per message: once a second, the
//! second's small histogram is folded into a list of (latency, count) pairs and reset.

use hdrhistogram::Histogram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Ticks of the coarse clock per second.
pub(crate) const TICKS_PER_SEC: u32 = 10;

/// Ticks since [`EPOCH`], advanced by the clock thread.
static TICK: AtomicU32 = AtomicU32::new(0);

/// When the clock started: the first [`start_clock`] of the process.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the coarse clock, once per process (later calls return the same epoch). Every
/// [`crate::stats::Stats`] starts it, so a run's seconds count from its first statistics.
pub(crate) fn start_clock() -> Instant {
    *EPOCH.get_or_init(|| {
        let epoch = Instant::now();
        let ticker = move || {
            loop {
                let elapsed = epoch.elapsed();
                let t = (elapsed.as_millis() / u128::from(1000 / TICKS_PER_SEC)) as u32;
                TICK.store(t, Ordering::Relaxed);
                let next =
                    Duration::from_millis(u64::from(t + 1) * u64::from(1000 / TICKS_PER_SEC));
                std::thread::sleep(next.saturating_sub(epoch.elapsed()));
            }
        };
        // without the thread every sample lands in second 0: a flat report, not a failed run
        let _ = std::thread::Builder::new()
            .name("loadtest-clock".into())
            .spawn(ticker);
        epoch
    })
}

/// The coarse clock's tick now (0 until [`start_clock`]).
#[inline]
fn tick() -> u32 {
    TICK.load(Ordering::Relaxed)
}

/// One second of a run, as recorded by one thread or merged over several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Second {
    /// Seconds since the clock's epoch.
    pub index: u32,
    /// Samples recorded in this second.
    pub count: u64,
    /// The first tick with a sample.
    pub first_tick: u32,
    /// The last tick with a sample.
    pub last_tick: u32,
    /// The latencies, in microseconds: (a bucket's highest value, samples in it), ascending.
    pub latency: Vec<(u32, u32)>,
}

impl Second {
    /// The latency at quantile `q` (0 to 1), in microseconds; `None` without samples.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency.iter().map(|&(_, c)| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(v, c) in &self.latency {
            seen += u64::from(c);
            if seen >= rank {
                return Some(u64::from(v));
            }
        }
        self.latency.last().map(|&(v, _)| u64::from(v))
    }

    /// Adds another record of the same second (another thread's, or an edge merged in).
    fn absorb(&mut self, o: &Second) {
        self.count += o.count;
        self.first_tick = self.first_tick.min(o.first_tick);
        self.last_tick = self.last_tick.max(o.last_tick);
        self.latency = merge_sorted(&self.latency, &o.latency);
    }
}

/// Two ascending (value, count) lists as one, counts of equal values added.
fn merge_sorted(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(&(va, ca)), Some(&(vb, cb))) if va == vb => {
                out.push((va, ca.saturating_add(cb)));
                i += 1;
                j += 1;
            }
            (Some(&x), Some(&y)) if x.0 < y.0 => {
                out.push(x);
                i += 1;
            }
            (Some(&x), None) => {
                out.push(x);
                i += 1;
            }
            (_, Some(&y)) => {
                out.push(y);
                j += 1;
            }
            (None, None) => unreachable!("the loop runs while one is left"),
        }
    }
    out
}

/// One point of the throughput-over-time series of a report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    /// Seconds since the first sample of the run, where this point's interval starts.
    pub at: f64,
    /// How long the interval is, in seconds (1 but at the run's ends and beside gaps).
    pub covered: f64,
    /// Samples in the interval.
    pub count: u64,
    /// Samples per second.
    pub rate: f64,
    /// Median latency in microseconds (`None` without samples).
    pub p50: Option<u64>,
    /// 99th percentile latency in microseconds (`None` without samples).
    pub p99: Option<u64>,
}

/// The seconds one thread (or a merged run) recorded.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    /// Finished seconds, ascending, one entry per index.
    seconds: Vec<Second>,
    /// The second being recorded (`u32::MAX` before the first sample).
    index: u32,
    count: u64,
    first_tick: u32,
    last_tick: u32,
    /// The current second's latencies (2 significant digits: a per-second p50 and p99).
    latency: Histogram<u64>,
}

impl Timeline {
    /// An empty timeline.
    pub(crate) fn new() -> Timeline {
        Timeline {
            seconds: Vec::new(),
            index: u32::MAX,
            count: 0,
            first_tick: 0,
            last_tick: 0,
            latency: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
        }
    }

    /// Records one sample of `micros` microseconds now.
    #[inline]
    pub(crate) fn record(&mut self, micros: u64) {
        self.record_at(tick(), micros);
    }

    /// Records one sample of `micros` microseconds at tick `tick` of the clock.
    pub(crate) fn record_at(&mut self, tick: u32, micros: u64) {
        let index = tick / TICKS_PER_SEC;
        if index != self.index {
            self.seal();
            self.index = index;
            self.first_tick = tick;
            self.last_tick = tick;
        }
        self.first_tick = self.first_tick.min(tick);
        self.last_tick = self.last_tick.max(tick);
        self.count += 1;
        self.latency.saturating_record(micros.clamp(1, 60_000_000));
    }

    /// The second being recorded, as a [`Second`] (`None` when it has no sample).
    fn current(&self) -> Option<Second> {
        (self.count > 0).then(|| Second {
            index: self.index,
            count: self.count,
            first_tick: self.first_tick,
            last_tick: self.last_tick,
            latency: self
                .latency
                .iter_recorded()
                .map(|v| {
                    (
                        v.value_iterated_to().min(u64::from(u32::MAX)) as u32,
                        v.count_at_value().min(u64::from(u32::MAX)) as u32,
                    )
                })
                .collect(),
        })
    }

    /// Moves the current second into the finished ones.
    fn seal(&mut self) {
        if let Some(s) = self.current() {
            self.insert(s);
        }
        self.count = 0;
        self.latency.reset();
        self.index = u32::MAX;
    }

    /// Adds a second, merged with the one of the same index if there is one.
    fn insert(&mut self, s: Second) {
        match self.seconds.binary_search_by_key(&s.index, |x| x.index) {
            Ok(k) => self.seconds[k].absorb(&s),
            Err(k) => self.seconds.insert(k, s),
        }
    }

    /// Adds another thread's seconds to these.
    pub(crate) fn merge(&mut self, o: &Timeline) {
        self.seal();
        for s in o.seconds.iter().cloned().chain(o.current()) {
            self.insert(s);
        }
    }

    /// Every second with a sample, ascending.
    pub(crate) fn seconds(&self) -> Vec<Second> {
        let mut t = self.clone();
        t.seal();
        t.seconds
    }

    /// The series a report draws: a point per second from the first sample to the last, with
    /// rate 0 (and no latency) for a second without samples. A second is counted over the part
    /// of it that the run covered: from its first sample's tick where the second before had
    /// none, to its last sample's tick where the second after had none. A first or last second
    /// that covers less than half a second is folded into its neighbour, so the run's start and
    /// its final in-flight messages do not show as a drop.
    pub(crate) fn series(&self) -> Vec<Point> {
        let mut seconds = self.seconds();
        // the ticks a second covers: [start, end)
        let span = |s: &[Second], k: usize| -> (u32, u32) {
            let start = if k > 0 && s[k - 1].index + 1 == s[k].index {
                s[k].index * TICKS_PER_SEC
            } else {
                s[k].first_tick
            };
            let end = if s.get(k + 1).is_some_and(|n| n.index == s[k].index + 1) {
                (s[k].index + 1) * TICKS_PER_SEC
            } else {
                s[k].last_tick + 1
            };
            (start, end.max(start + 1))
        };
        let short = |s: &[Second], k: usize| {
            let (start, end) = span(s, k);
            (end - start) * 2 < TICKS_PER_SEC
        };
        // fold a short first or last second into its neighbour (which keeps its index)
        if seconds.len() >= 2 && seconds[1].index == seconds[0].index + 1 && short(&seconds, 0) {
            let first = seconds.remove(0);
            seconds[0].absorb(&first);
        }
        let n = seconds.len();
        if n >= 2 && seconds[n - 2].index + 1 == seconds[n - 1].index && short(&seconds, n - 1) {
            let last = seconds.pop().expect("two or more");
            seconds[n - 2].absorb(&last);
        }
        let Some(base) = seconds.first().map(|s| s.first_tick) else {
            return Vec::new();
        };
        let secs = |ticks: u32| f64::from(ticks) / f64::from(TICKS_PER_SEC);
        let mut out = Vec::new();
        for (k, s) in seconds.iter().enumerate() {
            if k > 0 {
                // the seconds without a sample between two that had some
                for gap in seconds[k - 1].index + 1..s.index {
                    out.push(Point {
                        at: secs(gap * TICKS_PER_SEC - base),
                        covered: 1.0,
                        count: 0,
                        rate: 0.0,
                        p50: None,
                        p99: None,
                    });
                }
            }
            let (start, end) = span(&seconds, k);
            let covered = secs(end - start);
            out.push(Point {
                at: secs(start - base),
                covered,
                count: s.count,
                rate: s.count as f64 / covered,
                p50: s.quantile(0.5),
                p99: s.quantile(0.99),
            });
        }
        out
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `got` is within 1% of `want` (the per-second histograms keep 2 digits).
    fn near(got: Option<u64>, want: u64) -> bool {
        got.is_some_and(|g| g.abs_diff(want) * 100 <= want)
    }

    /// Records `count` samples of `micros` spread over ticks `from..to`.
    fn fill(t: &mut Timeline, from: u32, to: u32, count: u32, micros: u64) {
        for k in 0..count {
            t.record_at(from + k * (to - from) / count, micros);
        }
    }

    #[test]
    fn seconds_count_their_samples_and_latencies() {
        let mut t = Timeline::new();
        fill(&mut t, 0, 10, 100, 200);
        fill(&mut t, 10, 20, 50, 1000);
        t.record_at(25, 50_000);
        let s = t.seconds();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[0].index, s[0].count, s[1].count, s[2].count),
            (0, 100, 50, 1)
        );
        assert_eq!(s[0].quantile(0.5), Some(200));
        assert!(near(s[1].quantile(0.99), 1000), "{:?}", s[1].quantile(0.99));
        assert!(near(s[2].quantile(0.0), 50_000), "{:?}", s[2].quantile(0.0));
        assert_eq!(Timeline::new().seconds(), Vec::new());
    }

    #[test]
    fn threads_merge_second_by_second() {
        let (mut a, mut b) = (Timeline::new(), Timeline::new());
        fill(&mut a, 0, 20, 100, 100);
        fill(&mut b, 10, 30, 300, 900);
        let mut m = Timeline::new();
        m.merge(&a);
        m.merge(&b);
        let s = m.seconds();
        assert_eq!(
            s.iter().map(|s| (s.index, s.count)).collect::<Vec<_>>(),
            [(0, 50), (1, 50 + 150), (2, 150)]
        );
        // second 1: 50 samples of 100 us, 150 of 900 us
        assert_eq!(s[1].quantile(0.25), Some(100));
        assert!(near(s[1].quantile(0.26), 900), "{:?}", s[1].quantile(0.26));
        assert_eq!((s[1].first_tick, s[1].last_tick), (10, 19));
    }

    #[test]
    fn the_series_has_a_point_per_second_and_folds_short_edges() {
        let mut t = Timeline::new();
        // from tick 3 (0.3 s) to tick 30, then 2 samples at tick 31 (the last in flight)
        fill(&mut t, 3, 31, 2800, 500);
        t.record_at(31, 700);
        let p = t.series();
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].at, 0.0);
        assert!((p[0].covered - 0.7).abs() < 1e-9, "{p:?}");
        assert!((p[0].rate - 1000.0).abs() < 1e-6, "{p:?}");
        assert!((p[1].at - 0.7).abs() < 1e-9 && p[1].covered == 1.0, "{p:?}");
        // the last second (ticks 30 and 31) folded into the one before
        assert!((p[2].covered - 1.2).abs() < 1e-9, "{p:?}");
        assert_eq!(p.iter().map(|p| p.count).sum::<u64>(), 2801);
        assert!(near(p[1].p50, 500), "{:?}", p[1].p50);
    }

    #[test]
    fn a_second_without_samples_is_a_zero_rate_and_no_latency() {
        let mut t = Timeline::new();
        fill(&mut t, 0, 10, 10, 100);
        fill(&mut t, 30, 40, 10, 100);
        let p = t.series();
        assert_eq!(p.len(), 4, "{p:?}");
        assert_eq!((p[1].count, p[1].rate, p[1].p99), (0, 0.0, None));
        assert_eq!((p[1].at, p[2].at, p[3].at), (1.0, 2.0, 3.0));
        assert_eq!(p[3].rate, 10.0);
    }

    #[test]
    fn a_single_second_covers_its_ticks() {
        let mut t = Timeline::new();
        t.record_at(52, 100);
        let p = t.series();
        assert_eq!(p.len(), 1);
        assert!((p[0].covered - 0.1).abs() < 1e-9 && p[0].at == 0.0, "{p:?}");
    }

    #[test]
    fn the_clock_ticks() {
        start_clock();
        let before = tick();
        std::thread::sleep(Duration::from_millis(250));
        assert!(tick() > before, "{} then {}", before, tick());
    }
}
