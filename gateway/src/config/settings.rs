//! The machinery behind the settings table: one line per setting in `config/mod.rs` becomes its
//! flag (with its help and default), its TOML key, its field in a group of [`Config`], its
//! default, and its line in `--print-config`. A list of tables (`[[history]]`) declared after
//! the groups becomes a repeatable flag, an array of tables in the file, a `Vec` in [`Config`]
//! (empty by default), and its tables at the end of `--print-config`; its entries are read by
//! their [`Table`] implementation.
//!
//! [`Config`]: super::Config

use std::collections::BTreeMap;
use toml::Spanned;

/// The help of a setting, with its default (or the words that describe it).
macro_rules! help_text {
    ($help:literal, $default:literal, $shown:literal) => {
        concat!($help, " [default: ", $shown, "]")
    };
    ($help:literal, $default:literal) => {
        concat!($help, " [default: ", $default, "]")
    };
}

/// Declares every setting, group by group: `name: Type as Codec = "default" ("shown"),
/// "VALUE";` under a doc line that is its help. The default is written as a user would write it and
/// read with the setting's codec (an empty default leaves an optional setting unset); the
/// shown text, when given, replaces it in `--help`. Then, in `tables { ... }`, each list of
/// tables: `name: Type, "VALUE";` under a doc line that is its help, `Type` a [`Table`].
macro_rules! settings {
    ($(
        #[doc = $gdoc:literal]
        $group:ident: $Group:ident {
            $(
                #[doc = $help:literal]
                $name:ident: $ty:ty as $codec:ty = $default:literal $(($shown:literal))?, $vn:literal;
            )*
        }
    )*
    tables {
        $(
            #[doc = $tdoc:literal]
            $table:ident: $Table:ty, $tvn:literal;
        )*
    }) => {
        /// Every setting, each optional: what the command line or the config file gave.
        #[derive(Debug, Default, Clone)]
        pub struct Settings {
            $($( #[doc = $help] pub $name: Option<$ty>, )*)*
            $( #[doc = $tdoc] pub $table: Option<Vec<$Table>>, )*
        }

        impl clap::Args for Settings {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                cmd$($(.arg(
                    clap::Arg::new(stringify!($name))
                        .long(key_of(stringify!($name)))
                        .value_name($vn)
                        .value_parser(<$codec as Codec>::parse)
                        .help(help_text!($help, $default $(, $shown)?).trim_start())
                ))*)*
                $(.arg(
                    clap::Arg::new(stringify!($table))
                        .long(key_of(stringify!($table)))
                        .value_name($tvn)
                        .action(clap::ArgAction::Append)
                        .value_parser(<$Table as Table>::parse_flag)
                        .help(concat!(
                            $tdoc,
                            " Repeatable; given on the command line, these replace the file's [[",
                            stringify!($table),
                            "]] tables."
                        ).trim_start())
                ))*
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }

        impl clap::FromArgMatches for Settings {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                let mut s = Settings::default();
                s.update_from_arg_matches(m)?;
                Ok(s)
            }

            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                $($(
                    if let Some(v) = m.get_one::<$ty>(stringify!($name)) {
                        self.$name = Some(v.clone());
                    }
                )*)*
                $(
                    if let Some(v) = m.get_many::<$Table>(stringify!($table)) {
                        self.$table = Some(v.cloned().collect());
                    }
                )*
                Ok(())
            }
        }

        impl Settings {
            /// Each setting from `self` where given, else from `lower`.
            pub fn over(self, lower: Settings) -> Settings {
                Settings {
                    $($( $name: self.$name.or(lower.$name), )*)*
                    $( $table: self.$table.or(lower.$table), )*
                }
            }

            /// Every TOML key of a setting (not the tables).
            const KEYS: &'static [&'static str] = &[$($(stringify!($name),)*)*];

            /// Every TOML key that holds a list of tables.
            const TABLES: &'static [&'static str] = &[$(stringify!($table),)*];

            /// Sets the list of tables whose TOML key is `key`, read (with their lines) from
            /// `text`, the whole file. `None` when no list has that key.
            fn set_tables(&mut self, key: &str, text: &str) -> Option<Result<(), String>> {
                $(
                    if key == key_of(stringify!($table)) {
                        return Some(
                            read_tables::<$Table>(key, text).map(|v| self.$table = Some(v)),
                        );
                    }
                )*
                None
            }

            /// Sets the setting whose TOML key is `key` from `value`. `Ok(false)` when no
            /// setting has that key.
            fn set(&mut self, key: &str, value: &toml::Value) -> Result<bool, String> {
                $($(
                    if key == key_of(stringify!($name)) {
                        self.$name = Some(<$codec as Codec>::from_toml(value)?);
                        return Ok(true);
                    }
                )*)*
                Ok(false)
            }
        }

        $(
            #[doc = $gdoc]
            #[derive(Debug, Clone, PartialEq)]
            pub struct $Group {
                $( #[doc = $help] pub $name: $ty, )*
            }
        )*

        /// The resolved configuration the gateway runs with, by group.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( #[doc = $gdoc] pub $group: $Group, )*
            $( #[doc = $tdoc] pub $table: Vec<$Table>, )*
        }

        impl Config {
            /// Each setting as given, or its default.
            fn with_defaults(s: Settings) -> Config {
                Config {
                    $( $group: $Group {
                        $( $name: s.$name.unwrap_or_else(
                            || <$codec as Codec>::default_of($default)
                        ), )*
                    }, )*
                    $( $table: s.$table.unwrap_or_default(), )*
                }
            }

            /// The configuration as TOML, in the form `--config` reads back: every key that
            /// has a value, under a comment naming its group; then each list's tables, in
            /// order (`[[history]]`), under a comment naming the list.
            pub fn to_toml(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str(concat!("# ", stringify!($group), "\n"));
                    $(
                        if let Some(v) = <$codec as Codec>::to_toml(&self.$group.$name) {
                            out.push_str(&format!("{} = {}\n", key_of(stringify!($name)), v));
                        }
                    )*
                    out.push('\n');
                )*
                $(
                    if !self.$table.is_empty() {
                        out.push_str(concat!("# ", stringify!($table), "\n"));
                        for t in &self.$table {
                            out.push_str(&format!("[[{}]]\n", key_of(stringify!($table))));
                            for (k, v) in <$Table as Table>::to_toml(t) {
                                out.push_str(&format!("{k} = {v}\n"));
                            }
                            out.push('\n');
                        }
                    }
                )*
                out
            }
        }
    };
}

