//! The permessage-deflate offer and answer (RFC 7692 section 7.1), offer by offer.

use crate::handshake::ExtensionOffer;

/// The extension's registered name.
pub const NAME: &str = "permessage-deflate";

/// The window every shared compressed frame is made with (2^15 bytes, the largest).
pub const SERVER_WINDOW_BITS: u8 = 15;

/// What the server is willing to agree to, from its settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Let a client keep its compression context across messages when it does not offer
    /// `client_no_context_takeover`. Off (the default), the server answers
    /// `client_no_context_takeover` to every offer (RFC 7692 section 7.1.1.2 allows it), so
    /// that inflating a client's message needs state only while that message arrives. On, a
    /// connection that sends compressed messages keeps an inflater (about 40 KiB) for its life.
    pub client_context_takeover: bool,
}

impl Default for Policy {
    /// Every connection's compression state lives only while a message is in flight.
    fn default() -> Policy {
        Policy {
            client_context_takeover: false,
        }
    }
}

/// The parameters agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The largest window the server may compress with (`server_max_window_bits`, 8 to 15;
    /// 15 when the client set no limit). The server never takes its context over: every
    /// message it sends is compressed on its own.
    pub server_window_bits: u8,
    /// Whether the client may compress a message with the context of its previous ones.
    pub client_context_takeover: bool,
}

impl Agreed {
    /// Whether frames compressed once with [`SERVER_WINDOW_BITS`] for every subscriber may be
    /// sent to this client. A client that asked for a narrower window gets its messages
    /// uncompressed (always allowed by the extension), rather than one more compression per
    /// window size per publish.
    pub fn takes_shared_frames(&self) -> bool {
        self.server_window_bits >= SERVER_WINDOW_BITS
    }
}

/// The answer to the client's offers: the first `permessage-deflate` offer the server can
/// accept, and the `Sec-WebSocket-Extensions` value that accepts it. `None` declines them all
/// (the connection goes on without compression).
///
/// An offer is declined, and the next one tried, when it carries a parameter RFC 7692 does not
/// define for an offer, a parameter twice, or a value that is not allowed
/// (`server_max_window_bits` without a value or outside 8 to 15, `client_max_window_bits`
/// outside 8 to 15, a value on `server_no_context_takeover` or `client_no_context_takeover`,
/// a number with a leading zero).
///
/// The answer always has `server_no_context_takeover` (each message the server sends is
/// compressed on its own: what lets one compressed frame serve every subscriber), has
/// `client_no_context_takeover` when the client offered it or the policy does not let clients
/// keep a context, and repeats `server_max_window_bits` when the client limited it.
/// `client_max_window_bits` is never answered: the server inflates with the largest window,
/// which reads whatever window the client compresses with.
pub fn negotiate(offers: &[ExtensionOffer<'_>], policy: Policy) -> Option<(Agreed, String)> {
    offers
        .iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case(NAME))
        .find_map(|offer| accept(offer, policy))
}

/// The agreement and the answer for one offer, `None` when it must be declined.
fn accept(offer: &ExtensionOffer<'_>, policy: Policy) -> Option<(Agreed, String)> {
    let mut seen = [false; 4];
    let mut server_bits: Option<u8> = None;
    let mut client_no_takeover = false;
    for (name, value) in &offer.params {
        let (index, value_ok) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => {
                client_no_takeover = true;
                (1, value.is_none())
            }
            "server_max_window_bits" => {
                server_bits = value.as_deref().and_then(window_bits);
                (2, server_bits.is_some())
            }
            "client_max_window_bits" => {
                (3, value.as_deref().is_none_or(|v| window_bits(v).is_some()))
            }
            _ => return None,
        };
        if !value_ok || std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    let client_context_takeover = policy.client_context_takeover && !client_no_takeover;
    let mut answer = String::from("permessage-deflate; server_no_context_takeover");
    if !client_context_takeover {
        answer.push_str("; client_no_context_takeover");
    }
    if let Some(bits) = server_bits {
        answer.push_str("; server_max_window_bits=");
        answer.push_str(&bits.to_string());
    }
    let agreed = Agreed {
        server_window_bits: server_bits.unwrap_or(SERVER_WINDOW_BITS),
        client_context_takeover,
    };
    Some((agreed, answer))
}

