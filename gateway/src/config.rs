//! Configuration: command-line flags over an optional TOML file over named defaults.
//!
//! Every setting has a flag (`--max-message-size 64MiB`) and a TOML key of the same name
//! (`max-message-size = "64MiB"`); a flag wins over the file, the file over the default. Sizes
//! take units (`8KiB`, `64 MiB`, or plain bytes), durations take units (`10s`, `500ms`, `2m`).
//! A bad flag, value or file is reported with the name of what was wrong, and exit code 2.

use clap::Parser;
use serde::{Deserialize, Deserializer};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the gateway listens when nothing else is said.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Pending connections the kernel queues per worker socket before refusing more.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Largest message a client may send (and `POST /publish` beyond `max-body-size`).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = wsgate_core::frame::DEFAULT_MAX_MESSAGE_SIZE;
/// The most a message limit may be raised to: browsers handle messages up to 2 GiB.
pub const MAX_MESSAGE_SIZE_CEILING: u64 = 2 << 30;
/// Largest HTTP request head.
pub const DEFAULT_MAX_HEAD_SIZE: u64 = 8 << 10;
/// Largest `POST /publish` body: publishes are events, not files.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1 << 20;
/// Bytes queued to one connection before it counts as a slow consumer.
pub const DEFAULT_OUTBOX_LIMIT: u64 = 8 << 20;
/// The worker's shared read buffer; also the threshold above which a frame gets a buffer of its own.
pub const DEFAULT_READ_BUFFER_SIZE: u64 = 64 << 10;
/// Time a client has to complete its HTTP request.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which the server pings a client.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which a client is closed (it did not answer the ping).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Time the peer has to answer a close frame before the socket is dropped.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time between SIGTERM and the 1001 closes, for the load balancer to notice `/readyz`.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Time the drain may take before the process exits anyway.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Topics one connection may subscribe to.
pub const DEFAULT_MAX_TOPICS_PER_CONNECTION: usize = 256;
/// Default prefix of each topic's Redis channel.
pub const DEFAULT_REDIS_PREFIX: &str = "wsgate:";
/// Default bytes of publishes waiting for Redis.
pub const DEFAULT_REDIS_MAX_PENDING: u64 = 64 << 20;
/// File descriptors kept back from the open-file limit when `max-connections` is automatic.
pub const FD_RESERVE: usize = 128;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "wsgate", version, about = "A WebSocket pub/sub gateway")]
pub struct Cli {
    /// A TOML file with the same keys as the flags (flags win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the resolved configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// Every setting, each optional, as given on the command line or in the file.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Worker threads, each with its own event loop and socket [default: one per core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,
    /// Listen backlog of each worker's socket [default: 1024].
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,
    /// Largest message a client may send, up to 2GiB [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_message_size: Option<u64>,
    /// Largest single frame [default: the message limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_frame_size: Option<u64>,
    /// Largest HTTP request head [default: 8KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_head_size: Option<u64>,
    /// Largest POST /publish body [default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub max_body_size: Option<u64>,
    /// Bytes queued to one connection before it is closed as a slow consumer [default: 8MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub outbox_limit: Option<u64>,
    /// Each worker's read buffer [default: 64KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub read_buffer_size: Option<u64>,
    /// Time to complete the HTTP request [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub handshake_timeout: Option<Duration>,
    /// Silence before the server pings; 0 turns pings off [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub ping_interval: Option<Duration>,
    /// Silence before a connection is closed; 0 never [default: 75s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub idle_timeout: Option<Duration>,
    /// Time the peer has to answer a close frame [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub close_timeout: Option<Duration>,
    /// Time between SIGTERM and closing clients with 1001 [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_grace: Option<Duration>,
    /// Time the whole drain may take [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_timeout: Option<Duration>,
    /// Topics one connection may subscribe to [default: 256].
    #[arg(long, value_name = "N")]
    pub max_topics_per_connection: Option<usize>,
    /// Serve the /echo endpoint [default: true].
    #[arg(long, value_name = "BOOL")]
    pub echo: Option<bool>,
    /// Connections held at most, all workers together; 0 for the open-file limit less 128
    /// [default: 0].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections from one source address; 0 for no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Publishes a connection may make per second; 0 for no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub publish_rate: Option<u32>,
    /// Publishes a connection may make in a burst above the rate [default: the rate].
    #[arg(long, value_name = "N")]
    pub publish_burst: Option<u32>,
    /// Origins allowed to open a WebSocket, comma separated (`https://app.example.com`,
    /// `*.example.com`); empty allows any [default: empty].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    #[serde(default, deserialize_with = "de_list")]
    pub allowed_origins: Option<Vec<String>>,
    /// Expect a PROXY protocol header (v1 or v2) first on connections from trusted proxies
    /// [default: false].
    #[arg(long, value_name = "BOOL")]
    pub proxy_protocol: Option<bool>,
    /// Networks whose connections must start with a PROXY header, comma separated
    /// (`10.0.0.0/8,127.0.0.1/32`); empty trusts every peer [default: empty].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    #[serde(default, deserialize_with = "de_list")]
    pub trusted_proxies: Option<Vec<String>>,
    /// Require a JWT signed with this HS256 secret on every upgrade [default: none].
    #[arg(long, value_name = "SECRET")]
    pub jwt_secret: Option<String>,
    /// Require a JWT verified with this PEM public key file on every upgrade [default: none].
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// The algorithm of --jwt-public-key: RS256 or ES256 [default: RS256].
    #[arg(long, value_name = "ALG")]
    pub jwt_algorithm: Option<String>,
    /// Require `Authorization: Bearer KEY` on POST /publish [default: none].
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Take the client's address from `X-Forwarded-For` on requests from trusted proxies
    /// (--trusted-proxies; empty trusts every peer) [default: false].
    #[arg(long, value_name = "BOOL")]
    pub forwarded_for: Option<bool>,
    /// Redis URL (`redis://[user:password@]host:port`) that joins this node to a cluster;
    /// none runs a single node [default: none].
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Prefix of the Redis channel of each topic [default: wsgate:].
    #[arg(long, value_name = "PREFIX")]
    pub redis_prefix: Option<String>,
    /// Use Redis 7 sharded pub/sub (SSUBSCRIBE/SPUBLISH), for Redis Cluster [default: false].
    #[arg(long, value_name = "BOOL")]
    pub redis_sharded: Option<bool>,
    /// Publishes waiting to go to Redis, in bytes, past which new ones stay on this node
    /// [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    #[serde(default, deserialize_with = "de_size")]
    pub redis_max_pending: Option<u64>,
    /// This node's name in the cluster, for logs and to skip its own messages coming back
    /// from Redis [default: random at start].
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,
    /// Serve the dashboard at `/` [default: true].
    #[arg(long, value_name = "BOOL")]
    pub dashboard: Option<bool>,
    /// Log filter, as RUST_LOG takes it [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}

impl Settings {
    /// Each setting from `self` where given, else from `lower`.
    pub fn over(self, lower: Settings) -> Settings {
        macro_rules! pick {
            ($($f:ident),*) => { Settings { $($f: self.$f.or(lower.$f)),* } };
        }
        pick!(
            listen,
            workers,
            backlog,
            max_message_size,
            max_frame_size,
            max_head_size,
            max_body_size,
            outbox_limit,
            read_buffer_size,
            handshake_timeout,
            ping_interval,
            idle_timeout,
            close_timeout,
            drain_grace,
            drain_timeout,
            max_topics_per_connection,
            echo,
            max_connections,
            max_connections_per_ip,
            publish_rate,
            publish_burst,
            allowed_origins,
            jwt_secret,
            jwt_public_key,
            jwt_algorithm,
            proxy_protocol,
            trusted_proxies,
            api_key,
            forwarded_for,
            redis,
            redis_prefix,
            redis_sharded,
            redis_max_pending,
            node_id,
            dashboard,
            log
        )
    }
}

/// The resolved configuration the gateway runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Number of worker threads.
    pub workers: usize,
    /// Listen backlog per worker socket.
    pub backlog: u32,
    /// Largest message a client may send.
    pub max_message_size: u64,
    /// Largest single frame.
    pub max_frame_size: u64,
    /// Largest HTTP request head.
    pub max_head_size: usize,
    /// Largest POST /publish body.
    pub max_body_size: usize,
    /// Outbox byte cap per connection.
    pub outbox_limit: usize,
    /// Each worker's read buffer size.
    pub read_buffer_size: usize,
    /// Handshake timeout.
    pub handshake_timeout: Duration,
    /// Ping interval; zero means no pings.
    pub ping_interval: Duration,
    /// Idle timeout; zero means none.
    pub idle_timeout: Duration,
    /// Close handshake timeout.
    pub close_timeout: Duration,
    /// Drain grace period.
    pub drain_grace: Duration,
    /// Drain timeout.
    pub drain_timeout: Duration,
    /// Topics per connection.
    pub max_topics_per_connection: usize,
    /// Whether /echo is served.
    pub echo: bool,
    /// Connections held at most (resolved: never 0).
    pub max_connections: usize,
    /// Connections per source address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Publishes per second per connection (0: no limit).
    pub publish_rate: u32,
    /// Publish burst per connection.
    pub publish_burst: u32,
    /// Allowed origins (empty: any).
    pub allowed_origins: Vec<String>,
    /// Whether trusted peers send a PROXY protocol header first.
    pub proxy_protocol: bool,
    /// The networks of trusted proxies (empty: every peer).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The HS256 secret tokens are checked with, if any.
    pub jwt_secret: Option<String>,
    /// The public key file tokens are checked with, if any.
    pub jwt_public_key: Option<PathBuf>,
    /// The algorithm of `jwt_public_key`.
    pub jwt_algorithm: String,
    /// The API key of POST /publish, if any.
    pub api_key: Option<String>,
    /// Whether `X-Forwarded-For` from trusted proxies names the client.
    pub forwarded_for: bool,
    /// The Redis URL joining this node to a cluster; none for a single node.
    pub redis: Option<String>,
    /// Prefix of each topic's Redis channel.
    pub redis_prefix: String,
    /// Whether to use sharded pub/sub (SSUBSCRIBE/SPUBLISH).
    pub redis_sharded: bool,
    /// Bytes of publishes waiting for Redis past which new ones stay local.
    pub redis_max_pending: usize,
    /// This node's name in the cluster; none picks a random one at start.
    pub node_id: Option<String>,
    /// Whether the dashboard is served at `/`.
    pub dashboard: bool,
    /// Log filter.
    pub log: String,
}

