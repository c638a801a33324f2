//! What every worker of a node shares: the configuration, the hub, the counters, the drain
//! state, the admission limits and the token verifier. Built once by the server; read by the
//! workers (lock-free on every path that serves traffic) and by the HTTP endpoints.

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::config::HistoryRule;
use crate::drain::DrainState;
use crate::history::Budget;
use crate::hub::{HistoryRules, Hub, Uplink, Wake};
use crate::limits::ConnectionLimits;
use crate::metrics::{self, Exposition, Kind, WorkerMetrics};
use crate::session::Policy;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use wsgate_core::deflate::{self, Compression};
use wsgate_core::frame::{DecoderConfig, RSV1};
use wsgate_core::session::SessionConfig;

/// The state every worker of a node shares.
#[derive(Debug)]
pub(crate) struct Node {
    /// The configuration.
    pub(crate) config: Config,
    /// Topics and the workers' inboxes.
    pub(crate) hub: Arc<Hub>,
    /// The link to other nodes, when there is one (the hub knows it only as its uplink).
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// Every worker's counters, by worker index.
    pub(crate) metrics: Vec<Arc<WorkerMetrics>>,
    /// Where the node is in its drain.
    pub(crate) drain: DrainState,
    /// Open WebSocket sessions, all workers together.
    pub(crate) sessions: AtomicUsize,
    /// Connection counts against `max-connections` and `max-connections-per-ip`.
    pub(crate) limits: ConnectionLimits,
    /// The token verifier, when authentication is on.
    pub(crate) auth: Option<Authenticator>,
    /// The TLS of the listening port, when it serves TLS.
    pub(crate) tls: Option<crate::tls::Tls>,
    /// TLS handshakes a second per client address.
    pub(crate) handshakes: crate::limits::HandshakeRate,
    /// What every WebSocket session enforces, and its timers.
    pub(crate) session: Arc<SessionConfig>,
    /// The same for sessions that negotiated permessage-deflate: without, and with, the
    /// client's compression context kept across messages.
    pub(crate) session_deflate: [Arc<SessionConfig>; 2],
    /// What permessage-deflate offers are answered with; `None`: compression is off.
    pub(crate) deflate: Option<deflate::Policy>,
    /// How outgoing messages are compressed; `None`: compression is off.
    pub(crate) compression: Option<Compression>,
    /// What sessions may subscribe and publish.
    pub(crate) policy: Policy,
}

impl Node {
    /// The node for `config`, with one inbox per waker (one per worker).
    pub(crate) fn new(config: Config, wakers: Vec<Box<dyn Wake>>) -> io::Result<Node> {
        let cluster = config.cluster.redis.as_ref().map(|_| {
            let node = config
                .cluster
                .node_id
                .clone()
                .unwrap_or_else(crate::cluster::random_node_id);
            Arc::new(Cluster::new(
                &node,
                &config.cluster.redis_prefix,
                config.cluster.redis_sharded,
                config.cluster.redis_max_pending,
            ))
        });
        let uplink = cluster.clone().map(|c| c as Arc<dyn Uplink>);
        let session = Arc::new(SessionConfig {
            decoder: DecoderConfig {
                max_frame_size: config.limits.frame_limit(),
                max_message_size: config.limits.max_message_size,
                ..DecoderConfig::server()
            },
            ping_interval: Some(config.timeouts.ping_interval).filter(|d| !d.is_zero()),
            idle_timeout: Some(config.timeouts.idle_timeout).filter(|d| !d.is_zero()),
            close_timeout: config.timeouts.close_timeout,
        });
        let inflating = |inflate_context| {
            Arc::new(SessionConfig {
                decoder: DecoderConfig {
                    allowed_rsv: RSV1,
                    inflate_context,
                    ..session.decoder
                },
                ..*session
            })
        };
        let session_deflate = [inflating(false), inflating(true)];
        let d = &config.deflate;
        let deflate = d.compression.then_some(deflate::Policy {
            client_context_takeover: d.compression_client_context,
        });
        let compression = d.compression.then_some(Compression {
            level: d.compression_level,
            min_size: d.compression_min_size,
        });
        let limits = &config.limits;
        let policy = Policy {
            max_topics: limits.max_topics_per_connection,
            publish_rate: limits.publish_rate,
            publish_burst: limits.publish_burst,
        };
        Ok(Node {
            policy,
            session_deflate,
            deflate,
            compression,
            metrics: (0..wakers.len())
                .map(|_| Arc::new(WorkerMetrics::default()))
                .collect(),
            hub: Arc::new(
                Hub::with_limits(wakers, uplink, config.limits.inbox_limit)
                    .with_compression(compression)
                    .with_history(
                        Arc::new(Rules(config.history.clone())),
                        Arc::new(Budget::new(config.limits.history_memory)),
                    ),
            ),
            cluster,
            limits: ConnectionLimits::new(
                config.limits.connection_limit(),
                config.limits.max_connections_per_ip,
                config.limits.ipv6_prefix,
            ),
            auth: config
                .auth
                .authenticator()
                .map_err(|e| io::Error::other(e.0))?,
            tls: config.tls.load().map_err(|e| io::Error::other(e.0))?,
            handshakes: crate::limits::HandshakeRate::new(
                config.tls.tls_handshakes_per_ip,
                config.limits.ipv6_prefix,
            ),
            session,
            config,
            drain: DrainState::new(),
            sessions: AtomicUsize::new(0),
        })
    }

