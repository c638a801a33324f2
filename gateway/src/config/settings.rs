//! The machinery behind the settings table: one line per setting in `config/mod.rs` becomes its
//! flag (with its help and default), its TOML key, its field in a group of [`Config`], its
//! default, and its line in `--print-config`.
//!
//! [`Config`]: super::Config

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
/// shown text, when given, replaces it in `--help`.
macro_rules! settings {
    ($(
        #[doc = $gdoc:literal]
        $group:ident: $Group:ident {
            $(
                #[doc = $help:literal]
                $name:ident: $ty:ty as $codec:ty = $default:literal $(($shown:literal))?, $vn:literal;
            )*
        }
    )*) => {
        /// Every setting, each optional: what the command line or the config file gave.
        #[derive(Debug, Default, Clone)]
        pub struct Settings {
            $($( #[doc = $help] pub $name: Option<$ty>, )*)*
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
                Ok(())
            }
        }

        impl Settings {
            /// Each setting from `self` where given, else from `lower`.
            pub fn over(self, lower: Settings) -> Settings {
                Settings { $($( $name: self.$name.or(lower.$name), )*)* }
            }

            /// Every TOML key.
            const KEYS: &'static [&'static str] = &[$($(stringify!($name),)*)*];

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
                }
            }

            /// The configuration as TOML, in the form `--config` reads back: every key that
            /// has a value, under a comment naming its group.
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
