//! Topics in URLs: `GET /ws?subscribe=T1,T2` and `POST /publish/{topic}`.

use super::validate_topic;
use crate::{Error, Result};
use std::collections::HashSet;

/// The topics of `GET /ws?subscribe=T1,T2`, in order, without duplicates.
///
/// `query` is the request target's query (after `?`; a leading `?` is tolerated). It is split
/// on `&` and each pair at its first `=`; keys are form-decoded and only `subscribe` counts
/// (other parameters are ignored; `subscribe` may appear several times, its lists are joined).
/// Each value is split on literal commas **before** decoding, so a comma inside a topic is
/// written `%2C`; each item is then form-decoded: `%XX` is a byte, `+` is a space (write `%2B`
/// for a plus), a `%` not followed by two hex digits stays as it is. Decoded items must be UTF-8
/// (no lossy replacement) and valid topics ([`Error::InvalidTopic`]). Empty items are skipped.
///
/// More than `max_topics` distinct topics is [`Error::TooManyTopics`].
pub fn parse_subscribe_query(query: &str, max_topics: usize) -> Result<Vec<String>> {
    let query = query.strip_prefix('?').unwrap_or(query);
    let mut topics = Vec::new();
    let mut seen = HashSet::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(key.as_bytes(), true) != b"subscribe" {
            continue;
        }
        for item in value.split(',').filter(|item| !item.is_empty()) {
            let topic = String::from_utf8(percent_decode(item.as_bytes(), true))
                .map_err(|_| Error::InvalidTopic("not valid UTF-8"))?;
            validate_topic(&topic)?;
            if seen.contains(&topic) {
                continue;
            }
            if topics.len() >= max_topics {
                return Err(Error::TooManyTopics(max_topics));
            }
            seen.insert(topic.clone());
            topics.push(topic);
        }
    }
    Ok(topics)
}

/// Decodes the `{topic}` segment of `POST /publish/{topic}`: percent-decoding (`+` stays a
/// plus, as in any path), then UTF-8 and [`validate_topic`] ([`Error::InvalidTopic`]).
pub fn decode_topic_path(segment: &str) -> Result<String> {
    let topic = String::from_utf8(percent_decode(segment.as_bytes(), false))
        .map_err(|_| Error::InvalidTopic("not valid UTF-8"))?;
    validate_topic(&topic)?;
    Ok(topic)
}

/// Percent-decoding as WHATWG URL does it (`%XX` with two hex digits is that byte, any other
/// `%` is kept), with `+` as a space first when `plus_as_space` (form encoding; a literal plus is
/// `%2B`, which is decoded after the replacement and so survives).
fn percent_decode(input: &[u8], plus_as_space: bool) -> Vec<u8> {
    if plus_as_space && input.contains(&b'+') {
        let spaced: Vec<u8> = input
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        return percent_encoding::percent_decode(&spaced).collect();
    }
    percent_encoding::percent_decode(input).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- URLs ----

    #[test]
    fn subscribe_query() {
        let q = |s: &str| parse_subscribe_query(s, 10);
        assert_eq!(q("subscribe=a,b").unwrap(), ["a", "b"]);
        assert_eq!(q("?subscribe=a").unwrap(), ["a"]);
        assert_eq!(q("").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe=").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe=,,a,,").unwrap(), ["a"]);
        // Commas inside a topic are %2C; literal commas separate.
        assert_eq!(q("subscribe=a%2Cb,c").unwrap(), ["a,b", "c"]);
        assert_eq!(q("subscribe=a%2cb").unwrap(), ["a,b"]);
        // Form decoding: + is a space, %2B a plus, UTF-8 percent-encoded.
        assert_eq!(q("subscribe=a+b,c%2Bd").unwrap(), ["a b", "c+d"]);
        assert_eq!(
            q("subscribe=caf%C3%A9,%F0%9F%8E%89").unwrap(),
            ["café", "🎉"]
        );
        assert_eq!(q("subscribe=café").unwrap(), ["café"]);
        // A stray % stays.
        assert_eq!(
            q("subscribe=100%,a%zz,b%4").unwrap(),
            ["100%", "a%zz", "b%4"]
        );
        // Other parameters ignored, several subscribe parameters joined, duplicates dropped.
        assert_eq!(
            q("token=x,y&subscribe=a,b&x=1&subscribe=b,c,a&&=&subscribe=d").unwrap(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(q("sub%73cribe=a").unwrap(), ["a"]);
        assert_eq!(q("Subscribe=a").unwrap(), Vec::<String>::new());
        assert_eq!(q("subscribe=a=b").unwrap(), ["a=b"]);
        // Invalid topics.
        assert_eq!(
            q("subscribe=a%0Ab"),
            Err(Error::InvalidTopic("contains a control character"))
        );
        assert_eq!(
            q("subscribe=%FF"),
            Err(Error::InvalidTopic("not valid UTF-8"))
        );
        let long = "x".repeat(256);
        assert_eq!(
            q(&format!("subscribe={long}")),
            Err(Error::InvalidTopic("longer than 255 bytes"))
        );
    }

    #[test]
    fn subscribe_query_limit() {
        assert_eq!(
            parse_subscribe_query("subscribe=a,b,c", 3).unwrap(),
            ["a", "b", "c"]
        );
        // Duplicates do not count.
        assert_eq!(
            parse_subscribe_query("subscribe=a,b,a,b,c,c", 3).unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(
            parse_subscribe_query("subscribe=a,b,c,d", 3),
            Err(Error::TooManyTopics(3))
        );
        assert_eq!(
            parse_subscribe_query("subscribe=a&subscribe=b", 1),
            Err(Error::TooManyTopics(1))
        );
        assert_eq!(
            parse_subscribe_query("subscribe=a", 0),
            Err(Error::TooManyTopics(0))
        );
        assert_eq!(
            parse_subscribe_query("x=1", 0).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn topic_paths() {
        assert_eq!(decode_topic_path("news").unwrap(), "news");
        assert_eq!(decode_topic_path("a+b%2Bc%20d%2Fe").unwrap(), "a+b+c d/e");
        assert_eq!(decode_topic_path("caf%C3%A9").unwrap(), "café");
        assert_eq!(decode_topic_path(""), Err(Error::InvalidTopic("empty")));
        assert_eq!(
            decode_topic_path("%C3"),
            Err(Error::InvalidTopic("not valid UTF-8"))
        );
        assert_eq!(
            decode_topic_path("a%00"),
            Err(Error::InvalidTopic("contains a control character"))
        );
    }

    proptest! {
        #[test]
        fn subscribe_query_never_panics(query in "[a-z=&,%+0-9A-F\\PC]{0,80}") {
            if let Ok(topics) = parse_subscribe_query(&query, 8) {
                prop_assert!(topics.len() <= 8);
                for t in &topics {
                    prop_assert!(validate_topic(t).is_ok());
                }
            }
        }

    }
}
