//! The gateway's answers to control messages.

use super::{push_i64, push_json_string};
use crate::Error;
use crate::frame::{OpCode, OutFrame};
use bytes::Bytes;

/// The text frame `{"type":"ack","id":N}`.
pub fn ack_frame(id: i64) -> OutFrame {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(br#"{"type":"ack","id":"#);
    push_i64(&mut v, id);
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
}
