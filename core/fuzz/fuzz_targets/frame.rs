//! `frame::MessageDecoder` over arbitrary bytes, in one piece and in arbitrary chunks.
//!
//! Input: `[flags][frame limit][message limit][n][n chunk sizes][stream...]`. Flags: bit 0
//! the role (0 server: client frames must be masked, 1 client), bit 1 small limits (the frame
//! limit byte times 4, the message limit byte times 8) instead of the defaults (64 MiB), bits 2-4
//! the reserved bits an extension allows. The stream is fed in pieces whose sizes cycle through
//! the chunk sizes (0 is an empty read).
//!
//! Invariants: no panic; chunked decoding gives the same messages and the same error as decoding
//! in one piece; every error has a close code; text is UTF-8; no message exceeds the message limit, no
//! control payload 125 bytes; close codes are ones a peer may send, reasons UTF-8 of at most 123
//! bytes; `assembled_len()` never exceeds the bytes fed nor the message limit; `wanted()` never
//! exceeds the frame limit; a header parsed from the stream re-encodes to itself; the decoded
//! messages, encoded again as whole frames (`encode_client_frame` for a server to decode,
//! `OutFrame` for a client; close payloads through `OutFrame::close_with`), decode to the same
//! messages.
#![no_main]

mod common;

use bytes::{Bytes, BytesMut};
use common::{Params, pieces};
use libfuzzer_sys::fuzz_target;
use wsgate_core::Error;
use wsgate_core::frame::{
    DecoderConfig, FrameHeader, MAX_CONTROL_PAYLOAD, Message, MessageDecoder, OutFrame, Role,
    encode_client_frame,
};

fuzz_target!(|data: &[u8]| {
    let mut p = Params::new(data);
    let flags = p.byte();
    let frame_limit = p.byte();
    let message_limit = p.byte();
    let sizes = p.sizes(16);
    let stream = p.rest();

    let mut config = if flags & 1 == 0 {
        DecoderConfig::server()
    } else {
        DecoderConfig::client()
    };
    if flags & 2 != 0 {
        config.max_frame_size = u64::from(frame_limit) * 4;
        config.max_message_size = u64::from(message_limit) * 8;
    }
    config.allowed_rsv = (flags >> 2) & 0b111;

    check_header_round_trip(stream);

    let whole = decode_whole(config, stream);
    let chunked = decode_chunked(config, stream, sizes);
    assert_eq!(whole, chunked, "one piece vs chunks of {sizes:?}");
    check_reencoded(config, &whole.0, [flags, frame_limit, message_limit, 0x5a]);
});

/// The decoded messages, encoded again as whole frames (masked with `key` when a client sends
/// them), decode to the same messages.
fn check_reencoded(config: DecoderConfig, messages: &[Message], key: [u8; 4]) {
    let mut wire = Vec::new();
    for m in messages {
        let payload: Bytes = match m {
            Message::Text(b) | Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => {
                b.clone()
            }
            Message::Close(None) => Bytes::new(),
            Message::Close(Some(close)) => {
                let reason = std::str::from_utf8(&close.reason).unwrap();
                let frame = OutFrame::close_with(close.code, reason);
                let mut p = close.code.0.to_be_bytes().to_vec();
                p.extend_from_slice(&close.reason);
                assert_eq!(
                    frame.payload()[..],
                    p[..],
                    "close_with({}, {reason:?})",
                    close.code
                );
                frame.payload().clone()
            }
        };
        match config.role {
            Role::Server => encode_client_frame(&mut wire, true, m.opcode(), &payload, key),
            Role::Client => wire.extend_from_slice(&OutFrame::new(m.opcode(), payload).to_vec()),
        }
    }
    // A fragmented message may be larger than one frame may be.
    let config = DecoderConfig {
        max_frame_size: config.max_frame_size.max(config.max_message_size),
        ..config
    };
    let again = decode_whole(config, &wire);
    assert_eq!((&again.0[..], &again.1), (messages, &None), "re-encoded");
}

type Outcome = (Vec<Message>, Option<Error>);

fn decode_whole(config: DecoderConfig, stream: &[u8]) -> Outcome {
    let mut decoder = MessageDecoder::new(config);
    let mut buf = BytesMut::from(stream);
    let mut messages = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(m)) => {
                check_message(&m, &config);
                messages.push(m);
            }
            Ok(None) => {
                check_state(&decoder, &config, stream.len());
                return (messages, None);
            }
            Err(e) => {
                assert!(e.close_code().is_some(), "{e:?} has no close code");
                return (messages, Some(e));
            }
        }
    }
}

fn decode_chunked(config: DecoderConfig, stream: &[u8], sizes: &[u8]) -> Outcome {
    let mut decoder = MessageDecoder::new(config);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut fed = 0;
    for piece in pieces(stream, sizes) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let result = decoder.decode(&mut buf);
            check_state(&decoder, &config, fed);
            match result {
                Ok(Some(m)) => {
                    check_message(&m, &config);
                    messages.push(m);
                }
                Ok(None) => break,
                Err(e) => return (messages, Some(e)),
            }
        }
    }
    (messages, None)
}

fn check_state(decoder: &MessageDecoder, config: &DecoderConfig, fed: usize) {
    let assembled = decoder.assembled_len();
    assert!(assembled <= fed, "assembled {assembled} > fed {fed}");
    assert!(assembled as u64 <= config.max_message_size);
    let frame_max = config.max_frame_size.max(MAX_CONTROL_PAYLOAD as u64);
    assert!(
        decoder.wanted() <= frame_max,
        "wanted {} > {frame_max}",
        decoder.wanted()
    );
}

fn check_message(message: &Message, config: &DecoderConfig) {
    match message {
        Message::Text(text) => {
            assert!(std::str::from_utf8(text).is_ok(), "text is not UTF-8");
            assert!(text.len() as u64 <= config.max_message_size);
        }
        Message::Binary(bytes) => assert!(bytes.len() as u64 <= config.max_message_size),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
        Message::Close(None) => {}
        Message::Close(Some(close)) => {
            assert!(close.code.is_allowed_on_wire(), "{}", close.code);
            assert!(std::str::from_utf8(&close.reason).is_ok());
            assert!(close.reason.len() <= wsgate_core::close::MAX_REASON_LEN);
        }
    }
}

/// A header parsed from the stream encodes (in the shortest length form) to a header that parses
/// back to the same fields.
fn check_header_round_trip(stream: &[u8]) {
    let Ok(Some((header, len))) = FrameHeader::parse(stream) else {
        return;
    };
    let encoded = header.encode();
    let bytes = encoded.as_bytes();
    assert!(bytes.len() <= len);
    assert_eq!(
        FrameHeader::parse(bytes),
        Ok(Some((header, bytes.len()))),
        "{header:?} encoded as {bytes:?}"
    );
}