/// A configuration error: names the flag or key and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Resolves settings against the defaults and checks that they make sense together.
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        let workers = match s.workers {
            Some(n) => n as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let max_message_size = s.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        let cfg = Config {
            listen: s
                .listen
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            workers,
            backlog: s.backlog.unwrap_or(DEFAULT_BACKLOG),
            max_message_size,
            max_frame_size: s.max_frame_size.unwrap_or(max_message_size),
            max_head_size: usize_of(s.max_head_size.unwrap_or(DEFAULT_MAX_HEAD_SIZE)),
            max_body_size: usize_of(s.max_body_size.unwrap_or(DEFAULT_MAX_BODY_SIZE)),
            outbox_limit: usize_of(s.outbox_limit.unwrap_or(DEFAULT_OUTBOX_LIMIT)),
            read_buffer_size: usize_of(s.read_buffer_size.unwrap_or(DEFAULT_READ_BUFFER_SIZE)),
            handshake_timeout: s.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            ping_interval: s.ping_interval.unwrap_or(DEFAULT_PING_INTERVAL),
            idle_timeout: s.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
            close_timeout: s.close_timeout.unwrap_or(DEFAULT_CLOSE_TIMEOUT),
            drain_grace: s.drain_grace.unwrap_or(DEFAULT_DRAIN_GRACE),
            drain_timeout: s.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            max_topics_per_connection: s
                .max_topics_per_connection
                .unwrap_or(DEFAULT_MAX_TOPICS_PER_CONNECTION),
            echo: s.echo.unwrap_or(true),
            max_connections: match s.max_connections.unwrap_or(0) {
                0 => open_file_limit().saturating_sub(FD_RESERVE).max(1),
                n => n,
            },
            max_connections_per_ip: s.max_connections_per_ip.unwrap_or(0),
            publish_rate: s.publish_rate.unwrap_or(0),
            publish_burst: s.publish_burst.or(s.publish_rate).unwrap_or(0),
            allowed_origins: s
                .allowed_origins
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            proxy_protocol: s.proxy_protocol.unwrap_or(false),
            trusted_proxies: parse_networks(s.trusted_proxies.unwrap_or_default())?,
            jwt_secret: s.jwt_secret.filter(|k| !k.is_empty()),
            jwt_public_key: s.jwt_public_key,
            jwt_algorithm: s.jwt_algorithm.unwrap_or_else(|| "RS256".to_string()),
            api_key: s.api_key.filter(|k| !k.is_empty()),
            forwarded_for: s.forwarded_for.unwrap_or(false),
            redis: s.redis.filter(|u| !u.is_empty()),
            redis_prefix: s
                .redis_prefix
                .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_string()),
            redis_sharded: s.redis_sharded.unwrap_or(false),
            redis_max_pending: usize_of(s.redis_max_pending.unwrap_or(DEFAULT_REDIS_MAX_PENDING)),
            node_id: s.node_id.filter(|n| !n.is_empty()),
            dashboard: s.dashboard.unwrap_or(true),
            log: s.log.unwrap_or_else(|| "info".to_string()),
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad =
            |what: &str, why: &str| Err(ConfigError(format!("invalid value for {what}: {why}")));
        if self.max_message_size == 0 || self.max_message_size > MAX_MESSAGE_SIZE_CEILING {
            return bad("--max-message-size", "must be between 1 byte and 2GiB");
        }
        if self.max_frame_size == 0 || self.max_frame_size > self.max_message_size {
            return bad(
                "--max-frame-size",
                "must be between 1 byte and the message limit",
            );
        }
        if self.max_head_size < 512 || self.max_head_size > 1 << 20 {
            return bad("--max-head-size", "must be between 512B and 1MiB");
        }
        if self.max_body_size as u64 > MAX_MESSAGE_SIZE_CEILING {
            return bad("--max-body-size", "must be at most 2GiB");
        }
        if self.outbox_limit < 1024 {
            return bad("--outbox-limit", "must be at least 1KiB");
        }
        if self.read_buffer_size < 4096 || self.read_buffer_size > 16 << 20 {
            return bad("--read-buffer-size", "must be between 4KiB and 16MiB");
        }
        if self.handshake_timeout.is_zero() {
            return bad("--handshake-timeout", "must be more than 0");
        }
        if self.close_timeout.is_zero() {
            return bad("--close-timeout", "must be more than 0");
        }
        if !self.idle_timeout.is_zero()
            && !self.ping_interval.is_zero()
            && self.idle_timeout <= self.ping_interval
        {
            return bad(
                "--idle-timeout",
                "must be longer than --ping-interval, or 0",
            );
        }
        if self.publish_rate > 0 && self.publish_burst == 0 {
            return bad(
                "--publish-burst",
                "must be at least 1 when --publish-rate is set",
            );
        }
        if let Some(o) = self
            .allowed_origins
            .iter()
            .find(|o| o.contains(char::is_whitespace))
        {
            return Err(ConfigError(format!(
                "invalid value for --allowed-origins: '{o}' contains a space"
            )));
        }
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            return bad(
                "--jwt-secret",
                "give either --jwt-secret or --jwt-public-key, not both",
            );
        }
        self.authenticator()?;
        if let Some(url) = &self.redis {
            match url::Url::parse(url) {
                Ok(u) if u.scheme() == "redis" && u.host_str().is_some() => {}
                Ok(u) if u.scheme() == "rediss" => {
                    return bad("--redis", "TLS (rediss://) is not supported; use redis://");
                }
                _ => return bad("--redis", "expected redis://[user:password@]host[:port]"),
            }
        }
        if let Some(n) = &self.node_id
            && (n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad(
                "--node-id",
                "at most 64 printable ASCII characters, no spaces",
            );
        }
        if self.redis_max_pending < 1 << 16 {
            return bad("--redis-max-pending", "must be at least 64KiB");
        }
        if self.max_topics_per_connection == 0 {
            return bad("--max-topics-per-connection", "must be at least 1");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return bad(
                "--log",
                "not a valid log filter (try info, debug, wsgate=trace)",
            );
        }
        Ok(())
    }

    /// The token verifier, when authentication is configured.
    pub(crate) fn authenticator(&self) -> Result<Option<crate::auth::Authenticator>, ConfigError> {
        if let Some(secret) = &self.jwt_secret {
            return Ok(Some(crate::auth::Authenticator::hs256(secret.as_bytes())));
        }
        let Some(path) = &self.jwt_public_key else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError(format!(
                "invalid value for --jwt-public-key: cannot read {}: {e}",
                path.display()
            ))
        })?;
        crate::auth::Authenticator::public_key(&pem, &self.jwt_algorithm)
            .map(Some)
            .map_err(|e| {
                ConfigError(format!(
                    "invalid value for --jwt-public-key or --jwt-algorithm: {e}"
                ))
            })
    }

    /// The configuration as TOML, in the form `--config` reads back.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let size = |n: u64| format!("\"{}\"", format_size(n));
        let dur = |d: Duration| format!("\"{}\"", humantime::format_duration(d));
        let _ = writeln!(out, "listen = \"{}\"", self.listen);
        let _ = writeln!(out, "workers = {}", self.workers);
        let _ = writeln!(out, "backlog = {}", self.backlog);
        let _ = writeln!(out, "max-message-size = {}", size(self.max_message_size));
        let _ = writeln!(out, "max-frame-size = {}", size(self.max_frame_size));
        let _ = writeln!(out, "max-head-size = {}", size(self.max_head_size as u64));
        let _ = writeln!(out, "max-body-size = {}", size(self.max_body_size as u64));
        let _ = writeln!(out, "outbox-limit = {}", size(self.outbox_limit as u64));
        let _ = writeln!(
            out,
            "read-buffer-size = {}",
            size(self.read_buffer_size as u64)
        );
        let _ = writeln!(out, "handshake-timeout = {}", dur(self.handshake_timeout));
        let _ = writeln!(out, "ping-interval = {}", dur(self.ping_interval));
        let _ = writeln!(out, "idle-timeout = {}", dur(self.idle_timeout));
        let _ = writeln!(out, "close-timeout = {}", dur(self.close_timeout));
        let _ = writeln!(out, "drain-grace = {}", dur(self.drain_grace));
        let _ = writeln!(out, "drain-timeout = {}", dur(self.drain_timeout));
        let _ = writeln!(
            out,
            "max-topics-per-connection = {}",
            self.max_topics_per_connection
        );
        let _ = writeln!(out, "echo = {}", self.echo);
        let _ = writeln!(out, "max-connections = {}", self.max_connections);
        let _ = writeln!(
            out,
            "max-connections-per-ip = {}",
            self.max_connections_per_ip
        );
        let _ = writeln!(out, "publish-rate = {}", self.publish_rate);
        let _ = writeln!(out, "publish-burst = {}", self.publish_burst);
        let origins: Vec<toml::Value> = self
            .allowed_origins
            .iter()
            .map(|o| toml::Value::String(o.clone()))
            .collect();
        let _ = writeln!(out, "allowed-origins = {}", toml::Value::Array(origins));
        let _ = writeln!(out, "proxy-protocol = {}", self.proxy_protocol);
        let nets: Vec<toml::Value> = self
            .trusted_proxies
            .iter()
            .map(|n| toml::Value::String(n.to_string()))
            .collect();
        let _ = writeln!(out, "trusted-proxies = {}", toml::Value::Array(nets));
        if let Some(secret) = &self.jwt_secret {
            let _ = writeln!(out, "jwt-secret = {}", toml::Value::String(secret.clone()));
        }
        if let Some(path) = &self.jwt_public_key {
            let _ = writeln!(
                out,
                "jwt-public-key = {}",
                toml::Value::String(path.display().to_string())
            );
        }
        let _ = writeln!(
            out,
            "jwt-algorithm = {}",
            toml::Value::String(self.jwt_algorithm.clone())
        );
        if let Some(key) = &self.api_key {
            let _ = writeln!(out, "api-key = {}", toml::Value::String(key.clone()));
        }
        let _ = writeln!(out, "forwarded-for = {}", self.forwarded_for);
        if let Some(url) = &self.redis {
            let _ = writeln!(out, "redis = {}", toml::Value::String(url.clone()));
        }
        let _ = writeln!(
            out,
            "redis-prefix = {}",
            toml::Value::String(self.redis_prefix.clone())
        );
        let _ = writeln!(out, "redis-sharded = {}", self.redis_sharded);
        let _ = writeln!(
            out,
            "redis-max-pending = {}",
            size(self.redis_max_pending as u64)
        );
        if let Some(id) = &self.node_id {
            let _ = writeln!(out, "node-id = {}", toml::Value::String(id.clone()));
        }
        let _ = writeln!(out, "dashboard = {}", self.dashboard);
        let _ = writeln!(out, "log = {}", toml::Value::String(self.log.clone()));
        out
    }
}

