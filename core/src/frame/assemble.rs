//! Whole messages out of frames: [`MessageDecoder`] runs a [`FrameDecoder`] over the bytes a
//! caller reads and hands out each [`Message`] once it is complete, assembling fragmented ones.

use super::{DecoderConfig, FrameDecoder, FrameHeader, OpCode, RSV1, Step};
use crate::close::{self, CloseCode};
use crate::deflate::Inflater;
use crate::utf8::Utf8Validator;
use crate::{Error, Result};
use bytes::{Buf, Bytes, BytesMut};

/// A close frame received from the peer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseMessage {
    /// The status code.
    pub code: CloseCode,
    /// The reason, valid UTF-8.
    pub reason: Bytes,
}

/// A whole message (or control frame) from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its payload (at most 125 bytes).
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// A close frame, `None` when it carried no status code.
    Close(Option<CloseMessage>),
}

impl Message {
    /// The opcode a frame carrying this message has.
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
            Message::Ping(_) => OpCode::Ping,
            Message::Pong(_) => OpCode::Pong,
            Message::Close(_) => OpCode::Close,
        }
    }
}

/// Decodes whole messages from a buffer the caller reads into.
///
/// Call [`decode`](Self::decode) after each read; it consumes complete frames from the front of
/// the buffer and returns one message at a time. Payload of an unfinished frame stays in the
/// buffer (already unmasked and validated, so nothing is done twice) until the rest arrives.
/// [`wanted`](Self::wanted) says how many more bytes the frame in progress needs, so a caller
/// can size its next read for a large frame without trusting the announced length further
/// than its limits.
///
/// The payload of a fragmented message (a frame without FIN, and its continuations) is taken
/// out of the buffer as it arrives and appended to the message
/// ([`assembled_len`](Self::assembled_len) bytes so far): the buffer is left empty (or with a
/// cut header), so the caller need not keep a fragment there while the rest of it arrives,
/// and the message is in memory once, plus a read, whatever the sizes of its fragments.
#[derive(Debug)]
pub struct MessageDecoder {
    frames: FrameDecoder,
    /// The header of the frame in progress.
    header: Option<FrameHeader>,
    /// Payload bytes of that frame at the front of the buffer, already processed.
    processed: usize,
    /// The fragments of a fragmented message so far, appended as each read brings them. A
    /// `Vec` so that growth is a `realloc` (which the gateway's allocator does for a large
    /// buffer by moving its pages, not copying them) rather than a copy next to the old
    /// buffer; it becomes `Bytes` without a copy when the message is complete.
    assembled: Vec<u8>,
    assembled_opcode: OpCode,
    /// The message in progress is compressed (permessage-deflate, RSV1 on its first frame):
    /// its payload is inflated onto `assembled` as it arrives.
    compressed: bool,
    /// The inflater, while a compressed message arrives (or for the connection's life when
    /// the peer keeps its context across messages).
    inflater: Option<Box<Inflater>>,
    /// Validates inflated text as it is inflated.
    inflated_utf8: Utf8Validator,
    /// The first error, returned again by every later call (boxed, as in [`FrameDecoder`]).
    failed: Option<Box<Error>>,
}

impl MessageDecoder {
    /// A decoder at the start of a connection.
    pub fn new(config: DecoderConfig) -> MessageDecoder {
        MessageDecoder {
            frames: FrameDecoder::new(config),
            header: None,
            processed: 0,
            assembled: Vec::new(),
            assembled_opcode: OpCode::Binary,
            compressed: false,
            inflater: None,
            inflated_utf8: Utf8Validator::new(),
            failed: None,
        }
    }

    /// The frame decoder underneath.
    pub fn frames(&self) -> &FrameDecoder {
        &self.frames
    }

    /// Bytes the frame in progress still needs beyond what the buffer holds (0 at a boundary).
    pub fn wanted(&self) -> u64 {
        self.frames.remaining_in_frame()
    }

    /// Whether the decoder holds nothing between two messages (see
    /// [`FrameDecoder::is_at_rest`]): it can be dropped and a new one used for what follows.
    pub fn is_at_rest(&self) -> bool {
        self.header.is_none()
            && self.assembled.is_empty()
            && self.inflater.is_none()
            && self.failed.is_none()
            && self.frames.is_at_rest()
    }

    /// Bytes of an unfinished fragmented message held by the decoder.
    pub fn assembled_len(&self) -> usize {
        self.assembled.len()
    }

