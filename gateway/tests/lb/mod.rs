//! The real servers around a cluster of gateways: redis-server, HAProxy and nginx, each started
//! on free loopback ports with a generated configuration in a temporary directory, and killed
//! when dropped. A missing server fails the test with a message that names
//! `deploy/test-setup.sh`, which installs them.
#![allow(dead_code)]

use crate::common::{IO_TIMEOUT, Ws, eventually};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The full path of a server binary, or a failed test that says how to get it.
pub(crate) fn require(bin: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // a non-root PATH often lacks the sbin directories where haproxy and nginx live
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        let p = d.join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{bin}` is not installed: the cluster and load balancer tests drive a real {bin}; \
         run deploy/test-setup.sh (or ./run-tests.sh, which runs it) to install it"
    );
}

/// A loopback port that was free a moment ago (bound to 127.0.0.1:0, then released).
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
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "wsgate-{what}-{}-{}-{nanos}",
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

/// A child process whose stdout and stderr are collected, killed when dropped; its output is
/// printed when the test fails.
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
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
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// What it printed so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether it has exited.
    pub(crate) fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
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

/// Waits until `addr` accepts TCP connections.
fn wait_listening(addr: SocketAddr, what: &mut Proc) {
    let ok = eventually(Duration::from_secs(10), || {
        what.assert_running();
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    });
    assert!(ok, "{} did not listen on {addr}", what.name);
}

// ---- client sockets from a chosen source address ---------------------------------------------

/// A TCP connection to `dst` from the loopback address `src` (any of 127.0.0.0/8), with the
/// usual timeouts.
pub(crate) fn connect_from(src: IpAddr, dst: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(src, 0).into())
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    socket
        .connect_timeout(&dst.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {src} -> {dst}: {e}"));
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A tungstenite session to `ws://dst{path}` from `src`; `Err(status)` when the upgrade is
/// answered with another status.
pub(crate) fn ws_from(src: IpAddr, dst: SocketAddr, path: &str) -> Result<Ws, u16> {
    let stream = connect_from(src, dst);
    match tungstenite::client::client(format!("ws://{dst}{path}"), stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("upgrade {src} -> {dst}{path} failed: {e}"),
    }
}

/// An address of 127.0.0.0/8.
pub(crate) fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// The next text message, or `None` when none comes within `timeout` (pings skipped).
pub(crate) fn ws_text_within(ws: &mut Ws, timeout: Duration) -> Option<String> {
    ws.get_mut().set_read_timeout(Some(timeout)).unwrap();
    let deadline = Instant::now() + timeout;
    let got = loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => break Some(t.as_str().to_string()),
            Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => {
                if Instant::now() >= deadline {
                    break None;
                }
            }
            Ok(other) => panic!("expected text, got {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break None;
            }
            Err(e) => panic!("read: {e}"),
        }
    };
    ws.get_mut().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    got
}

/// Reads until the server's close frame and returns its code (data messages are skipped), then
/// answers it and waits for the end of the connection.
pub(crate) fn ws_expect_close(ws: &mut Ws) -> Option<u16> {
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    // tungstenite queued the answer; send it and read to the end
    let _ = ws.flush();
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => {}
            Err(_) => break,
        }
    }
    code
}

// ---- redis-server -----------------------------------------------------------------------------

/// A redis-server on a free loopback port, without persistence. [`Redis::stop`] kills it and
/// [`Redis::start`] brings it back on the same port.
pub(crate) struct Redis {
    pub port: u16,
    dir: TempDir,
    proc: Option<Proc>,
}

