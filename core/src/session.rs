//! A server's WebSocket session as a sans-IO state machine, in the manner of quinn-proto's
//! `Connection`: bytes and `now` go in; events, frames to send and the next deadline come out.
//! It reads no socket and no clock, so every rule below is tested instant by instant.
//!
//! - [`Session::read`] decodes the next message from the bytes received so far and returns what
//!   happened as an [`Event`]. Data messages are for the application; control frames are
//!   handled here: a ping is answered with a pong carrying its payload, a close is answered with
//!   the same code, and a protocol error queues a close with the code RFC 6455 names for it.
//! - [`Session::poll_transmit`] hands out the frames the session itself wants sent (pongs,
//!   pings, close frames), in order. Call it after every event; frames of the application (an
//!   echo, a delivery) go out beside them in the order the calls were made.
//! - [`Session::poll_timeout`] is the earliest armed [`Timer`]; [`Session::handle_timeout`]
//!   fires the timers that have passed, one named timer per call.
//!
//! The timers of a session:
//!
//! - [`Timer::Ping`]: armed `ping_interval` after the last bytes from the peer; when it fires
//!   an empty ping is sent, and it stays disarmed until the peer is heard from again.
//! - [`Timer::Idle`]: armed `idle_timeout` after the last bytes from the peer; when it fires
//!   the session closes with 1001 ("idle timeout").
//! - [`Timer::TokenExpiry`]: when the session's credentials expire
//!   ([`Session::set_token_expiry`]); the session closes with 1008 ("token expired").
//! - [`Timer::Close`]: armed when the server sends a close frame first; if the peer has not
//!   answered with its own close by then, the session is over and the connection is dropped.
//!
//! States: [`State::Open`] until a close frame is sent or received. A server that closes first
//! is [`State::Closing`] until the peer answers (data the peer sends meanwhile is still
//! reported, but nothing more is sent: no data, no pong). [`State::Closed`] once the close
//! handshake is complete, failed, or timed out: every byte after that is ignored, and the
//! connection only has to send what is queued and end.

use crate::close::{self, CloseCode, CloseFrame};
use crate::error::Error;
use crate::frame::{CloseMessage, DecoderConfig, Message, MessageDecoder, OpCode, OutFrame, Role};
use crate::timer::{Now, Timer, TimerTable};
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a session enforces and when its timers fire. Shared by every session of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Frame and message limits.
    pub decoder: DecoderConfig,
    /// Silence from the peer after which it is pinged; `None` never pings.
    pub ping_interval: Option<Duration>,
    /// Silence from the peer after which the session is closed with 1001; `None` never.
    pub idle_timeout: Option<Duration>,
    /// Time the peer has to answer a close frame the server sent first.
    pub close_timeout: Duration,
}

