//! The Lua scripts that keep a topic's history in Redis, and what they answer.
//!
//! A topic with history has two keys beside its channel: a hash (`…:meta`) with the stream's
//! epoch (`e`) and last offset (`o`), and a stream (`…:stream`) of the last `size` messages,
//! each under the id `<offset>-0` with the completed envelope (`m`) and Redis' clock when it
//! was added in milliseconds (`t`). Both expire `ttl` after the last publish.
//!
//! - [`PUBLISH`] numbers a message atomically with keeping and publishing it: a missing hash
//!   starts a new epoch (from Redis' clock) and an empty stream, then `HINCRBY` gives the
//!   offset, `XADD … MAXLEN size` keeps the message, `PEXPIRE` both keys, and `PUBLISH` (or
//!   `SPUBLISH` in sharded mode) sends the completed sequenced envelope. It returns the offset
//!   and the epoch ([`published`]).
//! - [`PRIME`] reads what a node's mirror needs: the epoch (made as above when missing), the
//!   last offset, and the kept envelopes after the mirror's offset (all of them when the
//!   mirror's epoch is another), leaving out those older than the ttl.
//!
//! In a Redis Cluster every key of a script must be in one slot, and a shard channel in the
//! slot of those keys: the keys carry the channel's hash tag ([`keys`]).

use super::envelope;
use super::slots;
use crate::hub::Answer;
use redis::Value;
use std::sync::Arc;
use wsgate_core::frame::OutFrame;

/// Numbers, keeps and publishes one message. KEYS: meta, stream. ARGV: the envelope's head,
/// the payload, size, ttl in milliseconds, the channel, `1` to SPUBLISH.
pub(super) const PUBLISH: &str = r#"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  local t = redis.call('TIME')
  e = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
end
local o = string.format('%d', redis.call('HINCRBY', KEYS[1], 'o', 1))
local t = redis.call('TIME')
local ms = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local env = ARGV[1] .. o .. ':' .. e .. ':' .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], o .. '-0', 'm', env, 't', ms)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[6] == '1' then
  redis.call('SPUBLISH', ARGV[5], env)
else
  redis.call('PUBLISH', ARGV[5], env)
end
return {o, e}
"#;

/// What [`PUBLISH`] answered, for the publisher: the offset and the epoch; an answer of
/// another shape (a script of an older wsgate, loaded under its own digest, answers the
/// offset alone) says the message was kept without its position.
pub(super) fn published(reply: &Value) -> Answer {
    let text = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok().map(str::to_owned),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    if let Value::Array(parts) = reply
        && let [offset, epoch] = &parts[..]
        && let (Some(offset), Some(epoch)) = (text(offset), text(epoch))
        && let Ok(offset) = offset.parse::<u64>()
        && !epoch.is_empty()
    {
        return Answer::Numbered {
            offset,
            epoch: Arc::from(epoch),
        };
    }
    Answer::Accepted
}

/// Reads what a mirror needs. KEYS: meta, stream. ARGV: the mirror's last offset, its epoch
/// (empty when it has none), the ttl in milliseconds. Answers the epoch, the last offset and
/// the envelopes.
pub(super) const PRIME: &str = r#"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  local t = redis.call('TIME')
  e = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local out = {e, redis.call('HGET', KEYS[1], 'o')}
local from = '-'
if e == ARGV[2] then
  from = '(' .. ARGV[1] .. '-0'
