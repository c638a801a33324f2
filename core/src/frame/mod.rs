//! WebSocket frames (RFC 6455 section 5): header parsing and encoding, a streaming frame
//! decoder, and a message decoder built on it.
//!
//! Three levels, each usable on its own:
//!
//! - [`FrameHeader::parse`] and [`HeaderBuf`]: the wire format of one header, nothing more.
//! - [`FrameDecoder`]: a state machine fed with whatever bytes have arrived. It returns a
//!   header, then the payload piece by piece, unmasking each piece in place and validating text
//!   as it goes, so a bad byte fails at once even in the middle of a frame. It enforces every
//!   framing rule that needs state: fragmentation order, control frame rules, masking by role,
//!   and the frame and message size limits. It never allocates.
//! - [`MessageDecoder`]: collects frames into whole messages over a [`BytesMut`](bytes::BytesMut) the caller
//!   reads into. A message that arrives as one frame is handed out as a slice of that buffer,
//!   without a copy; the payload of a fragmented message is appended to the message once, as
//!   each read brings it.
//!
//! Outgoing frames are an inline [`HeaderBuf`] plus a shared [`Bytes`] payload ([`OutFrame`]),
//! so one encoded message can be queued to any number of connections by reference.

use crate::close::{CloseCode, ClosePayload};
use crate::utf8::Utf8Validator;
use crate::{Error, Result};
use bytes::Bytes;

mod assemble;

pub use assemble::{CloseMessage, Message, MessageDecoder};

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;
/// The largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The default limit on a single frame's payload (the whole message limit).
pub const DEFAULT_MAX_FRAME_SIZE: u64 = DEFAULT_MAX_MESSAGE_SIZE;
/// The default limit on a message's total payload: 64 MiB, far above chat-sized traffic, well
/// below what would let a few clients exhaust a node's memory.
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 64 << 20;

/// The first reserved bit (used by permessage-deflate).
pub const RSV1: u8 = 0b100;
/// The second reserved bit.
pub const RSV2: u8 = 0b010;
/// The third reserved bit.
pub const RSV3: u8 = 0b001;

/// A frame opcode. The reserved values are refused when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: the next frame of a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Parses the low four bits of a frame's first byte.
    pub fn from_bits(bits: u8) -> Result<OpCode> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(Error::UnknownOpcode(other)),
        })
    }

    /// The opcode's four bits.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// One decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The final fragment of a message.
    pub fin: bool,
    /// The three reserved bits, RSV1 as the highest ([`RSV1`], [`RSV2`], [`RSV3`]).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, when the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns the header and its length, or `Ok(None)` when `buf` does not hold the whole
    /// header yet. Checks only what one header can show on its own (reserved opcodes, the top
    /// bit of a 64-bit length); [`FrameDecoder`] checks the rest.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let opcode = OpCode::from_bits(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let (len_bytes, header_len) = match b1 & 0x7F {
            126 => (2, 4),
            127 => (8, 10),
            _ => (0, 2),
        };
        let total = header_len + if masked { 4 } else { 0 };
        if buf.len() < total {
            return Ok(None);
        }
        let payload_len = match len_bytes {
            0 => u64::from(b1 & 0x7F),
            2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            _ => {
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(Error::LengthOverflow);
                }
                len
            }
        };
        let mask = masked.then(|| buf[header_len..header_len + 4].try_into().expect("4 bytes"));
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, total)))
    }

    /// Encodes this header.
    pub fn encode(&self) -> HeaderBuf {
        HeaderBuf::new(self.fin, self.rsv, self.opcode, self.payload_len, self.mask)
    }
}