impl Default for SessionConfig {
    /// The server decoder's limits, no pings, no idle timeout, 5 seconds to answer a close.
    fn default() -> SessionConfig {
        SessionConfig {
            decoder: DecoderConfig::server(),
            ping_interval: None,
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// The server sent a close frame and waits for the peer's (at most the close timeout).
    Closing,
    /// The close handshake is over (or failed, or timed out): nothing more is read or sent
    /// but what is queued.
    Closed,
}

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A whole binary message.
    Binary(Bytes),
    /// A ping; while the session is open a pong with the same payload is queued.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame (`None`: it carried no code). If the server had not closed first,
    /// the reply (the same code, or an empty close) is queued. The session is [`State::Closed`].
    Closed(Option<CloseMessage>),
    /// The peer broke the protocol. A close frame with the error's code is queued (unless the
    /// server had already sent one). The session is [`State::Closed`].
    Failed(Error),
    /// A timer fired, and the session acted on it: [`Timer::Ping`] queued a ping;
    /// [`Timer::Idle`] and [`Timer::TokenExpiry`] queued a close (1001, 1008) and made the
    /// session [`State::Closing`]; [`Timer::Close`] means the peer never answered the server's
    /// close: the session is [`State::Closed`] and the connection should be dropped at once.
    Timeout(Timer),
}

/// One WebSocket session, from the `101 Switching Protocols` on.
#[derive(Debug)]
pub struct Session {
    config: Arc<SessionConfig>,
    /// The decoder, only while a frame or a fragmented message is cut between two reads: an
    /// idle session holds none (a decoder at rest is a new one, made on the stack per read).
    decoder: Option<Box<MessageDecoder>>,
    timers: TimerTable,
    state: State,
    /// Control frames waiting for [`poll_transmit`](Self::poll_transmit); boxed, and only
    /// while some wait: a session lives in every connection, a pending frame in few.
    pending: Option<Box<Pending>>,
}

/// The control frames a session wants sent.
#[derive(Debug, Default)]
struct Pending {
    /// The payload of the pong to send: only the latest, as RFC 6455 section 5.5.3 allows
    /// when several pings arrive before the first pong went out.
    pong: Option<Bytes>,
    /// A ping to send.
    ping: bool,
    /// The close frame to send.
    close: Option<OutFrame>,
}

impl Session {
    /// A session opened at `now`: the ping and idle timers start.
    pub fn new(config: Arc<SessionConfig>, now: Instant) -> Session {
        let mut session = Session {
            decoder: None,
            config,
            timers: TimerTable::new(),
            state: State::Open,
            pending: None,
        };
        session.heard_from_peer(Now::from(now));
        session
    }

    /// The session's state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the application may send on this session (no close frame sent or received).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Decodes the next message from the front of `input` (the bytes received and not consumed
    /// yet), consuming what it used. `None` when `input` holds no whole message, or when the
    /// session is closed (then `input` is emptied: nothing after the close is read). Bytes
    /// from the peer, whole message or not, push the ping and idle timers back. `now` is an
    /// `Instant` or, for many reads at one instant, a [`Now`] made once.
    pub fn read(&mut self, input: &mut BytesMut, now: impl Into<Now>) -> Option<Event> {
        let now = now.into();
        match self.state {
            State::Closed => {
                input.clear();
                return None;
            }
            State::Open => self.heard_from_peer(now),
            State::Closing => {}
        }
        if let Some(event) = self.read_small_frame(input) {
            return Some(event);
        }
        let decoded = match &mut self.decoder {
            Some(decoder) => {
                let decoded = decoder.decode(input);
                if decoder.is_at_rest() {
                    self.decoder = None;
                }
                decoded
            }
            None => {
                let mut decoder = MessageDecoder::new(self.config.decoder);
                let decoded = decoder.decode(input);
                if !decoder.is_at_rest() {
                    self.decoder = Some(Box::new(decoder));
                }
                decoded
            }
        };
        let message = match decoded {
            Ok(None) => return None,
            Ok(Some(message)) => message,
            Err(error) => {
                input.clear();
                if self.state == State::Open {
                    let code = error.close_code().unwrap_or(CloseCode::INTERNAL_ERROR);
                    self.pending().close = Some(OutFrame::close_with(code, &error.to_string()));
                }
                self.finish();
                return Some(Event::Failed(error));
            }
        };
        Some(match message {
            Message::Text(text) => Event::Text(text),
            Message::Binary(bytes) => Event::Binary(bytes),
            Message::Ping(payload) => {
                if self.state == State::Open {
                    // copied: a pong that waits must not keep the reader's buffer alive
                    self.pending().pong = Some(Bytes::copy_from_slice(&payload));
                }
                Event::Ping(payload)
            }
            Message::Pong(payload) => Event::Pong(payload),
            Message::Close(received) => {
                if self.state == State::Open {
                    let frame = received.as_ref().map(|c| CloseFrame {
                        code: c.code,
                        reason: "",
                    });
                    self.pending().close = Some(OutFrame::close(&close::reply_to(frame)));
                }
                input.clear();
                self.finish();
                Event::Closed(received)
            }
        })
    }

