//! `Sec-WebSocket-Extensions` (RFC 6455 section 9.1): the offers a client makes
//! ([`ExtensionOffer`]) and the parser of the header's syntax, which reports each offer and
//! parameter as it reads them.

use super::syntax::{is_ows, is_tchar};
use std::borrow::Cow;

/// One offer of `Sec-WebSocket-Extensions`: `permessage-deflate; client_max_window_bits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer<'a> {
    /// The extension name, e.g. `permessage-deflate`.
    pub name: &'a str,
    /// The parameters in order, as `(name, value)`; the value is `None` for a bare parameter
    /// and unquoted and unescaped when it was sent as a quoted-string.
    pub params: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

impl ExtensionOffer<'_> {
    /// The first parameter named `name` (case-insensitive): `None` when absent,
    /// `Some(None)` when present without a value, `Some(Some(value))` otherwise.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

/// A parameter value as it appears on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) enum ParamValue<'a> {
    /// A bare token, or a quoted-string without escapes (its inside, a token).
    Plain(&'a str),
    /// The inside of a quoted-string with `\` escapes still in it.
    Escaped(&'a str),
}

impl<'a> ParamValue<'a> {
    pub(super) fn unescape(self) -> Cow<'a, str> {
        match self {
            ParamValue::Plain(s) => Cow::Borrowed(s),
            ParamValue::Escaped(s) => {
                let mut out = String::with_capacity(s.len());
                let mut escaped = false;
                for c in s.chars() {
                    if c == '\\' && !escaped {
                        escaped = true;
                    } else {
                        out.push(c);
                        escaped = false;
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}

pub(super) enum ExtEvent<'a> {
    Offer(&'a str),
    Param(&'a str, Option<ParamValue<'a>>),
}

/// Parses one `Sec-WebSocket-Extensions` line (RFC 6455 section 9.1 with the list and
/// whitespace rules of RFC 7230):
///
/// ```text
/// extension-list = 1#extension
/// extension      = extension-token *( OWS ";" OWS extension-param )
/// extension-param = token [ OWS "=" OWS ( token / quoted-string ) ]
/// ```
///
/// A quoted value must be a token once unescaped (RFC 6455 section 9.1). Empty list items are
/// skipped. Reports each offer and parameter to `sink`; `Err(())` on the first syntax error.
pub(super) fn parse_extension_list<'a>(
    s: &'a [u8],
    sink: &mut impl FnMut(ExtEvent<'a>),
) -> std::result::Result<(), ()> {
    let mut c = Cursor { s, i: 0 };
    loop {
        c.skip_ows();
        match c.peek() {
            None => return Ok(()),
            Some(b',') => {
                c.i += 1;
                continue;
            }
            Some(_) => {}
        }
        sink(ExtEvent::Offer(c.token()?));
        loop {
            c.skip_ows();
            match c.peek() {
                None => return Ok(()),
                Some(b',') => {
                    c.i += 1;
                    break;
                }
                Some(b';') => {
                    c.i += 1;
                    c.skip_ows();
                    let name = c.token()?;
                    c.skip_ows();
                    let value = if c.peek() == Some(b'=') {
                        c.i += 1;
                        c.skip_ows();
                        Some(if c.peek() == Some(b'"') {
                            c.quoted_token()?
                        } else {
                            ParamValue::Plain(c.token()?)
                        })
                    } else {
                        None
                    };
                    sink(ExtEvent::Param(name, value));
                }
                Some(_) => return Err(()),
            }
        }
    }
}

/// A read position in a header value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.s.get(self.i..).unwrap_or(&[])
    }

    fn skip_ows(&mut self) {
        self.i += self.rest().iter().take_while(|&&b| is_ows(b)).count();
    }

    /// One or more `tchar`.
    fn token(&mut self) -> std::result::Result<&'a str, ()> {
        let rest = self.rest();
        let len = rest.iter().take_while(|&&b| is_tchar(b)).count();
        if len == 0 {
            return Err(());
        }
        self.i += len;
        std::str::from_utf8(&rest[..len]).map_err(|_| ())
    }

    /// A quoted-string (at its opening `"`) whose unescaped content is a token, as RFC 6455
    /// section 9.1 requires of a quoted parameter value. A quoted-pair may escape any visible
    /// character, but the result must be a token, so only `tchar` may follow a `\`.
    fn quoted_token(&mut self) -> std::result::Result<ParamValue<'a>, ()> {
        let rest = self.rest().get(1..).ok_or(())?;
        let mut j = 0;
        let mut escaped = false;
        let mut chars = 0usize;
        loop {
            match *rest.get(j).ok_or(())? {
                b'"' => break,
                b'\\' => {
                    if !is_tchar(*rest.get(j + 1).ok_or(())?) {
                        return Err(());
                    }
                    escaped = true;
                    j += 2;
                }
                b if is_tchar(b) => j += 1,
                _ => return Err(()),
            }
            chars += 1;
        }
        if chars == 0 {
            return Err(());
        }
        let inner = std::str::from_utf8(&rest[..j]).map_err(|_| ())?;
        self.i += j + 2;
        Ok(if escaped {
            ParamValue::Escaped(inner)
        } else {
            ParamValue::Plain(inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::handshake::test_support::*;

    fn offers(value: &str) -> std::result::Result<Vec<ExtensionOffer<'static>>, ()> {
        let value: &'static str = Box::leak(value.to_owned().into_boxed_str());
        let mut out: Vec<ExtensionOffer<'static>> = Vec::new();
        parse_extension_list(value.as_bytes(), &mut |event| match event {
            ExtEvent::Offer(name) => out.push(ExtensionOffer {
                name,
                params: vec![],
            }),
            ExtEvent::Param(name, value) => out
                .last_mut()
                .unwrap()
                .params
                .push((name, value.map(ParamValue::unescape))),
        })?;
        Ok(out)
    }

    #[test]
    fn extensions_parse_with_params_and_quoted_values() {
        assert_eq!(
            offers("permessage-deflate"),
            Ok(vec![offer("permessage-deflate", &[])])
        );
        assert_eq!(
            offers("permessage-deflate; client_max_window_bits"),
            Ok(vec![offer(
                "permessage-deflate",
                &[("client_max_window_bits", None)]
            )])
        );
        assert_eq!(
            offers(
                "permessage-deflate; client_max_window_bits=10 ;server_no_context_takeover, \
                 permessage-deflate;client_max_window_bits = \"12\", x-foo"
            ),
            Ok(vec![
                offer(
                    "permessage-deflate",
                    &[
                        ("client_max_window_bits", Some("10")),
                        ("server_no_context_takeover", None)
                    ]
                ),
                offer(
                    "permessage-deflate",
                    &[("client_max_window_bits", Some("12"))]
                ),
                offer("x-foo", &[]),
            ])
        );
        let escaped = offers(r#"x; a="\1\5", y"#).unwrap();
        assert_eq!(escaped[0].param("a"), Some(Some("15")));
        assert!(matches!(escaped[0].params[0].1, Some(Cow::Owned(_))));
        let plain = offers(r#"x; a="15""#).unwrap();
        assert!(matches!(plain[0].params[0].1, Some(Cow::Borrowed("15"))));
        assert_eq!(
            offers(" , a ,, b ,"),
            Ok(vec![offer("a", &[]), offer("b", &[])])
        );
        assert_eq!(offers(""), Ok(vec![]));
    }

    #[test]
    fn malformed_extensions_are_rejected() {
        for value in [
            ";a",
            "a;",
            "a; ",
            "a;;b",
            "a; b=",
            "a; =1",
            "a b",
            "a; b=1 2",
            "a; b=\"\"",
            "a; b=\"1 2\"",
            "a; b=\"1,2\"",
            "a; b=\"1",
            "a; b=\"1\\\"",
            "a; b=\"\\ \"",
            "a; b=\"1\"x",
            "a; b=\"é\"",
            "\"a\"",
            "a=1",
            "a; b==1",
            "a; b=1=2",
        ] {
            assert_eq!(offers(value), Err(()), "{value:?}");
            let req = upgrade_with(&[], &format!("Sec-WebSocket-Extensions: {value}\r\n"));
            let request = match parse(req.as_bytes()) {
                Ok(Some(r)) => r,
                _ => continue, // bytes httparse itself refuses
            };
            assert_eq!(
                request.validate_upgrade().unwrap_err(),
                Error::BadHeader("Sec-WebSocket-Extensions"),
                "{value:?}"
            );
        }
    }
}
