//! Configuration: command-line flags over an optional TOML file over named defaults.
//!
//! Every setting is declared once, in the table below: its group, its name (the flag
//! `--max-message-size` and the TOML key `max-message-size`), how its value is written (its
//! `codec`), its default and its help. A flag wins over the file, the file over the default.
//! Sizes take units (`8KiB`, `64 MiB`, or plain bytes), durations take units (`10s`, `500ms`,
//! `2m`), as [`wsgate_core::units`] reads them. A bad flag, value or file is reported with the
//! name of what was wrong, and exit code 2. Rules that tie settings together are in
//! `Config::check`.
//!
//! Besides the flat `key = value` settings, the file holds lists of tables, declared at the end
//! of the table below: `[[history]]` rules ([`HistoryRule`], read in [`history`]) choose the
//! topics that keep a history; [`Config::history_for`] finds a topic's rule.

#[macro_use]
mod settings;
mod codec;
pub mod history;

use clap::Parser;
use codec::{
    Address, Codec, Count, File, Flag, List, Networks, Optional, Size, Span, Text, Workers,
};
pub use history::HistoryRule;
use ipnet::IpNet;
use settings::{Table, key_of, line_of, read_tables};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The most a message limit may be raised to: browsers handle messages up to 2 GiB.
pub const MAX_MESSAGE_SIZE_CEILING: u64 = 2 << 30;
/// File descriptors kept back from the open-file limit when `max-connections` is automatic.
pub const FD_RESERVE: u64 = 128;