impl Redis {
    /// Starts one on a free port (another one when the port is taken before it binds: a
    /// test beside this one may take a port between `free_port` and redis' bind).
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
            "redis-server did not start again on port {}",
            self.port
        );
    }

    /// Starts it on its port; true once it answers PING, false (with nothing left running)
    /// when it exits first or never answers.
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
        // done when it answers, or when it has exited (its port was taken): then no waiting
        let answered = eventually(Duration::from_secs(10), || {
            proc.exited()
                || matches!(try_command(port, &["PING"]), Ok(Resp::Simple(s)) if s == "PONG")
        });
        // and the server that answered is this one, not another test's on a port it took
        let ours = format!("process_id:{}\r\n", proc.pid());
        let up = answered
            && !proc.exited()
            && matches!(try_command(port, &["INFO", "server"]),
                Ok(Resp::Bulk(Some(info))) if String::from_utf8_lossy(&info).contains(&ours));
        if up {
            self.proc = Some(proc);
        } else {
            eprintln!(
                "redis-server did not come up on port {port}:\n{}",
                proc.log()
            );
        }
        up
    }

    /// Kills it (SIGKILL: its clients see their connections reset, as in a crash).
    pub(crate) fn stop(&mut self) {
        drop(self.proc.take().expect("redis is not running"));
        let port = self.port;
        assert!(
            eventually(Duration::from_secs(5), || TcpStream::connect(local(port))
                .is_err()),
            "redis still accepts connections after the kill"
        );
    }

    /// Runs a command; panics on a failure.
    pub(crate) fn command(&self, args: &[&str]) -> Resp {
        try_command(self.port, args).unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// The names of `PUBSUB CHANNELS` (or `PUBSUB SHARDCHANNELS` when `sharded`), sorted.
    pub(crate) fn channels(&self, sharded: bool) -> Vec<String> {
        let sub = if sharded { "SHARDCHANNELS" } else { "CHANNELS" };
        let mut names: Vec<String> = match self.command(&["PUBSUB", sub]) {
            Resp::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Resp::Bulk(Some(b)) => String::from_utf8(b).unwrap(),
                    other => panic!("odd PUBSUB answer {other:?}"),
                })
                .collect(),
            other => panic!("odd PUBSUB answer {other:?}"),
        };
        names.sort();
        names
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

fn try_command(port: u16, args: &[&str]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&local(port), Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    s.write_all(&req)?;
    read_resp(&mut BufReader::new(s))
}

fn read_resp(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(ErrorKind::InvalidData, format!("bad RESP line {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut b = vec![0u8; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_resp(r)?);
            }
            Resp::Array(items)
        }
        _ => return Err(bad()),
    })
}

// ---- HAProxy ----------------------------------------------------------------------------------

/// HAProxy in front of gateways: HTTP mode (WebSocket upgrades pass through as tunnels),
/// round robin, a health check of `/readyz` every 100 ms that takes a server out after one
/// failure and back after two successes.
pub(crate) struct Haproxy {
    /// The frontend clients connect to.
    pub addr: SocketAddr,
    /// The stats page (`/stats;csv`).
    pub stats: SocketAddr,
    _dir: TempDir,
    proc: Proc,
}

