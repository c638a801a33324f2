//! How each kind of setting is written: parsed from a flag or a TOML value, printed back as
//! TOML. One [`Codec`] per kind; the settings table names the codec of each setting.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use wsgate_core::units;

/// The way one kind of setting is read and written.
pub(crate) trait Codec {
    /// The resolved value.
    type Value: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static;

    /// Parses the text of a flag (or of a TOML string).
    fn parse(s: &str) -> Result<Self::Value, String>;

    /// Reads a TOML value: strings through [`parse`](Self::parse), and the TOML types the
    /// kind has natively (numbers, booleans, arrays).
    fn from_toml(v: &toml::Value) -> Result<Self::Value, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            other => Err(format!("expected a string, found a {}", other.type_str())),
        }
    }

    /// The value as `--print-config` writes it; `None` leaves the key out.
    fn to_toml(v: &Self::Value) -> Option<toml::Value>;

    /// The default, from the text the settings table gives (an empty text means unset, for
    /// the kinds that can be unset).
    fn default_of(text: &str) -> Self::Value {
        Self::parse(text).unwrap_or_else(|e| panic!("the default '{text}' does not parse: {e}"))
    }
}

fn whole_number(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
        other => Err(format!("expected a number, found a {}", other.type_str())),
    }
}

/// A size in bytes (`64KiB`, `8MiB`, or a number of bytes), as `T`.
pub(crate) struct Size<T>(std::marker::PhantomData<T>);

impl<T> Codec for Size<T>
where
    T: TryFrom<u64> + TryInto<u64> + Copy + PartialEq + std::fmt::Debug + Send + Sync + 'static,
{
    type Value = T;

    fn parse(s: &str) -> Result<T, String> {
        let n = units::parse_size(s)?;
        T::try_from(n).map_err(|_| format!("'{s}' is too large"))
    }

    fn from_toml(v: &toml::Value) -> Result<T, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            v => T::try_from(whole_number(v)?).map_err(|_| "too large".to_string()),
        }
    }

    fn to_toml(v: &T) -> Option<toml::Value> {
        let n: u64 = (*v).try_into().unwrap_or(u64::MAX);
        Some(toml::Value::String(units::format_size(n)))
    }
}

/// A setting of kind `C` that may be left unset (empty text unsets it; its default then
/// follows another setting, or the feature is off).
pub(crate) struct Optional<C>(std::marker::PhantomData<C>);

impl<C: Codec> Codec for Optional<C> {
    type Value = Option<C::Value>;

    fn parse(s: &str) -> Result<Option<C::Value>, String> {
        if s.is_empty() {
            return Ok(None);
        }
        C::parse(s).map(Some)
    }

    fn from_toml(v: &toml::Value) -> Result<Option<C::Value>, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            v => C::from_toml(v).map(Some),
        }
    }

    fn to_toml(v: &Option<C::Value>) -> Option<toml::Value> {
        v.as_ref().and_then(C::to_toml)
    }

    fn default_of(text: &str) -> Option<C::Value> {
        Self::parse(text).unwrap_or_else(|e| panic!("the default '{text}' does not parse: {e}"))
    }
}

/// A duration (`10s`, `500ms`, `1m 30s`, or a number of seconds).
pub(crate) struct Span;

impl Codec for Span {
    type Value = Duration;

    fn parse(s: &str) -> Result<Duration, String> {
        units::parse_duration(s)
    }

    fn from_toml(v: &toml::Value) -> Result<Duration, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            v => whole_number(v).map(Duration::from_secs),
        }
    }

    fn to_toml(v: &Duration) -> Option<toml::Value> {
        Some(toml::Value::String(units::format_duration(*v)))
    }
}

/// A whole number.
pub(crate) struct Count<T>(std::marker::PhantomData<T>);

impl<T> Codec for Count<T>
where
    T: TryFrom<u64> + TryInto<u64> + std::str::FromStr + Copy + PartialEq,
    T: std::fmt::Debug + Send + Sync + 'static,
{
    type Value = T;

    fn parse(s: &str) -> Result<T, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number"))
    }

    fn from_toml(v: &toml::Value) -> Result<T, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            v => T::try_from(whole_number(v)?).map_err(|_| "too large".to_string()),
        }
    }

    fn to_toml(v: &T) -> Option<toml::Value> {
        let n: u64 = (*v).try_into().unwrap_or(u64::MAX);
        Some(toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)))
    }
}

/// The number of workers: 1 to 1024, or `auto` for one per core.
pub(crate) struct Workers;

/// The most workers a node runs.
pub(crate) const MAX_WORKERS: usize = 1024;

impl Codec for Workers {
    type Value = usize;

    fn parse(s: &str) -> Result<usize, String> {
        if s.trim() == "auto" {
            return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
        }
        let n: usize = Count::<usize>::parse(s)?;
        if !(1..=MAX_WORKERS).contains(&n) {
            return Err(format!("{n} is not in 1..={MAX_WORKERS}"));
        }
        Ok(n)
    }

    fn from_toml(v: &toml::Value) -> Result<usize, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            v => Self::parse(&whole_number(v)?.to_string()),
        }
    }

    fn to_toml(v: &usize) -> Option<toml::Value> {
        Count::<usize>::to_toml(v)
    }
}

/// `true` or `false`.
pub(crate) struct Flag;

impl Codec for Flag {
    type Value = bool;

