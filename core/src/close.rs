//! Close codes and the rules of a close frame's payload (RFC 6455 sections 5.5.1 and 7.4).
//!
//! A close payload is either empty, or a two-byte big-endian code followed by a UTF-8 reason.
//! One byte is a protocol error (Autobahn 7.3.2), a reason that is not UTF-8 is invalid payload
//! data (7.5.1), and only some codes may be sent by a peer (7.7.x valid, 7.9.x invalid).

use crate::{Error, Result};
use std::fmt;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server draining, page navigated away).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message's data is inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: the message violates the endpoint's policy (auth, rate).
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: the message is too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later; wsgate uses it for a slow consumer.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got a bad answer from upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether a peer may put this code in a close frame.
    ///
    /// Allowed: the defined codes 1000-1003 and 1007-1014 (1012-1014 are registered with IANA),
    /// and 3000-4999 (registered and private use). Everything else is refused: below 1000
    /// (unused), 1004 (reserved), 1005, 1006 and 1015 (internal only), 1016-2999 (reserved for
    /// the protocol) and 5000 and above (undefined).
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A parsed close frame payload, borrowing its reason from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code.
    pub code: CloseCode,
    /// The reason, valid UTF-8, at most 123 bytes.
    pub reason: &'a str,
}

/// Parses and validates a close frame payload received from a peer.
///
/// `Ok(None)` for an empty payload (a close without a status, which a peer may send).
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Error::CloseTooShort),
        126.. => Err(Error::ControlTooLong),
        _ => {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_allowed_on_wire() {
                return Err(Error::InvalidCloseCode(code.0));
            }
            let reason =
                simdutf8::basic::from_utf8(&payload[2..]).map_err(|_| Error::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// The largest reason that fits in a close frame: 125 bytes of payload less the two-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// An encoded close payload, kept inline (no allocation).
#[derive(Clone, Copy)]
pub struct ClosePayload {
    buf: [u8; 125],
    len: u8,
}

impl ClosePayload {
    /// Encodes `code` and `reason`. A reason longer than 123 bytes is cut at the last character
    /// boundary that fits, so the payload stays valid UTF-8.
    pub fn new(code: CloseCode, reason: &str) -> ClosePayload {
        let mut cut = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut buf = [0u8; 125];
        buf[..2].copy_from_slice(&code.0.to_be_bytes());
        buf[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
        ClosePayload {
            buf,
            len: (2 + cut) as u8,
        }
    }

    /// An empty close payload (no status code).
    pub fn empty() -> ClosePayload {
        ClosePayload {
            buf: [0; 125],
            len: 0,
        }
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

impl fmt::Debug for ClosePayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClosePayload")
            .field(&self.as_bytes())
            .finish()
    }
}

/// The payload a server sends back when a peer closes: the same code (RFC 6455 section 5.5.1
/// lets the endpoint echo it, and conformance suites expect it), no reason, or an empty payload
/// when the peer sent none.
pub fn reply_to(received: Option<CloseFrame<'_>>) -> ClosePayload {
    match received {
        Some(frame) => ClosePayload::new(frame.code, ""),
        None => ClosePayload::empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(reason);
        v
    }

    #[test]
    fn empty_payload_is_a_close_without_status() {
        // Autobahn 7.3.1
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(reply_to(None).as_bytes(), &[] as &[u8]);
    }

    #[test]
    fn one_byte_payload_is_a_protocol_error() {
        // Autobahn 7.3.2
        let err = parse_close_payload(&[0x03]).unwrap_err();
        assert_eq!(err, Error::CloseTooShort);
        assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL_ERROR));
    }

    #[test]
    fn code_with_and_without_reason() {
        // Autobahn 7.3.3, 7.3.4, 7.3.5 (123-byte reason)
        let p = payload(1000, b"");
        let f = parse_close_payload(&p).unwrap().unwrap();
        assert_eq!(
            f,
            CloseFrame {
                code: CloseCode::NORMAL,
                reason: ""
            }
        );
        let p = payload(1000, b"Hello World!");
        let f = parse_close_payload(&p).unwrap().unwrap();
        assert_eq!(f.reason, "Hello World!");
        let p = payload(1000, &[b'*'; 123]);
        let f = parse_close_payload(&p).unwrap().unwrap();
        assert_eq!(f.reason.len(), 123);
    }

    #[test]
    fn oversized_payload_is_refused() {
        // Autobahn 7.3.6: 126 bytes is caught by the frame decoder; this guards direct callers.
        let long = vec![b'*'; 124];
        assert_eq!(
            parse_close_payload(&payload(1000, &long)),
            Err(Error::ControlTooLong)
        );
    }

    #[test]
    fn invalid_utf8_reason_is_1007() {
        // Autobahn 7.5.1
        let bad =
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
        let err = parse_close_payload(&payload(1000, bad)).unwrap_err();
        assert_eq!(err, Error::InvalidUtf8);
        assert_eq!(err.close_code(), Some(CloseCode::INVALID_PAYLOAD));
    }

    #[test]
    fn valid_codes_of_autobahn_7_7() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            let p = payload(code, b"");
            let f = parse_close_payload(&p).unwrap().unwrap();
            assert_eq!(f.code.0, code);
            // the reply echoes the code
            assert_eq!(reply_to(Some(f)).as_bytes(), &code.to_be_bytes());
        }
        for code in [1012, 1013, 1014] {
            assert!(
                CloseCode(code).is_allowed_on_wire(),
                "{code} is IANA-registered"
            );
        }
    }

    #[test]
    fn invalid_codes_of_autobahn_7_9() {
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            let err = parse_close_payload(&payload(code, b"")).unwrap_err();
            assert_eq!(err, Error::InvalidCloseCode(code));
            assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL_ERROR));
        }
    }

    #[test]
    fn every_code_is_classified_consistently() {
        for code in 0..=u16::MAX {
            let allowed = CloseCode(code).is_allowed_on_wire();
            let p = payload(code, b"ok");
            let parsed = parse_close_payload(&p);
            assert_eq!(parsed.is_ok(), allowed, "code {code}");
        }
    }

    #[test]
    fn long_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let p = ClosePayload::new(CloseCode::POLICY, &reason);
        assert!(p.as_bytes().len() <= 125);
        let f = parse_close_payload(p.as_bytes()).unwrap().unwrap();
        assert_eq!(f.code, CloseCode::POLICY);
        assert_eq!(f.reason.len(), 122);
        assert!(reason.starts_with(f.reason));
    }
}