    /// The common case, decoded without the incremental decoder: a whole, unfragmented,
    /// masked text or binary frame of at most 125 bytes at the front of `input`, between two
    /// messages, with no reserved bit. Anything else, and a text frame that is not valid UTF-8,
    /// is left to the decoder (which knows every rule and every error); `None` then, with
    /// `input` as it was.
    fn read_small_frame(&self, input: &mut BytesMut) -> Option<Event> {
        let (text, len) = self.small_frame(input)?;
        let mut frame = input.split_to(6 + len);
        frame.advance(6);
        let payload = frame.freeze();
        Some(if text {
            Event::Text(payload)
        } else {
            Event::Binary(payload)
        })
    }

    /// When the front of `input` is such a small frame (see `read_small_frame`): unmasks its
    /// payload in place and says whether it is text, and its length; the payload is then
    /// `input[6..6 + len]`.
    fn small_frame(&self, input: &mut [u8]) -> Option<(bool, usize)> {
        if self.decoder.is_some() {
            return None;
        }
        let [b0, b1, k0, k1, k2, k3, ..] = input[..] else {
            return None;
        };
        let text = match b0 {
            0x81 => true,  // FIN, text
            0x82 => false, // FIN, binary
            _ => return None,
        };
        let config = &self.config.decoder;
        let len = usize::from(b1 & 0x7F);
        if b1 & 0x80 == 0
            || len > 125
            || config.role != Role::Server
            || len as u64 > config.max_frame_size.min(config.max_message_size)
            || input.len() < 6 + len
        {
            return None;
        }
        let key = [k0, k1, k2, k3];
        crate::mask::unmask(&mut input[6..6 + len], key, 0);
        if text && std::str::from_utf8(&input[6..6 + len]).is_err() {
            crate::mask::unmask(&mut input[6..6 + len], key, 0); // as it was
            return None;
        }
        Some((text, len))
    }

    /// [`read`](Self::read) without handing the payload out as `Bytes`, for a message used at
    /// once: when the next message is a small whole text or binary frame (at most 125 bytes,
    /// not fragmented), calls `use_it(is_text, payload)` with the payload in place in `input`,
    /// consumes the frame and returns what `use_it` returned. `None`, with nothing consumed
    /// and nothing else done, for any other input: then call [`read`](Self::read).
    pub fn read_small<R>(
        &mut self,
        input: &mut BytesMut,
        now: impl Into<Now>,
        use_it: impl FnOnce(bool, &[u8]) -> R,
    ) -> Option<R> {
        if self.state == State::Closed {
            return None;
        }
        let (text, len) = self.small_frame(input)?;
        if self.state == State::Open {
            self.heard_from_peer(now.into());
        }
        let result = use_it(text, &input[6..6 + len]);
        input.advance(6 + len);
        Some(result)
    }

    /// Starts the close handshake from the server's side: a close frame with `code` and
    /// `reason` (cut to fit) is queued and the peer has the close timeout to answer. Returns
    /// false, and does nothing, when the session is not open.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.pending().close = Some(OutFrame::close_with(code, reason));
        self.state = State::Closing;
        self.timers.stop_all();
        self.timers
            .set(Timer::Close, now + self.config.close_timeout);
        true
    }

    /// Closes the session with 1008 at `at`, when its credentials expire.
    pub fn set_token_expiry(&mut self, at: Instant) {
        if self.state == State::Open {
            self.timers.set(Timer::TokenExpiry, at);
        }
    }

