//! New connections: accepting them, admitting them against the node's limits, and knowing who
//! they come from (the peer, or the client a trusted proxy names in a PROXY header or in
//! `X-Forwarded-For`).

use super::Worker;
use crate::conn::Transport;
use crate::conn::{Conn, ConnId, HttpConn, Phase};
use crate::http::Answer;
use crate::limits::Refusal;
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use wsgate_core::handshake::Request;
use wsgate_core::proxy::ProxyHeader;

/// Connections accepted in one turn of the loop at most: a connection storm is taken in
/// between the reads, writes and timers of the connections already there.
const ACCEPT_BUDGET: usize = 256;

/// A worker's listening socket.
pub(super) struct Acceptor {
    listener: TcpListener,
    worker: usize,
    /// Its connections speak TLS.
    tls: bool,
    /// When an accept error was last logged (they are logged once a minute at most).
    error_logged: Option<Instant>,
    /// The budget ran out with connections possibly still waiting: accept again next turn.
    more: bool,
}

impl Acceptor {
    /// The worker's socket `listener`; `tls`: its connections speak TLS.
    pub(super) fn new(worker: usize, listener: std::net::TcpListener, tls: bool) -> Acceptor {
        Acceptor {
            listener: TcpListener::from_std(listener),
            worker,
            tls,
            error_logged: None,
            more: false,
        }
    }

    /// Whether connections may still wait from the last turn.
    pub(super) fn has_more(&self) -> bool {
        self.more
    }

    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.listener, token, Interest::READABLE)
    }
}

impl Worker {
    /// Accepts every connection waiting on the listening socket `which` (0: `listen`; 1:
    /// `plain-listen`).
    pub(super) fn accept(&mut self, which: usize) {
        let Some(acceptor) = self.acceptors.get_mut(which) else {
            return;
        };
        acceptor.more = false;
        let tls = acceptor.tls;
        for _ in 0..ACCEPT_BUDGET {
            match self.acceptors[which].listener.accept() {
                Ok((mut stream, peer)) => {
                    let proxy = &self.node.config.proxy;
                    let proxied = proxy.expects_proxy_header(peer.ip());
                    // behind a trusted proxy the client's address comes with the PROXY header
                    // or X-Forwarded-For, and is counted then; otherwise it is the peer's,
                    // counted now
                    let by_address = !proxied && !proxy.trusts_forwarded_for(peer.ip());
                    // a TLS handshake costs the node far more than the client: per address,
                    // bounded (behind a trusted proxy the address is the proxy's: not counted)
                    if tls && !proxied && !self.node.handshakes.allow(peer.ip(), self.now) {
                        self.metrics.failure(crate::metrics::Failure::TlsRate);
                        drop(stream);
                        continue;
                    }
                    let ip_counted = match self.admit(peer.ip(), by_address) {
                        Ok(counted) => counted,
                        Err(refusal) => {
                            // counted first: a client that has read the answer sees it
                            // counted; then best effort, a short answer that fits any socket
                            // buffer, and close
                            self.metrics.failure(refusal.failure());
                            if !tls {
                                // a TLS client could not read a plain answer: it only sees
                                // the close (a handshake to say more is what a flood wants)
                                let answer = Answer::refusal(refusal);
                                let _ = io::Write::write(&mut stream, &answer.response);
                            }
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let id = self.conns.vacant_id();
                    let mut stream = match self.node.tls.as_ref().filter(|_| tls) {
                        Some(tls) => match Transport::tls(stream, tls.config().clone(), proxied) {
                            Ok(t) => t,
                            Err(e) => {
                                tracing::warn!("cannot start TLS: {e}");
                                self.node.limits.release_total();
                                if ip_counted {
                                    self.node.limits.release_ip(peer.ip());
                                }
                                continue;
                            }
                        },
                        None => Transport::Plain(stream),
                    };
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, id.token(), Interest::READABLE)
                    {
                        tracing::warn!("cannot register connection: {e}");
                        self.node.limits.release_total();
                        if ip_counted {
                            self.node.limits.release_ip(peer.ip());
                        }
                        continue;
                    }
                    let deadline = self.now + self.node.config.timeouts.handshake_timeout;
                    let limits = crate::http::framing_limits(&self.node);
                    let http = HttpConn::new(limits, proxied, deadline, peer);
                    let mut conn = Conn::new(stream, peer.ip(), Phase::Http(Box::new(http)));
                    conn.ip_counted = ip_counted;
                    self.conns.insert(id, conn);
                    self.metrics.connection_opened();
                    self.schedule(id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // out of file descriptors, usually: say so at most once a minute
                    let a = &mut self.acceptors[which];
                    let quiet = a
                        .error_logged
                        .is_some_and(|t| self.now < t + Duration::from_secs(60));
                    if !quiet {
                        tracing::warn!(worker = a.worker, "accept failed: {e}");
                        a.error_logged = Some(self.now);
                    }
                    return;
                }
            }
        }
        // the budget is spent and more may wait: no event comes for them, so next turn
        self.acceptors[which].more = true;
    }

    /// Counts a new connection against `max-connections`, and against its address's limit
    /// when `by_address`. Returns whether the address was counted.
    fn admit(&self, ip: IpAddr, by_address: bool) -> Result<bool, Refusal> {
        let limits = &self.node.limits;
        limits.admit_total()?;
        if !by_address {
            return Ok(false);
        }
        limits.admit_ip(ip).inspect_err(|_| limits.release_total())
    }

    /// Takes the PROXY header of a connection from a trusted proxy: the client's address,
    /// which per-address limits and logs then use. Returns false when the client is refused
    /// (the answer is queued).
    pub(super) fn admit_proxy_header(&mut self, id: ConnId, header: ProxyHeader) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return false;
        };
        // LOCAL or UNKNOWN: the proxy's own connection (a health check), not a client's
        let Some(source) = header.source else {
            return true;
        };
        conn.client = source.ip();
        if conn.stream.is_tls() && !self.node.handshakes.allow(conn.client, self.now) {
            // the client's TLS handshake is still to come: over its address's rate, it ends
            // here, at the cost of the header only
            self.metrics.failure(crate::metrics::Failure::TlsRate);
            self.close_now(id);
            return false;
        }
        match self.node.limits.admit_ip(conn.client) {
            Ok(counted) => {
                conn.ip_counted = counted;
                true
            }
            Err(refusal) => {
                self.answer(id, Answer::refusal(refusal));
                false
            }
        }
    }

    /// Takes the client's address from `X-Forwarded-For` (when there is none, the address
    /// known so far: the PROXY header's, or the proxy's own) and counts the connection against
    /// it. Each request of a kept-alive connection may come from another client. Returns the
    /// answer of a refusal.
    pub(super) fn attribute_forwarded(
        &mut self,
        id: ConnId,
        req: &Request<'_>,
    ) -> Result<(), Answer> {
        let items: Vec<&[u8]> = req.header_list("X-Forwarded-For").collect();
        let trusted = &self.node.config.proxy.trusted_proxies;
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(());
        };
        let client = match crate::forwarded::client(items.into_iter(), trusted) {
            Ok(client) => client.unwrap_or(conn.client),
            Err(e) => return Err(Answer::error(&e)),
        };
        let limits = &self.node.limits;
        if conn.ip_counted {
            if conn.client == client {
                return Ok(());
            }
            limits.release_ip(conn.client);
            conn.ip_counted = false;
        }
        conn.client = client;
        match limits.admit_ip(client) {
            Ok(counted) => {
                conn.ip_counted = counted;
                Ok(())
            }
            Err(refusal) => Err(Answer::refusal(refusal)),
        }
    }
}
