//! `[[history]]` rules: which topics keep a history, how many messages and for how long.
//!
//! ```toml
//! [[history]]
//! topics = "chat.*"
//! size = 1000
//! ttl = "5m"
//! ```
//!
//! Each rule has exactly these three keys, all required:
//!
//! - `topics`, a pattern: a topic name (`orders`, matched exactly), or a prefix followed by one
//!   `*` at the end (`chat.*` matches `chat.` followed by anything, `chat.` itself included), or
//!   a lone `*` (every topic). A `*` anywhere else, an empty pattern, a control character, or a
//!   name or prefix longer than a topic may be is refused.
//! - `size`: the messages kept, 1 to [`MAX_SIZE`].
//! - `ttl`: how long a message is kept, a duration as the other settings take it (`30s`, `5m`,
//!   or a number of seconds), more than 0 and at most [`MAX_TTL`].
//!
//! The first rule that matches a topic is its rule; a topic that no rule matches keeps no
//! history. A rule that can never be the first match (an earlier one matches every topic it
//! does) is refused, as it is surely a mistake.

use super::codec::{Codec, Count, Span};
use super::settings::{RawTable, Table, TableError};
use std::time::Duration;
use wsgate_core::message::MAX_TOPIC_LEN;

/// The most messages one rule may keep per topic.
pub const MAX_SIZE: usize = 1_000_000;
/// The longest a rule may keep a message.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The keys of a rule, as an error lists them.
const KEYS: &str = "topics, size and ttl";

/// One `[[history]]` rule: the topics it applies to and what each of them keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// The pattern of topic names: a name, a prefix ending in `*`, or `*` (see
    /// [`matches`](Self::matches)).
    pub topics: String,
    /// The most messages a topic keeps (1 to [`MAX_SIZE`]).
    pub size: usize,
    /// How long a message is kept (more than 0, at most [`MAX_TTL`]).
    pub ttl: Duration,
}

impl HistoryRule {
    /// Whether the rule's pattern matches `topic`: equal to it, or, for a pattern ending in
    /// `*`, `topic` starts with what comes before the `*` (a lone `*` matches every topic).
    pub fn matches(&self, topic: &str) -> bool {
        match self.topics.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => topic == self.topics,
        }
    }

    /// Whether every topic this rule matches is matched by `earlier` too.
    fn shadowed_by(&self, earlier: &HistoryRule) -> bool {
        match (
            earlier.topics.strip_suffix('*'),
            self.topics.strip_suffix('*'),
        ) {
            (Some(p), Some(q)) => q.starts_with(p),
            (Some(p), None) => self.topics.starts_with(p),
            (None, Some(_)) => false,
            (None, None) => earlier.topics == self.topics,
        }
    }
}

/// Checks a pattern: why it is refused, if it is.
fn check_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if pattern.is_empty() {
        return Err(
            "an empty pattern matches no topic; write a topic name, `prefix*` or `*`".into(),
        );
    }
    if body.contains('*') {
        return Err(format!(
            "{pattern:?}: a `*` may only end the pattern (`chat.*`) or stand alone (`*`)"
        ));
    }
    if body.chars().any(char::is_control) {
        return Err(format!(
            "{pattern:?}: contains a control character, which no topic may"
        ));
    }
    if body.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "a topic is at most {MAX_TOPIC_LEN} bytes; this pattern's {} are more",
            if body.len() == pattern.len() {
                "name's"
            } else {
                "prefix's"
            }
        ));
    }
    Ok(())
}

impl Table for HistoryRule {
    fn from_table(table: &RawTable) -> Result<Self, TableError> {
        let (mut topics, mut size, mut ttl) = (None, None, None);
        for (key, value) in table {
            let at = Some(value.span().start);
            let v = value.get_ref();
            let bad = |why: String| TableError {
                why: format!("{} {v}: {why}", key.get_ref()),
                at,
            };
            match key.get_ref().as_str() {
                "topics" => {
                    let toml::Value::String(p) = v else {
                        return Err(bad(format!("expected a string, found a {}", v.type_str())));
                    };
                    check_pattern(p).map_err(|why| TableError {
                        why: format!("topics {why}"),
                        at,
                    })?;
                    topics = Some(p.clone());
                }
                "size" => {
                    let n = Count::<usize>::from_toml(v).map_err(bad)?;
                    if !(1..=MAX_SIZE).contains(&n) {
                        return Err(bad(format!("must be between 1 and {MAX_SIZE} messages")));
                    }
                    size = Some(n);
                }
                "ttl" => {
                    let d = Span::from_toml(v).map_err(bad)?;
                    if d.is_zero() || d > MAX_TTL {
                        return Err(bad("must be more than 0 and at most 24h".into()));
                    }
                    ttl = Some(d);
                }
                other => {
                    let hint = if super::Settings::KEYS
                        .iter()
                        .any(|k| super::settings::key_of(k) == other)
                    {
                        format!(
                            "; `{other}` is a setting: settings go before the first [[history]] \
                             (the keys after a [[history]] line belong to that rule)"
                        )
                    } else {
                        String::new()
                    };
                    return Err(TableError {
                        why: format!("unknown key `{other}`; a rule has {KEYS}{hint}"),
                        at: Some(key.span().start),
                    });
                }
            }
        }
        let missing = |what: &str| TableError {
            why: format!("`{what}` is missing; a rule has {KEYS}, all required"),
            at: None,
        };
        Ok(HistoryRule {
            topics: topics.ok_or_else(|| missing("topics"))?,
            size: size.ok_or_else(|| missing("size"))?,
            ttl: ttl.ok_or_else(|| missing("ttl"))?,
        })
    }

