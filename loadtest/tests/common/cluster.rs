//! The servers of a cluster, for the tests that run `loadtest` against one: redis-server, wsgate
//! nodes joined by it, and HAProxy in front of them (health checks on `/readyz`), each on
//! loopback ports, its output kept and printed when the test fails, killed when dropped. A
//! missing redis-server or haproxy fails the test with a message that names
//! `deploy/test-setup.sh`, which installs them.
//!
//! (The gateway's own tests have the same in `gateway/tests/lb/mod.rs`, which needs that
//! package's test helpers and tungstenite.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub(crate) fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The full path of a server binary, or a failed test that says how to get it.
pub(crate) fn require(bin: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // a non-root PATH often lacks the sbin directories where haproxy lives
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{bin}` is not installed: this test drives a real {bin}; run \
                 deploy/test-setup.sh (or ./run-tests.sh, which runs it) to install it"
            )
        })
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:port`.
pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A fresh temporary directory, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "loadtest-{what}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process whose output (stdout and stderr) is kept, killed when dropped; its output is
/// printed when the test fails. Its stdout lines also go to [`Proc::lines`], for a line the
/// test waits for.
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let pipes = [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                true,
            ),
            (Box::new(child.stderr.take().unwrap()), false),
        ];
        for (pipe, stdout) in pipes {
            let (sink, tx) = (log.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                    drop(log);
                    if stdout {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            log,
            lines,
        }
    }

    /// What it printed so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (`timeout` at most) for a line of its stdout that starts with `prefix`; returns
    /// the rest of it.
    pub(crate) fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => panic!(
                    "{} printed no line starting with {prefix:?}; its output:\n{}",
                    self.name,
                    self.log()
                ),
            }
        }
    }

    /// The rest of its stdout, once it has closed it (exited).
    pub(crate) fn stdout_to_end(&mut self) -> String {
        let mut out = String::new();
        for line in self.lines.iter() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Panics (with its output) when it has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited: {status}; its output:\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Sends `signal` (a name kill(1) takes: TERM, KILL) to it.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.name);
    }

    /// Waits up to `timeout` for it to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            std::thread::sleep(Duration::from_millis(20));
            eprintln!(
                "---- {} output ----\n{}--------------------",
                self.name,
                self.log()
            );
        }
    }
}

/// An HTTP/1.0 GET, its answer read to the end of the connection: the status and the body
/// (put together again when it came chunked, as HAProxy's stats page does).
pub(crate) fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::new(ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("transfer-encoding:")
            .is_some_and(|v| v.trim() == "chunked")
    });
    if !chunked {
        return Ok((status, body.to_string()));
    }
    let (mut rest, mut whole) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n").ok_or_else(bad)?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        if size == 0 {
            return Ok((status, whole));
        }
        whole.push_str(after.get(..size).ok_or_else(bad)?);
        rest = after.get(size + 2..).ok_or_else(bad)?;
    }
}

/// The sum of every sample of the metric `name` (all its labels, or the one series
/// `name{labels}` when given so) in a Prometheus text exposition; 0 when it has none.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let whole = name == series;
            let family = !series.contains('{') && name.starts_with(&format!("{series}{{"));
            (whole || family).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

// ---- redis-server -----------------------------------------------------------------------------

/// A redis-server on a loopback port, without persistence: [`Redis::kill`] loses its data,
/// and [`Redis::start`] brings it back, empty, on the same port.
pub(crate) struct Redis {
    pub(crate) port: u16,
    dir: TempDir,
    proc: Option<Proc>,
}

