//! Live progress on stderr (hidden when stderr is not a terminal): elapsed time against the run's
//! length, and the counters the threads update as they go.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters every thread bumps (relaxed atomics: a progress display, not a result).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections open.
    pub open: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
}

/// A progress bar ticking in its own thread until dropped.
pub(crate) struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `label` with a bar over `length` and the live counters.
    pub(crate) fn start(label: &str, length: Duration, counters: Arc<Counters>) -> Progress {
        let bar = ProgressBar::new(length.as_millis().max(1) as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed}/{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let elapsed = started.elapsed();
                bar.set_position(elapsed.as_millis().min(length.as_millis()) as u64);
                let secs = elapsed.as_secs_f64().max(1e-3);
                let received = counters.received.load(Ordering::Relaxed);
                bar.set_message(format!(
                    "{:.0}s  open {}  sent {}  received {} ({:.0}/s)",
                    length.as_secs_f64(),
                    counters.open.load(Ordering::Relaxed),
                    counters.sent.load(Ordering::Relaxed),
                    received,
                    received as f64 / secs
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
            bar.finish_and_clear();
        });
        Progress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
