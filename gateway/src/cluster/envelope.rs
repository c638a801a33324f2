//! An envelope: a message as it travels through Redis.
//!
//! `WSG1`, the publishing node's id as one length byte and the id, one byte for the frame's
//! kind (`t` text, `b` binary), then the frame's payload exactly as subscribers receive it.
//!
//! A message of a topic with history travels as a *sequenced* envelope, which Redis completes
//! (the publish script, [`super::scripts`]): `WSG2`, the node's id and the kind as above, then
//! the offset Redis gave it in decimal, `:`, the stream's epoch, `:`, and the payload without
//! its offset (each node writes the offset into the frames it delivers).

use bytes::Bytes;
use wsgate_core::frame::{OpCode, OutFrame};

/// The first bytes of every envelope.
pub(crate) const MAGIC: &[u8; 4] = b"WSG1";

/// The first bytes of a sequenced envelope.
pub(crate) const SEQUENCED: &[u8; 4] = b"WSG2";

/// The envelope's bytes before the payload.
pub(crate) fn head(node: &[u8], frame: &OutFrame) -> Vec<u8> {
    let mut head = Vec::with_capacity(6 + node.len());
    head.extend_from_slice(MAGIC);
    head.push(node.len() as u8);
    head.extend_from_slice(node);
    head.push(if is_text(frame) { b't' } else { b'b' });
    head
}

/// What the node sends Redis to open a sequenced envelope: the script appends the offset, the
/// epoch and the payload.
pub(crate) fn sequenced_head(node: &[u8], frame: &OutFrame) -> Vec<u8> {
    let mut head = self::head(node, frame);
    head[..4].copy_from_slice(SEQUENCED);
    head
}

fn is_text(frame: &OutFrame) -> bool {
    frame.opcode() == OpCode::Text
}

/// An envelope read back: who sent it and the frame, sharing `bytes`.
#[derive(Debug)]
pub(crate) struct Opened<'a> {
    /// The publishing node's id.
    pub(crate) node: &'a [u8],
    /// The frame to deliver.
    pub(crate) frame: OutFrame,
}

/// Opens an envelope. `None` when it is not one, or a text frame is not UTF-8.
pub(crate) fn open(bytes: &Bytes) -> Option<Opened<'_>> {
    let rest = bytes.strip_prefix(&MAGIC[..])?;
    let (&len, rest) = rest.split_first()?;
    let node = rest.get(..len as usize)?;
    let (&kind, _) = rest.get(len as usize..)?.split_first()?;
    let start = MAGIC.len() + 1 + len as usize + 1;
    let payload = bytes.slice(start..);
    let opcode = match kind {
        b't' => {
            wsgate_core::utf8::validate(&payload).ok()?;
            OpCode::Text
        }
        b'b' => OpCode::Binary,
        _ => return None,
    };
    Some(Opened {
        node,
        frame: OutFrame::new(opcode, payload),
    })
}

/// A sequenced envelope read back.
#[derive(Debug)]
pub(crate) struct Sequenced<'a> {
    /// The offset Redis gave the message.
    pub(crate) offset: u64,
    /// The epoch of the topic's stream in Redis.
    pub(crate) epoch: &'a str,
    /// The frame without its offset.
    pub(crate) frame: OutFrame,
}

/// Opens a sequenced envelope. `None` when it is not one (a bad offset, an empty epoch, a
/// text payload that is not UTF-8).
pub(crate) fn open_sequenced(bytes: &Bytes) -> Option<Sequenced<'_>> {
    let rest = bytes.strip_prefix(&SEQUENCED[..])?;
    let (&len, rest) = rest.split_first()?;
    let (&kind, rest) = rest.get(len as usize..)?.split_first()?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let digits = std::str::from_utf8(&rest[..colon]).ok()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let offset: u64 = digits.parse().ok().filter(|&o| o > 0)?;
    let rest = &rest[colon + 1..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let epoch = std::str::from_utf8(&rest[..colon])
        .ok()
        .filter(|e| !e.is_empty())?;
    let start = bytes.len() - (rest.len() - colon - 1);
    let payload = bytes.slice(start..);
    let opcode = match kind {
        b't' => {
            wsgate_core::utf8::validate(&payload).ok()?;
            OpCode::Text
        }
        b'b' => OpCode::Binary,
        _ => return None,
    };
    Some(Sequenced {
        offset,
        epoch,
        frame: OutFrame::new(opcode, payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(head: &[u8], offset: &str, epoch: &str, payload: &[u8]) -> Bytes {
        let mut v = head.to_vec();
        v.extend_from_slice(offset.as_bytes());
        v.push(b':');
        v.extend_from_slice(epoch.as_bytes());
        v.push(b':');
        v.extend_from_slice(payload);
        Bytes::from(v)
    }

    #[test]
    fn sequenced_envelopes_carry_offset_and_epoch_and_share_the_payload() {
        let text = OutFrame::new(OpCode::Text, Bytes::from_static(b"{\"a\":\"x:y\"}"));
        let head = sequenced_head(b"node-a", &text);
        let wire = completed(&head, "42", "e1f", text.payload());
        let s = open_sequenced(&wire).expect("opens");
        assert_eq!((s.offset, s.epoch), (42, "e1f"));
        assert_eq!(s.frame.payload(), text.payload());
        assert_eq!(s.frame.opcode(), OpCode::Text);
        assert!(std::ptr::eq(
            s.frame.payload().as_ptr(),
            wire[wire.len() - text.payload().len()..].as_ptr()
        ));
        assert!(open(&wire).is_none(), "not a plain envelope");

        let bin = OutFrame::new(OpCode::Binary, Bytes::from_static(b":\xFF:"));
        let wire = completed(&sequenced_head(b"", &bin), "1", "e", bin.payload());
        let s = open_sequenced(&wire).expect("opens");
        assert_eq!((s.offset, s.epoch), (1, "e"));
        assert_eq!(s.frame.payload(), &b":\xFF:"[..]);
    }

    #[test]
    fn bad_sequenced_envelopes_are_refused() {
        let text = OutFrame::new(OpCode::Text, Bytes::from_static(b"{}"));
        let head = sequenced_head(b"n", &text);
        for (offset, epoch) in [("", "e"), ("0", "e"), ("x1", "e"), ("-1", "e"), ("1", "")] {
            let wire = completed(&head, offset, epoch, b"{}");
            assert!(open_sequenced(&wire).is_none(), "{offset:?} {epoch:?}");
        }
        let too_big = completed(&head, "18446744073709551616", "e", b"{}");
        assert!(open_sequenced(&too_big).is_none());
        let bad_utf8 = completed(&head, "1", "e", b"\xFF");
        assert!(open_sequenced(&bad_utf8).is_none());
        for cut in [
            &b"WSG2"[..],
            b"WSG2\x01n",
            b"WSG2\x01nt12",
            b"WSG2\x01nt12:e",
        ] {
            assert!(
                open_sequenced(&Bytes::copy_from_slice(cut)).is_none(),
                "{cut:?}"
            );
        }
    }
}
