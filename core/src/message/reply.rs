//! The gateway's answers to control messages, and the notices it sends of its own accord.

use super::{push_i64, push_json_string, push_u64};
use crate::Error;
use crate::frame::{OpCode, OutFrame};
use bytes::Bytes;
use std::fmt;

/// The text frame `{"type":"ack","id":N}`.
pub fn ack_frame(id: i64) -> OutFrame {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(br#"{"type":"ack","id":"#);
    push_i64(&mut v, id);
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

/// The text frame `{"type":"ack","id":N,"offset":O,"epoch":"E"}`: the answer to a publish
/// to a topic with history that the gateway numbered at once (on one node), with the offset
/// and epoch its message was given, so that a publisher can find it in the topic's stream.
/// `epoch` is JSON-escaped; `offset` is a bare decimal integer of the whole `u64` range.
pub fn publish_ack_frame(id: i64, offset: u64, epoch: &str) -> OutFrame {
    let mut v = Vec::with_capacity(64 + epoch.len());
    v.extend_from_slice(br#"{"type":"ack","id":"#);
    push_i64(&mut v, id);
    v.extend_from_slice(br#","offset":"#);
    push_u64(&mut v, offset);
    v.extend_from_slice(br#","epoch":"#);
    push_json_string(&mut v, epoch);
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

/// The text frame `{"type":"error","id":N,"code":"...","message":"..."}`, without the `id`
/// member when `id` is `None`. `code` is [`Error::code`], `message` the error's `Display`, both
/// JSON-escaped.
pub fn error_frame(id: Option<i64>, error: &Error) -> OutFrame {
    let mut v = Vec::with_capacity(128);
    v.extend_from_slice(br#"{"type":"error","#);
    if let Some(id) = id {
        v.extend_from_slice(br#""id":"#);
        push_i64(&mut v, id);
        v.push(b',');
    }
    v.extend_from_slice(br#""code":"#);
    push_json_string(&mut v, error.code());
    v.extend_from_slice(br#","message":"#);
    push_json_string(&mut v, &error.to_string());
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

/// Why the gateway could not recover a subscriber's stream: the `reason` of an ack with
/// `"recovered":false`. In every case no history was sent, and the client refetches its state.
///
/// Deliberately not `#[non_exhaustive]`, like [`Error`]: a gateway counting them by reason
/// matches them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoverFailure {
    /// `"epoch"`: the client's epoch is not the topic's (the stream's continuity was lost: a
    /// restart without shared history, history expired or evicted, a Redis stream lost).
    Epoch,
    /// `"too_old"`: the epoch matches, but messages after the client's offset are no longer
    /// kept (past the history's size or ttl, or evicted for memory).
    TooOld,
    /// `"ahead"`: the epoch matches but the client's offset is past the topic's last one,
    /// which the gateway never sent.
    Ahead,
    /// `"unavailable"`: the history could not be read (its Redis stream out of reach).
    Unavailable,
}

impl RecoverFailure {
    /// Every reason, in declaration order (for metrics labels).
    pub const ALL: [RecoverFailure; 4] = [
        RecoverFailure::Epoch,
        RecoverFailure::TooOld,
        RecoverFailure::Ahead,
        RecoverFailure::Unavailable,
    ];

    /// The reason's name on the wire (and a metrics label): `epoch`, `too_old`, `ahead` or
    /// `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoverFailure::Epoch => "epoch",
            RecoverFailure::TooOld => "too_old",
            RecoverFailure::Ahead => "ahead",
            RecoverFailure::Unavailable => "unavailable",
        }
    }

    /// The reason named `name` on the wire, if it is one of [`RecoverFailure::as_str`]'s.
    pub fn from_name(name: &str) -> Option<RecoverFailure> {
        RecoverFailure::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for RecoverFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a subscribe's `recover` ended: the `recovered` member of its ack (and `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Every message after the client's offset was sent, in order, before the ack:
    /// `"recovered":true`.
    Recovered,
    /// Nothing was sent: `"recovered":false,"reason":"..."`.
    Failed(RecoverFailure),
}

/// The ack of a subscribe to a topic with history:
///
/// ```text
/// {"type":"ack","id":N,"topic":"T","offset":O,"epoch":"E"}                    no recover asked
/// {"type":"ack","id":N,"topic":"T","offset":O,"epoch":"E","recovered":true}   recovered
/// {"type":"ack","id":N,"topic":"T","offset":O,"epoch":"E","recovered":false,"reason":"epoch"}
/// ```
///
/// in this member order. `id` is left out when `None` (a subscribe without an id, or one of
/// `GET /ws?subscribe=`, still learns the topic's position this way), `recovered` and `reason`
/// when `recovery` is `None` (the subscribe had no `recover`). `topic` is always there, so an
/// ack without an id still says which subscription it starts. `offset` is the topic's offset
/// at the moment the subscription starts, the last one the client now has (after the
/// recovered messages, when there were some): the next delivery of the topic carries the
/// following offset. `topic` and `epoch` are JSON-escaped as in deliveries; `offset` is a bare
/// decimal integer of the whole `u64` range.
pub fn subscribe_ack_frame(
    id: Option<i64>,
    topic: &str,
    offset: u64,
    epoch: &str,
    recovery: Option<Recovery>,
) -> OutFrame {
    let mut v = Vec::with_capacity(96 + topic.len() + epoch.len());
    v.extend_from_slice(br#"{"type":"ack","#);
    if let Some(id) = id {
        v.extend_from_slice(br#""id":"#);
        push_i64(&mut v, id);
        v.push(b',');
    }
    v.extend_from_slice(br#""topic":"#);
    push_json_string(&mut v, topic);
    v.extend_from_slice(br#","offset":"#);
    push_u64(&mut v, offset);
    v.extend_from_slice(br#","epoch":"#);
    push_json_string(&mut v, epoch);
    match recovery {
        None => {}
        Some(Recovery::Recovered) => v.extend_from_slice(br#","recovered":true"#),
        Some(Recovery::Failed(reason)) => {
            v.extend_from_slice(br#","recovered":false,"reason":""#);
            v.extend_from_slice(reason.as_str().as_bytes());
            v.push(b'"');
        }
    }
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

/// The notice `{"type":"gap","topic":"T"}` (topic JSON-escaped): the subscriber may have missed
/// messages of the topic that cannot be recovered (a broker link was down, an offset jumped
/// past what history holds), so it should refetch its state rather than trust its stream.
/// Built once and cloned per subscriber of the topic.
pub fn gap_frame(topic: &str) -> OutFrame {
    let mut v = Vec::with_capacity(26 + 2 * topic.len());
    v.extend_from_slice(br#"{"type":"gap","topic":"#);
    push_json_string(&mut v, topic);
    v.push(b'}');
    OutFrame::new(OpCode::Text, Bytes::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::testing::*;

    // ---- answers ----

    #[test]
    fn ack_frames() {
        for id in [0, 1, -1, i64::MAX, i64::MIN] {
            let frame = ack_frame(id);
            assert_eq!(text_of(&frame), format!(r#"{{"type":"ack","id":{id}}}"#));
            assert_eq!(json_of(&frame), serde_json::json!({"type":"ack","id":id}));
        }
    }

    #[test]
    fn publish_ack_frames_carry_the_offset_and_the_escaped_epoch() {
        let frame = publish_ack_frame(7, u64::MAX, "ab\"c");
        assert_eq!(
            text_of(&frame),
            format!(
                r#"{{"type":"ack","id":7,"offset":{},"epoch":"ab\"c"}}"#,
                u64::MAX
            )
        );
        // a client reads it as an ack of its id, with the position
        match crate::message::parse_server_message(text_of(&frame).as_bytes()) {
            Ok(crate::message::ServerMessage::Ack(a)) => {
                assert_eq!((a.id, a.offset), (Some(7), Some(u64::MAX)));
                assert_eq!(a.epoch.as_deref(), Some("ab\"c"));
                assert_eq!((a.topic, a.recovery), (None, None));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_frames() {
        let frame = error_frame(Some(3), &Error::UnknownType);
        assert_eq!(
            text_of(&frame),
            r#"{"type":"error","id":3,"code":"unknown_type","message":"unknown message type"}"#
        );
        let frame = error_frame(None, &Error::MissingField("topic"));
        assert_eq!(
            text_of(&frame),
            r#"{"type":"error","code":"missing_field","message":"missing field \"topic\""}"#
        );
        // A reason with quotes, backslashes and control characters is escaped properly.
        let nasty = Error::InvalidJson("a \"b\" \\ \n\t\u{1} é".into());
        let v = json_of(&error_frame(Some(-9), &nasty));
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], -9);
        assert_eq!(v["code"], "invalid_json");
        assert_eq!(v["message"], nasty.to_string());
        assert_eq!(v.as_object().unwrap().len(), 4);
        // The reply of a real parse error.
        let bad = err("{\"id\":1,");
        let v = json_of(&bad.reply());
        assert_eq!(v["id"], 1);
        assert_eq!(v["code"], "invalid_json");
        assert!(v["message"].as_str().unwrap().starts_with("invalid JSON: "));
        let v = json_of(&err("[]").reply());
        assert!(v.get("id").is_none());
        assert_eq!(v["code"], "invalid_message");
        assert_eq!(
            Error::from(err("[]")),
            Error::InvalidMessage("not a JSON object")
        );
    }

    // ---- history ----

    #[test]
    fn subscribe_acks() {
        let ack = |id, recovery| text_of(&subscribe_ack_frame(id, "chat.1", 41, "e7x", recovery));
        assert_eq!(
            ack(Some(9), None),
            r#"{"type":"ack","id":9,"topic":"chat.1","offset":41,"epoch":"e7x"}"#
        );
        assert_eq!(
            ack(None, None),
            r#"{"type":"ack","topic":"chat.1","offset":41,"epoch":"e7x"}"#
        );
        assert_eq!(
            ack(Some(-1), Some(Recovery::Recovered)),
            r#"{"type":"ack","id":-1,"topic":"chat.1","offset":41,"epoch":"e7x","recovered":true}"#
        );
        assert_eq!(
            ack(None, Some(Recovery::Failed(RecoverFailure::Epoch))),
            r#"{"type":"ack","topic":"chat.1","offset":41,"epoch":"e7x","recovered":false,"reason":"epoch"}"#
        );
        for reason in RecoverFailure::ALL {
            let text = ack(Some(1), Some(Recovery::Failed(reason)));
            assert!(text.ends_with(&format!(r#","recovered":false,"reason":"{reason}"}}"#)));
        }
        // Every field, through serde_json, over the whole ranges and nasty strings.
        for id in [None, Some(0), Some(i64::MIN), Some(i64::MAX)] {
            for offset in [0, 1, i64::MAX as u64 + 1, u64::MAX] {
                for (topic, epoch) in [("t", "e"), ("a\"b\\cé🎉", "ép\"o\\ch\u{1}"), ("\u{0}", "x")]
                {
                    for recovery in [
                        None,
                        Some(Recovery::Recovered),
                        Some(Recovery::Failed(RecoverFailure::TooOld)),
                    ] {
                        let frame = subscribe_ack_frame(id, topic, offset, epoch, recovery);
                        let v = json_of(&frame);
                        let mut want = serde_json::json!({
                            "type": "ack", "topic": topic, "offset": offset, "epoch": epoch,
                        });
                        if let Some(id) = id {
                            want["id"] = id.into();
                        }
                        match recovery {
                            None => {}
                            Some(Recovery::Recovered) => want["recovered"] = true.into(),
                            Some(Recovery::Failed(r)) => {
                                want["recovered"] = false.into();
                                want["reason"] = r.as_str().into();
                            }
                        }
                        assert_eq!(v, want);
                        assert_eq!(v["offset"].as_u64(), Some(offset));
                    }
                }
            }
        }
        assert!(
            text_of(&subscribe_ack_frame(None, "t", u64::MAX, "e", None))
                .contains(r#""offset":18446744073709551615,"#)
        );
    }

    #[test]
    fn recover_failure_names() {
        let names: Vec<_> = RecoverFailure::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["epoch", "too_old", "ahead", "unavailable"]);
        for r in RecoverFailure::ALL {
            assert_eq!(RecoverFailure::from_name(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(RecoverFailure::from_name("Epoch"), None);
        assert_eq!(RecoverFailure::from_name(""), None);
    }

    #[test]
    fn gap_frames() {
        assert_eq!(
            text_of(&gap_frame("chat.1")),
            r#"{"type":"gap","topic":"chat.1"}"#
        );
        assert_eq!(
            text_of(&gap_frame("a\"b\\cé🎉")),
            r#"{"type":"gap","topic":"a\"b\\cé🎉"}"#
        );
        for topic in ["t", "a\"b\\cé🎉", "\u{0}\n", &"\"".repeat(255)] {
            assert_eq!(
                json_of(&gap_frame(topic)),
                serde_json::json!({"type": "gap", "topic": topic})
            );
        }
    }

    #[test]
    fn the_old_answers_are_unchanged() {
        // ack_frame and error_frame, byte for byte, beside the new acks.
        assert_eq!(text_of(&ack_frame(7)), r#"{"type":"ack","id":7}"#);
        assert_eq!(
            text_of(&error_frame(None, &Error::InvalidRecover("empty epoch"))),
            r#"{"type":"error","code":"invalid_recover","message":"invalid \"recover\": empty epoch"}"#
        );
    }
}
