//! Whole messages out of frames: [`MessageDecoder`] runs a [`FrameDecoder`] over the bytes a
//! caller reads and hands out each [`Message`] once it is complete, assembling fragmented ones.

use super::{DecoderConfig, FrameDecoder, FrameHeader, OpCode, Step};
use crate::close::{self, CloseCode};
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
                        if !header.fin && matches!(header.opcode, OpCode::Text | OpCode::Binary) {
                            self.assembled_opcode = header.opcode; // a first fragment
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