/// Reads the command line and the config file it names into a resolved configuration.
pub fn load(cli: Cli) -> Result<Config, ConfigError> {
    let file = match &cli.config {
        Some(path) => read_file(path)?,
        None => Settings::default(),
    };
    Config::resolve(cli.settings.over(file))
}

/// Parses a TOML config file.
pub fn read_file(path: &std::path::Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    parse_toml(&text).map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))
}

/// Parses the text of a TOML config file.
pub fn parse_toml(text: &str) -> Result<Settings, ConfigError> {
    toml::from_str(text)
        .map_err(|e| ConfigError(e.message().to_string() + &span_hint(text, e.span())))
}

/// Where in the file an error is: the line, and the key when the error is in a value (a bad
/// value's message names only the value).
fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let start = r.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            match text[line_start..start].split_once('=') {
                Some((key, _)) if !key.trim().is_empty() => {
                    format!(" (key {}, line {line})", key.trim())
                }
                _ => format!(" (line {line})"),
            }
        }
        None => String::new(),
    }
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Parses a size such as `65536`, `64KiB`, `8 MiB` or `1GB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("'{s}' is not a size (examples: 65536, 64KiB, 8MiB)"))
}

/// Parses a duration such as `10s`, `500ms` or `2m`; a plain number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(t)
        .map_err(|_| format!("'{s}' is not a duration (examples: 10s, 500ms, 2m)"))
}

/// Formats a size in the largest binary unit that divides it.
pub fn format_size(n: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n}B")
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeOrNumber {
    Number(u64),
    Text(String),
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match SizeOrNumber::deserialize(d)? {
        SizeOrNumber::Number(n) => Ok(Some(n)),
        SizeOrNumber::Text(s) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

fn de_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrText {
        List(Vec<String>),
        Text(String),
    }
    Ok(Some(match ListOrText::deserialize(d)? {
        ListOrText::List(v) => v,
        ListOrText::Text(s) => s.split(',').map(str::to_string).collect(),
    }))
}

/// Parses network ranges (`10.0.0.0/8`; a plain address is a single host).
fn parse_networks(items: Vec<String>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError(format!(
                        "invalid value for --trusted-proxies: '{s}' is not a network like 10.0.0.0/8"
                    ))
                })
        })
        .collect()
}

impl Config {
    /// Whether `X-Forwarded-For` on requests from `peer` names the client.
    pub fn trusts_forwarded_for(&self, peer: std::net::IpAddr) -> bool {
        self.forwarded_for
            && (self.trusted_proxies.is_empty()
                || self.trusted_proxies.iter().any(|n| n.contains(&peer)))
    }

    /// Whether a connection from `peer` must start with a PROXY header.
    pub fn expects_proxy_header(&self, peer: std::net::IpAddr) -> bool {
        self.proxy_protocol
            && (self.trusted_proxies.is_empty()
                || self.trusted_proxies.iter().any(|n| n.contains(&peer)))
    }
}

/// Raises the process's open-file soft limit to its hard limit (each connection is a file).
pub fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a valid, owned rlimit struct.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raised);
        }
    }
}

/// The process's open-file limit (its soft limit), which bounds the connections it can hold.
pub fn open_file_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid, owned rlimit struct.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if ok {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match SizeOrNumber::deserialize(d)? {
        SizeOrNumber::Number(n) => Ok(Some(Duration::from_secs(n))),
        SizeOrNumber::Text(s) => parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wsgate").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_named_constants() {
        let c = Config::resolve(Settings::default()).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(c.workers >= 1);
        assert_eq!(c.max_message_size, 64 << 20);
        assert_eq!(c.max_frame_size, c.max_message_size);
        assert_eq!(c.outbox_limit, 8 << 20);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert!(c.echo);
        assert_eq!(c.api_key, None);
    }

    #[test]
    fn flags_win_over_the_file() {
        let file =
            parse_toml("listen = \"127.0.0.1:9000\"\nworkers = 3\nmax-message-size = \"1MiB\"\n")
                .unwrap();
        let flags = cli(&["--workers", "5", "--outbox-limit", "64KiB"])
            .unwrap()
            .settings;
        let c = Config::resolve(flags.over(file)).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.workers, 5);
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.outbox_limit, 64 << 10);
    }

    #[test]
    fn printed_config_reads_back_the_same() {
        let flags = cli(&[
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "s3\"cret",
            "--ping-interval",
            "1m 30s",
            "--idle-timeout",
            "3m",
        ])
        .unwrap()
        .settings;
        let c = Config::resolve(flags).unwrap();
        let again = Config::resolve(parse_toml(&c.to_toml()).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = cli(&["--max-message-size", "lots"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--max-message-size") && err.contains("not a size"),
            "{err}"
        );
        let err = cli(&["--workers", "0"]).unwrap_err().to_string();
        assert!(err.contains("--workers"), "{err}");
        let err = cli(&["--no-such-flag"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let s = cli(&["--max-message-size", "3GiB"]).unwrap().settings;
        assert!(
            Config::resolve(s)
                .unwrap_err()
                .0
                .contains("--max-message-size")
        );
        let s = cli(&["--ping-interval", "10s", "--idle-timeout", "5s"])
            .unwrap()
            .settings;
        assert!(Config::resolve(s).unwrap_err().0.contains("--idle-timeout"));
    }

    #[test]
    fn bad_files_name_the_key_and_line() {
        let err = parse_toml("listen = \"127.0.0.1:1\"\nmax-mesage-size = 5\n")
            .unwrap_err()
            .0;
        assert!(
            err.contains("max-mesage-size") && err.contains("line 2"),
            "{err}"
        );
        let err = parse_toml("workers = 1\noutbox-limit = \"huge\"\n")
            .unwrap_err()
            .0;
        assert!(
            err.contains("not a size") && err.contains("key outbox-limit, line 2"),
            "{err}"
        );
        let err = parse_toml("workers = [1]").unwrap_err().0;
        assert!(!err.is_empty());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("8 MiB"), Ok(8 << 20));
        assert!(parse_size("-1").is_err());
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(1000), "1000B");
    }
}