    /// Decodes the next message from the front of `input`, or `Ok(None)` when more bytes are
    /// needed. Consumed bytes are removed from `input`. After an error the connection must be
    /// failed; every later call returns the same error.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Message>> {
        if let Some(e) = &self.failed {
            return Err((**e).clone());
        }
        let result = self.decode_next(input);
        if let Err(e) = &result {
            self.failed = Some(Box::new(e.clone()));
        }
        result
    }

    fn decode_next(&mut self, input: &mut BytesMut) -> Result<Option<Message>> {
        loop {
            let header = match self.header {
                Some(h) => h,
                None => match self.frames.step(&mut input[..])? {
                    Step::Header { header, len } => {
                        input.advance(len);
                        self.header = Some(header);
                        self.processed = 0;
                        if matches!(header.opcode, OpCode::Text | OpCode::Binary) {
                            self.assembled_opcode = header.opcode; // a message's first frame
                            self.compressed = header.rsv & RSV1 != 0;
                        }
                        header
                    }
                    _ => return Ok(None),
                },
            };
            let step = self.frames.step(&mut input[self.processed..])?;
            let Step::Payload { len, frame_done } = step else {
                unreachable!("inside a frame")
            };
            self.processed += len;
            if self.compressed && !header.opcode.is_control() {
                let done = self.inflate(input, header.fin && frame_done)?;
                if !frame_done {
                    return Ok(None);
                }
                self.header = None;
                match done {
                    Some(message) => return Ok(Some(message)),
                    None => continue,
                }
            }
            if !header.fin || header.opcode == OpCode::Continuation {
                // a fragment's payload joins the message as it arrives (unmasked, validated):
                // the read buffer never holds more than a read of it, so the message is in
                // memory once however it is cut (the caller reads the rest of a frame that
                // is not whole into a small buffer, since the decoder empties it)
                self.assembled.extend_from_slice(&input[..self.processed]);
                input.advance(std::mem::take(&mut self.processed));
                if !frame_done {
                    return Ok(None);
                }
                self.header = None;
                if !header.fin {
                    continue;
                }
                let message = Bytes::from(std::mem::take(&mut self.assembled));
                return Ok(Some(data(self.assembled_opcode, message)));
            }
            if !frame_done {
                return Ok(None);
            }
            let payload = input.split_to(std::mem::take(&mut self.processed));
            self.header = None;
            return whole_frame(header.opcode, payload).map(Some);
        }
    }
}

impl MessageDecoder {
    /// Inflates the payload bytes processed so far of a compressed message onto `assembled`
    /// (taking them out of `input`) and validates inflated text; at the message's `end`, the
    /// whole message.
    fn inflate(&mut self, input: &mut BytesMut, end: bool) -> Result<Option<Message>> {
        let limit = usize::try_from(self.frames.config().max_message_size).unwrap_or(usize::MAX);
        let keep_context = self.frames.config().inflate_context;
        let start = self.assembled.len();
        if start == 0 {
            self.inflated_utf8.reset();
        }
        let inflater = self.inflater.get_or_insert_with(Inflater::take);
        inflater.push(&input[..self.processed], &mut self.assembled, limit)?;
        input.advance(std::mem::take(&mut self.processed));
        if end {
            inflater.finish(&mut self.assembled, limit, keep_context)?;
        }
        let text = self.assembled_opcode == OpCode::Text;
        if text {
            self.inflated_utf8.feed(&self.assembled[start..])?;
        }
        if !end {
            return Ok(None);
        }
        if text {
            self.inflated_utf8.finish()?;
        }
        if !keep_context && let Some(inflater) = self.inflater.take() {
            Inflater::give_back(inflater);
        }
        self.compressed = false;
        let message = Bytes::from(std::mem::take(&mut self.assembled));
        Ok(Some(data(self.assembled_opcode, message)))
    }
}

/// A data message of `opcode` (text or binary).
fn data(opcode: OpCode, bytes: Bytes) -> Message {
    if opcode == OpCode::Text {
        Message::Text(bytes)
    } else {
        Message::Binary(bytes)
    }
}