/// A window size parameter: a decimal 8 to 15 without a leading zero (RFC 7692 section
/// 7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// Offers as `Upgrade::extensions` hands them out, from `name; p=v; q` lists.
    fn offers(list: &[&'static str]) -> Vec<ExtensionOffer<'static>> {
        list.iter()
            .map(|offer| {
                let mut parts = offer.split(';').map(str::trim);
                let name = parts.next().unwrap();
                let params = parts
                    .map(|p| match p.split_once('=') {
                        Some((n, v)) => (n, Some(Cow::Borrowed(v))),
                        None => (p, None),
                    })
                    .collect();
                ExtensionOffer { name, params }
            })
            .collect()
    }

    fn answer(list: &[&'static str]) -> Option<(Agreed, String)> {
        negotiate(&offers(list), Policy::default())
    }

    fn answer_text(list: &[&'static str]) -> Option<String> {
        answer(list).map(|(_, a)| a)
    }

    const BASE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn a_bare_offer_and_chromiums_offer_are_accepted_without_any_context() {
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
        ] {
            let (agreed, text) = answer(&[offer]).unwrap();
            assert_eq!(text, BASE, "{offer}");
            assert_eq!(
                agreed,
                Agreed {
                    server_window_bits: 15,
                    client_context_takeover: false
                }
            );
            assert!(agreed.takes_shared_frames());
        }
    }

    #[test]
    fn every_defined_parameter_is_accepted() {
        let all = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                   server_max_window_bits=12; client_max_window_bits=10";
        let offers: Vec<_> = offers(&[all]);
        let (agreed, text) = negotiate(&offers, Policy::default()).unwrap();
        assert_eq!(text, format!("{BASE}; server_max_window_bits=12"));
        assert_eq!(agreed.server_window_bits, 12);
        assert!(
            !agreed.takes_shared_frames(),
            "a narrower window gets plain frames"
        );
        for bits in 8..=15 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let offer: &'static str = Box::leak(offer.into_boxed_str());
            let (agreed, text) = answer(&[offer]).unwrap();
            assert_eq!(agreed.server_window_bits, bits);
            assert!(text.ends_with(&format!("; server_max_window_bits={bits}")));
            assert_eq!(agreed.takes_shared_frames(), bits == 15);
        }
    }

    #[test]
    fn names_and_parameters_compare_without_case() {
        assert_eq!(
            answer_text(&[
                "PerMessage-Deflate; Client_Max_Window_Bits; SERVER_NO_CONTEXT_TAKEOVER"
            ])
            .as_deref(),
            Some(BASE)
        );
    }

    #[test]
    fn client_context_is_kept_only_when_the_policy_allows_and_the_client_did_not_refuse_it() {
        let keep = Policy {
            client_context_takeover: true,
        };
        let (agreed, text) = negotiate(&offers(&["permessage-deflate"]), keep).unwrap();
        assert!(agreed.client_context_takeover);
        assert_eq!(text, "permessage-deflate; server_no_context_takeover");
        let (agreed, text) = negotiate(
            &offers(&["permessage-deflate; client_no_context_takeover"]),
            keep,
        )
        .unwrap();
        assert!(!agreed.client_context_takeover);
        assert_eq!(text, BASE);
    }

    #[test]
    fn a_malformed_offer_is_declined_and_the_next_one_tried() {
        for bad in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=1a",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=09",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=true",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        ] {
            assert_eq!(answer_text(&[bad]), None, "{bad}");
            assert_eq!(
                answer_text(&[bad, "permessage-deflate"]).as_deref(),
                Some(BASE),
                "{bad} then a good one"
            );
        }
    }

    #[test]
    fn other_extensions_are_ignored_and_the_first_acceptable_offer_wins() {
        assert_eq!(answer_text(&["x-webkit-deflate-frame"]), None);
        assert_eq!(answer_text(&[]), None);
        let (agreed, text) = answer(&[
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate",
        ])
        .unwrap();
        assert_eq!(agreed.server_window_bits, 9);
        assert_eq!(text, format!("{BASE}; server_max_window_bits=9"));
    }

    #[test]
    fn offers_parsed_from_a_real_request_negotiate() {
        let raw = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"10\", \
            permessage-deflate\r\n\r\n";
        let request = crate::handshake::parse_request(raw, &Default::default())
            .unwrap()
            .unwrap();
        let upgrade = request.validate_upgrade().unwrap();
        let (agreed, _) = negotiate(&upgrade.extensions(), Policy::default()).unwrap();
        assert_eq!(
            agreed.server_window_bits, 10,
            "a quoted value is read unquoted"
        );
    }
}