settings! {
    /// Where the node listens, how many workers serve it, and what it serves.
    server: Server {
        /// Address to listen on.
        listen: SocketAddr as Address = "0.0.0.0:8080", "ADDR";
        /// Worker threads, each with its own event loop and socket (1 to 1024, or auto).
        workers: usize as Workers = "auto" ("one per core"), "N";
        /// Listen backlog of each worker's socket.
        backlog: u32 as Count<u32> = "1024", "N";
        /// Serve the /echo endpoint.
        echo: bool as Flag = "true", "BOOL";
        /// Serve the dashboard at `/`.
        dashboard: bool as Flag = "true", "BOOL";
        /// Log filter, as RUST_LOG takes it.
        log: String as Text = "info", "FILTER";
        /// Write a publish to all its idle subscribers with one io_uring submission instead of one send each (Linux 6.1 or later; where the kernel refuses a ring, one send each).
        io_uring: bool as Flag = "true", "BOOL";
    }

    /// TLS on the listening port.
    tls: Tls {
        /// The certificate chain (PEM) of the listening port: with --tls-key, `listen` serves TLS (wss://, https://).
        tls_cert: Option<PathBuf> as Optional<File> = "" ("none"), "FILE";
        /// The private key (PEM: PKCS#8, RSA or EC) of --tls-cert.
        tls_key: Option<PathBuf> as Optional<File> = "" ("none"), "FILE";
        /// The oldest TLS version accepted: 1.2 or 1.3.
        tls_min_version: String as Text = "1.2", "VERSION";
        /// A second, plaintext port beside the TLS one (health checks, metrics on a private network).
        plain_listen: Option<SocketAddr> as Optional<Address> = "" ("none"), "ADDR";
        /// Serve /metrics, /stats and the dashboard on the --plain-listen port only (404 on the TLS port, which may face the internet).
        admin_on_plain: bool as Flag = "false", "BOOL";
        /// TLS connections one client address may open a second (a burst of four seconds' worth); 0 for no limit.
        tls_handshakes_per_ip: u32 as Count<u32> = "0", "N";
    }

    /// What one peer may send, queue and hold.
    limits: Limits {
        /// Largest message a client may send, up to 2GiB.
        max_message_size: u64 as Size<u64> = "64MiB", "SIZE";
        /// Largest single frame.
        max_frame_size: Option<u64> as Optional<Size<u64>> = "" ("the message limit"), "SIZE";
        /// Largest HTTP request head.
        max_head_size: usize as Size<usize> = "8KiB", "SIZE";
        /// Largest POST /publish body.
        max_body_size: usize as Size<usize> = "1MiB", "SIZE";
        /// Bytes queued to one connection before it is closed as a slow consumer.
        outbox_limit: usize as Size<usize> = "8MiB", "SIZE";
        /// Each worker's read buffer, and what one connection is read each turn; larger frames get a buffer of their own.
        read_buffer_size: usize as Size<usize> = "64KiB", "SIZE";
        /// Deliveries waiting for one worker, in bytes; past it publishers wait (their socket is not read, POST /publish answers 503).
        inbox_limit: usize as Size<usize> = "64MiB", "SIZE";
        /// Memory for the messages kept by every topic's history together (see [[history]] in the file); past it the oldest are evicted. At least 1MiB.
        history_memory: usize as Size<usize> = "64MiB", "SIZE";
        /// Topics one connection may subscribe to.
        max_topics_per_connection: usize as Count<usize> = "256", "N";
        /// Connections held at most, all workers together; 0 for the open-file limit less 128.
        max_connections: u64 as Count<u64> = "0", "N";
        /// Connections from one source address; 0 for no limit.
        max_connections_per_ip: usize as Count<usize> = "0", "N";
        /// The IPv6 prefix length that counts as one source address for max-connections-per-ip (a host is given a /64).
        ipv6_prefix: u8 as Count<u8> = "64", "BITS";
        /// Publishes a WebSocket connection may make per second (a token's publish_rate claim overrides it); 0 for no limit.
        publish_rate: u32 as Count<u32> = "1000", "N";
        /// Publishes a connection may make at once above the rate.
        publish_burst: u32 as Count<u32> = "10000", "N";
    }

    /// permessage-deflate (RFC 7692): what is compressed, and how hard.
    deflate: Deflate {
        /// Accept permessage-deflate offers (every browser makes one); false declines them all.
        compression: bool as Flag = "true", "BOOL";
        /// Deflate level of outgoing messages, 1 (fastest) to 9 (smallest); a publish is compressed once for all its subscribers.
        compression_level: u32 as Count<u32> = "3", "N";
        /// Messages shorter than this go out uncompressed.
        compression_min_size: usize as Size<usize> = "128B", "SIZE";
        /// Let clients compress each message with the context of their previous ones (better ratio; about 40KiB kept per connection that sends compressed messages); false answers client_no_context_takeover.
        compression_client_context: bool as Flag = "false", "BOOL";
    }

    /// How long each step may take.
    timeouts: Timeouts {
        /// Time to complete the HTTP request.
        handshake_timeout: Duration as Span = "10s", "DURATION";
        /// Silence before the server pings; 0 turns pings off.
        ping_interval: Duration as Span = "30s", "DURATION";
        /// Silence before a connection is closed; 0 never.
        idle_timeout: Duration as Span = "75s", "DURATION";
        /// Time the peer has to answer a close frame.
        close_timeout: Duration as Span = "5s", "DURATION";
        /// Time between SIGTERM and closing clients with 1001.
        drain_grace: Duration as Span = "2s", "DURATION";
        /// Time the whole drain may take.
        drain_timeout: Duration as Span = "10s", "DURATION";
    }

    /// Who may connect and publish.
    auth: Auth {
        /// Origins allowed to open a WebSocket, comma separated (`https://app.example.com`, `*.example.com`); empty allows any.
        allowed_origins: Vec<String> as List = "" ("empty"), "LIST";
        /// Require a JWT signed with this HS256 secret on every upgrade.
        jwt_secret: Option<String> as Optional<Text> = "" ("none"), "SECRET";
        /// Require a JWT verified with this PEM public key file on every upgrade.
        jwt_public_key: Option<PathBuf> as Optional<File> = "" ("none"), "FILE";
        /// The algorithm of --jwt-public-key: RS256 or ES256.
        jwt_algorithm: String as Text = "RS256", "ALG";
        /// The `aud` claim every token must carry.
        jwt_audience: Option<String> as Optional<Text> = "" ("none"), "AUD";
        /// The `iss` claim every token must carry.
        jwt_issuer: Option<String> as Optional<Text> = "" ("none"), "ISS";
        /// Require `Authorization: Bearer KEY` on POST /publish.
        api_key: Option<String> as Optional<Text> = "" ("none"), "KEY";
        /// Serve POST /publish without an API key even though WebSocket upgrades need a token.
        publish_open: bool as Flag = "false", "BOOL";
    }

    /// What the load balancers in front say about the client.
    proxy: Proxy {
        /// Expect a PROXY protocol header (v1 or v2) first on connections from --trusted-proxies.
        proxy_protocol: bool as Flag = "false", "BOOL";
        /// The load balancers' networks, comma separated (`10.0.0.0/8,127.0.0.1/32`): only they may say who the client is.
        trusted_proxies: Vec<IpNet> as Networks = "" ("empty"), "LIST";
        /// Take the client's address from `X-Forwarded-For` on requests from --trusted-proxies.
        forwarded_for: bool as Flag = "false", "BOOL";
    }

    /// The link to other nodes through Redis.
    cluster: Cluster {
        /// Redis URL (`redis://[user:password@]host:port`) that joins this node to a cluster; none runs a single node.
        redis: Option<String> as Optional<Text> = "" ("none"), "URL";
        /// Prefix of the Redis channel of each topic.
        redis_prefix: String as Text = "wsgate:", "PREFIX";
        /// Use Redis 7 sharded pub/sub (SSUBSCRIBE/SPUBLISH), for Redis Cluster.
        redis_sharded: bool as Flag = "false", "BOOL";
        /// Publishes waiting to go to Redis, in bytes, past which new ones stay on this node.
        redis_max_pending: usize as Size<usize> = "64MiB", "SIZE";
        /// This node's name in the cluster, for logs and to skip its own messages coming back from Redis.
        node_id: Option<String> as Optional<Text> = "" ("random at start"), "NAME";
    }

    tables {
        /// The topics that keep a history, as [[history]] rules (first match wins; none by default): `topics = "chat.*", size = 1000, ttl = "5m"`.
        history: HistoryRule, "RULE";
    }
}

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

