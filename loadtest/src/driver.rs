//! The event loop of one load generator thread: many client connections on one `mio::Poll`,
//! driven by a scenario that reacts to each connection opening, each message, and a tick; and
//! a run's connections spread over several such threads.

use crate::client::{Client, ClientError, Target};
use crate::progress::Counters;
use crate::stats::Traffic;
use mio::{Events, Interest, Poll, Token};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use wsgate_core::frame::Message;

/// What a scenario does with its connections.
pub(crate) trait Scenario {
    /// Connection `i` started connecting.
    fn on_connect(&mut self, _i: usize, _now: Instant) {}
    /// The 101 arrived on connection `i`.
    fn on_open(&mut self, i: usize, client: &mut Client, now: Instant);
    /// A message arrived on connection `i`.
    fn on_message(&mut self, i: usize, client: &mut Client, message: Message, now: Instant);
    /// Connection `i` ended; `error` says why when it was not a clean close.
    fn on_end(&mut self, i: usize, error: Option<ClientError>);
    /// Called every loop turn (at least every millisecond). Connections it sends on go into
    /// `touched`, so they are flushed.
    fn tick(&mut self, _clients: &mut [Option<Client>], _now: Instant, _touched: &mut Vec<usize>) {}
    /// Whether the scenario is over.
    fn finished(&self, now: Instant) -> bool;
    /// Where the bytes on the wire and in the messages are added up, for a scenario that
    /// reports them (none: not counted).
    fn traffic(&mut self) -> Option<&mut Traffic> {
        None
    }
}

/// One connection to open: where, from which source address.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The server and path.
    pub target: Target,
    /// The local address to bind, to spread connections over source addresses.
    pub source: Option<IpAddr>,
}

/// Opens the planned connections (at most `rate` per second, 0 for no limit) and runs the
/// scenario until it is finished. Returns the clients still open.
pub(crate) fn drive<S: Scenario>(
    plans: &[Plan],
    rate: u64,
    seed: u64,
    counters: &Counters,
    scenario: &mut S,
) -> io::Result<Vec<Option<Client>>> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(plans.len());
    let mut scratch = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let mut dirty: Vec<usize> = Vec::new();
    loop {
        let now = Instant::now();
        // open more connections, paced
        let allowed = if rate == 0 {
            plans.len()
        } else {
            ((now - start).as_secs_f64() * rate as f64) as usize + 1
        };
        while clients.len() < plans.len().min(allowed) {
            let i = clients.len();
            scenario.on_connect(i, Instant::now());
            match Client::connect(
                &plans[i].target,
                plans[i].source,
                seed.wrapping_add(i as u64 * 7919),
            ) {
                Ok(mut c) => {
                    poll.registry().register(
                        &mut c.stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    c.wants_write = true;
                    clients.push(Some(c));
                }
                Err(e) => {
                    clients.push(None);
                    scenario.on_end(i, Some(ClientError::Io(format!("connect: {e}"))));
                }
            }
        }
        if scenario.finished(now) {
            return Ok(clients);
        }
        let timeout = if clients.len() < plans.len() || dirty.is_empty() {
            Duration::from_millis(1)
        } else {
            Duration::ZERO
        };
        poll.poll(&mut events, Some(timeout)).or_else(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        let now = Instant::now();
        for event in events.iter() {
            let i = event.token().0;
            let Some(client) = clients[i].as_mut() else {
                continue;
            };
            let mut failed = None;
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let was_open = client.open;
                let mut inbox = Vec::new();
                match client.read(&mut scratch, |m| inbox.push(m)) {
                    Ok(alive) => {
                        if !was_open && client.open {
                            counters.open.fetch_add(1, Ordering::Relaxed);
                            scenario.on_open(i, client, now);
                        }
                        counters
                            .received
                            .fetch_add(inbox.len() as u64, Ordering::Relaxed);
                        let mut closed_cleanly = false;
                        for m in inbox {
                            closed_cleanly |= matches!(m, Message::Close(_));
                            scenario.on_message(i, client, m, now);
                        }
                        if !alive {
                            failed = Some(if closed_cleanly || !client.open {
                                if client.open {
                                    None
                                } else {
                                    Some(ClientError::Io("closed before the upgrade".into()))
                                }
                            } else {
                                Some(ClientError::Io("server closed the connection".into()))
                            });
                        }
                    }
                    Err(e) => failed = Some(Some(e)),
                }
            }
            if failed.is_none() {
                dirty.push(i);
            }
            if let Some(error) = failed {
                if let Some(c) = clients[i].as_mut() {
                    if c.open {
                        counters.open.fetch_sub(1, Ordering::Relaxed);
                    }
                    if let Some(t) = scenario.traffic() {
                        t.add(&c.take_traffic());
                    }
                }
                clients[i] = None;
                scenario.on_end(i, error);
            }
        }
        scenario.tick(&mut clients, now, &mut dirty);
        // flush the connections that may have something queued
        dirty.sort_unstable();
        dirty.dedup();
        for &i in &dirty {
            let slot = &mut clients[i];
            let Some(client) = slot else { continue };
            counters
                .sent
                .fetch_add(client.take_sent(), Ordering::Relaxed);
            if let Some(t) = scenario.traffic() {
                t.add(&client.take_traffic());
            }
            if !client.has_output() && !client.wants_write {
                continue;
            }
            match client.flush() {
                Ok(done) => {
                    if done == client.wants_write {
                        let interest = if done {
                            Interest::READABLE
                        } else {
                            Interest::READABLE | Interest::WRITABLE
                        };
                        poll.registry()
                            .reregister(&mut client.stream, Token(i), interest)?;
                        client.wants_write = !done;
                    }
                }
                Err(e) => {
                    *slot = None;
                    scenario.on_end(i, Some(ClientError::Io(e.to_string())));
                }
            }
        }
        dirty.clear();
    }
}

/// Splits plans over threads, round-robin: plan i goes to thread i mod threads.
pub(crate) fn split(plans: &[Plan], threads: usize) -> Vec<Vec<Plan>> {
    let mut out = vec![Vec::new(); threads];
    for (i, p) in plans.iter().enumerate() {
        out[i % threads].push(p.clone());
    }
    out
}

/// Runs one scenario per thread over its share of the plans; collects `result` of each.
pub(crate) fn on_threads<S: Scenario, R: Send>(
    plans: &[Plan],
    threads: usize,
    counters: &Counters,
    make: impl Fn(usize, &[Plan]) -> S + Sync,
    result: impl Fn(&mut S) -> R + Sync,
) -> Result<Vec<R>, String> {
    std::thread::scope(|s| {
        let handles: Vec<_> = split(plans, threads)
            .into_iter()
            .enumerate()
            .map(|(t, mine)| {
                let (make, result) = (&make, &result);
                s.spawn(move || {
                    let mut scenario = make(t, &mine);
                    drive(&mine, 0, 1 + t as u64, counters, &mut scenario)
                        .map_err(|e| e.to_string())?;
                    Ok::<R, String>(result(&mut scenario))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a loadtest thread panicked".to_string())?
            })
            .collect()
    })
}