/// An encoded frame header kept inline: at most [`MAX_HEADER_LEN`] bytes, no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HeaderBuf {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl HeaderBuf {
    /// Encodes a header with the shortest length form.
    pub fn new(
        fin: bool,
        rsv: u8,
        opcode: OpCode,
        payload_len: u64,
        mask: Option<[u8; 4]>,
    ) -> HeaderBuf {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        bytes[0] = (u8::from(fin) << 7) | ((rsv & 0x07) << 4) | opcode.bits();
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        let mut len = if payload_len < 126 {
            bytes[1] = mask_bit | payload_len as u8;
            2
        } else if payload_len <= u64::from(u16::MAX) {
            bytes[1] = mask_bit | 126;
            bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            4
        } else {
            bytes[1] = mask_bit | 127;
            bytes[2..10].copy_from_slice(&payload_len.to_be_bytes());
            10
        };
        if let Some(key) = mask {
            bytes[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        HeaderBuf {
            bytes,
            len: len as u8,
        }
    }

    /// The header of a whole, unmasked server frame.
    pub fn server(opcode: OpCode, payload_len: usize) -> HeaderBuf {
        HeaderBuf::new(true, 0, opcode, payload_len as u64, None)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HeaderBuf").field(&self.as_bytes()).finish()
    }
}

/// A server frame ready to send: an inline header and a shared payload. Cloning one costs a
/// reference count, whatever the payload's size.
#[derive(Clone, Debug)]
pub struct OutFrame {
    header: HeaderBuf,
    payload: Bytes,
}

impl OutFrame {
    /// A whole (FIN), unmasked frame carrying `payload`.
    pub fn new(opcode: OpCode, payload: Bytes) -> OutFrame {
        OutFrame {
            header: HeaderBuf::server(opcode, payload.len()),
            payload,
        }
    }

    /// A whole (FIN), unmasked frame whose `payload` is a message compressed with
    /// permessage-deflate (RFC 7692): RSV1 set.
    pub fn deflated(opcode: OpCode, payload: Bytes) -> OutFrame {
        OutFrame {
            header: HeaderBuf::new(true, RSV1, opcode, payload.len() as u64, None),
            payload,
        }
    }

    /// Whether RSV1 is set: the payload is compressed ([`deflated`](Self::deflated)).
    pub fn is_deflated(&self) -> bool {
        self.header.bytes[0] & (RSV1 << 4) != 0
    }

    /// A close frame with the given payload.
    pub fn close(payload: &ClosePayload) -> OutFrame {
        OutFrame::new(OpCode::Close, Bytes::copy_from_slice(payload.as_bytes()))
    }

    /// A close frame with a code and a reason (cut to fit).
    pub fn close_with(code: CloseCode, reason: &str) -> OutFrame {
        OutFrame::close(&ClosePayload::new(code, reason))
    }

    /// The frame's opcode, read back from the header (a field of its own made queuing a
    /// frame a quarter slower in the hub bench).
    pub fn opcode(&self) -> OpCode {
        // the header was encoded from an OpCode, so every value maps back
        match self.header.bytes[0] & 0x0F {
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => OpCode::Continuation,
        }
    }

    /// The code of a close frame (`None` for a close without one, or another frame).
    pub fn close_code(&self) -> Option<CloseCode> {
        match (self.opcode(), &self.payload[..]) {
            (OpCode::Close, [a, b, ..]) => Some(CloseCode(u16::from_be_bytes([*a, *b]))),
            _ => None,
        }
    }

    /// The encoded header.
    pub fn header(&self) -> &[u8] {
        self.header.as_bytes()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Header plus payload length: the bytes this frame puts on the wire.
    pub fn wire_len(&self) -> usize {
        self.header.len as usize + self.payload.len()
    }

    /// The frame as one contiguous buffer (a copy; for tests and small control frames).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.wire_len());
        v.extend_from_slice(self.header());
        v.extend_from_slice(&self.payload);
        v
    }
}

/// Appends a masked client frame (header and masked copy of `payload`) to `out`.
pub fn encode_client_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    key: [u8; 4],
) {
    out.extend_from_slice(
        HeaderBuf::new(fin, 0, opcode, payload.len() as u64, Some(key)).as_bytes(),
    );
    let start = out.len();
    out.extend_from_slice(payload);
    crate::mask::unmask(&mut out[start..], key, 0);
}

/// Which side of the connection decodes: a server decodes client frames (which must be
/// masked), a client decodes server frames (which must not be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decoding frames sent by a client.
    Server,
    /// Decoding frames sent by a server.
    Client,
}

/// What the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Which side decodes.
    pub role: Role,
    /// The largest payload of one frame; more is [`Error::FrameTooBig`] (1009).
    pub max_frame_size: u64,
    /// The largest total payload of one message; more is [`Error::MessageTooBig`] (1009).
    pub max_message_size: u64,
    /// The reserved bits a negotiated extension allows on the first frame of a data message.
    /// Zero, the default, refuses every reserved bit. [`RSV1`] means permessage-deflate (RFC
    /// 7692) was negotiated: a message whose first frame has RSV1 is inflated by the
    /// [`MessageDecoder`] (its inflated size within `max_message_size`, its text validated
    /// once inflated).
    pub allowed_rsv: u8,
    /// With permessage-deflate, whether the peer compresses each message with the context of
    /// its previous ones (it was not answered `*_no_context_takeover`): the inflater is then
    /// kept between messages, instead of only while a compressed message arrives.
    pub inflate_context: bool,
}