/// A configuration error: names the flag or key and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

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

/// Parses the text of a TOML config file: flat `key = value` lines, one per setting, then the
/// `[[history]]` tables. An error names the key (or the rule) and the line.
pub fn parse_toml(text: &str) -> Result<Settings, ConfigError> {
    use std::collections::BTreeMap;
    use toml::Spanned;
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|r| format!(" (line {})", line_of(text, r.start)))
                .unwrap_or_default();
            ConfigError(format!("{}{at}", e.message()))
        })?;
    let mut settings = Settings::default();
    for (key, value) in &table {
        if let Some(read) = settings.set_tables(key.get_ref(), text) {
            read.map_err(ConfigError)?;
            continue;
        }
        match settings.set(key.get_ref(), value.get_ref()) {
            Ok(true) => {}
            Ok(false) => {
                return Err(ConfigError(format!(
                    "unknown setting `{}` (line {}); the settings are: {}",
                    key.get_ref(),
                    line_of(text, key.span().start),
                    Settings::KEYS
                        .iter()
                        .map(|k| key_of(k))
                        .chain(
                            Settings::TABLES
                                .iter()
                                .map(|k| format!("[[{}]]", key_of(k)))
                        )
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Err(why) => {
                return Err(ConfigError(format!(
                    "{why} (key {}, line {})",
                    key.get_ref(),
                    line_of(text, value.span().start)
                )));
            }
        }
    }
    Ok(settings)
}

impl Config {
    /// Resolves settings against the defaults and checks that they make sense together.
    pub fn resolve(s: Settings) -> Result<Config, ConfigError> {
        let cfg = Config::with_defaults(s);
        cfg.check()?;
        Ok(cfg)
    }

    /// The history rule of `topic`: the first `[[history]]` rule whose pattern matches it, or
    /// `None` when the topic keeps no history.
    pub fn history_for(&self, topic: &str) -> Option<&HistoryRule> {
        self.history.iter().find(|r| r.matches(topic))
    }

    /// The rules that tie settings together, or bound one beyond what its type says.
    fn check(&self) -> Result<(), ConfigError> {
        let bad =
            |what: &str, why: &str| Err(ConfigError(format!("invalid value for {what}: {why}")));
        let l = &self.limits;
        let t = &self.timeouts;
        if l.max_message_size == 0 || l.max_message_size > MAX_MESSAGE_SIZE_CEILING {
            return bad("--max-message-size", "must be between 1 byte and 2GiB");
        }
        if l.max_frame_size
            .is_some_and(|f| f == 0 || f > l.max_message_size)
        {
            return bad(
                "--max-frame-size",
                "must be between 1 byte and the message limit",
            );
        }
        if l.max_head_size < 512 || l.max_head_size > 1 << 20 {
            return bad("--max-head-size", "must be between 512B and 1MiB");
        }
        if l.max_body_size as u64 > MAX_MESSAGE_SIZE_CEILING {
            return bad("--max-body-size", "must be at most 2GiB");
        }
        if l.outbox_limit < 1024 {
            return bad("--outbox-limit", "must be at least 1KiB");
        }
        if l.read_buffer_size < 4096 || l.read_buffer_size > 16 << 20 {
            return bad("--read-buffer-size", "must be between 4KiB and 16MiB");
        }
        if l.inbox_limit < 64 << 10 {
            return bad("--inbox-limit", "must be at least 64KiB");
        }
        if l.history_memory < 1 << 20 {
            return bad("--history-memory", "must be at least 1MiB");
        }
        history::check(&self.history).map_err(ConfigError)?;
        self.tls.check(self.server.listen)?;
        if l.max_topics_per_connection == 0 {
            return bad("--max-topics-per-connection", "must be at least 1");
        }
        if l.publish_rate > 0 && l.publish_burst == 0 {
            return bad(
                "--publish-burst",
                "must be at least 1 when --publish-rate is set",
            );
        }
        if !(1..=128).contains(&l.ipv6_prefix) {
            return bad("--ipv6-prefix", "must be between 1 and 128");
        }
        if !(1..=9).contains(&self.deflate.compression_level) {
            return bad("--compression-level", "must be between 1 and 9");
        }
        if t.handshake_timeout.is_zero() {
            return bad("--handshake-timeout", "must be more than 0");
        }
        if t.close_timeout.is_zero() {
            return bad("--close-timeout", "must be more than 0");
        }
        if !t.idle_timeout.is_zero()
            && !t.ping_interval.is_zero()
            && t.idle_timeout <= t.ping_interval
        {
            return bad(
                "--idle-timeout",
                "must be longer than --ping-interval, or 0",
            );
        }
        if let Some(o) = self
            .auth
            .allowed_origins
            .iter()
            .find(|o| o.contains(char::is_whitespace))
        {
            return Err(ConfigError(format!(
                "invalid value for --allowed-origins: '{o}' contains a space"
            )));
        }
        let a = &self.auth;
        if a.jwt_secret.is_some() && a.jwt_public_key.is_some() {
            return bad(
                "--jwt-secret",
                "give either --jwt-secret or --jwt-public-key, not both",
            );
        }
        let p = &self.proxy;
        if p.trusted_proxies.is_empty() {
            if p.proxy_protocol {
                return bad(
                    "--proxy-protocol",
                    "needs --trusted-proxies (the load balancers' networks): else any peer \
                     could claim any client address",
                );
            }
            if p.forwarded_for {
                return bad(
                    "--forwarded-for",
                    "needs --trusted-proxies (the load balancers' networks): else any peer \
                     could claim any client address",
                );
            }
        }
        self.auth.authenticator()?;
        let tokens = a.jwt_secret.is_some() || a.jwt_public_key.is_some();
        if tokens && a.api_key.is_none() && !a.publish_open {
            return bad(
                "--api-key",
                "upgrades need a token but POST /publish would be open to anyone: set \
                 --api-key, or --publish-open true to mean it",
            );
        }
        if (a.jwt_audience.is_some() || a.jwt_issuer.is_some()) && !tokens {
            return bad(
                "--jwt-audience",
                "--jwt-audience and --jwt-issuer need --jwt-secret or --jwt-public-key",
            );
        }
        let c = &self.cluster;
        if let Some(url) = &c.redis {
            match url::Url::parse(url) {
                Ok(u) if u.scheme() == "redis" && u.host_str().is_some() => {}
                Ok(u) if u.scheme() == "rediss" => {
                    return bad("--redis", "TLS (rediss://) is not supported; use redis://");
                }
                _ => return bad("--redis", "expected redis://[user:password@]host[:port]"),
            }
        }
        if let Some(n) = &c.node_id
            && (n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad(
                "--node-id",
                "at most 64 printable ASCII characters, no spaces",
            );
        }
        if c.redis_max_pending < 1 << 16 {
            return bad("--redis-max-pending", "must be at least 64KiB");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.server.log).is_err() {
            return bad(
                "--log",
                "not a valid log filter (try info, debug, wsgate=trace)",
            );
        }
        Ok(())
    }
}

impl Limits {
    /// The largest frame: `max-frame-size`, or the message limit.
    pub fn frame_limit(&self) -> u64 {
        self.max_frame_size.unwrap_or(self.max_message_size)
    }

    /// The connections the node holds at most: `max-connections`, or (0) the open-file limit
    /// less [`FD_RESERVE`].
    pub fn connection_limit(&self) -> usize {
        let n = match self.max_connections {
            0 => crate::sys::open_file_limit()
                .saturating_sub(FD_RESERVE)
                .max(1),
            n => n,
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

impl Tls {
    /// The TLS of the listening port, loaded from the files, when --tls-cert and --tls-key
    /// are set. The error names the setting at fault.
    pub fn load(&self) -> Result<Option<crate::tls::Tls>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::tls::Tls::load(cert, key, &self.tls_min_version)
                .map(Some)
                .map_err(ConfigError),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError(
                "invalid value for --tls-cert: it needs --tls-key (the certificate's private key)"
                    .into(),
            )),
            (None, Some(_)) => Err(ConfigError(
                "invalid value for --tls-key: it needs --tls-cert (the certificate chain)".into(),
            )),
        }
    }

    /// The rules of the TLS settings: the files load (see [`load`](Self::load)), and a
    /// plaintext port goes beside a TLS one, on another address.
    fn check(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if !crate::tls::VERSIONS.contains(&self.tls_min_version.as_str()) {
            return Err(ConfigError(format!(
                "invalid value for --tls-min-version: '{}' (1.2 or 1.3)",
                self.tls_min_version
            )));
        }
        let tls = self.load()?;
        if self.admin_on_plain && self.plain_listen.is_none() {
            return Err(ConfigError(
                "invalid value for --admin-on-plain: it needs --plain-listen (the port that \
                 serves them)"
                    .into(),
            ));
        }
        if let Some(plain) = self.plain_listen {
            if tls.is_none() {
                return Err(ConfigError(
                    "invalid value for --plain-listen: it adds a plaintext port beside a TLS one; \
                     set --tls-cert and --tls-key (or use --listen alone)"
                        .into(),
                ));
            }
            if plain == listen && plain.port() != 0 {
                return Err(ConfigError(format!(
                    "invalid value for --plain-listen: {plain} is --listen's address"
                )));
            }
        }
        Ok(())
    }
}

impl Auth {
    /// The token verifier, when authentication is configured.
    pub(crate) fn authenticator(&self) -> Result<Option<crate::auth::Authenticator>, ConfigError> {
        let required = crate::auth::Required {
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
        };
        if let Some(secret) = &self.jwt_secret {
            return Ok(Some(crate::auth::Authenticator::hs256(
                secret.as_bytes(),
                &required,
            )));
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
        crate::auth::Authenticator::public_key(&pem, &self.jwt_algorithm, &required)
            .map(Some)
            .map_err(|e| {
                ConfigError(format!(
                    "invalid value for --jwt-public-key or --jwt-algorithm: {e}"
                ))
            })
    }
}

impl Proxy {
    /// Whether `X-Forwarded-For` on requests from `peer` names the client.
    pub fn trusts_forwarded_for(&self, peer: std::net::IpAddr) -> bool {
        self.forwarded_for && self.trusts(peer)
    }

    /// Whether a connection from `peer` must start with a PROXY header.
    pub fn expects_proxy_header(&self, peer: std::net::IpAddr) -> bool {
        self.proxy_protocol && self.trusts(peer)
    }

    fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wsgate").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(Settings::default()).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
        assert!(c.server.workers >= 1);
        assert_eq!(c.limits.max_message_size, 64 << 20);
        assert_eq!(c.limits.frame_limit(), c.limits.max_message_size);
        assert_eq!(c.limits.outbox_limit, 8 << 20);
        assert_eq!(c.timeouts.handshake_timeout, Duration::from_secs(10));
        assert!(c.server.echo);
        assert_eq!(c.auth.api_key, None);
        assert_eq!(c.cluster.redis_prefix, "wsgate:");
        assert!(c.limits.connection_limit() >= 1);
    }

    #[test]
    fn help_shows_each_default() {
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        for shown in [
            "[default: 64MiB]",
            "[default: one per core]",
            "[default: the message limit]",
            "[default: 1000]",
            "[default: 30s]",
            "[default: none]",
            "[default: wsgate:]",
        ] {
            assert!(help.contains(shown), "{shown} missing from:\n{help}");
        }
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
        assert_eq!(c.server.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.server.workers, 5);
        assert_eq!(c.limits.max_message_size, 1 << 20);
        assert_eq!(c.limits.outbox_limit, 64 << 10);
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
            "--max-frame-size",
            "1MiB",
            "--publish-rate",
            "10",
            "--trusted-proxies",
            "10.0.0.0/8,127.0.0.1",
            "--allowed-origins",
            "https://a.example,*.b.example",
        ])
        .unwrap()
        .settings;
        let c = Config::resolve(flags).unwrap();
        let text = c.to_toml();
        assert!(text.contains("# limits\n"), "{text}");
        let again = Config::resolve(parse_toml(&text).unwrap()).unwrap();
        assert_eq!(again, c);
        let defaults = Config::resolve(Settings::default()).unwrap();
        let again = Config::resolve(parse_toml(&defaults.to_toml()).unwrap()).unwrap();
        assert_eq!(again, defaults);
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
    fn defaults_that_would_leave_a_door_open_are_refused() {
        let err = |args: &[&str]| Config::resolve(cli(args).unwrap().settings).unwrap_err().0;
        let e = err(&["--jwt-secret", "s"]);
        assert!(
            e.contains("--api-key") && e.contains("--publish-open"),
            "{e}"
        );
        assert!(
            Config::resolve(
                cli(&["--jwt-secret", "s", "--publish-open", "true"])
                    .unwrap()
                    .settings
            )
            .is_ok()
        );
        assert!(
            Config::resolve(
                cli(&["--jwt-secret", "s", "--api-key", "k"])
                    .unwrap()
                    .settings
            )
            .is_ok()
        );
        assert!(err(&["--proxy-protocol", "true"]).contains("--proxy-protocol"));
        assert!(err(&["--forwarded-for", "true"]).contains("--forwarded-for"));
        assert!(err(&["--jwt-issuer", "x"]).contains("--jwt-audience"));
        assert!(err(&["--ipv6-prefix", "0"]).contains("--ipv6-prefix"));
        let c = Config::resolve(Settings::default()).unwrap();
        assert_eq!(
            (c.limits.publish_rate, c.limits.publish_burst),
            (1000, 10_000)
        );
        assert_eq!(c.limits.ipv6_prefix, 64);
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
        assert!(err.contains("key workers"), "{err}");
        let err = parse_toml("this is [not toml").unwrap_err().0;
        assert!(err.contains("line 1"), "{err}");
    }

    const RULES: &str = "\
workers = 2
history-memory = \"16MiB\"

[[history]]
topics = \"chat.vip.*\"
size = 5000
ttl = \"1h\"

[[history]]
topics = \"chat.*\"
size = 1000
ttl = \"5m\"

[[history]]
topics = \"orders\"
size = \"10\"
ttl = 30
";

    #[test]
    fn history_rules_are_read_in_order_and_the_first_match_wins() {
        let c = Config::resolve(parse_toml(RULES).unwrap()).unwrap();
        assert_eq!(c.server.workers, 2);
        assert_eq!(c.limits.history_memory, 16 << 20);
        let rule = |topics: &str, size, secs| HistoryRule {
            topics: topics.into(),
            size,
            ttl: Duration::from_secs(secs),
        };
        assert_eq!(
            c.history,
            [
                rule("chat.vip.*", 5000, 3600),
                rule("chat.*", 1000, 300),
                rule("orders", 10, 30)
            ]
        );
        assert_eq!(c.history_for("chat.vip.1").unwrap().size, 5000);
        assert_eq!(c.history_for("chat.vip.").unwrap().size, 5000);
        assert_eq!(c.history_for("chat.vip").unwrap().size, 1000);
        assert_eq!(c.history_for("chat.room").unwrap().size, 1000);
        assert_eq!(
            c.history_for("orders").unwrap().ttl,
            Duration::from_secs(30)
        );
        assert_eq!(c.history_for("orders.eu"), None);
        assert_eq!(c.history_for("chat"), None);
        // an inline array of tables is the same TOML
        let inline = "history = [{ topics = \"*\", size = 1, ttl = \"24h\" }]";
        let c = Config::resolve(parse_toml(inline).unwrap()).unwrap();
        assert_eq!(c.history, [rule("*", 1, 24 * 3600)]);
        assert!(c.history_for("anything").is_some());
    }

    #[test]
    fn history_is_off_by_default() {
        let c = Config::resolve(Settings::default()).unwrap();
        assert!(c.history.is_empty());
        assert_eq!(c.history_for("chat.room"), None);
        assert_eq!(c.limits.history_memory, 64 << 20);
        let c = Config::resolve(parse_toml("history = []").unwrap()).unwrap();
        assert!(c.history.is_empty());
        assert!(!c.to_toml().contains("[[history]]"));
    }

    #[test]
    fn bad_history_rules_name_the_rule_its_line_and_why() {
        let rules = |body: &str| {
            format!(
                "workers = 1\n\n[[history]]\ntopics = \"a.*\"\nsize = 1\nttl = 1\n\n[[history]]\n{body}"
            )
        };
        let err = |body: &str| parse_toml(&rules(body)).unwrap_err().0;
        for (body, named) in [
            // line 9 is the first key of rule 2
            (
                "topics = \"chat*.x\"\nsize = 1\nttl = 1\n",
                &["history rule 2 (line 9)", "chat*.x", "may only end"][..],
            ),
            (
                "topics = \"\"\nsize = 1\nttl = 1\n",
                &["history rule 2 (line 9)", "empty pattern"],
            ),
            (
                "topics = \"*x\"\nsize = 1\nttl = 1\n",
                &["rule 2", "may only end"],
            ),
            (
                "topics = 5\nsize = 1\nttl = 1\n",
                &["rule 2 (line 9)", "topics 5", "expected a string"],
            ),
            (
                "topics = \"b\"\nsize = 0\nttl = 1\n",
                &["rule 2 (line 10)", "size 0", "between 1 and 1000000"],
            ),
            (
                "topics = \"b\"\nsize = 1000001\nttl = 1\n",
                &["rule 2 (line 10)", "size 1000001"],
            ),
            (
                "topics = \"b\"\nsize = -3\nttl = 1\n",
                &["rule 2 (line 10)", "negative"],
            ),
            (
                "topics = \"b\"\nsize = \"lots\"\nttl = 1\n",
                &["rule 2 (line 10)", "not a whole number"],
            ),
            (
                "topics = \"b\"\nsize = 1\nttl = \"0s\"\n",
                &["rule 2 (line 11)", "ttl \"0s\"", "more than 0"],
            ),
            (
                "topics = \"b\"\nsize = 1\nttl = \"25h\"\n",
                &["rule 2 (line 11)", "at most 24h"],
            ),
            (
                "topics = \"b\"\nsize = 1\nttl = \"soon\"\n",
                &["rule 2 (line 11)", "not a duration"],
            ),
            (
                "topics = \"b\"\nsize = 1\n",
                &["history rule 2", "`ttl` is missing"],
            ),
            (
                "size = 1\nttl = 1\n",
                &["history rule 2", "`topics` is missing"],
            ),
            (
                "topics = \"b\"\nsize = 1\nttl = 1\nsise = 1\n",
                &[
                    "rule 2 (line 12)",
                    "unknown key `sise`",
                    "topics, size and ttl",
                ],
            ),
            (
                "topics = \"b\"\nsize = 1\nttl = 1\nlisten = \"127.0.0.1:1\"\n",
                &[
                    "unknown key `listen`",
                    "settings go before the first [[history]]",
                ],
            ),
        ] {
            let e = err(body);
            for n in named {
                assert!(e.contains(n), "{body:?}: {n:?} not in: {e}");
            }
        }
        // not a list of tables
        let e = parse_toml("history = \"chat.*\"").unwrap_err().0;
        assert!(e.contains("[[history]]") && e.contains("line 1"), "{e}");
        let e = parse_toml("history = [1]").unwrap_err().0;
        assert!(e.contains("[[history]]"), "{e}");
        // a rule hidden behind an earlier one
        let text = rules("topics = \"a.b\"\nsize = 1\nttl = 1\n");
        let e = Config::resolve(parse_toml(&text).unwrap()).unwrap_err().0;
        assert!(
            e.contains("history rule 2") && e.contains("never applies"),
            "{e}"
        );
        // the node-wide budget
        let s = cli(&["--history-memory", "512KiB"]).unwrap().settings;
        let e = Config::resolve(s).unwrap_err().0;
        assert!(e.contains("--history-memory") && e.contains("1MiB"), "{e}");
        // the existing messages stay as they were
        let e = parse_toml("max-mesage-size = 5\n").unwrap_err().0;
        assert!(
            e.contains("unknown setting `max-mesage-size` (line 1)") && e.contains("[[history]]"),
            "{e}"
        );
    }

    #[test]
    fn history_rules_from_flags_replace_the_file_s() {
        let file = parse_toml(RULES).unwrap();
        let flags = cli(&[
            "--history",
            "topics = \"news.*\", size = 3, ttl = \"2m\"",
            "--history",
            "{ topics = \"*\", size = 1, ttl = 1 }",
        ])
        .unwrap()
        .settings;
        let c = Config::resolve(flags.over(file.clone())).unwrap();
        let topics: Vec<_> = c.history.iter().map(|r| r.topics.as_str()).collect();
        assert_eq!(topics, ["news.*", "*"]);
        assert_eq!(c.limits.history_memory, 16 << 20);
        let c = Config::resolve(cli(&[]).unwrap().settings.over(file)).unwrap();
        assert_eq!(c.history.len(), 3);
        let err = cli(&["--history", "topics = \"a**\", size = 1, ttl = 1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--history") && err.contains("may only end"),
            "{err}"
        );
    }

    #[test]
    fn printed_history_rules_read_back_the_same() {
        let c = Config::resolve(parse_toml(RULES).unwrap()).unwrap();
        let text = c.to_toml();
        assert!(
            text.ends_with("# history\n[[history]]\ntopics = \"chat.vip.*\"\nsize = 5000\nttl = \"1h\"\n\n[[history]]\ntopics = \"chat.*\"\nsize = 1000\nttl = \"5m\"\n\n[[history]]\ntopics = \"orders\"\nsize = 10\nttl = \"30s\"\n\n"),
            "{text}"
        );
        assert!(text.contains("history-memory = \"16MiB\"\n"), "{text}");
        let again = Config::resolve(parse_toml(&text).unwrap()).unwrap();
        assert_eq!(again, c);
        assert_eq!(again.to_toml(), text);
    }
}
