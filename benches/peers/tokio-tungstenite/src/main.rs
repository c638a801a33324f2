//! A peer of wsgate for benches/peers/compare.sh: the subset of wsgate's protocol that the
//! `loadtest` binary drives, written the way a tokio + tokio-tungstenite user would write it.
//!
//! - `GET /echo`: every data message comes back with the same opcode.
//! - `GET /ws[?subscribe=T]`: a pub/sub session, subscribed to topic T at connect. A binary
//!   message `[L][topic: L bytes][payload]` is a publish, delivered unchanged as a binary
//!   message to every subscriber of the topic (the sender too, when subscribed).
//!
//! Fanout uses one `tokio::sync::broadcast` channel per topic: a publish stores one
//! `Message::Binary(Bytes)` in the channel and every subscriber's task clones it (a reference
//! count, not a copy of the payload). A subscriber that falls more than `--capacity` messages
//! behind is closed with 1013, the way wsgate closes a slow consumer. A subscriber's task
//! writes every message already waiting for it, then flushes once.
//!
//! Usage: peer-tokio-tungstenite [--port N] [--threads N] [--capacity N] [--backlog N]
//!        [--read-buffer-size BYTES]
//! Every setting is tokio's and tungstenite's default unless a flag says otherwise; the listen
//! backlog defaults to 1024, as wsgate's does. `--threads` is the number of tokio worker
//! threads (default: one per core). Prints `listening on 127.0.0.1:PORT` once it accepts
//! (port 0 picks a free port).

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Topic name -> the sending half of its broadcast channel.
type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

struct Options {
    port: u16,
    threads: usize,
    capacity: usize,
    backlog: u32,
    /// tungstenite's read buffer per connection; 0 keeps its default (128 KiB).
    read_buffer: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: peer-tokio-tungstenite [--port N] [--threads N] [--capacity N] [--backlog N] \
         [--read-buffer-size BYTES]"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let mut o = Options {
        port: 0,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        capacity: 16_384,
        backlog: 1024,
        read_buffer: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--port" => o.port = value.parse().unwrap_or_else(|_| usage()),
            "--threads" => o.threads = value.parse().unwrap_or_else(|_| usage()),
            "--capacity" => o.capacity = value.parse().unwrap_or_else(|_| usage()),
            "--backlog" => o.backlog = value.parse().unwrap_or_else(|_| usage()),
            "--read-buffer-size" => o.read_buffer = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    if o.threads == 0 || o.capacity == 0 {
        usage();
    }
    o
}

fn main() {
    let o = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.threads)
        .enable_io()
        .build()
        .expect("tokio runtime");
    let capacity = o.capacity;
    let mut config = WebSocketConfig::default();
    if o.read_buffer > 0 {
        config = config.read_buffer_size(o.read_buffer);
    }
    // the accept loop is a task too, so that all the work runs on the runtime's workers
    // (block_on's own thread only waits)
    let server = rt.spawn(async move {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(([127, 0, 0, 1], o.port).into()).expect("bind");
        let listener = socket.listen(o.backlog).expect("listen");
        println!(
            "listening on {}",
            listener.local_addr().expect("local address")
        );
        let topics: Topics = Arc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, topics.clone(), capacity, config));
        }
    });
    rt.block_on(server).expect("server task");
}

enum Route {
    Echo,
    /// The topic and the subscription, taken before the 101 is sent (as wsgate does), so a
    /// publish that follows the 101 reaches this connection.
    PubSub(Option<(String, broadcast::Receiver<Message>)>),
}

fn error(status: StatusCode, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = status;
    r
}