    /// The earliest deadline of the session's timers, if any is armed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Fires the first of the session's timers that has passed at `now` (see [`Timer::ALL`]
    /// for the order) and says which; `None` when none has. Call it until it returns `None`,
    /// taking [`poll_transmit`](Self::poll_transmit) after each.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Event> {
        let timer = self.timers.take_expired(now)?;
        match timer {
            Timer::Ping => self.pending().ping = true,
            Timer::Idle => {
                self.close(CloseCode::GOING_AWAY, "idle timeout", now);
            }
            Timer::TokenExpiry => {
                self.close(CloseCode::POLICY, "token expired", now);
            }
            Timer::Close => self.finish(),
            Timer::Handshake => {}
        }
        Some(Event::Timeout(timer))
    }

    /// The next frame the session wants sent (a pong, a ping, then a close), or `None`.
    pub fn poll_transmit(&mut self) -> Option<OutFrame> {
        let p = self.pending.as_deref_mut()?;
        let frame = if let Some(payload) = p.pong.take() {
            Some(OutFrame::new(OpCode::Pong, payload))
        } else if std::mem::take(&mut p.ping) {
            Some(OutFrame::new(OpCode::Ping, Bytes::new()))
        } else {
            p.close.take()
        };
        if frame.is_none() {
            self.pending = None;
        }
        frame
    }

    /// Bytes the frame being received still needs beyond those already given (0 at a frame
    /// boundary), to size the next read. Never more than the frame limit allows.
    pub fn wanted(&self) -> u64 {
        self.decoder.as_ref().map_or(0, |d| d.wanted())
    }

    /// Bytes of an unfinished fragmented message the session holds.
    pub fn assembled_len(&self) -> usize {
        self.decoder.as_ref().map_or(0, |d| d.assembled_len())
    }

    fn heard_from_peer(&mut self, now: Now) {
        // once per message: the deadlines are added to the stamp the caller made
        let (ping, idle) = (self.config.ping_interval, self.config.idle_timeout);
        if ping.is_none() && idle.is_none() {
            return;
        }
        let now = now.stamp();
        if let Some(ping) = ping {
            self.timers.set_stamp(Timer::Ping, now.after(ping));
        }
        if let Some(idle) = idle {
            self.timers.set_stamp(Timer::Idle, now.after(idle));
        }
    }

    fn pending(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    fn finish(&mut self) {
        self.state = State::Closed;
        self.timers.stop_all();
        if let Some(p) = &mut self.pending {
            p.pong = None;
            p.ping = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_client_frame;

    const KEY: [u8; 4] = [1, 2, 3, 4];
    const PING: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(75);
    const CLOSE: Duration = Duration::from_secs(5);

    fn config() -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            ping_interval: Some(PING),
            idle_timeout: Some(IDLE),
            close_timeout: CLOSE,
            ..SessionConfig::default()
        })
    }

    fn client(fin: bool, opcode: OpCode, payload: &[u8]) -> BytesMut {
        let mut v = Vec::new();
        encode_client_frame(&mut v, fin, opcode, payload, KEY);
        BytesMut::from(&v[..])
    }

    fn close_from_client(code: u16, reason: &str) -> BytesMut {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        client(true, OpCode::Close, &p)
    }

    /// Every frame the session queued, as (opcode bits, payload).
    fn sent(s: &mut Session) -> Vec<(u8, Vec<u8>)> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|f| (f.header()[0] & 0x0F, f.payload().to_vec()))
            .collect()
    }

    fn close_payload(code: CloseCode, reason: &str) -> (u8, Vec<u8>) {
        (
            0x8,
            close::ClosePayload::new(code, reason).as_bytes().to_vec(),
        )
    }

    /// Fires every timer due at `now`.
    fn timeouts(s: &mut Session, now: Instant) -> Vec<Event> {
        std::iter::from_fn(|| s.handle_timeout(now)).collect()
    }

    #[test]
    fn a_silent_peer_is_pinged_then_closed_1001_then_dropped() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        assert_eq!(s.poll_timeout(), Some(t0 + PING));
        assert!(timeouts(&mut s, t0 + PING - Duration::from_millis(1)).is_empty());
        assert_eq!(
            timeouts(&mut s, t0 + PING),
            vec![Event::Timeout(Timer::Ping)]
        );
        assert_eq!(sent(&mut s), vec![(0x9, vec![])], "an empty ping");
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + IDLE),
            "one ping, then the idle timer"
        );
        assert!(timeouts(&mut s, t0 + IDLE - Duration::from_millis(1)).is_empty());
        assert_eq!(
            timeouts(&mut s, t0 + IDLE),
            vec![Event::Timeout(Timer::Idle)]
        );
        assert_eq!(s.state(), State::Closing);
        assert_eq!(
            sent(&mut s),
            vec![close_payload(CloseCode::GOING_AWAY, "idle timeout")]
        );
        assert_eq!(s.poll_timeout(), Some(t0 + IDLE + CLOSE));
        assert!(timeouts(&mut s, t0 + IDLE + CLOSE - Duration::from_millis(1)).is_empty());
        assert_eq!(
            timeouts(&mut s, t0 + IDLE + CLOSE),
            vec![Event::Timeout(Timer::Close)]
        );
        assert_eq!(s.state(), State::Closed);
        assert_eq!(s.poll_timeout(), None);
        assert!(sent(&mut s).is_empty());
    }

    #[test]
    fn a_now_made_once_pushes_the_timers_back_as_its_instant_does() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(7);
        let (mut a, mut b) = (Session::new(config(), t0), Session::new(config(), t0));
        let now = Now::from(t1);
        assert_eq!(now.instant(), t1);
        let mut input = client(true, OpCode::Binary, b"one");
        input.extend_from_slice(&client(true, OpCode::Text, b"two"));
        let mut same = input.clone();
        assert!(a.read(&mut input, t1).is_some());
        assert!(b.read(&mut same, now).is_some());
        assert_eq!(
            b.read_small(&mut same, now, |text, p| (text, p.to_vec())),
            Some((true, b"two".to_vec()))
        );
        assert!(a.read(&mut input, t1).is_some());
        assert_eq!(a.poll_timeout(), Some(t1 + PING));
        assert_eq!(b.poll_timeout(), a.poll_timeout());
    }

    #[test]
    fn any_bytes_from_the_peer_push_ping_and_idle_back() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        let t1 = t0 + Duration::from_secs(20);
        // half a frame is enough to show the peer is alive
        let mut frame = client(true, OpCode::Binary, b"hello");
        let mut half = frame.split_to(3);
        assert_eq!(s.read(&mut half, t1), None);
        assert_eq!(s.poll_timeout(), Some(t1 + PING));
        // the ping goes out, the pong comes back: the idle timer restarts
        assert_eq!(
            timeouts(&mut s, t1 + PING),
            vec![Event::Timeout(Timer::Ping)]
        );
        sent(&mut s);
        let t2 = t1 + PING + Duration::from_secs(1);
        let mut pong = client(true, OpCode::Pong, b"");
        assert_eq!(s.read(&mut pong, t2), Some(Event::Pong(Bytes::new())));
        assert_eq!(s.poll_timeout(), Some(t2 + PING));
        let fired = timeouts(&mut s, t1 + IDLE);
        assert!(
            !fired.contains(&Event::Timeout(Timer::Idle)),
            "not idle: it answered"
        );
        assert_eq!(s.state(), State::Open);
    }

    #[test]
    fn pings_are_answered_with_their_payload_the_latest_when_several_wait() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        let mut ping = client(true, OpCode::Ping, b"are you there");
        assert_eq!(
            s.read(&mut ping, t0),
            Some(Event::Ping(Bytes::from_static(b"are you there")))
        );
        assert_eq!(sent(&mut s), vec![(0xA, b"are you there".to_vec())]);
        let mut two = client(true, OpCode::Ping, b"one");
        two.extend_from_slice(&client(true, OpCode::Ping, b"two"));
        assert!(matches!(s.read(&mut two, t0), Some(Event::Ping(_))));
        assert!(matches!(s.read(&mut two, t0), Some(Event::Ping(_))));
        assert_eq!(
            sent(&mut s),
            vec![(0xA, b"two".to_vec())],
            "RFC 6455 5.5.3: the most recent ping's pong"
        );
    }

    #[test]
    fn a_peer_close_is_answered_with_its_code_and_nothing_after_is_read() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        let mut input = close_from_client(4001, "bye");
        input.extend_from_slice(&client(true, OpCode::Ping, b"late"));
        let Some(Event::Closed(Some(c))) = s.read(&mut input, t0) else {
            panic!("a close")
        };
        assert_eq!((c.code, &c.reason[..]), (CloseCode(4001), &b"bye"[..]));
        assert!(input.is_empty(), "the ping after the close is dropped");
        assert_eq!(s.state(), State::Closed);
        assert_eq!(sent(&mut s), vec![close_payload(CloseCode(4001), "")]);
        let mut more = client(true, OpCode::Text, b"after");
        assert_eq!(s.read(&mut more, t0), None);
        assert!(more.is_empty());
        assert_eq!(s.poll_timeout(), None, "no timer once closed");
        // a close without a code is answered with an empty close
        let mut s = Session::new(config(), t0);
        let mut bare = client(true, OpCode::Close, b"");
        assert_eq!(s.read(&mut bare, t0), Some(Event::Closed(None)));
        assert_eq!(sent(&mut s), vec![(0x8, vec![])]);
    }

    #[test]
    fn a_server_close_waits_for_the_peer_and_sends_nothing_more() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        assert!(s.close(CloseCode::GOING_AWAY, "server draining", t0));
        assert!(!s.close(CloseCode::POLICY, "twice", t0), "one close");
        assert!(!s.is_open());
        assert_eq!(
            sent(&mut s),
            vec![close_payload(CloseCode::GOING_AWAY, "server draining")]
        );
        assert_eq!(s.poll_timeout(), Some(t0 + CLOSE), "only the close timer");
        // the peer still sends: reported, but no pong goes out
        let t1 = t0 + Duration::from_secs(1);
        let mut input = client(true, OpCode::Text, b"in flight");
        input.extend_from_slice(&client(true, OpCode::Ping, b""));
        input.extend_from_slice(&close_from_client(1001, ""));
        assert_eq!(
            s.read(&mut input, t1),
            Some(Event::Text(Bytes::from_static(b"in flight")))
        );
        assert_eq!(s.read(&mut input, t1), Some(Event::Ping(Bytes::new())));
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + CLOSE),
            "data does not extend it"
        );
        assert!(matches!(
            s.read(&mut input, t1),
            Some(Event::Closed(Some(_)))
        ));
        assert_eq!(s.state(), State::Closed);
        assert!(sent(&mut s).is_empty(), "no pong, no second close");
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn protocol_errors_queue_the_rfc_close_code_once() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        let mut unmasked = BytesMut::from(&[0x81u8, 0x01, b'x'][..]);
        let Some(Event::Failed(e)) = s.read(&mut unmasked, t0) else {
            panic!("a failure")
        };
        assert_eq!(e, Error::UnmaskedClientFrame);
        assert!(unmasked.is_empty());
        assert_eq!(
            sent(&mut s),
            vec![close_payload(CloseCode::PROTOCOL_ERROR, &e.to_string())]
        );
        assert_eq!(s.state(), State::Closed);
        // bad UTF-8 is 1007
        let mut s = Session::new(config(), t0);
        let mut bad = client(true, OpCode::Text, b"\xff");
        assert!(matches!(
            s.read(&mut bad, t0),
            Some(Event::Failed(Error::InvalidUtf8))
        ));
        assert_eq!(sent(&mut s)[0].1[..2], 1007u16.to_be_bytes());
        // after the server's own close, garbage ends the session without a second close
        let mut s = Session::new(config(), t0);
        s.close(CloseCode::NORMAL, "", t0);
        sent(&mut s);
        let mut garbage = BytesMut::from(&[0x8Fu8, 0x80, 0, 0, 0, 0][..]);
        assert!(matches!(s.read(&mut garbage, t0), Some(Event::Failed(_))));
        assert!(sent(&mut s).is_empty());
        assert_eq!(s.state(), State::Closed);
    }

    #[test]
    fn an_expired_token_closes_1008_at_its_instant() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        let exp = t0 + Duration::from_secs(10);
        s.set_token_expiry(exp);
        assert_eq!(s.poll_timeout(), Some(exp));
        assert!(timeouts(&mut s, exp - Duration::from_millis(1)).is_empty());
        assert_eq!(
            timeouts(&mut s, exp),
            vec![Event::Timeout(Timer::TokenExpiry)]
        );
        assert_eq!(
            sent(&mut s),
            vec![close_payload(CloseCode::POLICY, "token expired")]
        );
        assert_eq!(s.poll_timeout(), Some(exp + CLOSE));
    }

    #[test]
    fn when_several_timers_pass_together_the_most_decisive_acts() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        s.set_token_expiry(t0 + Duration::from_secs(1));
        // a worker that was away for a long time: everything is due
        let late = t0 + Duration::from_secs(600);
        assert_eq!(
            timeouts(&mut s, late),
            vec![Event::Timeout(Timer::TokenExpiry)],
            "closed for the token: no ping, no 1001"
        );
        assert_eq!(
            sent(&mut s),
            vec![close_payload(CloseCode::POLICY, "token expired")]
        );
        assert_eq!(s.state(), State::Closing);
        assert_eq!(
            s.poll_timeout(),
            Some(late + CLOSE),
            "the peer has the whole close timeout from when the close was sent"
        );
    }

    #[test]
    fn without_ping_or_idle_an_open_session_has_no_deadline() {
        let t0 = Instant::now();
        let s = Session::new(Arc::new(SessionConfig::default()), t0);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn messages_come_out_whole_across_reads() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        let mut wire = client(false, OpCode::Text, b"hel");
        wire.extend_from_slice(&client(true, OpCode::Continuation, b"lo"));
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            events.extend(std::iter::from_fn(|| s.read(&mut buf, t0)));
        }
        assert_eq!(events, vec![Event::Text(Bytes::from_static(b"hello"))]);
        assert!(s.wanted() == 0 && s.assembled_len() == 0);
    }

    proptest::proptest! {
        /// Small whole frames take a shortcut past the decoder: whatever the frames (text
        /// valid or not, binary, control, fragmented, reserved bits, unmasked), a session
        /// given them at once says and sends what one given them byte by byte (always the
        /// decoder) does, whether its payloads are borrowed (`read_small`) or not.
        #[test]
        fn the_shortcut_for_small_frames_says_what_the_decoder_says(
            frames in proptest::collection::vec(
                (proptest::prop_oneof![
                    proptest::sample::select(vec![0x81u8, 0x82, 0x81, 0x82, 0x01, 0x00, 0x80, 0x89, 0x8A, 0x88, 0xC1, 0x92, 0x8F]),
                    0u8..=255,
                ], proptest::collection::vec(proptest::prelude::any::<u8>(), 0..140), proptest::prelude::any::<bool>()),
                1..12,
            ),
        ) {
            let mut wire = Vec::new();
            for (b0, payload, text_ok) in &frames {
                let payload = if *text_ok { "\u{e9}t\u{e9}".as_bytes().repeat(payload.len() / 5 + 1) } else { payload.clone() };
                let opcode = OpCode::from_bits(b0 & 0x0F).unwrap_or(OpCode::Binary);
                let mut frame = Vec::new();
                encode_client_frame(&mut frame, true, opcode, &payload, KEY);
                frame[0] = (frame[0] & 0x0F) | (b0 & 0xF0); // any FIN and reserved bits
                if b0 & 0x0F == 0x0F {
                    frame[1] &= 0x7F; // now and then unmasked
                }
                wire.extend(frame);
            }
            let t0 = Instant::now();
            let run = |cut: usize, small: bool| {
                let mut s = Session::new(config(), t0);
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                for piece in wire.chunks(cut) {
                    buf.extend_from_slice(piece);
                    loop {
                        let borrowed = small.then(|| s.read_small(&mut buf, t0, |text, p| {
                            let p = Bytes::copy_from_slice(p);
                            if text { Event::Text(p) } else { Event::Binary(p) }
                        })).flatten();
                        let Some(e) = borrowed.or_else(|| s.read(&mut buf, t0)) else {
                            break;
                        };
                        out.push(format!("{e:?}"));
                        out.extend(sent(&mut s).into_iter().map(|f| format!("{f:?}")));
                    }
                }
                out
            };
            let decoder = run(1, false);
            proptest::prop_assert_eq!(&run(wire.len(), false), &decoder);
            proptest::prop_assert_eq!(&run(wire.len(), true), &decoder);
        }
    }

    #[test]
    fn a_borrowed_small_message_pushes_ping_and_idle_back_too() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        let later = t0 + Duration::from_secs(20);
        let mut buf = client(true, OpCode::Binary, b"abc");
        assert_eq!(
            s.read_small(&mut buf, later, |text, p| (text, p.to_vec())),
            Some((false, b"abc".to_vec()))
        );
        assert!(buf.is_empty());
        assert_eq!(s.poll_timeout(), Some(later + PING));
        // a ping is not a small data frame: nothing consumed, nothing done
        let mut buf = client(true, OpCode::Ping, b"p");
        assert_eq!(s.read_small(&mut buf, later + PING, |_, _| ()), None);
        assert_eq!((buf.len(), s.poll_timeout()), (7, Some(later + PING)));
    }

    #[test]
    fn a_session_holds_a_decoder_only_while_a_message_is_cut() {
        let t0 = Instant::now();
        let mut s = Session::new(config(), t0);
        assert!(s.decoder.is_none(), "a new session");
        // whole frames in one read: no decoder is kept
        let mut buf = client(true, OpCode::Binary, b"abc");
        buf.extend_from_slice(&client(true, OpCode::Ping, b"p"));
        assert_eq!(
            s.read(&mut buf, t0),
            Some(Event::Binary(Bytes::from_static(b"abc")))
        );
        assert!(s.decoder.is_none());
        assert_eq!(
            s.read(&mut buf, t0),
            Some(Event::Ping(Bytes::from_static(b"p")))
        );
        assert!(s.decoder.is_none() && buf.is_empty());
        // a frame cut in its payload: kept until its last byte, then dropped
        let wire = client(true, OpCode::Text, "h\u{e9}llo".as_bytes());
        let mut buf = BytesMut::from(&wire[..wire.len() - 4]);
        assert_eq!(s.read(&mut buf, t0), None);
        assert!(s.decoder.is_some() && s.wanted() == 4);
        buf.extend_from_slice(&wire[wire.len() - 4..]);
        assert_eq!(
            s.read(&mut buf, t0),
            Some(Event::Text(Bytes::from("h\u{e9}llo")))
        );
        assert!(s.decoder.is_none());
        // a fragmented message between its fragments: kept, with what it assembled
        let mut buf = client(false, OpCode::Binary, b"one ");
        assert_eq!(s.read(&mut buf, t0), None);
        assert!(s.decoder.is_some() && s.assembled_len() == 4);
        let mut buf = client(true, OpCode::Continuation, b"two");
        assert_eq!(
            s.read(&mut buf, t0),
            Some(Event::Binary(Bytes::from_static(b"one two")))
        );
        assert!(s.decoder.is_none() && s.assembled_len() == 0);
        // a text message cut inside a character, between fragments: the validator's state is kept
        let mut buf = client(false, OpCode::Text, &[b'a', 0xC3]);
        assert_eq!(s.read(&mut buf, t0), None);
        assert!(s.decoder.is_some());
        let mut buf = client(true, OpCode::Continuation, &[0xA9]);
        assert_eq!(
            s.read(&mut buf, t0),
            Some(Event::Text(Bytes::from("a\u{e9}")))
        );
        // a cut header is left in the input, and needs no decoder
        let wire = client(true, OpCode::Binary, &[7; 200]);
        let mut buf = BytesMut::from(&wire[..3]);
        assert_eq!(s.read(&mut buf, t0), None);
        assert!(s.decoder.is_none() && buf.len() == 3);
        buf.extend_from_slice(&wire[3..]);
        assert_eq!(
            s.read(&mut buf, t0),
            Some(Event::Binary(Bytes::from(vec![7; 200])))
        );
    }
}
