//! Helpers shared by the end-to-end tests: start the real `wsgate` binary, talk plain HTTP,
//! raw WebSocket frames and tungstenite to it. Every read has a timeout, so a test that waits
//! for something that never comes fails instead of hanging.
#![allow(dead_code)]

use bytes::BytesMut;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use wsgate_core::frame::{DecoderConfig, HeaderBuf, Message, MessageDecoder, OpCode};

/// The read and write timeout of every socket a test opens.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

/// A running gateway, killed when dropped. Its log (stderr) is printed when the test fails.
pub(crate) struct Gateway {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where `--plain-listen` listens, when it was given (`; plain on ADDR` in the line).
    pub plain_addr: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts `wsgate --listen 127.0.0.1:0 ARGS...` and waits for its `listening on` line.
    pub(crate) fn start(args: &[&str]) -> Gateway {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Gateway::start_raw(&all)
    }

    /// Starts `wsgate ARGS...` (the arguments must make it listen on a free port).
    pub(crate) fn start_raw(args: &[&str]) -> Gateway {
        Gateway::spawn(Command::new(BIN), args)
    }

    /// Like [`Gateway::start`], with transparent huge pages off for the process
    /// (`PR_SET_THP_DISABLE`), so that its resident set grows by 4 KiB pages, not by the 2 MiB
    /// pages the allocator's arena may get: what memory tests measure is then what the gateway
    /// allocates, not where a huge page boundary happens to fall.
    #[allow(unsafe_code)] // pre_exec: the test harness's one direct system call
    pub(crate) fn start_without_huge_pages(args: &[&str]) -> Gateway {
        use std::os::unix::process::CommandExt;
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut command = Command::new(BIN);
        // SAFETY: the closure runs in the forked child before exec and only makes prctl(2), a
        // plain system call that allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Gateway::spawn(command, &all)
    }

    fn spawn(mut command: Command, args: &[&str]) -> Gateway {
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start wsgate");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        let (addr, plain_addr) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening on ") {
                        let addr = rest.split(' ').next().unwrap_or(rest);
                        let plain = rest
                            .split("plain on ")
                            .nth(1)
                            .map(|a| a.trim().parse().expect("an address after `plain on`"));
                        break (
                            addr.trim()
                                .parse()
                                .expect("an address after `listening on`"),
                            plain,
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    panic!("wsgate {args:?} did not print `listening on ADDR`; its log:\n{log}");
                }
            }
        };
        Gateway {
            child,
            addr,
            plain_addr,
            log,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the process (with kill(1): a child this value owns and has not
    /// reaped yet).
    pub(crate) fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Sends SIGTERM.
    pub(crate) fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the gateway logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// GET /metrics.
    pub(crate) fn metrics(&self) -> String {
        let r = get(self.addr, "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        r.text()
    }

    /// One sample of /metrics, by its full series name (`name{labels}`).
    pub(crate) fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics(), series)
    }

    /// Its resident set size now, in bytes (`VmRSS`).
    pub(crate) fn rss(&self) -> u64 {
        proc_status_bytes(self.pid(), "VmRSS")
    }

    /// The largest its resident set has been since it started, in bytes (`VmHWM`).
    pub(crate) fn peak_rss(&self) -> u64 {
        proc_status_bytes(self.pid(), "VmHWM")
    }
}

/// A memory field of `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in bytes.
pub(crate) fn proc_status_bytes(pid: i32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(field)
            && let Some(value) = rest.strip_prefix(':')
        {
            let kib: u64 = value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("odd {field} line in {path}: {line:?}"));
            return kib * 1024;
        }
    }
    panic!("no {field} in {path}:\n{text}");
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // give the log reader a moment to take the last lines
            std::thread::sleep(Duration::from_millis(50));
            eprintln!("---- wsgate log ----\n{}--------------------", self.log());
        }
    }
}

/// The value of one series in a Prometheus text exposition; panics when it is missing.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(series)
            && let Some(value) = rest.strip_prefix(' ')
        {
            return value.trim().parse().expect("a number");
        }
    }
    panic!("no series {series} in /metrics:\n{text}");
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes; returns whether it
/// held.
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

// ---- plain TCP and HTTP ---------------------------------------------------------------------