/// The message a whole unfragmented frame carries (its payload unmasked and validated), a
/// close frame's payload parsed.
fn whole_frame(opcode: OpCode, payload: BytesMut) -> Result<Message> {
    Ok(match opcode {
        OpCode::Ping => Message::Ping(payload.freeze()),
        OpCode::Pong => Message::Pong(payload.freeze()),
        OpCode::Close => {
            let parsed = close::parse_close_payload(&payload)?.map(|f| f.code);
            let payload = payload.freeze();
            Message::Close(parsed.map(|code| CloseMessage {
                code,
                reason: payload.slice(2..),
            }))
        }
        data_opcode => data(data_opcode, payload.freeze()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate;
    use crate::frame::{HeaderBuf, Role};

    const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

    fn deflate_config() -> DecoderConfig {
        DecoderConfig {
            allowed_rsv: RSV1,
            ..DecoderConfig::server()
        }
    }

    /// A masked client frame with the given reserved bits.
    fn frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut v = HeaderBuf::new(fin, rsv, opcode, payload.len() as u64, Some(KEY))
            .as_bytes()
            .to_vec();
        let start = v.len();
        v.extend_from_slice(payload);
        crate::mask::unmask(&mut v[start..], KEY, 0);
        v
    }

    /// `message` compressed and cut into frames of at most `cut` compressed bytes, RSV1 on
    /// the first.
    fn compressed(opcode: OpCode, message: &[u8], cut: usize) -> Vec<u8> {
        let packed = deflate::compress(message, 6).expect("compressible");
        let pieces: Vec<&[u8]> = packed.chunks(cut).collect();
        let mut wire = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            let rsv = if i == 0 { RSV1 } else { 0 };
            wire.extend(frame(i + 1 == pieces.len(), rsv, op, piece));
        }
        wire
    }

    /// Every message and the first error, the wire fed in `step`-byte reads.
    fn decode(config: DecoderConfig, wire: &[u8], step: usize) -> (Vec<Message>, Option<Error>) {
        let mut d = MessageDecoder::new(config);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
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

    fn json(n: usize) -> Vec<u8> {
        let mut s = String::from("{\"items\":[");
        let mut i = 0;
        while s.len() < n {
            s.push_str(&format!(
                "{{\"id\":{i},\"name\":\"caf\u{e9} \u{1f600} {}\"}},",
                i % 13
            ));
            i += 1;
        }
        s.truncate(n);
        while !s.is_char_boundary(s.len()) || std::str::from_utf8(s.as_bytes()).is_err() {
            s.pop();
        }
        s.into_bytes()
    }

    #[test]
    fn compressed_messages_inflate_whole_or_fragmented_however_the_reads_cut_them() {
        for n in [200, 5000, 100_000] {
            let text = json(n);
            for cut in [3, 100, usize::MAX] {
                let mut wire = compressed(OpCode::Text, &text, cut);
                // a plain message and a ping between, to check that state does not leak
                wire.extend(frame(true, 0, OpCode::Binary, b"plain"));
                wire.extend(compressed(OpCode::Binary, &text, cut));
                for step in [1, 7, 4096, wire.len()] {
                    let (messages, error) = decode(deflate_config(), &wire, step);
                    assert_eq!(error, None, "{n} cut {cut} step {step}");
                    assert_eq!(
                        messages,
                        vec![
                            Message::Text(Bytes::from(text.clone())),
                            Message::Binary(Bytes::from_static(b"plain")),
                            Message::Binary(Bytes::from(text.clone())),
                        ],
                        "{n} cut {cut} step {step}"
                    );
                }
            }
        }
    }

    #[test]
    fn control_frames_between_compressed_fragments_pass() {
        let text = json(3000);
        let packed = deflate::compress(&text, 6).unwrap();
        let (a, b) = packed.split_at(packed.len() / 2);
        let mut wire = frame(false, RSV1, OpCode::Text, a);
        wire.extend(frame(true, 0, OpCode::Ping, b"hi"));
        wire.extend(frame(true, 0, OpCode::Continuation, b));
        let (messages, error) = decode(deflate_config(), &wire, 5);
        assert_eq!(error, None);
        assert_eq!(
            messages,
            vec![
                Message::Ping(Bytes::from_static(b"hi")),
                Message::Text(Bytes::from(text))
            ]
        );
    }

    #[test]
    fn inflated_text_is_validated_and_fails_fast() {
        let mut bad = json(40_000);
        bad[100] = 0xff;
        let wire = compressed(OpCode::Text, &bad, 200);
        // fed one frame at a time: the error comes long before the last frame
        let mut d = MessageDecoder::new(deflate_config());
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let error = loop {
            let next = (fed + 300).min(wire.len());
            buf.extend_from_slice(&wire[fed..next]);
            fed = next;
            match d.decode(&mut buf) {
                Err(e) => break e,
                Ok(None) => assert!(fed < wire.len(), "no error at the end"),
                Ok(Some(m)) => panic!("{m:?}"),
            }
        };
        assert_eq!(error, Error::InvalidUtf8);
        assert!(fed < wire.len() / 2, "failed after {fed} of {}", wire.len());
        // binary is not validated
        assert_eq!(
            decode(deflate_config(), &compressed(OpCode::Binary, &bad, 200), 64).1,
            None
        );
    }

    #[test]
    fn a_bomb_is_closed_at_the_message_limit_before_it_is_inflated_whole() {
        let zeros = vec![0u8; 64 << 20];
        let wire = compressed(OpCode::Binary, &zeros, 4096);
        assert!(wire.len() < 100_000);
        let config = DecoderConfig {
            max_message_size: 1 << 20,
            ..deflate_config()
        };
        let mut d = MessageDecoder::new(config);
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(d.decode(&mut buf), Err(Error::MessageTooBig));
        assert_eq!(Error::MessageTooBig.close_code(), Some(CloseCode::TOO_BIG));
        assert!(
            d.assembled.capacity() <= (1 << 20) + 1,
            "{}",
            d.assembled.capacity()
        );
    }

    #[test]
    fn bad_rsv1_uses_are_protocol_errors() {
        let text = json(1000);
        let packed = deflate::compress(&text, 6).unwrap();
        // without the extension
        let wire = frame(true, RSV1, OpCode::Text, &packed);
        assert_eq!(
            decode(DecoderConfig::server(), &wire, 64).1,
            Some(Error::ReservedBits)
        );
        // on a control frame
        let wire = frame(true, RSV1, OpCode::Ping, b"x");
        assert_eq!(
            decode(deflate_config(), &wire, 64).1,
            Some(Error::ReservedBits)
        );
        // on a continuation
        let (a, b) = packed.split_at(10);
        let mut wire = frame(false, RSV1, OpCode::Text, a);
        wire.extend(frame(true, RSV1, OpCode::Continuation, b));
        assert_eq!(
            decode(deflate_config(), &wire, 64).1,
            Some(Error::ReservedBits)
        );
        assert_eq!(
            Error::ReservedBits.close_code(),
            Some(CloseCode::PROTOCOL_ERROR)
        );
    }

    #[test]
    fn truncated_and_corrupt_streams_are_invalid_payload() {
        let text = json(20_000);
        let packed = deflate::compress(&text, 6).unwrap();
        let wire = frame(true, RSV1, OpCode::Text, &packed[..packed.len() / 2]);
        assert_eq!(
            decode(deflate_config(), &wire, 64).1,
            Some(Error::BadCompressedData)
        );
        let wire = frame(true, RSV1, OpCode::Binary, &[0xff; 32]);
        assert_eq!(
            decode(deflate_config(), &wire, 64).1,
            Some(Error::BadCompressedData)
        );
        assert_eq!(
            Error::BadCompressedData.close_code(),
            Some(CloseCode::INVALID_PAYLOAD)
        );
    }

    #[test]
    fn an_inflater_is_held_only_while_a_message_arrives_unless_the_context_is_kept() {
        let text = json(5000);
        let wire = compressed(OpCode::Text, &text, 1000);
        let mut d = MessageDecoder::new(deflate_config());
        let mut buf = BytesMut::from(&wire[..wire.len() / 2]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(d.inflater.is_some() && !d.is_at_rest());
        buf.extend_from_slice(&wire[wire.len() / 2..]);
        assert!(matches!(d.decode(&mut buf), Ok(Some(Message::Text(_)))));
        assert!(d.inflater.is_none() && d.is_at_rest(), "given back");

        // a peer that keeps its context: one deflate stream across messages
        let config = DecoderConfig {
            inflate_context: true,
            ..deflate_config()
        };
        let mut stream = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut d = MessageDecoder::new(config);
        for round in 0..3 {
            let mut packed = Vec::with_capacity(8000);
            stream
                .compress_vec(&text, &mut packed, flate2::FlushCompress::Sync)
                .unwrap();
            packed.truncate(packed.len() - 4);
            let mut buf = BytesMut::from(&frame(true, RSV1, OpCode::Text, &packed)[..]);
            let message = d.decode(&mut buf).unwrap();
            assert_eq!(
                message,
                Some(Message::Text(Bytes::from(text.clone()))),
                "{round}"
            );
            assert!(!d.is_at_rest(), "the context is kept");
        }
    }

    #[test]
    fn a_client_decoder_inflates_server_frames() {
        let text = json(3000);
        let packed = deflate::compress(&text, 6).unwrap();
        let mut wire = HeaderBuf::new(true, RSV1, OpCode::Text, packed.len() as u64, None)
            .as_bytes()
            .to_vec();
        wire.extend_from_slice(&packed);
        let config = DecoderConfig {
            role: Role::Client,
            ..deflate_config()
        };
        assert_eq!(
            decode(config, &wire, 100),
            (vec![Message::Text(Bytes::from(text))], None)
        );
    }
}
