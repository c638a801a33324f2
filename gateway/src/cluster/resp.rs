//! Our own RESP connections to Redis: the redis crate packs commands and parses replies, the
//! socket is ours. Also what the bridge asks a server when it connects: the layout of a Redis
//! Cluster and the limit of a subscriber's output buffer.

use super::slots;
use redis::{ConnectionAddr, Value};
use std::io::{self, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Timeout of connecting to Redis and of each read and write on the publishing connection.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis' default hard limit of a pub/sub subscriber's output buffer.
pub(super) const DEFAULT_PUBSUB_HARD_LIMIT: usize = 32 << 20;

/// A plain RESP connection: the redis crate packs commands and parses replies; the socket is
/// ours, so that a large payload goes out from its own buffer and the subscribing connection
/// can be read on one thread while another writes to it.
pub(super) struct Resp {
    pub(super) stream: TcpStream,
    reader: BufReader<TcpStream>,
    parser: redis::Parser,
}

/// A Redis server's address.
pub(super) type Addr = (String, u16);

impl Resp {
    /// Connects to `addr` with the credentials of `info`.
    pub(super) fn connect(info: &redis::ConnectionInfo, addr: &Addr) -> io::Result<Resp> {
        let (host, port) = addr;
        let mut last = io::Error::other(format!("{host}:{port} resolves to no address"));
        let mut stream = None;
        for a in (host.as_str(), *port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, IO_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(last)?;
        stream.set_nodelay(true)?;
        socket2::SockRef::from(&stream).set_keepalive(true)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut conn = Resp {
            reader: BufReader::with_capacity(64 << 10, stream.try_clone()?),
            stream,
            parser: redis::Parser::new(),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            match conn.call(&auth)? {
                Value::Okay => {}
                Value::SimpleString(s) if s == "OK" => {}
                other => return Err(io::Error::other(format!("AUTH refused: {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// Checks that a Redis server answers on this connection.
    pub(super) fn ping(&mut self) -> io::Result<()> {
        match self.call(&redis::cmd("PING"))? {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            other => Err(io::Error::other(format!("PING answered {other:?}"))),
        }
    }

    pub(super) fn call(&mut self, cmd: &redis::Cmd) -> io::Result<Value> {
        self.stream.write_all(&cmd.get_packed_command())?;
        self.read()
    }

    pub(super) fn read(&mut self) -> io::Result<Value> {
        self.parser
            .parse_value(&mut self.reader)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// The address the URL names.
pub(super) fn url_addr(info: &redis::ConnectionInfo) -> io::Result<Addr> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Ok((host.clone(), *port)),
        other => Err(io::Error::other(format!(
            "unsupported Redis address {other:?}"
        ))),
    }
}

/// The hard limit of a pub/sub subscriber's output buffer on the server of `conn`:
/// `CONFIG GET client-output-buffer-limit`'s `pubsub HARD SOFT SECONDS`; no limit (0) is
/// `usize::MAX`, and a server that does not answer CONFIG (a managed Redis may rename it) is
/// taken to have Redis' default.
pub(super) fn pubsub_hard_limit(conn: &mut Resp) -> io::Result<usize> {
    let reply = conn.call(
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("client-output-buffer-limit"),
    )?;
    let Value::Array(items) = reply else {
        return Ok(DEFAULT_PUBSUB_HARD_LIMIT);
    };
    let text = match items.get(1) {
        Some(Value::BulkString(v)) => String::from_utf8_lossy(v).into_owned(),
        _ => return Ok(DEFAULT_PUBSUB_HARD_LIMIT),
    };
    Ok(parse_pubsub_hard_limit(&text).unwrap_or(DEFAULT_PUBSUB_HARD_LIMIT))
}

/// The pubsub class's hard limit in a `client-output-buffer-limit` value
/// (`normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60`).
fn parse_pubsub_hard_limit(text: &str) -> Option<usize> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "pubsub")?;
    match words.get(i + 1)?.parse::<usize>().ok()? {
        0 => Some(usize::MAX),
        n => Some(n),
    }
}

/// Which master serves each slot, from `CLUSTER SLOTS`; `None` when the server is not part of
/// a cluster.
pub(super) fn cluster_slots(
    conn: &mut Resp,
    default_host: &str,
) -> io::Result<Option<Vec<(u16, u16, Addr)>>> {
    let reply = conn.call(&redis::cmd("CLUSTER").arg("SLOTS").clone())?;
    let entries = match reply {
        Value::ServerError(_) => return Ok(None),
        Value::Array(entries) => entries,
        other => return Err(io::Error::other(format!("CLUSTER SLOTS: {other:?}"))),
    };
    let bad = || io::Error::other("CLUSTER SLOTS: unexpected reply");
    let mut ranges = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) if !h.is_empty() && h != b"?" => {
                String::from_utf8_lossy(h).into_owned()
            }
            _ => default_host.to_string(),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            return Err(bad());
        };
        let in_range = |n: i64| (0..slots::COUNT as i64).contains(&n);
        if !in_range(*start) || !in_range(*end) || start > end || !(1..=65535).contains(port) {
            return Err(bad());
        }
        ranges.push((*start as u16, *end as u16, (host, *port as u16)));
    }
    Ok(Some(ranges))
}

/// Appends `bytes` as a RESP bulk string.
pub(super) fn write_bulk(b: &mut Vec<u8>, bytes: &[u8]) {
    b.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
    b.extend_from_slice(bytes);
    b.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubsub_output_limits_are_read_from_the_config_value() {
        assert_eq!(
            parse_pubsub_hard_limit(
                "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
            ),
            Some(33554432)
        );
        assert_eq!(
            parse_pubsub_hard_limit("normal 0 0 0 pubsub 0 0 0"),
            Some(usize::MAX),
            "0: no limit"
        );
        assert_eq!(parse_pubsub_hard_limit("normal 0 0 0"), None);
        assert_eq!(parse_pubsub_hard_limit("pubsub lots 1 1"), None);
    }
}