impl DecoderConfig {
    /// The default configuration for decoding frames from clients.
    pub fn server() -> DecoderConfig {
        DecoderConfig {
            role: Role::Server,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            allowed_rsv: 0,
            inflate_context: false,
        }
    }

    /// The default configuration for decoding frames from a server.
    pub fn client() -> DecoderConfig {
        DecoderConfig {
            role: Role::Client,
            ..DecoderConfig::server()
        }
    }
}

/// One step of [`FrameDecoder::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The input does not hold a whole header yet; nothing was consumed.
    NeedMore,
    /// A header was decoded; it used `len` bytes of the input.
    Header {
        /// The header.
        header: FrameHeader,
        /// The header's length on the wire.
        len: usize,
    },
    /// The first `len` bytes of the input were payload: they are now unmasked in place (and
    /// validated, for text). `frame_done` tells whether the frame's payload is complete.
    Payload {
        /// How many payload bytes were consumed.
        len: usize,
        /// Whether this finished the frame.
        frame_done: bool,
    },
}

impl Step {
    /// How many input bytes the step consumed.
    pub fn consumed(&self) -> usize {
        match *self {
            Step::NeedMore => 0,
            Step::Header { len, .. } | Step::Payload { len, .. } => len,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CurrentFrame {
    header: FrameHeader,
    done: u64,
}

#[derive(Debug, Clone, Copy)]
struct OpenMessage {
    opcode: OpCode,
    size: u64,
    /// The first frame had RSV1 (permessage-deflate): the payload is compressed, and text is
    /// validated after inflating, by the [`MessageDecoder`], not here.
    compressed: bool,
}

/// The streaming frame decoder: feed it bytes as they arrive, in order.
///
/// Each call to [`step`](Self::step) looks at the start of the bytes not consumed yet. At a
/// frame boundary it returns [`Step::Header`] once the header is complete; inside a frame it
/// returns [`Step::Payload`] for as much of the payload as the input holds (possibly zero bytes,
/// for an empty frame). After an error the connection must be failed; the decoder keeps
/// returning the same error.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    config: DecoderConfig,
    current: Option<CurrentFrame>,
    message: Option<OpenMessage>,
    utf8: Utf8Validator,
    /// The first error (boxed: a decoder lives in every connection, an error in few).
    failed: Option<Box<Error>>,
}

impl FrameDecoder {
    /// A decoder at the start of a connection.
    pub fn new(config: DecoderConfig) -> FrameDecoder {
        FrameDecoder {
            config,
            current: None,
            message: None,
            utf8: Utf8Validator::new(),
            failed: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// The header of the frame whose payload is being decoded, if any.
    pub fn current_header(&self) -> Option<&FrameHeader> {
        self.current.as_ref().map(|c| &c.header)
    }

    /// Payload bytes still to come for the current frame (0 at a frame boundary).
    pub fn remaining_in_frame(&self) -> u64 {
        self.current.map_or(0, |c| c.header.payload_len - c.done)
    }

    /// Whether the decoder holds nothing between two frames: no frame or fragmented message
    /// in progress, no error. A decoder at rest is the same as a new one.
    pub fn is_at_rest(&self) -> bool {
        self.current.is_none()
            && self.message.is_none()
            && self.failed.is_none()
            && self.utf8.is_at_boundary()
    }

    /// The opcode (text or binary) of a fragmented message in progress.
    pub fn open_message(&self) -> Option<OpCode> {
        self.message.map(|m| m.opcode)
    }

    /// Decodes the next step from `input` (the bytes not consumed so far).
    pub fn step(&mut self, input: &mut [u8]) -> Result<Step> {
        if let Some(err) = &self.failed {
            return Err((**err).clone());
        }
        let result = match self.current {
            None => self.header(input),
            Some(_) => self.payload(input),
        };
        if let Err(err) = &result {
            self.failed = Some(Box::new(err.clone()));
        }
        result
    }

    fn header(&mut self, input: &[u8]) -> Result<Step> {
        // Check what the first two bytes tell before the rest of the header arrives.
        if let [b0, b1, ..] = *input {
            self.check_start(b0, b1)?;
        } else if let [b0] = *input {
            OpCode::from_bits(b0 & 0x0F)?;
        }
        let Some((header, len)) = FrameHeader::parse(input)? else {
            return Ok(Step::NeedMore);
        };
        self.check_length(&header)?;
        if header.opcode.is_control() {
            // control frames do not touch the message in progress
        } else if header.opcode == OpCode::Continuation {
            let open = self.message.as_mut().expect("checked by check_start");
            open.size += header.payload_len;
        } else {
            self.message = Some(OpenMessage {
                opcode: header.opcode,
                size: header.payload_len,
                compressed: header.rsv & RSV1 != 0,
            });
            self.utf8.reset();
        }
        self.current = Some(CurrentFrame { header, done: 0 });
        Ok(Step::Header { header, len })
    }

    /// The rules that the first two header bytes decide.
    fn check_start(&self, b0: u8, b1: u8) -> Result<()> {
        let opcode = OpCode::from_bits(b0 & 0x0F)?;
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x07;
        let starts_message = matches!(opcode, OpCode::Text | OpCode::Binary);
        if rsv & !self.config.allowed_rsv != 0 || (rsv != 0 && !starts_message) {
            return Err(Error::ReservedBits);
        }
        let masked = b1 & 0x80 != 0;
        match (self.config.role, masked) {
            (Role::Server, false) => return Err(Error::UnmaskedClientFrame),
            (Role::Client, true) => return Err(Error::MaskedServerFrame),
            _ => {}
        }
        if opcode.is_control() {
            if !fin {
                return Err(Error::FragmentedControl);
            }
            if usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
                return Err(Error::ControlTooLong);
            }
        } else if opcode == OpCode::Continuation {
            if self.message.is_none() {
                return Err(Error::UnexpectedContinuation);
            }
        } else if self.message.is_some() {
            return Err(Error::ExpectedContinuation);
        }
        Ok(())
    }

    fn check_length(&self, header: &FrameHeader) -> Result<()> {
        if header.opcode.is_control() {
            return Ok(()); // at most 125, checked in check_start
        }
        if header.payload_len > self.config.max_frame_size {
            return Err(Error::FrameTooBig);
        }
        let before = match header.opcode {
            OpCode::Continuation => self.message.map_or(0, |m| m.size),
            _ => 0,
        };
        if before.saturating_add(header.payload_len) > self.config.max_message_size {
            return Err(Error::MessageTooBig);
        }
        Ok(())
    }

    fn payload(&mut self, input: &mut [u8]) -> Result<Step> {
        let current = self.current.as_mut().expect("called inside a frame");
        let remaining = current.header.payload_len - current.done;
        let len = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
        let chunk = &mut input[..len];
        if let Some(key) = current.header.mask {
            crate::mask::unmask(chunk, key, (current.done & 3) as usize);
        }
        current.done += len as u64;
        let frame_done = current.done == current.header.payload_len;
        let header = current.header;
        let is_text = !header.opcode.is_control()
            && self
                .message
                .is_some_and(|m| m.opcode == OpCode::Text && !m.compressed);
        if is_text {
            self.utf8.feed(chunk)?;
        }
        if frame_done {
            self.current = None;
            if !header.opcode.is_control() && header.fin {
                self.message = None;
                if is_text {
                    self.utf8.finish()?;
                }
            }
        }
        Ok(Step::Payload { len, frame_done })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_client_frame(&mut v, fin, opcode, payload, KEY);
        v
    }

    fn raw(b0: u8, b1: u8, rest: &[u8]) -> Vec<u8> {
        let mut v = vec![b0, b1];
        v.extend_from_slice(rest);
        v
    }

    /// Decodes every message from `bytes` fed in one piece; stops at the first error.
    fn decode_all(config: DecoderConfig, bytes: &[u8]) -> (Vec<Message>, Option<Error>) {
        let mut d = MessageDecoder::new(config);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    /// The same, fed one byte at a time.
    fn decode_bytewise(config: DecoderConfig, bytes: &[u8]) -> (Vec<Message>, Option<Error>) {
        let mut d = MessageDecoder::new(config);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(m)) => out.push(m),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    fn server() -> DecoderConfig {
        DecoderConfig::server()
    }

    #[test]
    fn out_frames_know_their_opcode_and_close_code() {
        for op in [
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong,
        ] {
            assert_eq!(OutFrame::new(op, Bytes::new()).opcode(), op);
        }
        let close = OutFrame::close_with(CloseCode::TRY_AGAIN_LATER, "slow");
        assert_eq!(close.close_code(), Some(CloseCode::TRY_AGAIN_LATER));
        assert_eq!(OutFrame::close(&ClosePayload::empty()).close_code(), None);
        let text = OutFrame::new(OpCode::Text, Bytes::from_static(b"\x03\xe8"));
        assert_eq!(text.close_code(), None, "only a close frame has one");
    }

    #[test]
    fn header_round_trip_at_every_length_form() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 32, (1 << 63) - 1] {
            for mask in [None, Some(KEY)] {
                for opcode in [OpCode::Text, OpCode::Binary, OpCode::Continuation] {
                    let h = FrameHeader {
                        fin: len % 2 == 0,
                        rsv: 0,
                        opcode,
                        mask,
                        payload_len: len,
                    };
                    let enc = h.encode();
                    let (parsed, n) = FrameHeader::parse(enc.as_bytes()).unwrap().unwrap();
                    assert_eq!(parsed, h);
                    assert_eq!(n, enc.as_bytes().len());
                    // every proper prefix needs more
                    for cut in 0..n {
                        assert_eq!(FrameHeader::parse(&enc.as_bytes()[..cut]).unwrap(), None);
                    }
                }
            }
        }
        assert_eq!(
            HeaderBuf::server(OpCode::Text, 125).as_bytes(),
            &[0x81, 125]
        );
        assert_eq!(
            HeaderBuf::server(OpCode::Binary, 126).as_bytes(),
            &[0x82, 126, 0, 126]
        );
        assert_eq!(
            HeaderBuf::server(OpCode::Binary, 65536).as_bytes(),
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn top_bit_of_64_bit_length_is_refused() {
        let mut b = raw(0x82, 0x80 | 127, &[0x80, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&KEY);
        assert_eq!(FrameHeader::parse(&b), Err(Error::LengthOverflow));
        let (_, err) = decode_all(server(), &b);
        assert_eq!(err, Some(Error::LengthOverflow));
    }

    #[test]
    fn single_frame_messages_are_handed_out_without_copy() {
        let bytes = client_frame(true, OpCode::Binary, b"hello world");
        let mut buf = BytesMut::from(&bytes[..]);
        let start = buf.as_ptr() as usize;
        let mut d = MessageDecoder::new(server());
        let Some(Message::Binary(m)) = d.decode(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(&m[..], b"hello world");
        assert_eq!(
            m.as_ptr() as usize,
            start + 6,
            "payload is a slice of the read buffer"
        );
    }

    #[test]
    fn reserved_bits_are_refused_unless_allowed() {
        for rsv in 1..8u8 {
            let mut b = client_frame(true, OpCode::Text, b"x");
            b[0] |= rsv << 4;
            let (msgs, err) = decode_all(server(), &b);
            assert!(msgs.is_empty());
            assert_eq!(err, Some(Error::ReservedBits), "rsv {rsv}");
        }
        // permessage-deflate allows RSV1 on the first frame of a data message only
        let config = DecoderConfig {
            allowed_rsv: RSV1,
            ..server()
        };
        let mut b = client_frame(true, OpCode::Text, b"x");
        b[0] |= RSV1 << 4;
        assert_eq!(decode_all(config, &b).1, None);
        let mut ping = client_frame(true, OpCode::Ping, b"");
        ping[0] |= RSV1 << 4;
        assert_eq!(decode_all(config, &ping).1, Some(Error::ReservedBits));
        let mut b = client_frame(false, OpCode::Text, b"x");
        let mut cont = client_frame(true, OpCode::Continuation, b"y");
        cont[0] |= RSV1 << 4;
        b.extend_from_slice(&cont);
        assert_eq!(decode_all(config, &b).1, Some(Error::ReservedBits));
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let b = raw(0x80 | op, 0x80, &KEY);
            let (_, err) = decode_all(server(), &b);
            assert_eq!(err, Some(Error::UnknownOpcode(op)));
            assert_eq!(err.unwrap().close_code(), Some(CloseCode::PROTOCOL_ERROR));
            // one byte is enough to know
            let mut d = FrameDecoder::new(server());
            assert_eq!(d.step(&mut [0x80 | op]), Err(Error::UnknownOpcode(op)));
        }
    }

    /// A fragment's payload leaves the read buffer as it arrives: between two reads the buffer
    /// holds at most a cut header, the decoder the message so far, and the message is whole
    /// and right at the end.
    #[test]
    fn fragments_leave_the_read_buffer_as_they_arrive() {
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let pieces: Vec<&[u8]> = payload.chunks(65_536).collect();
        let mut d = MessageDecoder::new(server());
        let mut buf = BytesMut::new();
        let (mut fed, mut got) = (0, None);
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            };
            let wire = client_frame(i + 1 == pieces.len(), op, piece);
            let header = wire.len() - piece.len();
            // each frame in reads of 10,000 bytes, cut inside the header for odd ones
            let first = if i % 2 == 1 { 3 } else { 10_000 };
            let mut at = 0;
            while at < wire.len() {
                let end = if at == 0 { first } else { at + 10_000 }.min(wire.len());
                buf.extend_from_slice(&wire[at..end]);
                if let Some(m) = d.decode(&mut buf).unwrap() {
                    got = Some(m);
                }
                fed += end.max(header) - at.max(header);
                at = end;
                if got.is_none() {
                    assert!(buf.len() < header, "at most a cut header is left");
                    assert_eq!(d.assembled_len(), fed);
                }
            }
        }
        assert_eq!(got, Some(Message::Binary(Bytes::from(payload))));
        assert!(d.is_at_rest() && buf.is_empty());
    }

    /// Many small fragments and pings in one read, or byte by byte: the pings come out before
    /// the message, and the read buffer never holds more than a header and a ping.
    #[test]
    fn small_fragments_and_pings_in_one_read() {
        let mut wire = Vec::new();
        let mut text = Vec::new();
        for i in 0..50u8 {
            let piece: Vec<u8> = (0..i % 7).map(|k| b'a' + (i + k) % 26).collect();
            text.extend_from_slice(&piece);
            let op = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            wire.extend(client_frame(i == 49, op, &piece));
            if i % 10 == 3 {
                wire.extend(client_frame(true, OpCode::Ping, &[i]));
            }
        }
        let mut expected: Vec<Message> = [3u8, 13, 23, 33, 43]
            .iter()
            .map(|&i| Message::Ping(Bytes::from(vec![i])))
            .collect();
        expected.push(Message::Text(Bytes::from(text)));
        assert_eq!(decode_all(server(), &wire), (expected.clone(), None));
        let mut d = MessageDecoder::new(server());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in &wire {
            buf.extend_from_slice(&[b]);
            while let Some(m) = d.decode(&mut buf).unwrap() {
                out.push(m);
            }
            assert!(buf.len() <= MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD);
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn control_frames_must_be_final_and_short() {
        let b = client_frame(false, OpCode::Ping, b"x");
        assert_eq!(decode_all(server(), &b).1, Some(Error::FragmentedControl));
        let b = client_frame(true, OpCode::Ping, &[b'a'; 126]);
        assert_eq!(decode_all(server(), &b).1, Some(Error::ControlTooLong));
        let b = client_frame(true, OpCode::Close, &[b'a'; 126]);
        assert_eq!(decode_all(server(), &b).1, Some(Error::ControlTooLong));
        let b = client_frame(true, OpCode::Ping, &[b'a'; 125]);
        assert_eq!(
            decode_all(server(), &b).0,
            vec![Message::Ping(Bytes::from(vec![b'a'; 125]))]
        );
    }

    #[test]
    fn masking_follows_the_role() {
        let unmasked = raw(0x81, 2, b"hi");
        assert_eq!(
            decode_all(server(), &unmasked).1,
            Some(Error::UnmaskedClientFrame)
        );
        assert_eq!(
            decode_all(DecoderConfig::client(), &unmasked).0,
            vec![Message::Text(Bytes::from_static(b"hi"))]
        );
        let masked = client_frame(true, OpCode::Text, b"hi");
        assert_eq!(
            decode_all(DecoderConfig::client(), &masked).1,
            Some(Error::MaskedServerFrame)
        );
    }

    #[test]
    fn continuation_only_inside_a_fragmented_message() {
        let b = client_frame(true, OpCode::Continuation, b"x");
        assert_eq!(
            decode_all(server(), &b).1,
            Some(Error::UnexpectedContinuation)
        );
        let mut b = client_frame(false, OpCode::Text, b"a");
        b.extend(client_frame(true, OpCode::Text, b"b"));
        assert_eq!(
            decode_all(server(), &b).1,
            Some(Error::ExpectedContinuation)
        );
        let mut b = client_frame(false, OpCode::Binary, b"a");
        b.extend(client_frame(true, OpCode::Continuation, b"b"));
        b.extend(client_frame(true, OpCode::Continuation, b"c"));
        let (msgs, err) = decode_all(server(), &b);
        assert_eq!(msgs, vec![Message::Binary(Bytes::from_static(b"ab"))]);
        assert_eq!(err, Some(Error::UnexpectedContinuation));
    }

    #[test]
    fn control_frames_inside_a_fragmented_message() {
        let mut b = client_frame(false, OpCode::Text, b"fra");
        b.extend(client_frame(true, OpCode::Ping, b"p1"));
        b.extend(client_frame(false, OpCode::Continuation, b"gme"));
        b.extend(client_frame(true, OpCode::Pong, b""));
        b.extend(client_frame(true, OpCode::Continuation, b"nted"));
        let expected = vec![
            Message::Ping(Bytes::from_static(b"p1")),
            Message::Pong(Bytes::new()),
            Message::Text(Bytes::from_static(b"fragmented")),
        ];
        assert_eq!(decode_all(server(), &b), (expected.clone(), None));
        assert_eq!(decode_bytewise(server(), &b), (expected, None));
    }

    #[test]
    fn size_limits_apply_to_frames_and_messages() {
        let config = DecoderConfig {
            max_frame_size: 10,
            max_message_size: 15,
            ..server()
        };
        let b = client_frame(true, OpCode::Binary, &[0; 11]);
        assert_eq!(decode_all(config, &b).1, Some(Error::FrameTooBig));
        let mut b = client_frame(false, OpCode::Binary, &[0; 10]);
        b.extend(client_frame(true, OpCode::Continuation, &[0; 6]));
        let err = decode_all(config, &b).1.unwrap();
        assert_eq!(err, Error::MessageTooBig);
        assert_eq!(err.close_code(), Some(CloseCode::TOO_BIG));
        let mut b = client_frame(false, OpCode::Binary, &[0; 10]);
        b.extend(client_frame(true, OpCode::Continuation, &[0; 5]));
        assert_eq!(decode_all(config, &b).0.len(), 1);
    }

    #[test]
    fn huge_announced_length_fails_before_its_payload_arrives() {
        // header only: 2^40 bytes announced, nothing sent after it
        let h = HeaderBuf::new(true, 0, OpCode::Binary, 1 << 40, Some(KEY));
        let mut buf = BytesMut::from(h.as_bytes());
        let mut d = MessageDecoder::new(server());
        assert_eq!(d.decode(&mut buf), Err(Error::FrameTooBig));
        // within the limit: the decoder waits, and asks for no more than the frame needs
        let config = DecoderConfig {
            max_frame_size: 1 << 41,
            max_message_size: 1 << 41,
            ..server()
        };
        let mut d = MessageDecoder::new(config);
        let mut buf = BytesMut::from(h.as_bytes());
        let cap = buf.capacity();
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(d.wanted(), 1 << 40);
        assert!(
            buf.capacity() <= cap,
            "no allocation for the announced size"
        );
    }

    #[test]
    fn invalid_utf8_fails_in_the_middle_of_a_frame() {
        // A 100-byte text frame whose 10th byte is impossible: fails after 10 payload bytes.
        let mut payload = vec![b'a'; 100];
        payload[9] = 0xff;
        let bytes = client_frame(true, OpCode::Text, &payload);
        let mut d = MessageDecoder::new(server());
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let err = loop {
            buf.extend_from_slice(&bytes[fed..fed + 1]);
            fed += 1;
            match d.decode(&mut buf) {
                Ok(None) => continue,
                Ok(Some(m)) => panic!("unexpected {m:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, Error::InvalidUtf8);
        assert_eq!(
            fed,
            6 + 10,
            "failed at the impossible byte, not at the end of the frame"
        );
        // and the decoder stays failed
        assert_eq!(d.decode(&mut buf), Err(Error::InvalidUtf8));
    }

    #[test]
    fn text_cut_across_fragments_is_valid() {
        let text = "κόσμε 👍 done".as_bytes();
        for cut in 0..=text.len() {
            let mut b = client_frame(false, OpCode::Text, &text[..cut]);
            b.extend(client_frame(true, OpCode::Continuation, &text[cut..]));
            assert_eq!(
                decode_all(server(), &b),
                (vec![Message::Text(Bytes::copy_from_slice(text))], None)
            );
        }
        // a character left unfinished at the final fragment
        let mut b = client_frame(false, OpCode::Text, b"ok");
        b.extend(client_frame(true, OpCode::Continuation, &[0xe2, 0x82]));
        assert_eq!(decode_all(server(), &b).1, Some(Error::InvalidUtf8));
    }

    #[test]
    fn after_an_error_the_decoder_stays_failed() {
        // a refused close payload, then a valid frame: the error repeats, the frame is not read
        let mut bytes = client_frame(true, OpCode::Close, &[0x03]);
        bytes.extend(client_frame(true, OpCode::Text, b"after"));
        let mut d = MessageDecoder::new(server());
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf), Err(Error::CloseTooShort));
        assert_eq!(d.decode(&mut buf), Err(Error::CloseTooShort));
    }

    #[test]
    fn close_frames_are_validated() {
        let b = client_frame(true, OpCode::Close, &[0x03]);
        assert_eq!(decode_all(server(), &b).1, Some(Error::CloseTooShort));
        let b = client_frame(true, OpCode::Close, &[0x03, 0xed, 0xff]);
        assert_eq!(
            decode_all(server(), &b).1,
            Some(Error::InvalidCloseCode(1005))
        );
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        let b = client_frame(true, OpCode::Close, &p);
        let expected = Message::Close(Some(CloseMessage {
            code: CloseCode::NORMAL,
            reason: Bytes::from_static(b"bye"),
        }));
        assert_eq!(decode_all(server(), &b).0, vec![expected]);
        let b = client_frame(true, OpCode::Close, &[]);
        assert_eq!(decode_all(server(), &b).0, vec![Message::Close(None)]);
    }

    #[test]
    fn out_frames_share_their_payload() {
        let payload = Bytes::from(vec![7u8; 70_000]);
        let f = OutFrame::new(OpCode::Binary, payload.clone());
        let g = f.clone();
        assert_eq!(g.payload().as_ptr(), payload.as_ptr());
        assert_eq!(f.wire_len(), 70_000 + 10);
        let (msgs, err) = decode_all(DecoderConfig::client(), &f.to_vec());
        assert_eq!((msgs, err), (vec![Message::Binary(payload)], None));
        let close = OutFrame::close_with(CloseCode::TRY_AGAIN_LATER, "slow consumer");
        assert_eq!(&close.to_vec()[..4], &[0x88, 15, 0x03, 0xf5]);
    }

    proptest! {
        /// Any sequence of valid frames, cut into any pieces, decodes to the same messages as
        /// when fed in one go.
        #[test]
        fn any_split_decodes_the_same(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
            frag in 1usize..4,
            cuts in proptest::collection::vec(0usize..2000, 0..8),
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                let pieces: Vec<&[u8]> = if p.is_empty() { vec![&p[..]] } else { p.chunks(p.len().div_ceil(frag)).collect() };
                for (j, piece) in pieces.iter().enumerate() {
                    let op = if j == 0 { OpCode::Binary } else { OpCode::Continuation };
                    wire.extend(client_frame(j + 1 == pieces.len(), op, piece));
                    if j == 0 && i % 2 == 0 {
                        wire.extend(client_frame(true, OpCode::Ping, &[i as u8]));
                    }
                }
                if i % 2 == 0 { expected.push(Message::Ping(Bytes::from(vec![i as u8]))); }
                expected.push(Message::Binary(Bytes::from(p.clone())));
            }
            // pings inside a fragmented message come out before it
            let whole = decode_all(server(), &wire);
            prop_assert_eq!(whole.1.clone(), None);
            let mut sorted_expected = expected.clone();
            sorted_expected.sort_by_key(|m| format!("{m:?}"));
            let mut got = whole.0.clone();
            got.sort_by_key(|m| format!("{m:?}"));
            prop_assert_eq!(got, sorted_expected);

            let mut d = MessageDecoder::new(server());
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(wire.len())).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut start = 0;
            for c in cuts {
                buf.extend_from_slice(&wire[start..c]);
                start = c;
                while let Some(m) = d.decode(&mut buf).unwrap() { out.push(m); }
            }
            prop_assert_eq!(out, whole.0);
        }

        /// Random bytes never panic the decoder and never make it hold more than it was given.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for config in [server(), DecoderConfig::client()] {
                let mut d = MessageDecoder::new(config);
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(_)) = d.decode(&mut buf) {}
                prop_assert!(d.assembled_len() <= bytes.len());
            }
        }
    }
}
