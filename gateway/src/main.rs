//! The `wsgate` binary: parses the configuration, starts the workers, prints
//! `listening on ADDR`, and drains on SIGTERM or SIGINT.

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;
use wsgate::config::{self, Cli};
use wsgate::server::Server;

#[global_allocator]
static GLOBAL: wsgate::Allocator = wsgate::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse(); // a bad flag prints clap's message and exits 2
    wsgate::raise_file_limit();
    let print_config = cli.print_config;
    let config = match config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.server.log)
        .expect("checked by Config::resolve");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    install_panic_hook();
    let workers = config.server.workers;
    let server = match Server::start(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = server.local_addr();
    let tls = match (server.is_tls(), server.plain_addr()) {
        (true, Some(plain)) => format!(" (tls); plain on {plain}"),
        (true, None) => " (tls)".to_string(),
        _ => String::new(),
    };
    tracing::info!(workers, %addr, tls = !tls.is_empty(), "wsgate started");
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {addr}{tls}");
    let _ = stdout.flush();
    match server.run_until_signal() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// A panic is a bug: the worker contains it to one connection (closed with 1011, counted in
/// `wsgate_internal_errors_total`). Log the first one in full, then only count them, so a bug
/// that a client can trigger cannot flood the logs.
fn install_panic_hook() {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    std::panic::set_hook(Box::new(|info| {
        if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(
                "internal error (a bug): {info}; the connection was closed with 1011; further \
                 ones are counted in wsgate_internal_errors_total, not logged"
            );
        }
    }));
}