impl Redis {
    /// Starts one on a free port (another one when the port is taken before it binds).
    pub(crate) fn start_new() -> Redis {
        let mut r = Redis {
            port: 0,
            dir: TempDir::new("redis"),
            proc: None,
        };
        for _ in 0..5 {
            r.port = free_port();
            if r.try_start() {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on its port and waits until it answers PING.
    pub(crate) fn start(&mut self) {
        assert!(
            self.try_start(),
            "redis-server did not start again on {}",
            self.port
        );
    }

    fn try_start(&mut self) -> bool {
        assert!(self.proc.is_none(), "redis is running already");
        let mut command = Command::new(require("redis-server"));
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let mut proc = Proc::spawn("redis-server", command);
        let port = self.port;
        let up = eventually(Duration::from_secs(10), || {
            proc.child.try_wait().unwrap().is_none()
                && matches!(command_at(port, &["PING"]), Ok(Reply::Simple(s)) if s == "PONG")
        });
        if up {
            self.proc = Some(proc);
        }
        up
    }

    /// SIGKILL, as in a crash (its clients see their connections reset); waits until the port
    /// refuses connections.
    pub(crate) fn kill(&mut self) {
        let mut proc = self.proc.take().expect("redis is not running");
        proc.signal("KILL");
        assert!(
            proc.wait_exit(Duration::from_secs(5)).is_some(),
            "redis-server did not die"
        );
        let port = self.port;
        assert!(
            eventually(Duration::from_secs(5), || TcpStream::connect(local(port))
                .is_err()),
            "redis still accepts connections after the kill"
        );
    }

    /// Runs a command.
    pub(crate) fn command(&self, args: &[&str]) -> std::io::Result<Reply> {
        command_at(self.port, args)
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn command_at(port: u16, args: &[&str]) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&local(port), Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    s.write_all(&req)?;
    read_reply(&mut BufReader::new(s))
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(ErrorKind::InvalidData, format!("bad RESP line {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut b = vec![0u8; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Reply::Bulk(Some(b))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}

// ---- wsgate -----------------------------------------------------------------------------------

/// A wsgate node (its log kept), killed when dropped.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    proc: Proc,
}

impl Node {
    /// Starts `wsgate --listen 127.0.0.1:PORT ARGS` (port 0: a free one) and waits for its
    /// `listening on` line.
    pub(crate) fn start(name: &str, port: u16, args: &[String]) -> Node {
        let mut command = Command::new(crate::common::wsgate_bin());
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args);
        let mut proc = Proc::spawn(&format!("wsgate {name}"), command);
        let addr = proc
            .wait_line("listening on ", Duration::from_secs(15))
            .parse()
            .expect("an address after `listening on`");
        Node {
            name: name.to_string(),
            addr,
            proc,
        }
    }

    /// GET /metrics (empty when it does not answer).
    pub(crate) fn metrics(&self) -> String {
        match get(self.addr, "/metrics") {
            Ok((200, body)) => body,
            _ => String::new(),
        }
    }

    /// One metric of [`Node::metrics`], as [`metric`] reads it.
    pub(crate) fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics(), series)
    }

    /// SIGTERM: it drains.
    pub(crate) fn sigterm(&self) {
        self.proc.signal("TERM");
    }

    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    pub(crate) fn log(&self) -> String {
        self.proc.log()
    }

    pub(crate) fn assert_running(&mut self) {
        self.proc.assert_running();
    }
}

// ---- HAProxy ----------------------------------------------------------------------------------

/// HAProxy in front of gateways: HTTP mode (WebSocket upgrades pass through as tunnels),
/// round robin, a health check of `/readyz` every 100 ms that takes a server out after one
/// failure and back after two successes.
pub(crate) struct Haproxy {
    /// The frontend clients connect to.
    pub(crate) addr: SocketAddr,
    /// The stats page (`/stats;csv`).
    stats: SocketAddr,
    _dir: TempDir,
    proc: Proc,
}

impl Haproxy {
    /// Starts it with `backends` as servers `n0`, `n1`, ... and waits until every one is UP.
    pub(crate) fn start(backends: &[SocketAddr]) -> Haproxy {
        let bin = require("haproxy");
        let dir = TempDir::new("haproxy");
        let addr = local(free_port());
        let stats = local(free_port());
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("    server n{i} {b} check\n"))
            .collect();
        let config = format!(
            "global
    maxconn 4096
    nbthread 2

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 5s
    timeout http-keep-alive 5s
    timeout tunnel 1h
    timeout client-fin 1s
    timeout server-fin 1s

frontend fe
    bind {addr}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host haproxy
    http-check expect status 200
    default-server inter 100ms fastinter 100ms downinter 100ms fall 1 rise 2
{servers}
listen stats
    bind {stats}
    stats enable
    stats uri /stats
"
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, &config).unwrap();
        let check = Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy refuses the generated configuration:\n{config}\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut command = Command::new(&bin);
        command.arg("-db").arg("-f").arg(&cfg);
        let mut proc = Proc::spawn("haproxy", command);
        for a in [addr, stats] {
            let ok = eventually(Duration::from_secs(10), || {
                proc.assert_running();
                TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok()
            });
            assert!(ok, "haproxy did not listen on {a}");
        }
        let h = Haproxy {
            addr,
            stats,
            _dir: dir,
            proc,
        };
        for i in 0..backends.len() {
            h.wait_status(i, "UP");
        }
        h
    }

    /// The status of server `n{i}` (`UP`, `DOWN`, `UP 1/2`, ...), as `/stats;csv` says.
    pub(crate) fn status(&self, i: usize) -> String {
        let Ok((200, csv)) = get(self.stats, "/stats;csv") else {
            return String::new();
        };
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(status)) = (col("pxname"), col("svname"), col("status"))
        else {
            return String::new();
        };
        let name = format!("n{i}");
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > status && f[px] == "gateways" && f[sv] == name)
            .map(|f| f[status].to_string())
            .unwrap_or_default()
    }

    /// Waits (10 s at most) until server `n{i}` has `status`.
    pub(crate) fn wait_status(&self, i: usize, status: &str) {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            last = self.status(i);
            last == status
        });
        assert!(
            ok,
            "HAProxy's server n{i} is {last:?}, not {status:?}; HAProxy said:\n{}",
            self.proc.log()
        );
    }

    pub(crate) fn assert_running(&mut self) {
        self.proc.assert_running();
    }
}