    fn to_toml(&self) -> Vec<(&'static str, toml::Value)> {
        vec![
            ("topics", toml::Value::String(self.topics.clone())),
            (
                "size",
                Count::<usize>::to_toml(&self.size).expect("a count prints"),
            ),
            ("ttl", Span::to_toml(&self.ttl).expect("a duration prints")),
        ]
    }
}

/// The rules that make sense only together: none may be hidden behind an earlier one.
pub(super) fn check(rules: &[HistoryRule]) -> Result<(), String> {
    for (j, rule) in rules.iter().enumerate() {
        if let Some(i) = rules[..j].iter().position(|e| rule.shadowed_by(e)) {
            return Err(format!(
                "history rule {} (topics {:?}) never applies: rule {} (topics {:?}) comes first \
                 and matches every topic it does (the first match wins)",
                j + 1,
                rule.topics,
                i + 1,
                rules[i].topics
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(topics: &str) -> HistoryRule {
        HistoryRule {
            topics: topics.into(),
            size: 10,
            ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn patterns_match_names_prefixes_and_everything() {
        let exact = rule("orders");
        assert!(exact.matches("orders"));
        assert!(!exact.matches("orders.eu") && !exact.matches("order") && !exact.matches(""));
        let prefix = rule("chat.*");
        assert!(prefix.matches("chat.") && prefix.matches("chat.room-1"));
        assert!(prefix.matches("chat.a*b"));
        assert!(!prefix.matches("chat") && !prefix.matches("chats.x") && !prefix.matches("Chat.x"));
        let all = rule("*");
        assert!(all.matches("x") && all.matches("chat.room"));
        let unicode = rule("café.*");
        assert!(unicode.matches("café.1") && !unicode.matches("cafe.1"));
    }

    #[test]
    fn bad_patterns_say_why() {
        for (p, why) in [
            ("", "empty"),
            ("chat*.x", "may only end"),
            ("**", "may only end"),
            ("*chat", "may only end"),
            ("a\u{7}b", "control character"),
        ] {
            let e = check_pattern(p).unwrap_err();
            assert!(e.contains(why), "{p:?}: {e}");
        }
        let long = "x".repeat(256);
        assert!(check_pattern(&long).unwrap_err().contains("name's"));
        assert!(
            check_pattern(&format!("{long}*"))
                .unwrap_err()
                .contains("prefix's")
        );
        for ok in [
            "*",
            "a",
            "chat.*",
            "chat*",
            &"x".repeat(255),
            &format!("{}*", "x".repeat(255)),
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_rule_behind_an_earlier_one_is_refused() {
        let ok = [
            rule("chat.vip.*"),
            rule("chat.*"),
            rule("orders"),
            rule("*"),
        ];
        assert_eq!(check(&ok), Ok(()));
        for (rules, named) in [
            (vec![rule("*"), rule("chat.*")], "rule 2"),
            (vec![rule("chat.*"), rule("chat.vip.*")], "rule 2"),
            (vec![rule("chat.*"), rule("x"), rule("chat.room")], "rule 3"),
            (vec![rule("orders"), rule("orders")], "rule 2"),
            (vec![rule("chat*"), rule("chat.*")], "rule 2"),
        ] {
            let e = check(&rules).unwrap_err();
            assert!(e.contains(named) && e.contains("never applies"), "{e}");
        }
        assert_eq!(check(&[rule("chat.room"), rule("chat.*")]), Ok(()));
    }

    #[test]
    fn the_flag_takes_the_keys_of_one_table() {
        let r = HistoryRule::parse_flag(r#"topics = "chat.*", size = 1000, ttl = "5m""#).unwrap();
        assert_eq!(
            r,
            HistoryRule {
                topics: "chat.*".into(),
                size: 1000,
                ttl: Duration::from_secs(300)
            }
        );
        let braced = HistoryRule::parse_flag(r#"{ ttl = 30, size = "7", topics = "*" }"#).unwrap();
        assert_eq!((braced.size, braced.ttl), (7, Duration::from_secs(30)));
        let e = HistoryRule::parse_flag(r#"topics = "a", size = 0, ttl = "1s""#).unwrap_err();
        assert!(
            e.contains("size 0") && e.contains("between 1 and 1000000"),
            "{e}"
        );
        let e = HistoryRule::parse_flag("chat.* 1000 5m").unwrap_err();
        assert!(e.contains("key = value"), "{e}");
        let e = HistoryRule::parse_flag(r#"topics = "a""#).unwrap_err();
        assert!(e.contains("`size` is missing"), "{e}");
    }

    #[test]
    fn rules_print_as_they_read() {
        let r = HistoryRule {
            topics: "a \"quoted\" \\ *".into(),
            size: 5,
            ttl: Duration::from_millis(1500),
        };
        let text = r
            .to_toml()
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(HistoryRule::parse_flag(&text), Ok(r));
    }
}
