//! Optional authentication of WebSocket clients with JSON Web Tokens, and what a token allows.
//!
//! Off unless a key is configured: `--jwt-secret` (HS256) or `--jwt-public-key FILE` (a PEM
//! public key; RS256 or ES256 with `--jwt-algorithm`). The token comes from, in order:
//! `?token=` in the upgrade URL, `Authorization: Bearer TOKEN`, or `Sec-WebSocket-Protocol`
//! offering `bearer` followed by the token (`new WebSocket(url, ["bearer", token])`, for browsers,
//! which cannot set headers; the gateway then answers with the `bearer` subprotocol).
//!
//! Claims: `exp` (required; a session is closed with 1008 when it passes), `sub` (optional, for
//! logs), and `subscribe` / `publish`: lists of topic patterns the holder may subscribe and
//! publish to, each an exact name or a prefix ending in `*` (`"*"` alone allows every topic). A
//! missing list allows nothing.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wsgate_core::handshake::Request;

/// Seconds of clock difference tolerated on `exp` between the token issuer and the gateway.
pub(crate) const LEEWAY_SECS: u64 = 2;

/// The longest a token's expiry is taken into account: a later `exp` counts as this far away
/// (an `Instant` cannot hold any `u64` of seconds).
const FARTHEST_EXPIRY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The claims wsgate reads (`nbf`, `aud` and `iss` are checked by the verifier itself).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub(crate) exp: u64,
    /// Publishes per second the holder may make over WebSocket, instead of the node's
    /// `publish-rate` (0: no limit, for backends that publish in bulk).
    #[serde(default)]
    pub(crate) publish_rate: Option<u32>,
    /// The subject, for logs.
    #[serde(default)]
    pub(crate) sub: Option<String>,
    /// Topic patterns the holder may subscribe to.
    #[serde(default)]
    pub(crate) subscribe: Vec<String>,
    /// Topic patterns the holder may publish to.
    #[serde(default)]
    pub(crate) publish: Vec<String>,
}

/// What a verified token allows, kept with the session.
#[derive(Debug, Clone)]
pub(crate) struct Grants {
    /// The subject, if the token named one.
    pub(crate) subject: Option<String>,
    subscribe: Vec<String>,
    publish: Vec<String>,
    /// The publish rate the token grants instead of the node's, if it names one.
    pub(crate) publish_rate: Option<u32>,
    /// When the token expires.
    pub(crate) expires: Instant,
}

fn matches(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => p == topic,
    })
}

impl Grants {
    /// Whether the token allows subscribing to `topic`.
    pub(crate) fn may_subscribe(&self, topic: &str) -> bool {
        matches(&self.subscribe, topic)
    }

    /// Whether the token allows publishing to `topic`.
    pub(crate) fn may_publish(&self, topic: &str) -> bool {
        matches(&self.publish, topic)
    }
}

/// Where the token of a request was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// `?token=`.
    Query,
    /// `Authorization: Bearer`.
    Header,
    /// `Sec-WebSocket-Protocol: bearer, TOKEN`: the answer must select `bearer`.
    Subprotocol,
}

/// Finds the token of an upgrade request.
pub(crate) fn token_of<'a>(req: &Request<'a>) -> Option<(String, TokenSource)> {
    if let Some(query) = req.query() {
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                let token = percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .ok()?
                    .into_owned();
                return Some((token, TokenSource::Query));
            }
        }
    }
    if let Some(v) = req.header_str("Authorization")
        && let Some(t) = v.trim().strip_prefix("Bearer ")
    {
        return Some((t.trim().to_string(), TokenSource::Header));
    }
    let protocols: Vec<&str> = req
        .header_values("Sec-WebSocket-Protocol")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let at = protocols
        .iter()
        .position(|p| p.eq_ignore_ascii_case("bearer"))?;
    protocols
        .get(at + 1)
        .map(|t| (t.to_string(), TokenSource::Subprotocol))
}

/// The claims a token must carry with the values given (`--jwt-audience`, `--jwt-issuer`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Required {
    /// The `aud` a token must name.
    pub(crate) audience: Option<String>,
    /// The `iss` a token must name.
    pub(crate) issuer: Option<String>,
}