/// A TCP connection with read and write timeouts.
pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// An HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as text.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that name (case-insensitive), trimmed.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads more bytes into `buf`; returns how many (0 at EOF). A timeout panics.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("timed out waiting for the gateway ({IO_TIMEOUT:?})")
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads one HTTP response from `stream`, using and leaving extra bytes in `buf`. `None` when
/// the connection ends (EOF or reset) before a whole head arrived.
pub(crate) fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<HttpResponse> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match fill(stream, buf) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("an ASCII head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    buf.drain(..head_end);
    let mut response = HttpResponse {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = match response.header("Content-Length") {
        Some(n) => n.parse().expect("a Content-Length number"),
        None if status == 101 => 0,
        None => {
            // no length: the body runs to EOF
            while let Ok(n) = fill(stream, buf) {
                if n == 0 {
                    break;
                }
            }
            buf.len()
        }
    };
    while buf.len() < len {
        match fill(stream, buf) {
            Ok(0) | Err(_) => panic!("connection ended inside a body: {response:?}"),
            Ok(_) => {}
        }
    }
    response.body = buf.drain(..len).collect();
    Some(response)
}

/// Whether the server closes `stream` (EOF or reset) before the read timeout, discarding
/// whatever it still sends.
pub(crate) fn closes(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

/// Whether the server closes `stream` (EOF or reset) within `timeout`, discarding whatever it
/// still sends. The stream's read timeout is [`IO_TIMEOUT`] again afterwards.
pub(crate) fn closes_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let closed = closes(stream);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    closed
}

/// Sends `request` on a new connection and reads one response.
pub(crate) fn http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    read_response(&mut s, &mut Vec::new()).expect("a response")
}

/// GET `path` with `Connection: close`.
pub(crate) fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// POST `body` to `path` with extra header lines (each ending in `\r\n`).
pub(crate) fn post(addr: SocketAddr, path: &str, headers: &str, body: &[u8]) -> HttpResponse {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    http(addr, &req)
}

/// A valid `Sec-WebSocket-Key`.
pub(crate) const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A valid upgrade request for `path`.
pub(crate) fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

// ---- raw WebSocket frames -------------------------------------------------------------------

/// A masked client frame.
pub(crate) fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    wsgate_core::frame::encode_client_frame(
        &mut out,
        fin,
        opcode,
        payload,
        [0x5a, 0x17, 0xc3, 0x81],
    );
    out
}

/// A client frame with any header bits: reserved bits, and masked or not.
pub(crate) fn odd_frame(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload: &[u8],
    masked: bool,
) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = HeaderBuf::new(
        fin,
        rsv,
        opcode,
        payload.len() as u64,
        masked.then_some(key),
    )
    .as_bytes()
    .to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if masked {
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    out
}

/// The payload of a close frame.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(reason.as_bytes());
    v
}

/// A WebSocket client over a raw socket: sends any bytes, decodes the server's frames with
/// wsgate-core's decoder in client role.
pub(crate) struct RawWs {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: MessageDecoder,
}

impl RawWs {
    /// Upgrades a new connection to `path`; panics unless the answer is 101.
    pub(crate) fn connect(addr: SocketAddr, path: &str) -> RawWs {
        let mut stream = connect(addr);
        stream
            .write_all(upgrade_request(path).as_bytes())
            .expect("write upgrade");
        RawWs::finish_upgrade(stream, Vec::new())
    }

    /// Reads the 101 answer on a connection where the upgrade request was sent.
    pub(crate) fn finish_upgrade(mut stream: TcpStream, mut buf: Vec<u8>) -> RawWs {
        let r = read_response(&mut stream, &mut buf).expect("an answer to the upgrade");
        RawWs::finish_upgrade_after(stream, buf, r)
    }