    fn parse(s: &str) -> Result<bool, String> {
        match s.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("'{s}' is not true or false")),
        }
    }

    fn from_toml(v: &toml::Value) -> Result<bool, String> {
        match v {
            toml::Value::Boolean(b) => Ok(*b),
            toml::Value::String(s) => Self::parse(s),
            other => Err(format!(
                "expected true or false, found a {}",
                other.type_str()
            )),
        }
    }

    fn to_toml(v: &bool) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*v))
    }
}

/// Text.
pub(crate) struct Text;

impl Codec for Text {
    type Value = String;

    fn parse(s: &str) -> Result<String, String> {
        Ok(s.to_string())
    }

    fn to_toml(v: &String) -> Option<toml::Value> {
        Some(toml::Value::String(v.clone()))
    }
}

/// A file.
pub(crate) struct File;

impl Codec for File {
    type Value = PathBuf;

    fn parse(s: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(s))
    }

    fn to_toml(v: &PathBuf) -> Option<toml::Value> {
        Some(toml::Value::String(v.display().to_string()))
    }
}

/// An address and port (`0.0.0.0:8080`, `[::]:8080`).
pub(crate) struct Address;

impl Codec for Address {
    type Value = SocketAddr;

    fn parse(s: &str) -> Result<SocketAddr, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an address like 0.0.0.0:8080"))
    }

    fn to_toml(v: &SocketAddr) -> Option<toml::Value> {
        Some(toml::Value::String(v.to_string()))
    }
}

/// A comma-separated list (or a TOML array of strings); blanks are dropped.
pub(crate) struct List;

impl Codec for List {
    type Value = Vec<String>;

    fn parse(s: &str) -> Result<Vec<String>, String> {
        Ok(s.split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_string)
            .collect())
    }

    fn from_toml(v: &toml::Value) -> Result<Vec<String>, String> {
        match v {
            toml::Value::String(s) => Self::parse(s),
            toml::Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(s) => out.extend(Self::parse(s)?),
                        other => {
                            return Err(format!(
                                "expected a list of strings, found a {}",
                                other.type_str()
                            ));
                        }
                    }
                }
                Ok(out)
            }
            other => Err(format!("expected a list, found a {}", other.type_str())),
        }
    }

    fn to_toml(v: &Vec<String>) -> Option<toml::Value> {
        Some(toml::Value::Array(
            v.iter().cloned().map(toml::Value::String).collect(),
        ))
    }
}

/// A list of networks (`10.0.0.0/8`; a plain address is a single host).
pub(crate) struct Networks;

impl Networks {
    fn one(s: &str) -> Result<ipnet::IpNet, String> {
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| format!("'{s}' is not a network like 10.0.0.0/8"))
    }
}

impl Codec for Networks {
    type Value = Vec<ipnet::IpNet>;

    fn parse(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
        List::parse(s)?.iter().map(|n| Self::one(n)).collect()
    }

    fn from_toml(v: &toml::Value) -> Result<Vec<ipnet::IpNet>, String> {
        List::from_toml(v)?.iter().map(|n| Self::one(n)).collect()
    }

    fn to_toml(v: &Vec<ipnet::IpNet>) -> Option<toml::Value> {
        Some(toml::Value::Array(
            v.iter()
                .map(|n| toml::Value::String(n.to_string()))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every printed value reads back as itself.
    fn round_trip<C: Codec>(v: C::Value) {
        if let Some(t) = C::to_toml(&v) {
            assert_eq!(C::from_toml(&t), Ok(v));
        }
    }

    #[test]
    fn values_round_trip_through_toml() {
        round_trip::<Size<u64>>(64 << 20);
        round_trip::<Size<usize>>(1000);
        round_trip::<Optional<Size<u64>>>(Some(4096));
        round_trip::<Optional<Size<u64>>>(None);
        round_trip::<Span>(Duration::from_millis(1500));
        round_trip::<Count<u32>>(7);
        round_trip::<Workers>(3);
        round_trip::<Flag>(false);
        round_trip::<Optional<Text>>(Some("a \"quoted\" \\ text".into()));
        round_trip::<Optional<File>>(Some("/etc/key.pem".into()));
        round_trip::<Address>("[::1]:8080".parse().unwrap());
        round_trip::<List>(vec!["https://a.example".into(), "*.b.example".into()]);
        round_trip::<Networks>(Networks::parse("10.0.0.0/8, 127.0.0.1").unwrap());
    }

    #[test]
    fn toml_takes_native_types_and_strings() {
        assert_eq!(Size::<u64>::from_toml(&toml::Value::Integer(5)), Ok(5));
        assert!(Size::<u64>::from_toml(&toml::Value::Integer(-5)).is_err());
        assert_eq!(
            Span::from_toml(&toml::Value::Integer(3)),
            Ok(Duration::from_secs(3))
        );
        assert_eq!(Flag::from_toml(&toml::Value::Boolean(true)), Ok(true));
        assert!(Workers::from_toml(&toml::Value::String("two".into())).is_err());
        assert!(Workers::parse("0").is_err() && Workers::parse("1025").is_err());
        assert!(Workers::parse("auto").unwrap() >= 1);
        assert_eq!(List::parse(" a, ,b "), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(Optional::<Text>::parse(""), Ok(None));
        assert_eq!(Optional::<Count<u32>>::parse("7"), Ok(Some(7)));
        assert_eq!(Optional::<Count<u32>>::default_of(""), None);
        assert!(
            Networks::parse("10.0.0.0/8,nope")
                .unwrap_err()
                .contains("'nope'")
        );
        assert_eq!(
            Size::<u32>::parse("5GiB"),
            Err("'5GiB' is too large".into())
        );
    }
}