end
local t = redis.call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], from, '+')) do
  local f = entry[2]
  if tonumber(f[4]) >= oldest then
    out[#out + 1] = f[2]
  end
end
return out
"#;

/// The keys of a channel's history (the hash, the stream), in the channel's hash slot:
/// `None` for a channel whose name has no hash tag and a `}` in it, which no key can share a
/// Redis Cluster slot with in a way this scheme can name (its topic's history cannot be kept
/// in a cluster).
pub(super) fn keys(channel: &str) -> Option<(String, String)> {
    let slot = slots::of(channel.as_bytes());
    let tagged = [channel.to_string(), format!("{{{channel}}}")];
    tagged.into_iter().find_map(|base| {
        let meta = format!("{base}:meta");
        let stream = format!("{base}:stream");
        (slots::of(meta.as_bytes()) == slot && slots::of(stream.as_bytes()) == slot)
            .then_some((meta, stream))
    })
}

/// What [`PRIME`] answered.
#[derive(Debug)]
pub(super) struct Primed {
    /// The stream's epoch.
    pub(super) epoch: String,
    /// Its last offset.
    pub(super) last: u64,
    /// The kept messages asked for, `(offset, frame without its offset)`, in order.
    pub(super) messages: Vec<(u64, OutFrame)>,
}

/// Reads [`PRIME`]'s answer; `None` when it is not one (an envelope that does not open, an
/// offset out of order).
pub(super) fn primed(reply: Value) -> Option<Primed> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut items = items.into_iter();
    let epoch = match items.next()? {
        Value::BulkString(e) => String::from_utf8(e).ok()?,
        _ => return None,
    };
    let last = match items.next()? {
        Value::BulkString(o) => std::str::from_utf8(&o).ok()?.parse().ok()?,
        Value::Int(o) => u64::try_from(o).ok()?,
        _ => return None,
    };
    let mut messages: Vec<(u64, OutFrame)> = Vec::new();
    for item in items {
        let Value::BulkString(bytes) = item else {
            return None;
        };
        let bytes = bytes::Bytes::from(bytes);
        let opened = envelope::open_sequenced(&bytes)?;
        if opened.epoch != epoch
            || opened.offset > last
            || messages
                .last()
                .is_some_and(|(o, _)| *o + 1 != opened.offset)
        {
            return None;
        }
        messages.push((opened.offset, opened.frame));
    }
    Some(Primed {
        epoch,
        last,
        messages,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_publish_script_s_answer_gives_the_position_or_says_it_was_kept() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            published(&Value::Array(vec![bulk("42"), bulk("19ab")])),
            Answer::Numbered {
                offset: 42,
                epoch: Arc::from("19ab")
            }
        );
        // an older script's answer: the offset alone
        assert_eq!(published(&bulk("42")), Answer::Accepted);
        assert_eq!(
            published(&Value::Array(vec![bulk("x"), bulk("e")])),
            Answer::Accepted
        );
        assert_eq!(
            published(&Value::Array(vec![bulk("1"), bulk("")])),
            Answer::Accepted
        );
        assert_eq!(published(&Value::Nil), Answer::Accepted);
    }

    use super::*;

    #[test]
    fn keys_share_the_channel_slot() {
        for channel in ["wsgate:news", "wsgate:{room}.chat", "x{y}z}", "{a}}", "a{b"] {
            let (meta, stream) = keys(channel).expect(channel);
            let slot = slots::of(channel.as_bytes());
            assert_eq!(slots::of(meta.as_bytes()), slot, "{meta}");
            assert_eq!(slots::of(stream.as_bytes()), slot, "{stream}");
            assert_ne!(meta, stream);
        }
        assert_eq!(
            keys("wsgate:news").unwrap(),
            ("{wsgate:news}:meta".into(), "{wsgate:news}:stream".into())
        );
        assert_eq!(keys("wsgate:{r}").unwrap().0, "wsgate:{r}:meta");
        assert!(keys("a}b").is_none(), "no hash tag can hold this name");
        assert!(keys("a{}b").is_none());
    }

    #[test]
    fn prime_answers_are_read_and_checked() {
        let env = |o: u64, e: &str, data: &str| {
            Value::BulkString(format!("WSG2\x01nt{o}:{e}:{data}").into_bytes())
        };
        let ok = Value::Array(vec![
            Value::BulkString(b"ep".to_vec()),
            Value::BulkString(b"7".to_vec()),
            env(6, "ep", "{\"a\":6}"),
            env(7, "ep", "{\"a\":7}"),
        ]);
        let p = primed(ok).expect("reads");
        assert_eq!((p.epoch.as_str(), p.last), ("ep", 7));
        assert_eq!(p.messages.len(), 2);
        assert_eq!(p.messages[1].0, 7);
        assert_eq!(p.messages[1].1.payload(), &b"{\"a\":7}"[..]);

        let empty = Value::Array(vec![
            Value::BulkString(b"ep".to_vec()),
            Value::BulkString(b"0".to_vec()),
        ]);
        assert_eq!(primed(empty).unwrap().messages.len(), 0);

        for bad in [
            vec![env(6, "ep", "{}"), env(8, "ep", "{}")], // a hole
            vec![env(8, "ep", "{}")],                     // past the last
            vec![env(7, "other", "{}")],                  // another epoch
            vec![Value::Int(3)],
        ] {
            let mut items = vec![
                Value::BulkString(b"ep".to_vec()),
                Value::BulkString(b"7".to_vec()),
            ];
            items.extend(bad);
            assert!(primed(Value::Array(items)).is_none());
        }
        assert!(primed(Value::Nil).is_none());
    }
}