    /// Checks an upgrade answer already read (`buf` holds the bytes after it).
    #[allow(dead_code)]
    pub(crate) fn finish_upgrade_after(stream: TcpStream, buf: Vec<u8>, r: HttpResponse) -> RawWs {
        assert_eq!(r.status, 101, "{r:?}");
        assert_eq!(
            r.header("Sec-WebSocket-Accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{r:?}"
        );
        RawWs {
            stream,
            buf: BytesMut::from(&buf[..]),
            decoder: MessageDecoder::new(DecoderConfig::client()),
        }
    }

    /// Sends bytes as they are.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends bytes as they are, giving up after `timeout` without progress (a gateway that no
    /// longer reads this peer, by design).
    #[allow(dead_code)] // not every test binary uses it
    pub(crate) fn try_send_raw(&mut self, bytes: &[u8], timeout: Duration) -> std::io::Result<()> {
        self.stream.set_write_timeout(Some(timeout))?;
        self.stream.write_all(bytes)
    }

    /// Sends one masked frame.
    pub(crate) fn send(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.send_raw(&client_frame(fin, opcode, payload));
    }

    /// Sends a whole text message.
    pub(crate) fn send_text(&mut self, text: &str) {
        self.send(true, OpCode::Text, text.as_bytes());
    }

    /// The next message from the server, or why there is none (EOF, reset, a bad frame).
    /// A read timeout panics.
    pub(crate) fn try_recv(&mut self) -> Result<Message, String> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => return Err(format!("bad frame from the server: {e}")),
            }
            let mut chunk = vec![0u8; 256 * 1024];
            loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => return Err("EOF".into()),
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        panic!("timed out waiting for a frame ({IO_TIMEOUT:?})")
                    }
                    Err(e) => return Err(format!("read error: {e}")),
                }
            }
        }
    }

    /// The next message; panics when the connection ends instead.
    pub(crate) fn recv(&mut self) -> Message {
        self.try_recv()
            .unwrap_or_else(|e| panic!("no message: {e}"))
    }

    /// The next message, which must be text; returns it as a string.
    pub(crate) fn recv_text(&mut self) -> String {
        match self.recv() {
            Message::Text(b) => String::from_utf8(b.to_vec()).expect("UTF-8"),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Skips data messages until a close frame; returns its code (`None`: no status code).
    pub(crate) fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.recv() {
                Message::Close(c) => return c.map(|c| c.code.0),
                Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    }

    /// The next message must be a close frame with `code`.
    pub(crate) fn expect_close_now(&mut self, code: u16) {
        match self.recv() {
            Message::Close(c) => assert_eq!(c.map(|c| c.code.0), Some(code)),
            other => panic!("expected close {code}, got {other:?}"),
        }
    }

    /// Whether the server ends the connection (EOF or reset) before the read timeout, after
    /// whatever it still had to send.
    pub(crate) fn closes(&mut self) -> bool {
        closes(&mut self.stream)
    }
}

// ---- tungstenite ----------------------------------------------------------------------------

/// A tungstenite client over a plain socket with timeouts.
pub(crate) type Ws = tungstenite::WebSocket<TcpStream>;

/// Connects tungstenite to `ws://ADDR{path}`, without its message size limits.
pub(crate) fn ws(addr: SocketAddr, path: &str) -> Ws {
    let stream = connect(addr);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (ws, response) =
        tungstenite::client::client_with_config(format!("ws://{addr}{path}"), stream, Some(config))
            .unwrap_or_else(|e| panic!("upgrade to {path} failed: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The next text message on a tungstenite client (pings and pongs skipped).
pub(crate) fn ws_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Text(t) => return t.as_str().to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The next binary message on a tungstenite client (pings and pongs skipped).
pub(crate) fn ws_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Binary(b) => return b.to_vec(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

/// Sends a text message on a tungstenite client.
pub(crate) fn ws_send(ws: &mut Ws, text: &str) {
    ws.send(tungstenite::Message::text(text)).expect("send");
}

/// Runs `command` (its output piped) until it exits or `limit` passes, when it is killed.
/// Returns its exit status (`None`: killed) and everything it wrote to stdout and stderr.
pub(crate) fn run_with_limit(
    mut command: Command,
    limit: Duration,
) -> (Option<ExitStatus>, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let output = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ]
    .into_iter()
    .map(|mut pipe| {
        let output = output.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
    })
    .collect();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in readers {
        let _ = r.join();
    }
    let output = output.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (status, output)
}

/// The workspace root.
pub(crate) fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the gateway crate is in the workspace")
        .to_path_buf()
}

/// Panics with a hint to run clients/setup.sh when `path` (a client library) is missing.
pub(crate) fn require_installed(path: &std::path::Path, what: &str) {
    assert!(
        path.exists(),
        "{what} is not installed: {} is missing. Run clients/setup.sh (or ./run-tests.sh, which \
         runs it) first.",
        path.display()
    );
}

/// Checks a client suite's summary line, `N passed, 0 failed`, with at least one check passed
/// and as many `PASS` lines as it counts (a suite that ran nothing does not pass).
pub(crate) fn assert_suite_passed(name: &str, output: &str) {
    let summary = output
        .lines()
        .rev()
        .find_map(|l| l.strip_suffix(" passed, 0 failed"))
        .unwrap_or_else(|| {
            panic!("the {name} suite printed no summary line; its output:\n{output}")
        });
    let passed: usize = summary
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the {name} suite's summary is unreadable: {summary:?}"));
    let lines = output.lines().filter(|l| l.starts_with("PASS ")).count();
    assert!(
        passed > 0 && passed == lines,
        "the {name} suite counted {passed} passed, with {lines} PASS lines; its output:\n{output}"
    );
}
