//! The one error type of wsgate-core.
//!
//! Every way a peer can break the rules ends up here as one [`Error`] variant. Each variant knows
//! how the gateway must answer it:
//!
//! - HTTP problems before the upgrade carry the status to answer with ([`Error::http_status`]);
//! - WebSocket protocol violations carry the RFC 6455 close code ([`Error::close_code`]);
//! - pub/sub envelope problems carry the machine-readable error code of the protocol's
//!   `{"type":"error"}` message ([`Error::code`]) and never close the session.
//!
//! [`Error::code`] is also a stable, low-cardinality label for metrics.

use crate::close::CloseCode;
use std::fmt;

/// Everything that can go wrong while parsing or validating peer input.
///
/// Deliberately not `#[non_exhaustive]`: the gateway matches it exhaustively (its metrics labels,
/// for one), so a new variant cannot slip through uncounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    // ---- HTTP, before the upgrade -------------------------------------------------------
    /// The bytes are not a valid HTTP/1.x request.
    HttpMalformed(&'static str),
    /// The request head did not end within the configured size limit.
    HeadersTooLarge,
    /// The request has more header fields than the parser accepts.
    TooManyHeaders,
    /// An upgrade request used another method than GET.
    MethodNotAllowed,
    /// An upgrade request used HTTP/1.0.
    HttpVersion,
    /// The request has no `Host` header (or more than one).
    MissingHost,
    /// The `Upgrade` header is missing or does not name `websocket`.
    NotWebSocketUpgrade,
    /// The `Connection` header does not list the `Upgrade` token.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` is missing, repeated or does not decode to 16 bytes.
    BadWebSocketKey,
    /// `Sec-WebSocket-Version` is missing or not 13.
    UnsupportedVersion,
    /// The request is a handshake of the old hixie-76 draft (`Sec-WebSocket-Key1`/`Key2`).
    Hixie76,
    /// A request body is larger than the configured limit.
    BodyTooLarge,
    /// A request body comes in chunked transfer coding: the gateway reads bodies only by their
    /// `Content-Length`.
    LengthRequired,
    /// A header that must be a number or a token list could not be parsed.
    BadHeader(&'static str),
    /// A PROXY protocol header is malformed (or missing where one is required).
    BadProxyHeader(&'static str),

    // ---- WebSocket framing ----------------------------------------------------------------
    /// A reserved bit is set that no negotiated extension allows.
    ReservedBits,
    /// The opcode is one of the reserved values.
    UnknownOpcode(u8),
    /// A control frame has FIN clear.
    FragmentedControl,
    /// A control frame payload is longer than 125 bytes.
    ControlTooLong,
    /// A frame from a client is not masked.
    UnmaskedClientFrame,
    /// A frame from a server is masked.
    MaskedServerFrame,
    /// The 64-bit payload length has its most significant bit set.
    LengthOverflow,
    /// A continuation frame arrived while no fragmented message was in progress.
    UnexpectedContinuation,
    /// A new text or binary frame arrived inside a fragmented message.
    ExpectedContinuation,
    /// A frame's payload is larger than the configured frame limit.
    FrameTooBig,
    /// A message is larger than the configured message limit.
    MessageTooBig,
    /// A text message (or a close reason) is not valid UTF-8.
    InvalidUtf8,
    /// A message compressed with permessage-deflate (RFC 7692) does not inflate: a corrupt or
    /// truncated deflate stream.
    BadCompressedData,
    /// A close frame payload of exactly one byte.
    CloseTooShort,
    /// A close frame carries a code a peer may not send.
    InvalidCloseCode(u16),

    // ---- pub/sub envelope ---------------------------------------------------------------
    /// A text message is not valid JSON.
    InvalidJson(String),
    /// A text message is JSON but not an object with a string `type`.
    InvalidMessage(&'static str),
    /// The `type` of a control message is not one the gateway knows.
    UnknownType,
    /// A required field is missing.
    MissingField(&'static str),
    /// The `id` is present but not an integer.
    InvalidId,
    /// The topic name breaks the rules (1 to 255 bytes of UTF-8, no control characters).
    InvalidTopic(&'static str),
    /// A binary publish is shorter than its length-prefixed topic.
    InvalidBinary(&'static str),
    /// The `recover` member of a subscribe is malformed (not an object, an offset that is not
    /// an integer from 0 to 2^64-1, an epoch that is not a string of 1 to 64 bytes).
    InvalidRecover(&'static str),
    /// The connection publishes faster than its allowed rate.
    RateLimited,
    /// The connection's credentials do not allow this subscribe or publish.
    Forbidden(&'static str),
    /// More topics than the limit (carried here) in one request, e.g. `GET /ws?subscribe=...`.
    TooManyTopics(usize),
    /// What was asked needs something out of reach now (a topic's history kept in Redis while
    /// the link to Redis is down); the reason says what. Try again later.
    Unavailable(&'static str),
}

impl Error {
    /// The RFC 6455 close code a server sends for this error, or `None` when the error does not
    /// close a WebSocket session (HTTP and envelope errors).
    pub fn close_code(&self) -> Option<CloseCode> {
        use Error::*;
        match self {
            ReservedBits
            | UnknownOpcode(_)
            | FragmentedControl
            | ControlTooLong
            | UnmaskedClientFrame
            | MaskedServerFrame
            | LengthOverflow
            | UnexpectedContinuation
            | ExpectedContinuation
            | CloseTooShort
            | InvalidCloseCode(_) => Some(CloseCode::PROTOCOL_ERROR),
            FrameTooBig | MessageTooBig => Some(CloseCode::TOO_BIG),
            InvalidUtf8 | BadCompressedData => Some(CloseCode::INVALID_PAYLOAD),
            _ => None,
        }
    }

    /// The HTTP status to answer with, for errors found before the upgrade; `None` otherwise.
    pub fn http_status(&self) -> Option<u16> {
        use Error::*;
        match self {
            HttpMalformed(_)
            | MissingHost
            | NotWebSocketUpgrade
            | MissingConnectionUpgrade
            | BadWebSocketKey
            | BadHeader(_)
            | BadProxyHeader(_)
            | HttpVersion => Some(400),
            MethodNotAllowed => Some(405),
            LengthRequired => Some(411),
            BodyTooLarge => Some(413),
            HeadersTooLarge | TooManyHeaders => Some(431),
            UnsupportedVersion | Hixie76 => Some(426),
            _ => None,
        }
    }

    /// A stable snake_case name for the error: the `code` of the protocol's error message and a
    /// metrics label.
    pub fn code(&self) -> &'static str {
        use Error::*;
        match self {
            HttpMalformed(_) => "http_malformed",
            HeadersTooLarge => "headers_too_large",
            TooManyHeaders => "too_many_headers",
            MethodNotAllowed => "method_not_allowed",
            HttpVersion => "http_version",
            MissingHost => "missing_host",
            NotWebSocketUpgrade => "not_websocket_upgrade",
            MissingConnectionUpgrade => "missing_connection_upgrade",
            BadWebSocketKey => "bad_websocket_key",
            UnsupportedVersion => "unsupported_version",
            Hixie76 => "hixie76",
            BodyTooLarge => "body_too_large",
            LengthRequired => "length_required",
            BadHeader(_) => "bad_header",
            BadProxyHeader(_) => "bad_proxy_header",
            ReservedBits => "reserved_bits",
            UnknownOpcode(_) => "unknown_opcode",
            FragmentedControl => "fragmented_control",
            ControlTooLong => "control_too_long",
            UnmaskedClientFrame => "unmasked_frame",
            MaskedServerFrame => "masked_server_frame",
            LengthOverflow => "length_overflow",
            UnexpectedContinuation => "unexpected_continuation",
            ExpectedContinuation => "expected_continuation",
            FrameTooBig => "frame_too_big",
            MessageTooBig => "message_too_big",
            InvalidUtf8 => "invalid_utf8",
            BadCompressedData => "bad_compressed_data",
            CloseTooShort => "close_too_short",
            InvalidCloseCode(_) => "invalid_close_code",
            InvalidJson(_) => "invalid_json",
            InvalidMessage(_) => "invalid_message",
            UnknownType => "unknown_type",
            MissingField(_) => "missing_field",
            InvalidId => "invalid_id",
            InvalidTopic(_) => "invalid_topic",
            InvalidBinary(_) => "invalid_binary",
            InvalidRecover(_) => "invalid_recover",
            RateLimited => "rate_limited",
            Forbidden(_) => "forbidden",
            TooManyTopics(_) => "too_many_topics",
            Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match self {
            HttpMalformed(why) => write!(f, "malformed HTTP request: {why}"),
            HeadersTooLarge => f.write_str("request header block is too large"),
            TooManyHeaders => f.write_str("request has too many header fields"),
            MethodNotAllowed => f.write_str("a WebSocket upgrade must use GET"),
            HttpVersion => f.write_str("a WebSocket upgrade needs HTTP/1.1 or later"),
            MissingHost => f.write_str("missing or repeated Host header"),
            NotWebSocketUpgrade => f.write_str("Upgrade header must be \"websocket\""),
            MissingConnectionUpgrade => f.write_str("Connection header must list \"Upgrade\""),
            BadWebSocketKey => {
                f.write_str("Sec-WebSocket-Key must be base64 of 16 bytes, given once")
            }
            UnsupportedVersion => f.write_str("unsupported Sec-WebSocket-Version; use 13"),
            Hixie76 => f.write_str(
                "the hixie-76 draft handshake is not supported; use RFC 6455 (version 13)",
            ),
            BodyTooLarge => f.write_str("request body is too large"),
            LengthRequired => {
                f.write_str("send the body with Content-Length, not chunked transfer coding")
            }
            BadHeader(name) => write!(f, "invalid {name} header"),
            BadProxyHeader(why) => write!(f, "invalid PROXY protocol header: {why}"),
            ReservedBits => f.write_str("reserved bits set without a negotiated extension"),
            UnknownOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            FragmentedControl => f.write_str("control frame must not be fragmented"),
            ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            UnmaskedClientFrame => f.write_str("client frames must be masked"),
            MaskedServerFrame => f.write_str("server frames must not be masked"),
            LengthOverflow => f.write_str("64-bit payload length has its top bit set"),
            UnexpectedContinuation => f.write_str("continuation frame outside a message"),
            ExpectedContinuation => f.write_str("new data frame inside a fragmented message"),
            FrameTooBig => f.write_str("frame exceeds the size limit"),
            MessageTooBig => f.write_str("message exceeds the size limit"),
            InvalidUtf8 => f.write_str("text is not valid UTF-8"),
            BadCompressedData => f.write_str("compressed message does not inflate"),
            CloseTooShort => f.write_str("close payload of one byte"),
            InvalidCloseCode(code) => write!(f, "close code {code} may not be sent by a peer"),
            InvalidJson(why) => write!(f, "invalid JSON: {why}"),
            InvalidMessage(why) => write!(f, "invalid message: {why}"),
            UnknownType => f.write_str("unknown message type"),
            MissingField(name) => write!(f, "missing field \"{name}\""),
            InvalidId => f.write_str("\"id\" must be an integer"),
            InvalidTopic(why) => write!(f, "invalid topic: {why}"),
            InvalidBinary(why) => write!(f, "invalid binary publish: {why}"),
            InvalidRecover(why) => write!(f, "invalid \"recover\": {why}"),
            RateLimited => f.write_str("publishing faster than the allowed rate"),
            Forbidden(what) => write!(f, "not allowed to {what} this topic"),
            TooManyTopics(max) => write!(f, "too many topics (at most {max})"),
            Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// The result type of wsgate-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_exactly_one_answer_kind() {
        let all = [
            Error::HttpMalformed("x"),
            Error::HeadersTooLarge,
            Error::TooManyHeaders,
            Error::MethodNotAllowed,
            Error::HttpVersion,
            Error::MissingHost,
            Error::NotWebSocketUpgrade,
            Error::MissingConnectionUpgrade,
            Error::BadWebSocketKey,
            Error::UnsupportedVersion,
            Error::Hixie76,
            Error::BodyTooLarge,
            Error::LengthRequired,
            Error::BadHeader("Content-Length"),
            Error::BadProxyHeader("bad port"),
            Error::ReservedBits,
            Error::UnknownOpcode(3),
            Error::FragmentedControl,
            Error::ControlTooLong,
            Error::UnmaskedClientFrame,
            Error::MaskedServerFrame,
            Error::LengthOverflow,
            Error::UnexpectedContinuation,
            Error::ExpectedContinuation,
            Error::FrameTooBig,
            Error::MessageTooBig,
            Error::InvalidUtf8,
            Error::BadCompressedData,
            Error::CloseTooShort,
            Error::InvalidCloseCode(1005),
            Error::InvalidJson("eof".into()),
            Error::InvalidMessage("not an object"),
            Error::UnknownType,
            Error::MissingField("topic"),
            Error::InvalidId,
            Error::InvalidTopic("empty"),
            Error::InvalidBinary("short"),
            Error::InvalidRecover("missing epoch"),
            Error::RateLimited,
            Error::Forbidden("publish to"),
            Error::TooManyTopics(100),
            Error::Unavailable("redis unreachable"),
        ];
        let mut codes = std::collections::HashSet::new();
        for e in &all {
            let kinds = e.close_code().is_some() as u8 + e.http_status().is_some() as u8;
            assert!(kinds <= 1, "{e:?} maps to both a close code and a status");
            assert!(codes.insert(e.code()), "duplicate code {}", e.code());
            assert!(!e.to_string().is_empty());
            assert!(!e.to_string().contains('\n'), "reason must be one line");
        }
    }

    #[test]
    fn close_codes_follow_rfc6455() {
        assert_eq!(
            Error::InvalidUtf8.close_code(),
            Some(CloseCode::INVALID_PAYLOAD)
        );
        assert_eq!(Error::MessageTooBig.close_code(), Some(CloseCode::TOO_BIG));
        assert_eq!(
            Error::ReservedBits.close_code(),
            Some(CloseCode::PROTOCOL_ERROR)
        );
        assert_eq!(Error::UnsupportedVersion.http_status(), Some(426));
        assert_eq!(Error::HeadersTooLarge.http_status(), Some(431));
        assert_eq!(Error::UnknownType.close_code(), None);
        assert_eq!(Error::LengthRequired.http_status(), Some(411));
        assert_eq!(Error::LengthRequired.close_code(), None);
        assert_eq!(Error::LengthRequired.code(), "length_required");
    }
}
