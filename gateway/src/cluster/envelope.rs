//! An envelope: a message as it travels through Redis.
//!
//! `WSG1`, the publishing node's id as one length byte and the id, one byte for the frame's
//! kind (`t` text, `b` binary), then the frame's payload exactly as subscribers receive it.

use bytes::Bytes;
use wsgate_core::frame::{OpCode, OutFrame};

/// The first bytes of every envelope.
pub(crate) const MAGIC: &[u8; 4] = b"WSG1";

/// The envelope's bytes before the payload.
pub(crate) fn head(node: &[u8], frame: &OutFrame) -> Vec<u8> {
    let mut head = Vec::with_capacity(6 + node.len());
    head.extend_from_slice(MAGIC);
    head.push(node.len() as u8);
    head.extend_from_slice(node);
    head.push(if is_text(frame) { b't' } else { b'b' });
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
