//! Starting the workers, and the drain sequence on SIGTERM or SIGINT.
//!
//! 1. First signal: the state becomes DRAINING (`/readyz` answers 503, upgrades are refused).
//! 2. After the drain grace: CLOSING, every session gets close 1001.
//! 3. When every session has closed, or the drain timeout has passed: STOPPING, workers exit,
//!    the process exits 0. A second signal at any point exits at once.
//!
//! SIGHUP, and a change of the certificate or key file (looked at every few seconds), load
//! the TLS certificate again for new connections ([`crate::tls::Tls::reload`]); a bad new file
//! keeps the current one, and says why in the log.

use crate::config::Config;
use crate::drain::Drain;
use crate::hub::Wake;
use crate::node::Node;
use crate::worker::{self, Worker};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running gateway.
pub struct Server {
    node: Arc<Node>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    local_addr: SocketAddr,
    /// Where `plain-listen` listens, when set.
    plain_addr: Option<SocketAddr>,
    /// SIGTERM and SIGINT, caught from the start: a signal that comes as soon as the
    /// `listening on` line is out must drain, not kill the process.
    signals: Option<Signals>,
}

impl Server {
    /// Binds the sockets and starts one worker thread per configured worker. From here on
    /// SIGTERM and SIGINT are caught for [`run_until_signal`](Self::run_until_signal).
    pub fn start(config: Config) -> io::Result<Server> {
        let signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let listeners = crate::listener::bind_all(
            config.server.listen,
            config.server.workers,
            config.server.backlog,
        )?;
        let local_addr = listeners[0].local_addr()?;
        let mut plain = match config.tls.plain_listen {
            Some(addr) => {
                crate::listener::bind_all(addr, config.server.workers, config.server.backlog)?
            }
            None => Vec::new(),
        };
        let plain_addr = plain.first().map(|l| l.local_addr()).transpose()?;
        let tls = config.tls.tls_cert.is_some();
        let mut polls = Vec::new();
        let mut wakers: Vec<Box<dyn Wake>> = Vec::new();
        for _ in 0..config.server.workers {
            let poll = Poll::new()?;
            wakers.push(Box::new(Waker::new(poll.registry(), worker::WAKER)?));
            polls.push(poll);
        }
        let node = Arc::new(Node::new(config, wakers)?);
        if let (Some(cluster), Some(url)) = (&node.cluster, &node.config.cluster.redis) {
            crate::cluster::spawn(node.hub.clone(), cluster.clone(), url)?;
        }
        let mut threads = Vec::new();
        let mut plain = plain.drain(..);
        for (id, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
            let mut sockets = vec![(listener, tls)];
            sockets.extend(plain.next().map(|l| (l, false)));
            let worker = Worker::new(id, poll, sockets, node.clone());
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
            node,
            threads,
            local_addr,
            plain_addr,
            signals: Some(signals),
        })
    }

    /// The address the workers listen on (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `plain-listen` listens (with the real port when 0 was asked), when set.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// Whether the listening port serves TLS.
    pub fn is_tls(&self) -> bool {
        self.node.tls.is_some()
    }

    /// Waits for SIGTERM or SIGINT, drains, and returns when the workers have stopped.
    pub fn run_until_signal(mut self) -> io::Result<()> {
        let mut signals = match self.signals.take() {
            Some(s) => s,
            None => Signals::new([SIGTERM, SIGINT, SIGHUP])?,
        };
        let mut files = self.tls_files();
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut signals, Token(0), Interest::READABLE)?;
        let mut events = Events::with_capacity(4);
        // wait for the first signal (SIGHUP and changed files: a TLS reload)
        'wait: loop {
            let every = files.as_ref().map(|_| FILE_CHECK);
            if let Err(e) = poll.poll(&mut events, every) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for sig in signals.pending() {
                if sig == SIGHUP {
                    self.reload_tls("SIGHUP");
                    continue;
                }
                tracing::info!(
                    signal = sig,
                    "draining: /readyz answers 503, new sessions are refused"
                );
                break 'wait;
            }
            if let Some(seen) = &mut files {
                let now = tls_files_state(&self.node);
                if now != *seen {
                    *seen = now;
                    self.reload_tls("a changed file");
                }
            }
        }
        let c = &self.node.config;
        let started = Instant::now();
        self.set_state(Drain::Draining);
        let second_signal =
            |poll: &mut Poll, events: &mut Events, signals: &mut Signals, wait: Duration| {
                let _ = poll.poll(events, Some(wait));
                signals.pending().any(|s| s != SIGHUP)
            };
        while started.elapsed() < c.timeouts.drain_grace.min(c.timeouts.drain_timeout) {
            let wait = c.timeouts.drain_grace.saturating_sub(started.elapsed());
            if second_signal(&mut poll, &mut events, &mut signals, wait) {
                exit_at_once();
            }
        }
        tracing::info!(
            sessions = self.sessions(),
            "closing every session with 1001"
        );
        self.set_state(Drain::Closing);
        while self.sessions() > 0 && started.elapsed() < c.timeouts.drain_timeout {
            let wait = Duration::from_millis(50)
                .min(c.timeouts.drain_timeout.saturating_sub(started.elapsed()));
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

    /// The modification times of the TLS files, when the port serves TLS.
    fn tls_files(&self) -> Option<FilesState> {
        self.node.tls.as_ref().map(|_| tls_files_state(&self.node))
    }

    /// Loads the TLS certificate again (`why`: what asked), keeping the current one on error.
    fn reload_tls(&self, why: &str) {
        let Some(tls) = &self.node.tls else {
            tracing::info!("{why}: no TLS to reload");
            return;
        };
        match tls.reload() {
            Ok(()) => tracing::info!("{why}: TLS certificate loaded again for new connections"),
            Err(e) => {
                tracing::error!("{why}: TLS certificate not reloaded, the current one stays: {e}")
            }
        }
    }

    /// Open WebSocket sessions.
    pub fn sessions(&self) -> usize {
        self.node.sessions()
    }

    fn set_state(&self, state: Drain) {
        self.node.drain.set(state);
        self.node.hub.wake_all();
        if state.is_stopping()
            && let Some(cluster) = &self.node.cluster
        {
            cluster.stop();
        }
    }

    /// Stops the workers and waits for them.
    pub fn stop(self) -> io::Result<()> {
        self.set_state(Drain::Stopping);
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

/// How often the TLS files are looked at for a change.
const FILE_CHECK: Duration = Duration::from_secs(2);

/// What tells a change of the TLS files: their modification times and sizes.
type FilesState = Vec<Option<(std::time::SystemTime, u64)>>;

fn tls_files_state(node: &Node) -> FilesState {
    let t = &node.config.tls;
    [&t.tls_cert, &t.tls_key]
        .into_iter()
        .flatten()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn exit_at_once() -> ! {
    tracing::warn!("second signal: exiting at once");
    std::process::exit(1);
}
