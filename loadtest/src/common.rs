//! What several subcommands share: the options every one takes, the checks made before a run
//! (the target answers, the open-file limit allows the connections), the connection plans with
//! their source addresses, and the gateway's memory read from /proc.

use crate::client::{self, Target};
use crate::deflate;
use crate::driver::Plan;
use crate::tls::TlsArgs;
use clap::Args;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;
use wsgate_core::units::parse_duration;

/// Options every subcommand takes.
#[derive(Args, Clone)]
pub(crate) struct Common {
    /// The gateway: ws://HOST:PORT, or wss://HOST:PORT for TLS (with --ca or --insecure); the
    /// path is chosen by the subcommand unless given.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub(crate) url: String,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// Load generator threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub(crate) threads: u32,
    /// Print the result as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the result as one self-contained HTML page of plots: latency by percentile,
    /// throughput and latency second by second (and, for ramp, p99 against subscribers).
    #[arg(long, value_name = "FILE.html", value_parser = parse_report_path)]
    pub(crate) report: Option<PathBuf>,
    /// Connection errors tolerated, as a fraction of connections.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) max_error_rate: f64,
    /// Local source addresses to spread connections over, e.g. 127.0.0.2-127.0.0.40 (needed
    /// beyond about 28,000 connections to one address).
    #[arg(long, value_parser = parse_ip_range)]
    pub(crate) source_ips: Option<SourceIps>,
    /// Offer permessage-deflate (RFC 7692) on every connection as Chromium does
    /// (`permessage-deflate; client_max_window_bits`) and stop with an error when the server
    /// does not accept it. Compressed server messages (RSV1) are inflated, then checked like
    /// plain ones; the client compresses its own messages of 128 bytes or more. The report adds
    /// the bytes on the wire against the bytes of the messages.
    #[arg(long)]
    pub(crate) compression: bool,
    /// TLS for wss:// URLs.
    #[command(flatten)]
    pub(crate) tls: TlsArgs,
}

impl Common {
    /// The server at `url`, offering permessage-deflate with `--compression` (inflating at
    /// most [`deflate::DEFAULT_MAX_MESSAGE`] bytes a message until [`Target::expecting`] says
    /// otherwise).
    pub(crate) fn target_at(&self, url: &str) -> Result<Target, String> {
        let offer = self.compression.then_some(deflate::Offer {
            max_message: deflate::DEFAULT_MAX_MESSAGE,
        });
        Ok(Target::parse(url, &self.tls)?.offering(offer))
    }
}

/// The local addresses of `--source-ips`, one per connection in turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SourceIps(Vec<IpAddr>);

fn parse_ip_range(s: &str) -> Result<SourceIps, String> {
    let bad = || format!("'{s}' is not an address range like 127.0.0.2-127.0.0.40");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a || b - a > 65_535 {
        return Err(bad());
    }
    Ok(SourceIps((a..=b).map(|ip| IpAddr::V4(ip.into())).collect()))
}

/// The path of `--report`, refused before the run when its folder does not exist.
fn parse_report_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if s.is_empty() || path.is_dir() {
        return Err(format!("'{s}' is not a file name"));
    }
    if !folder.is_dir() {
        return Err(format!("'{}' is not a folder", folder.display()));
    }
    Ok(path)
}

/// The target with the subcommand's default path unless the URL names one.
pub(crate) fn target(
    common: &Common,
    default_path: &str,
    query: Option<String>,
) -> Result<Target, String> {
    let t = common.target_at(&common.url)?;
    if t.path.len() > 1 {
        Ok(t)
    } else {
        Ok(t.with_path(default_path, query))
    }
}

/// `count` connections to the subcommand's path, checked first: the file limit allows them and
/// the target answers a WebSocket upgrade (accepting permessage-deflate with `--compression`).
/// `max_message` is the largest message the scenario expects from the server.
pub(crate) fn plans_to(
    common: &Common,
    path: &str,
    count: usize,
    max_message: usize,
) -> Result<Vec<Plan>, String> {
    check_file_limit(count)?;
    let t = target(common, path, None)?.expecting(max_message);
    client::preflight(&t, first_source(common))?;
    Ok(with_sources(
        vec![
            Plan {
                target: t,
                source: None
            };
            count
        ],
        &common.source_ips,
    ))
}

/// The first address of `--source-ips`, for the checks made before a run.
pub(crate) fn first_source(common: &Common) -> Option<IpAddr> {
    common
        .source_ips
        .as_ref()
        .and_then(|SourceIps(ips)| ips.first().copied())
}

/// Spreads the plans over the addresses of `--source-ips`, if given, in turn.
pub(crate) fn with_sources(mut plans: Vec<Plan>, sources: &Option<SourceIps>) -> Vec<Plan> {
    if let Some(SourceIps(ips)) = sources {
        for (i, p) in plans.iter_mut().enumerate() {
            p.source = Some(ips[i % ips.len()]);
        }
    }
    plans
}

/// Checks that this process may hold `wanted` sockets.
pub(crate) fn check_file_limit(wanted: usize) -> Result<(), String> {
    let limit = raise_file_limit();
    if wanted as u64 + 64 > limit {
        return Err(format!(
            "{wanted} connections need {wanted} file descriptors, but this process may open {limit} \
             (its hard limit); run several loadtest processes or lower the count"
        ));
    }
    Ok(())
}

/// Raises this process's open-file limit to its hard limit; returns the limit in force (the
/// soft limit as it was when it cannot be raised, 1024 when it cannot be read).
fn raise_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX)
        .or_else(|_| rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft))
        .unwrap_or(1024)
}

/// The resident set of a process, in bytes, from /proc.
pub(crate) fn rss_of(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// The peak resident set of a process since it started (VmHWM), in bytes.
pub(crate) fn peak_rss_of(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmHWM:").map(|kb| kb * 1024)
}

fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_limit_is_raised_to_the_hard_limit() {
        let limit = raise_file_limit();
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("readable");
        assert_eq!(limit, soft);
        assert!(soft == hard || hard == rlimit::INFINITY, "{soft} of {hard}");
        assert!(check_file_limit(10).is_ok());
        let e = check_file_limit(usize::MAX / 2).unwrap_err();
        assert!(e.contains("file descriptors"), "{e}");
    }

    #[test]
    fn a_report_goes_into_a_folder_that_exists() {
        assert!(parse_report_path("run.html").is_ok());
        assert!(parse_report_path("/tmp/run.html").is_ok());
        assert!(parse_report_path("/tmp").is_err());
        assert!(parse_report_path("").is_err());
        let e = parse_report_path("/no/such/folder/run.html").unwrap_err();
        assert!(e.contains("/no/such/folder"), "{e}");
    }

    #[test]
    fn source_address_ranges() {
        let SourceIps(ips) = parse_ip_range("127.0.0.2-127.0.0.4").expect("a range");
        assert_eq!(ips.len(), 3);
        assert_eq!(ips[2], IpAddr::from([127, 0, 0, 4]));
        assert_eq!(
            parse_ip_range("10.0.0.1").map(|SourceIps(v)| v.len()),
            Ok(1)
        );
        for bad in ["127.0.0.4-127.0.0.2", "localhost", "10.0.0.0-10.2.0.0"] {
            assert!(parse_ip_range(bad).is_err(), "{bad}");
        }
    }
}