impl Haproxy {
    /// Starts it with `backends` as servers `n0`, `n1`, ...; `send_proxy`: with
    /// `send-proxy-v2` on each server (health checks included). Waits until every server is UP.
    pub(crate) fn start(backends: &[SocketAddr], send_proxy: bool) -> Haproxy {
        let bin = require("haproxy");
        let dir = TempDir::new("haproxy");
        let addr = local(free_port());
        let stats = local(free_port());
        let proxy = if send_proxy { " send-proxy-v2" } else { "" };
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("    server n{i} {b} check{proxy}\n"))
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
    # an upgraded WebSocket is a tunnel: the gateway's pings keep it busy well within this
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
    stats refresh 1s
"
        );
        Haproxy::launch(&bin, dir, addr, stats, &config, backends.len())
    }

    /// HAProxy passing TLS through to nodes that terminate it themselves: `mode tcp`, round
    /// robin, a PROXY v2 header first on every connection (`send-proxy-v2`: in the clear, before
    /// the client's ClientHello), and an HTTP check of `GET /readyz` on each node's plain port
    /// (`port`), with a PROXY header too (`check-send-proxy`), every 100 ms, out after one
    /// failure and back after two successes. `nodes`: the TLS address and the plain address of
    /// servers `n0`, `n1`, ... (the plain one on the same host). Waits until every server is UP
    /// with a passed check.
    pub(crate) fn start_tls_passthrough(nodes: &[(SocketAddr, SocketAddr)]) -> Haproxy {
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, (tls, plain))| {
                assert_eq!(
                    tls.ip(),
                    plain.ip(),
                    "the check port is on the node's address"
                );
                format!("    server n{i} {tls} port {}\n", plain.port())
            })
            .collect();
        Haproxy::start_sections(
            "    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # the gateway's pings keep a WebSocket busy well within this
    timeout tunnel 1h
    timeout client-fin 1s
    timeout server-fin 1s
    timeout check 1s
",
            &format!(
                "    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host haproxy
    http-check expect status 200
    default-server check inter 100ms fastinter 100ms downinter 100ms fall 1 rise 2 send-proxy-v2 check-send-proxy
{servers}"
            ),
            nodes.len(),
        )
    }

    /// HAProxy with the body of its `defaults` section and of `backend gateways` as given (the
    /// backend's servers named `n0` .. `n{servers - 1}`), a frontend that sends everything to
    /// that backend, and the stats page. Waits until every server is UP with a passed check.
    pub(crate) fn start_sections(defaults: &str, backend: &str, servers: usize) -> Haproxy {
        let bin = require("haproxy");
        let dir = TempDir::new("haproxy");
        let addr = local(free_port());
        let stats = local(free_port());
        let config = format!(
            "global
    maxconn 4096
    nbthread 2

defaults
{defaults}
frontend fe
    bind {addr}
    default_backend gateways

backend gateways
{backend}
listen stats
    mode http
    bind {stats}
    stats enable
    stats uri /stats
    stats refresh 1s
"
        );
        let h = Haproxy::launch(&bin, dir, addr, stats, &config, servers);
        for i in 0..servers {
            h.wait_checked(i);
        }
        h
    }

    /// Writes `config`, has HAProxy check it, starts it and waits until it listens and every
    /// one of its `servers` is UP.
    fn launch(
        bin: &Path,
        dir: TempDir,
        addr: SocketAddr,
        stats: SocketAddr,
        config: &str,
        servers: usize,
    ) -> Haproxy {
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let check = Command::new(bin)
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
        let mut command = Command::new(bin);
        command.arg("-db").arg("-f").arg(&cfg);
        let mut proc = Proc::spawn("haproxy", command);
        wait_listening(addr, &mut proc);
        wait_listening(stats, &mut proc);
        let h = Haproxy {
            addr,
            stats,
            _dir: dir,
            proc,
        };
        for i in 0..servers {
            h.wait_status(i, "UP");
        }
        h
    }

    /// The rows of `/stats;csv` for the servers of the backend, as (name, status, total
    /// sessions).
    pub(crate) fn servers(&self) -> Vec<(String, String, u64)> {
        self.server_rows()
            .into_iter()
            .map(|row| {
                let stot = row["stot"].parse().unwrap_or(0);
                (row["svname"].clone(), row["status"].clone(), stot)
            })
            .collect()
    }

    /// The rows of `/stats;csv` for the servers of the backend, each by column name.
    fn server_rows(&self) -> Vec<std::collections::HashMap<String, String>> {
        let r = crate::common::get(self.stats, "/stats;csv");
        assert_eq!(r.status, 200, "{r:?}");
        let text = if r
            .header("Transfer-Encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            dechunk(&r.body)
        } else {
            r.text()
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .expect("a CSV header")
            .trim_start_matches("# ")
            .split(',')
            .collect();
        lines
            .map(|l| {
                header
                    .iter()
                    .zip(l.split(','))
                    .map(|(h, v)| (h.to_string(), v.to_string()))
                    .collect::<std::collections::HashMap<_, _>>()
            })
            .filter(|row| {
                row.contains_key("stot")
                    && row.get("pxname").is_some_and(|p| p == "gateways")
                    && row.get("svname").is_some_and(|s| s.starts_with('n'))
            })
            .collect()
    }

    /// A column of server `n{i}`'s row of `/stats;csv` (`check_status`, `scur`, ...).
    pub(crate) fn server_field(&self, i: usize, column: &str) -> String {
        let name = format!("n{i}");
        let row = self
            .server_rows()
            .into_iter()
            .find(|row| row["svname"] == name)
            .unwrap_or_else(|| panic!("no server {name} in HAProxy's stats"));
        row.get(column)
            .unwrap_or_else(|| panic!("no column {column} in HAProxy's stats"))
            .clone()
    }

    /// Waits (5 s at most) until server `n{i}` is UP and its last health check passed (`L7OK`:
    /// HAProxy starts a server UP before any check has run).
    pub(crate) fn wait_checked(&self, i: usize) {
        let mut last = (String::new(), String::new());
        let ok = eventually(Duration::from_secs(5), || {
            last = (
                self.status(i),
                self.server_field(i, "check_status")
                    .trim_start_matches("* ")
                    .to_string(),
            );
            last.0 == "UP" && last.1 == "L7OK"
        });
        assert!(
            ok,
            "HAProxy's server n{i} is {:?} after a check {:?}, not UP after L7OK; HAProxy \
             said:\n{}",
            last.0,
            last.1,
            self.proc.log()
        );
    }

    /// The status of server `n{i}` (`UP`, `DOWN`, `UP 1/2`, ...).
    pub(crate) fn status(&self, i: usize) -> String {
        let name = format!("n{i}");
        self.servers()
            .into_iter()
            .find(|s| s.0 == name)
            .unwrap_or_else(|| panic!("no server {name} in HAProxy's stats"))
            .1
    }

    /// Waits (5 s at most) until server `n{i}` has `status`.
    pub(crate) fn wait_status(&self, i: usize, status: &str) {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(5), || {
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

/// The body of a chunked answer read to the end of the connection.
fn dechunk(mut body: &[u8]) -> String {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            panic!("a cut chunked body");
        };
        let size = std::str::from_utf8(&body[..eol]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        body = &body[eol + 2..];
        if size == 0 {
            return String::from_utf8(out).unwrap();
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

// ---- nginx ------------------------------------------------------------------------------------

/// nginx with one `server` per pool: each listens on its own free port and proxies everything
/// (WebSocket upgrades included, with `X-Forwarded-For`) round robin to the pool's gateways.
pub(crate) struct Nginx {
    /// The listening address of each pool, in the order given.
    pub addrs: Vec<SocketAddr>,
    _dir: TempDir,
    proc: Proc,
}

impl Nginx {
    pub(crate) fn start(pools: &[&[SocketAddr]]) -> Nginx {
        let bin = require("nginx");
        let dir = TempDir::new("nginx");
        let d = dir.path().display();
        let addrs: Vec<SocketAddr> = pools.iter().map(|_| local(free_port())).collect();
        let mut http = String::new();
        for (i, (pool, addr)) in pools.iter().zip(&addrs).enumerate() {
            let servers: String = pool
                .iter()
                .map(|b| format!("        server {b} max_fails=0;\n"))
                .collect();
            http.push_str(&format!(
                "    upstream pool{i} {{
{servers}    }}
    server {{
        listen {addr};
        location / {{
            proxy_pass http://pool{i};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
"
            ));
        }
        let config = format!(
            "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' close;
    }}
{http}}}
"
        );
        let cfg = dir.path().join("nginx.conf");
        std::fs::write(&cfg, &config).unwrap();
        let mut command = Command::new(&bin);
        // -e: the error log before the configuration is read (the default one may not be
        // writable); -p: relative paths under the temporary directory
        command
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&cfg);
        let mut proc = Proc::spawn("nginx", command);
        for a in &addrs {
            wait_listening(*a, &mut proc);
        }
        Nginx {
            addrs,
            _dir: dir,
            proc,
        }
    }

    /// Its error log.
    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("error.log")).unwrap_or_default()
    }

    pub(crate) fn assert_running(&mut self) {
        self.proc.assert_running();
    }
}