// the ErrorResponse type is tungstenite's, its size is not ours to choose
#[allow(clippy::result_large_err)]
async fn serve(stream: TcpStream, topics: Topics, capacity: usize, config: WebSocketConfig) {
    let mut route = None;
    let callback = |req: &Request, resp: Response| {
        let uri = req.uri();
        route = Some(match uri.path() {
            "/echo" => Route::Echo,
            "/ws" => {
                let topic = uri
                    .query()
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("subscribe="));
                match topic {
                    Some(t) if t.is_empty() || t.len() > 255 || t.contains(',') => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "subscribe= takes one topic of 1 to 255 bytes\n",
                        ));
                    }
                    t => Route::PubSub(t.map(|t| {
                        let rx = topics
                            .lock()
                            .expect("not poisoned")
                            .entry(t.to_string())
                            .or_insert_with(|| broadcast::channel(capacity).0)
                            .subscribe();
                        (t.to_string(), rx)
                    })),
                }
            }
            _ => return Err(error(StatusCode::NOT_FOUND, "not found\n")),
        });
        Ok(resp)
    };
    let upgrade =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await;
    let Ok(ws) = upgrade else {
        // a refused or failed upgrade may have subscribed already
        if let Some(Route::PubSub(Some((t, rx)))) = route {
            unsubscribe(&topics, &t, rx);
        }
        return;
    };
    match route {
        Some(Route::Echo) => echo(ws).await,
        Some(Route::PubSub(sub)) => pubsub(ws, &topics, sub).await,
        None => {}
    }
}

async fn echo(mut ws: WebSocketStream<TcpStream>) {
    // tungstenite answers pings and closes by itself; the loop ends when the stream does
    while let Some(Ok(m)) = ws.next().await {
        if (m.is_binary() || m.is_text()) && ws.send(m).await.is_err() {
            return;
        }
    }
}

/// Publishes a binary `[L][topic][payload]` message to the topic's subscribers.
fn publish(topics: &Topics, data: Bytes) {
    let Some(&l) = data.first() else { return };
    let Some(topic) = data.get(1..1 + l as usize) else {
        return;
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return;
    };
    if l == 0 {
        return;
    }
    let topics = topics.lock().expect("not poisoned");
    if let Some(tx) = topics.get(topic) {
        // one Message for every subscriber; each receiver's clone shares the Bytes
        let _ = tx.send(Message::Binary(data));
    }
}

fn unsubscribe(topics: &Topics, topic: &str, rx: broadcast::Receiver<Message>) {
    drop(rx);
    let mut topics = topics.lock().expect("not poisoned");
    if topics.get(topic).is_some_and(|tx| tx.receiver_count() == 0) {
        topics.remove(topic);
    }
}

async fn pubsub(
    mut ws: WebSocketStream<TcpStream>,
    topics: &Topics,
    sub: Option<(String, broadcast::Receiver<Message>)>,
) {
    let (topic, mut rx) = match sub {
        Some((t, rx)) => (Some(t), Some(rx)),
        None => (None, None),
    };
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Binary(data))) => publish(topics, data),
                Some(Ok(_)) => {} // text control messages are not part of this subset
                Some(Err(_)) | None => break,
            },
            r = async { rx.as_mut().expect("subscribed").recv().await }, if rx.is_some() => {
                let rx = rx.as_mut().expect("subscribed");
                let sent = match r {
                    Ok(m) => deliver(&mut ws, rx, m).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = ws
                            .close(Some(CloseFrame {
                                code: CloseCode::Again,
                                reason: "slow consumer".into(),
                            }))
                            .await;
                        false
                    }
                    Err(broadcast::error::RecvError::Closed) => false,
                };
                if !sent {
                    break;
                }
            }
        }
    }
    if let (Some(t), Some(rx)) = (topic, rx) {
        unsubscribe(topics, &t, rx);
    }
}

/// Writes `first` and whatever else is already waiting, then flushes once.
async fn deliver(
    ws: &mut WebSocketStream<TcpStream>,
    rx: &mut broadcast::Receiver<Message>,
    first: Message,
) -> bool {
    if ws.feed(first).await.is_err() {
        return false;
    }
    loop {
        match rx.try_recv() {
            Ok(m) => {
                if ws.feed(m).await.is_err() {
                    return false;
                }
            }
            Err(broadcast::error::TryRecvError::Empty) => break,
            // a lag shows up again on the next recv(), which closes the connection
            Err(_) => break,
        }
    }
    ws.flush().await.is_ok()
}
