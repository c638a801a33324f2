//! Starting the workers, and the drain sequence on SIGTERM or SIGINT.
//!
//! 1. First signal: the state becomes DRAINING (`/readyz` answers 503, upgrades are refused).
//! 2. After the drain grace: CLOSING, every session gets close 1001.
//! 3. When every session has closed, or the drain timeout has passed: STOPPING, workers exit,
//!    the process exits 0. A second signal at any point exits at once.

use crate::cluster::Cluster;
use crate::config::Config;
use crate::hub::{Hub, Wake};
use crate::limits::ConnectionLimits;
use crate::metrics::WorkerMetrics;
use crate::worker::{self, Shared, Worker};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running gateway.
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    local_addr: SocketAddr,
    /// SIGTERM and SIGINT, caught from the start: a signal that comes as soon as the
    /// `listening on` line is out must drain, not kill the process.
    signals: Option<Signals>,
}

impl Server {
    /// Binds the sockets and starts one worker thread per configured worker. From here on
    /// SIGTERM and SIGINT are caught for [`run_until_signal`](Self::run_until_signal).
    pub fn start(config: Config) -> io::Result<Server> {
        let signals = Signals::new([SIGTERM, SIGINT])?;
        let listeners = crate::listener::bind_all(config.listen, config.workers, config.backlog)?;
        let local_addr = listeners[0].local_addr()?;
        let mut polls = Vec::new();
        let mut wakers: Vec<Box<dyn Wake>> = Vec::new();
        for _ in 0..config.workers {
            let poll = Poll::new()?;
            wakers.push(Box::new(Waker::new(poll.registry(), worker::WAKER)?));
            polls.push(poll);
        }
        let cluster = config.redis.as_ref().map(|_| {
            let node = config
                .node_id
                .clone()
                .unwrap_or_else(crate::cluster::random_node_id);
            Arc::new(Cluster::new(
                &node,
                &config.redis_prefix,
                config.redis_sharded,
                config.redis_max_pending,
            ))
        });
        let shared = Arc::new(Shared {
            metrics: (0..config.workers)
                .map(|_| Arc::new(WorkerMetrics::default()))
                .collect(),
            hub: Hub::clustered(wakers, cluster),
            limits: ConnectionLimits::new(config.max_connections, config.max_connections_per_ip),
            auth: config.authenticator().map_err(|e| io::Error::other(e.0))?,
            config,
            state: AtomicU8::new(worker::RUNNING),
            sessions: AtomicUsize::new(0),
        });
        if let Some(url) = &shared.config.redis {
            crate::cluster::spawn(shared.clone(), url)?;
        }
        let mut threads = Vec::new();
        for (id, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
            let worker = Worker::new(id, poll, listener, shared.clone());
            let thread = std::thread::Builder::new()
                .name(format!("wsgate-worker-{id}"))
                .spawn(move || {
                    let result = worker.run();
                    if let Err(e) = &result {
                        tracing::error!(worker = id, "worker stopped: {e}");
                    }
                    result
                })?;
            threads.push(thread);
        }
        Ok(Server {
            shared,
            threads,
            local_addr,
            signals: Some(signals),
        })
    }

    /// The address the workers listen on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for SIGTERM or SIGINT, drains, and returns when the workers have stopped.
    pub fn run_until_signal(mut self) -> io::Result<()> {
        let mut signals = match self.signals.take() {
            Some(s) => s,
            None => Signals::new([SIGTERM, SIGINT])?,
        };
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut signals, Token(0), Interest::READABLE)?;
        let mut events = Events::with_capacity(4);
        // wait for the first signal
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if let Some(sig) = signals.pending().next() {
                tracing::info!(
                    signal = sig,
                    "draining: /readyz answers 503, new sessions are refused"
                );
                break;
            }
        }
        let c = &self.shared.config;
        let started = Instant::now();
        self.set_state(worker::DRAINING);
        let second_signal =
            |poll: &mut Poll, events: &mut Events, signals: &mut Signals, wait: Duration| {
                let _ = poll.poll(events, Some(wait));
                signals.pending().next().is_some()
            };
        while started.elapsed() < c.drain_grace.min(c.drain_timeout) {
            let wait = c.drain_grace.saturating_sub(started.elapsed());
            if second_signal(&mut poll, &mut events, &mut signals, wait) {
                exit_at_once();
            }
        }
        tracing::info!(
            sessions = self.sessions(),
            "closing every session with 1001"
        );
        self.set_state(worker::CLOSING);
        while self.sessions() > 0 && started.elapsed() < c.drain_timeout {
            let wait =
                Duration::from_millis(50).min(c.drain_timeout.saturating_sub(started.elapsed()));
            if second_signal(&mut poll, &mut events, &mut signals, wait) {
                exit_at_once();
            }
        }
        if self.sessions() > 0 {
            tracing::warn!(
                sessions = self.sessions(),
                "drain timeout: exiting with sessions still open"
            );
        }
        self.stop()
    }

    /// Open WebSocket sessions.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::Acquire)
    }

    fn set_state(&self, state: u8) {
        self.shared.state.store(state, Ordering::Release);
        self.shared.hub.wake_all();
    }

    /// Stops the workers and waits for them.
    pub fn stop(self) -> io::Result<()> {
        self.set_state(worker::STOPPING);
        for t in self.threads {
            match t.join() {
                Ok(result) => result?,
                Err(_) => return Err(io::Error::other("a worker thread panicked")),
            }
        }
        tracing::info!("stopped");
        Ok(())
    }
}

fn exit_at_once() -> ! {
    tracing::warn!("second signal: exiting at once");
    std::process::exit(1);
}
