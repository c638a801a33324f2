//! `loadtest`: drives a wsgate deployment and checks that nothing was lost or reordered.
//!
//! Subcommands: `echo`, `fanout`, `conns`, `large`, `soak`, `ramp`, `abuse` and `recover`, and
//! the raw TCP echo server `tcp-echo-server` that `echo --raw-tcp` and `large --raw-tcp`
//! measure as the baseline of a WebSocket echo ([`raw`], [`tcp_echo`]). Each load subcommand shows
//! progress on stderr, prints a table on stdout (or JSON with `--json`), and exits 1 on any
//! correctness failure or when connection errors pass `--max-error-rate`, 2 on bad arguments or
//! when the target is not a reachable WebSocket gateway (`abuse` measures the gateway under
//! attack and fails only on its neighbour's correctness).
//!
//! Each subcommand's module holds its options (`Args`) and its `run`; the options they all take
//! are in [`common`]. A `wss://` URL speaks TLS, trusting `--ca FILE` or, with `--insecure`, any
//! certificate ([`tls`]).
#![deny(missing_docs)]

mod abuse;
mod client;
mod common;
mod conns;
mod deflate;
mod driver;
mod echo;
mod fanout;
mod large;
mod payload;
mod progress;
mod ramp;
mod raw;
mod recover;
mod report;
mod soak;
mod stats;
mod tcp_echo;
mod tls;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator and correctness checker for wsgate"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Round trips through /echo: C connections, W messages in flight each, S bytes.
    Echo(echo::Args),
    /// Publishers and subscribers through /ws, checking order and loss per subscriber.
    Fanout(fanout::Args),
    /// Many idle connections: connect rate, handshake latency, server memory per connection.
    Conns(conns::Args),
    /// One very large message echoed or fanned out: throughput and the gateway's peak memory.
    Large(large::Args),
    /// Random subscribe/unsubscribe/publish churn over many topics, checking order and gaps.
    Soak(soak::Args),
    /// Adds subscribers step by step until the publish-to-receive p99 passes the bound.
    Ramp(ramp::Args),
    /// What an attacker on loopback makes the gateway hold, and what a neighbour's echoes see
    /// meanwhile.
    ///
    /// A quiet phase of --duration, then an attack of --duration by --attackers connections of
    /// one --kind: ping-flood (125-byte pings to /echo as fast as the socket takes them, never
    /// reading the pongs), slow-readers (subscribers of `abuse` that never read after the
    /// upgrade, and one publisher of 1 KiB binary messages to `abuse` as fast as it can; at the
    /// end each subscriber's socket is read to see whether it got a close frame, and with
    /// which code) or publish-flood (publishers of 64-byte binary messages to `flood` that never
    /// read, and one reader of `flood` that checks each publisher's order).
    ///
    /// Throughout both phases one neighbour on /echo does 20-byte binary echoes, one in flight,
    /// each checked byte for byte; its round trips and rate are reported per phase. With
    /// --server-pid, the gateway's VmRSS is sampled every 50 ms from just before the attack to a
    /// second after the attackers disconnect (before, peak, per attacker) and read again two
    /// seconds after they are gone.
    ///
    /// --duration is the length of each phase; --threads spreads the attackers' connections
    /// (the neighbour, and the publish-flood reader, have a thread each); the paths are the
    /// scenario's own (a path in --url is ignored).
    ///
    /// It measures and does not judge: exit 0 once the run completed, 1 when a neighbour's echo
    /// was wrong or missing, 2 on bad arguments or an unreachable gateway.
    Abuse(abuse::Args),
    /// Subscribers that keep dropping their connections and recovering, on a topic with
    /// history: every message published must reach every subscriber once, in order, whole. Works
    /// against one gateway or a cluster behind a load balancer, through node drains and Redis
    /// restarts.
    ///
    /// One publisher publishes JSON data carrying a sequence number, a send time and a checksum
    /// (`{"seq":N,"t":T,"sum":..,"pad":..}`) to --topic at --rate for --duration, once every
    /// subscriber has its first ack. A publish refused with code `unavailable` (a cluster's
    /// node while Redis is out of reach) is sent again with the same N after 100 ms, alone, and
    /// nothing newer goes before it (publish_retries; 30 s of refusals fail the run); when its
    /// connection ends (close 1001 from a draining node, a reset) it reconnects to --url and
    /// sends again what had no answer (publisher_reconnects, publishes_resent). Each subscriber
    /// drops its connection every --drop-every (jittered 0.5x to 1.5x; --drop-with fin, rst or
    /// close-frame), stays away --reconnect-after, and reconnects to --url with `recover` from
    /// the last offset and epoch it saw; a connection the gateway ends is reconnected too (a
    /// failed reconnect is retried, counted as connect_failures), and a subscribe refused as
    /// `unavailable` is made again (subscribes_refused). After the publisher stops and the
    /// subscribers catch up (at most --drain), it reports, over all subscribers: deliveries
    /// expected and received, lost, duplicated, reordered, mismatched (data), offset_mismatched
    /// (within an epoch, offset - seq must be the same for every delivery; a new epoch, after a
    /// gap notice or an ack with recovered:false, is learned afresh), recoveries with
    /// recovered:true and recovered:false by reason, gap notices and the epochs seen.
    ///
    /// Exit 1 on any loss, duplicate, reordering or mismatch, on a publish refused (other than
    /// as `unavailable`) or overtaken by a newer one, and on any recovered:false or gap notice
    /// unless --allow-gaps (then what they cost is counted as lost_after_gap).
    Recover(recover::Args),
    /// A raw TCP echo server (one thread, edge-triggered epoll): the baseline that
    /// `echo --raw-tcp` and `large --raw-tcp` measure. Prints `listening on ADDR`, runs until
    /// killed.
    TcpEchoServer(tcp_echo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Fanout(args) => fanout::run(args),
        Command::Conns(args) => conns::run(args),
        Command::Large(args) => large::run(args),
        Command::Soak(args) => soak::run(args),
        Command::Ramp(args) => ramp::run(args),
        Command::Abuse(args) => abuse::run(args),
        Command::Recover(args) => recover::run(args),
        Command::TcpEchoServer(args) => tcp_echo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_durations_take_the_shared_syntax() {
        let parses = |args: &str| Cli::try_parse_from(args.split(' ')).is_ok();
        for ok in [
            "loadtest large --size 256MiB --duration 1m",
            "loadtest large --size 2GB --duration 30",
            "loadtest echo --size 1KiB --duration 500ms",
            "loadtest fanout --size 64 --duration 10",
            "loadtest soak --size 1kb",
            "loadtest ramp --size 100 --slo-p99 20ms --duration 2s",
            "loadtest conns --duration 1",
            "loadtest abuse --kind ping-flood --duration 500ms",
            "loadtest abuse --kind slow-readers --attackers 3 --server-pid 1",
            "loadtest abuse --kind publish-flood --duration 2s",
            "loadtest echo --raw-tcp --size 16KiB --window 16",
            "loadtest large --raw-tcp --size 256MiB --server-pid 1",
            "loadtest tcp-echo-server --listen 127.0.0.1:0 --buffer 64KiB",
            "loadtest echo --compression --payload json --size 1KiB",
            "loadtest fanout --compression --payload json --size 16KiB",
            "loadtest soak --compression",
            "loadtest ramp --compression --payload json",
            "loadtest large --compression --subscribers 2",
            "loadtest conns --compression",
            "loadtest recover --subscribers 20 --rate 500 --duration 3s --drop-every 500ms",
            "loadtest recover --drop-with rst --reconnect-after 2s --allow-gaps --size 1KiB",
            "loadtest recover --drop-with close-frame --drop-every 0 --drain 10s",
        ] {
            assert!(parses(ok), "{ok}");
        }
        for bad in [
            "loadtest large --size lots",
            "loadtest echo --size 5parsecs",
            "loadtest echo --duration soon",
            "loadtest ramp --slo-p99 fast",
            "loadtest abuse --duration 1s",
            "loadtest abuse --kind slowloris",
            "loadtest abuse --kind ping-flood --attackers many",
            "loadtest echo --raw-tcp --text",
            "loadtest large --raw-tcp --subscribers 3",
            "loadtest tcp-echo-server --listen nowhere",
            "loadtest echo --payload xml",
            "loadtest echo --raw-tcp --compression",
            "loadtest recover --drop-with smoke",
            "loadtest recover --drop-every often",
        ] {
            assert!(!parses(bad), "{bad}");
        }
    }
}