/// Verifies tokens with the configured key.
pub(crate) struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for HS256 tokens signed with `secret`, that requires `claims`.
    pub(crate) fn hs256(secret: &[u8], claims: &Required) -> Authenticator {
        Authenticator::new(DecodingKey::from_secret(secret), Algorithm::HS256, claims)
    }

    /// An authenticator for RS256 or ES256 tokens, from a PEM public key, that requires
    /// `claims`.
    pub(crate) fn public_key(
        pem: &[u8],
        algorithm: &str,
        claims: &Required,
    ) -> Result<Authenticator, String> {
        let (key, alg) = match algorithm.to_ascii_uppercase().as_str() {
            "RS256" => (DecodingKey::from_rsa_pem(pem), Algorithm::RS256),
            "ES256" => (DecodingKey::from_ec_pem(pem), Algorithm::ES256),
            other => return Err(format!("'{other}' is not RS256 or ES256")),
        };
        let key = key.map_err(|e| format!("not a PEM {algorithm} public key: {e}"))?;
        Ok(Authenticator::new(key, alg, claims))
    }

    fn new(key: DecodingKey, alg: Algorithm, claims: &Required) -> Authenticator {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &claims.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &claims.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Authenticator { key, validation }
    }

    /// Checks a token's signature and expiry; `now` turns `exp` into a deadline.
    pub(crate) fn verify(&self, token: &str, now: Instant) -> Result<Grants, String> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?;
        let c = data.claims;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = Duration::from_secs(c.exp.saturating_add(LEEWAY_SECS).saturating_sub(unix_now));
        Ok(Grants {
            subject: c.sub,
            subscribe: c.subscribe,
            publish: c.publish,
            publish_rate: c.publish_rate,
            expires: now + left.min(FARTHEST_EXPIRY),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use wsgate_core::handshake::{Limits, parse_request};

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn unix() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_good_token_grants_its_patterns() {
        let auth = Authenticator::hs256(b"secret", &Required::default());
        let t = token(
            json!({"exp": unix() + 60, "sub": "alice", "subscribe": ["news", "chat.*"], "publish": ["chat.alice"]}),
            b"secret",
        );
        let g = auth.verify(&t, Instant::now()).unwrap();
        assert_eq!(g.subject.as_deref(), Some("alice"));
        assert!(
            g.may_subscribe("news") && g.may_subscribe("chat.room1") && g.may_subscribe("chat.")
        );
        assert!(!g.may_subscribe("newsroom") && !g.may_subscribe("chat"));
        assert!(g.may_publish("chat.alice") && !g.may_publish("chat.bob"));
        assert!(g.expires > Instant::now() + Duration::from_secs(50));
        let all = token(json!({"exp": unix() + 60, "subscribe": ["*"]}), b"secret");
        let g = auth.verify(&all, Instant::now()).unwrap();
        assert!(g.may_subscribe("anything") && !g.may_publish("anything"));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let auth = Authenticator::hs256(b"secret", &Required::default());
        let expired = token(json!({"exp": unix() - 60}), b"secret");
        assert!(
            auth.verify(&expired, Instant::now())
                .unwrap_err()
                .contains("xpired")
        );
        let forged = token(json!({"exp": unix() + 60}), b"other secret");
        assert!(auth.verify(&forged, Instant::now()).is_err());
        let no_exp = token(json!({"sub": "x"}), b"secret");
        assert!(auth.verify(&no_exp, Instant::now()).is_err());
        assert!(auth.verify("garbage", Instant::now()).is_err());
        assert!(auth.verify("", Instant::now()).is_err());
        assert!(Authenticator::public_key(b"not pem", "RS256", &Required::default()).is_err());
        assert!(Authenticator::public_key(b"", "HS512", &Required::default()).is_err());
    }

    #[test]
    fn not_before_audience_and_issuer_are_checked() {
        let plain = Authenticator::hs256(b"secret", &Required::default());
        let early = token(json!({"exp": unix() + 60, "nbf": unix() + 60}), b"secret");
        assert!(
            plain.verify(&early, Instant::now()).is_err(),
            "not yet valid"
        );
        let strict = Authenticator::hs256(
            b"secret",
            &Required {
                audience: Some("wsgate".into()),
                issuer: Some("https://auth.example".into()),
            },
        );
        let good = json!({"exp": unix() + 60, "aud": "wsgate", "iss": "https://auth.example"});
        assert!(
            strict
                .verify(&token(good, b"secret"), Instant::now())
                .is_ok()
        );
        for bad in [
            json!({"exp": unix() + 60, "aud": "other", "iss": "https://auth.example"}),
            json!({"exp": unix() + 60, "aud": "wsgate", "iss": "https://evil.example"}),
            json!({"exp": unix() + 60, "iss": "https://auth.example"}),
            json!({"exp": unix() + 60, "aud": "wsgate"}),
        ] {
            assert!(
                strict
                    .verify(&token(bad.clone(), b"secret"), Instant::now())
                    .is_err(),
                "{bad}"
            );
        }
        // without a required audience, a token naming one is still fine
        let aud = token(json!({"exp": unix() + 60, "aud": "x"}), b"secret");
        assert!(plain.verify(&aud, Instant::now()).is_ok());
    }

    #[test]
    fn any_expiry_and_rate_are_taken_without_a_panic() {
        let auth = Authenticator::hs256(b"secret", &Required::default());
        let now = Instant::now();
        let g = auth
            .verify(
                &token(json!({"exp": u64::MAX, "publish_rate": 0}), b"secret"),
                now,
            )
            .expect("valid");
        assert!(g.expires > now + Duration::from_secs(365 * 24 * 3600));
        assert_eq!(g.publish_rate, Some(0));
        for bad in [
            json!({"exp": -1}),
            json!({"exp": 1.5}),
            json!({"exp": "soon"}),
        ] {
            assert!(
                auth.verify(&token(bad.clone(), b"secret"), now).is_err(),
                "{bad}"
            );
        }
        let bad_rate = token(json!({"exp": unix() + 60, "publish_rate": -5}), b"secret");
        assert!(auth.verify(&bad_rate, now).is_err());
    }

    #[test]
    fn tokens_are_found_in_the_query_the_header_or_the_subprotocol() {
        let req = |text: &'static str| {
            parse_request(text.as_bytes(), &Limits::default())
                .unwrap()
                .unwrap()
        };
        let r = req("GET /ws?subscribe=a&token=abc.def%2Dg HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            token_of(&r),
            Some(("abc.def-g".to_string(), TokenSource::Query))
        );
        let r = req("GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n\r\n");
        assert_eq!(token_of(&r), Some(("t0k".to_string(), TokenSource::Header)));
        let r =
            req("GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: bearer, eyJ.x.y\r\n\r\n");
        assert_eq!(
            token_of(&r),
            Some(("eyJ.x.y".to_string(), TokenSource::Subprotocol))
        );
        let r = req("GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: chat\r\n\r\n");
        assert_eq!(token_of(&r), None);
        let r = req("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(token_of(&r), None);
    }
}