/// The TOML key (and flag name) of a setting: its field name in kebab case.
pub(super) fn key_of(field: &str) -> String {
    field.replace('_', "-")
}

/// Where in a file a byte offset is: its line, counted from 1.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The keys of one table as the file gives them, with where each key and value is.
pub(crate) type RawTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// Why one table was refused, and where (a byte offset into the text it came from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableError {
    /// What is wrong.
    pub(crate) why: String,
    /// Where: the offending key or value; `None` for the table as a whole.
    pub(crate) at: Option<usize>,
}

/// One entry of a list of tables (`[[history]]`): read from its keys, printed back as them.
pub(crate) trait Table: Sized + Clone + Send + Sync + 'static {
    /// Reads one table.
    fn from_table(table: &RawTable) -> Result<Self, TableError>;

    /// The keys and values `--print-config` writes, in order; read back by
    /// [`from_table`](Self::from_table) as the same entry.
    fn to_toml(&self) -> Vec<(&'static str, toml::Value)>;

    /// Reads the value of the repeatable flag: the keys of one table as TOML writes an inline
    /// table, with or without its braces (`topics = "chat.*", size = 1000, ttl = "5m"`).
    fn parse_flag(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let doc = if t.starts_with('{') {
            format!("rule = {t}")
        } else {
            format!("rule = {{ {t} }}")
        };
        let not_a_table =
            |why: &str| format!("not the keys of a table (`key = value, ...`): {why}");
        let mut doc: BTreeMap<String, RawTable> =
            toml::from_str(&doc).map_err(|e| not_a_table(e.message()))?;
        match (doc.remove("rule"), doc.is_empty()) {
            (Some(table), true) => Self::from_table(&table).map_err(|e| e.why),
            _ => Err(not_a_table("more than one table")),
        }
    }
}

/// Reads the list of tables under `key` in the TOML `text`: each entry through
/// [`Table::from_table`]; an error names `key`, the entry's number (from 1) and the line.
pub(super) fn read_tables<T: Table>(key: &str, text: &str) -> Result<Vec<T>, String> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// The value of one key of the document, as a list of tables with their places.
    struct Pick<'k>(&'k str);
    type Found = Option<Spanned<Vec<Spanned<RawTable>>>>;

    impl<'de> Visitor<'de> for Pick<'_> {
        type Value = Found;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<String>()? {
                if k == self.0 {
                    found = Some(map.next_value()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    impl<'de> DeserializeSeed<'de> for Pick<'_> {
        type Value = Found;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
            d.deserialize_map(self)
        }
    }

    let list = Pick(key)
        .deserialize(toml::Deserializer::new(text))
        .map_err(|e| {
            let at = e
                .span()
                .map(|r| format!(" (line {})", line_of(text, r.start)))
                .unwrap_or_default();
            format!(
                "`{key}` holds [[{key}]] tables, one per rule: {}{at}",
                e.message()
            )
        })?;
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.into_inner()
        .iter()
        .enumerate()
        .map(|(i, table)| {
            T::from_table(table.get_ref()).map_err(|e| {
                let line = line_of(text, e.at.unwrap_or(table.span().start));
                format!("{key} rule {} (line {line}): {}", i + 1, e.why)
            })
        })
        .collect()
}