    /// Open WebSocket sessions, all workers together.
    pub(crate) fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }

    /// The node's numbers as Prometheus text: every worker's counters, the hub's gauges, the
    /// cluster link's.
    pub(crate) fn metrics_text(&self) -> String {
        let mut out = Exposition::new();
        metrics::render_workers(&mut out, &self.metrics);
        let hub = &self.hub;
        let name = "wsgate_inbox_depth";
        out.family(name, Kind::Gauge, "Deliveries waiting in a worker's inbox.");
        for i in 0..hub.workers() {
            out.sample(name, Some(("worker", &i.to_string())), hub.inbox_depth(i));
        }
        let name = "wsgate_inbox_bytes";
        out.family(
            name,
            Kind::Gauge,
            "What the deliveries waiting in a worker's inbox hold.",
        );
        for i in 0..hub.workers() {
            out.sample(name, Some(("worker", &i.to_string())), hub.inbox_held(i));
        }
        let name = "wsgate_inbox_congestions_total";
        out.family(
            name,
            Kind::Counter,
            "Times a worker's inbox went over inbox-limit (its publishers then wait).",
        );
        for i in 0..hub.workers() {
            out.sample(
                name,
                Some(("worker", &i.to_string())),
                hub.inbox_congestions(i),
            );
        }
        let name = "wsgate_inbox_wakeups_total";
        out.family(
            name,
            Kind::Counter,
            "Times a worker was woken for its inbox.",
        );
        for i in 0..hub.workers() {
            out.sample(name, Some(("worker", &i.to_string())), hub.inbox_wakeups(i));
        }
        out.single(
            "wsgate_topics",
            Kind::Gauge,
            "Topics known on this node.",
            hub.topics().len(),
        );
        if let Some(budget) = hub.history_budget() {
            let (streams, messages) = hub.forget_expired(std::time::Instant::now());
            out.single(
                "wsgate_history_topics",
                Kind::Gauge,
                "Topics with a history on this node.",
                streams,
            );
            out.single(
                "wsgate_history_messages",
                Kind::Gauge,
                "Messages kept in the topics' histories.",
                messages,
            );
            out.single(
                "wsgate_history_bytes",
                Kind::Gauge,
                "What the histories hold, within history-memory.",
                budget.held(),
            );
            out.single(
                "wsgate_history_evictions_total",
                Kind::Counter,
                "Messages given up to keep the histories within history-memory.",
                budget.evicted(),
            );
        }
        out.single(
            "wsgate_draining",
            Kind::Gauge,
            "1 while the node drains.",
            u8::from(self.drain.get().refuses_sessions()),
        );
        if let Some(cluster) = &self.cluster {
            cluster.render_metrics(&mut out);
        }
        out.finish()
    }
}

#[cfg(test)]
impl Node {
    /// A node of `workers` workers that nobody wakes, configured by command-line `args`.
    pub(crate) fn for_tests(args: &[&str], workers: usize) -> Node {
        use clap::Parser;
        struct NoWake;
        impl Wake for NoWake {
            fn wake(&self) {}
        }
        let cli = crate::config::Cli::try_parse_from(
            std::iter::once("wsgate").chain(args.iter().copied()),
        )
        .expect("valid test flags");
        let config = crate::config::load(cli).expect("a valid test configuration");
        let wakers = (0..workers)
            .map(|_| Box::new(NoWake) as Box<dyn Wake>)
            .collect();
        Node::new(config, wakers).expect("a test node")
    }
}

/// The `[[history]]` rules of the configuration, as the hub asks for them.
struct Rules(Vec<HistoryRule>);

impl HistoryRules for Rules {
    fn history_for(&self, topic: &str) -> Option<(usize, std::time::Duration)> {
        self.0
            .iter()
            .find(|rule| rule.matches(topic))
            .map(|rule| (rule.size, rule.ttl))
    }
}
