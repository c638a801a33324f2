//! End-to-end tests of the command line and the config file: bad input exits 2 naming what was
//! wrong; `--print-config` prints what `--config` reads back.

mod common;

use common::{BIN, Gateway};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary to completion (it must not start serving), with a time bound.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wsgate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wsgate {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// Asserts exit code 2 and a message on stderr that contains every one of `names`.
fn fails_naming(args: &[&str], names: &[&str]) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    for name in names {
        assert!(
            stderr.contains(name),
            "{args:?}: stderr does not name {name:?}:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty(), "{args:?}: printed to stdout");
}

/// A file in this test target's scratch directory.
fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn bad_flags_and_values_exit_2_naming_the_flag() {
    fails_naming(&["--no-such-flag"], &["--no-such-flag"]);
    fails_naming(
        &["--max-message-size", "lots"],
        &["--max-message-size", "lots"],
    );
    fails_naming(&["--workers", "0"], &["--workers"]);
    fails_naming(&["--workers", "many"], &["--workers"]);
    fails_naming(&["--listen", "nowhere"], &["--listen"]);
    fails_naming(&["--handshake-timeout", "soon"], &["--handshake-timeout"]);
    fails_naming(&["--echo", "maybe"], &["--echo"]);
    fails_naming(&["--io-uring", "sometimes"], &["--io-uring"]);
    // values that parse but make no sense
    fails_naming(&["--max-message-size", "3GiB"], &["--max-message-size"]);
    fails_naming(&["--outbox-limit", "10"], &["--outbox-limit"]);
    fails_naming(
        &["--ping-interval", "10s", "--idle-timeout", "5s"],
        &["--idle-timeout"],
    );
    fails_naming(&["--log", "wsgate=[["], &["--log"]);
    // the cluster's settings
    fails_naming(&["--redis", "localhost:6379"], &["--redis", "redis://"]);
    fails_naming(&["--redis", "rediss://10.0.0.1"], &["--redis", "TLS"]);
    fails_naming(&["--node-id", "two words"], &["--node-id"]);
    fails_naming(&["--redis-max-pending", "1KiB"], &["--redis-max-pending"]);
    fails_naming(&["--redis-sharded", "perhaps"], &["--redis-sharded"]);
    fails_naming(&["--forwarded-for", "sometimes"], &["--forwarded-for"]);
    // settings that would leave a door open
    fails_naming(&["--jwt-secret", "s"], &["--api-key", "--publish-open"]);
    fails_naming(
        &["--proxy-protocol", "true"],
        &["--proxy-protocol", "--trusted-proxies"],
    );
    fails_naming(
        &["--forwarded-for", "true"],
        &["--forwarded-for", "--trusted-proxies"],
    );
    fails_naming(&["--ipv6-prefix", "129"], &["--ipv6-prefix"]);
    fails_naming(&["--inbox-limit", "1KiB"], &["--inbox-limit"]);
    // history
    fails_naming(
        &["--history-memory", "512KiB"],
        &["--history-memory", "1MiB"],
    );
    fails_naming(&["--history-memory", "much"], &["--history-memory"]);
    fails_naming(&["--history", "chat.*"], &["--history", "key = value"]);
    fails_naming(
        &["--history", "topics = \"chat.*.x\", size = 1, ttl = 1"],
        &["--history", "may only end"],
    );
    fails_naming(
        &[
            "--history",
            "topics = \"*\", size = 1, ttl = 1",
            "--history",
            "topics = \"a\", size = 1, ttl = 1",
        ],
        &["history rule 2", "never applies"],
    );
}

#[test]
fn bad_history_rules_exit_2_naming_the_rule_line_and_why() {
    let good = "workers = 1\n\n[[history]]\ntopics = \"chat.*\"\nsize = 1000\nttl = \"5m\"\n\n";
    for (name, rule, names) in [
        (
            "star_inside",
            "[[history]]\ntopics = \"chat.*.x\"\nsize = 1\nttl = 1\n",
            &["history rule 2 (line 9)", "chat.*.x", "may only end"][..],
        ),
        (
            "empty_pattern",
            "[[history]]\ntopics = \"\"\nsize = 1\nttl = 1\n",
            &["history rule 2 (line 9)", "empty pattern"],
        ),
        (
            "zero_size",
            "[[history]]\ntopics = \"a\"\nsize = 0\nttl = 1\n",
            &[
                "history rule 2 (line 10)",
                "size 0",
                "between 1 and 1000000",
            ],
        ),
        (
            "long_ttl",
            "[[history]]\ntopics = \"a\"\nsize = 1\nttl = \"2d\"\n",
            &["history rule 2 (line 11)", "ttl \"2d\"", "at most 24h"],
        ),
        (
            "missing_ttl",
            "[[history]]\ntopics = \"a\"\nsize = 1\n",
            &["history rule 2 (line 8)", "`ttl` is missing"],
        ),
        (
            "unknown_key",
            "[[history]]\ntopics = \"a\"\nsize = 1\nttl = 1\nmax-age = 1\n",
            &[
                "history rule 2 (line 12)",
                "unknown key `max-age`",
                "topics, size and ttl",
            ],
        ),
        (
            "setting_after",
            "[[history]]\ntopics = \"a\"\nsize = 1\nttl = 1\nlisten = \"127.0.0.1:0\"\n",
            &[
                "unknown key `listen`",
                "settings go before the first [[history]]",
            ],
        ),
        (
            "shadowed",
            "[[history]]\ntopics = \"chat.room\"\nsize = 1\nttl = 1\n",
            &["history rule 2", "never applies", "rule 1"],
        ),
    ] {
        let file = format!("history_{name}.toml");
        let path = scratch(&file, &format!("{good}{rule}"));
        let mut expect = names.to_vec();
        if name != "shadowed" {
            expect.push(&file);
        }
        fails_naming(&["--config", path.to_str().unwrap()], &expect);
    }
    let not_tables = scratch("history_string.toml", "history = \"chat.*\"\n");
    fails_naming(
        &["--config", not_tables.to_str().unwrap()],
        &["history_string.toml", "[[history]]", "line 1"],
    );
}

#[test]
fn bad_config_files_exit_2_naming_the_file_and_key() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-dir/wsgate.toml");
    fails_naming(
        &["--config", missing.to_str().unwrap()],
        &["no-such-dir/wsgate.toml"],
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fails_naming(&["--config", dir.to_str().unwrap()], &["config"]);

    let typo = scratch(
        "typo.toml",
        "listen = \"127.0.0.1:0\"\nmax-mesage-size = 5\n",
    );
    fails_naming(
        &["--config", typo.to_str().unwrap()],
        &["typo.toml", "max-mesage-size", "line 2"],
    );
    let bad_size = scratch("bad_size.toml", "workers = 1\noutbox-limit = \"huge\"\n");
    fails_naming(
        &["--config", bad_size.to_str().unwrap()],
        &["bad_size.toml", "outbox-limit", "huge"],
    );
    let bad_type = scratch("bad_type.toml", "workers = \"two\"\n");
    fails_naming(
        &["--config", bad_type.to_str().unwrap()],
        &["bad_type.toml", "workers"],
    );
    let not_toml = scratch("not_toml.toml", "this is [not toml\n");
    fails_naming(
        &["--config", not_toml.to_str().unwrap()],
        &["not_toml.toml"],
    );
    // a file whose values parse but do not make sense together
    let nonsense = scratch(
        "nonsense.toml",
        "ping-interval = \"10s\"\nidle-timeout = \"5s\"\n",
    );
    fails_naming(&["--config", nonsense.to_str().unwrap()], &["idle-timeout"]);
}

#[test]
fn printed_config_reads_back_the_same() {
    let first = run(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "3",
        "--outbox-limit",
        "64KiB",
        "--max-message-size",
        "1000",
        "--ping-interval",
        "1m 30s",
        "--idle-timeout",
        "3m",
        "--echo",
        "false",
        "--api-key",
        "s3\"cret\\key",
        "--log",
        "wsgate=debug,info",
        "--redis",
        "redis://:pw@10.0.0.7:6380",
        "--redis-sharded",
        "true",
        "--node-id",
        "edge-1",
        "--forwarded-for",
        "true",
        "--trusted-proxies",
        "10.0.0.2/32",
        "--dashboard",
        "false",
        "--history-memory",
        "8MiB",
        "--history",
        "topics = \"chat.vip.*\", size = 5000, ttl = \"1h\"",
        "--history",
        "{ topics = \"a \\\"quoted\\\" *\", size = 10, ttl = 90 }",
        "--history",
        "topics = \"*\", size = 100, ttl = \"2m\"",
        "--print-config",
    ]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8(first.stdout).expect("UTF-8");
    assert!(text.contains("workers = 3"), "{text}");
    assert!(text.contains("outbox-limit = \"64KiB\""), "{text}");
    assert!(text.contains("echo = false"), "{text}");
    assert!(
        text.contains("redis = \"redis://:pw@10.0.0.7:6380\""),
        "{text}"
    );
    assert!(text.contains("redis-sharded = true"), "{text}");
    assert!(text.contains("node-id = \"edge-1\""), "{text}");
    assert!(text.contains("dashboard = false"), "{text}");
    assert!(text.contains("history-memory = \"8MiB\"\n"), "{text}");
    assert!(
        text.ends_with(
            "# history\n\
             [[history]]\ntopics = \"chat.vip.*\"\nsize = 5000\nttl = \"1h\"\n\n\
             [[history]]\ntopics = 'a \"quoted\" *'\nsize = 10\nttl = \"1m 30s\"\n\n\
             [[history]]\ntopics = \"*\"\nsize = 100\nttl = \"2m\"\n\n"
        ),
        "{text}"
    );
    let path = scratch("printed.toml", &text);
    let again = run(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);

    // rules written by hand in a file print back as they read
    let path = scratch(
        "rules.toml",
        "workers = 2\n[[history]]\ntopics = \"orders\"\nsize = \"10\"\nttl = 30\n\n\
         [[history]]\n# a comment\nttl = \"5m\"\ntopics = \"chat.*\"\nsize = 1000\n",
    );
    let printed = run(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert_eq!(printed.status.code(), Some(0));
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(
        text.ends_with(
            "# history\n[[history]]\ntopics = \"orders\"\nsize = 10\nttl = \"30s\"\n\n\
             [[history]]\ntopics = \"chat.*\"\nsize = 1000\nttl = \"5m\"\n\n"
        ),
        "{text}"
    );
    let path = scratch("rules_printed.toml", &text);
    let again = run(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
    // flags replace the file's rules
    let replaced = run(&[
        "--config",
        path.to_str().unwrap(),
        "--history",
        "topics = \"x\", size = 1, ttl = 1",
        "--print-config",
    ]);
    let text = String::from_utf8(replaced.stdout).unwrap();
    assert!(
        text.ends_with("# history\n[[history]]\ntopics = \"x\"\nsize = 1\nttl = \"1s\"\n\n"),
        "{text}"
    );

    // the defaults round-trip too
    let defaults = run(&["--print-config"]);
    assert_eq!(defaults.status.code(), Some(0));
    let text = String::from_utf8(defaults.stdout).unwrap();
    let path = scratch("defaults.toml", &text);
    let again = run(&["--config", path.to_str().unwrap(), "--print-config"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn the_config_file_is_used_and_flags_win_over_it() {
    let path = scratch(
        "serve.toml",
        "listen = \"127.0.0.1:1\"\necho = false\nmax-message-size = \"1KiB\"\n",
    );
    let gw = Gateway::start_raw(&[
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    // echo = false from the file
    let r = common::http(gw.addr, common::upgrade_request("/echo").as_bytes());
    assert_eq!(r.status, 404, "{r:?}");
    // the message limit from the file
    let mut ws = common::RawWs::connect(gw.addr, "/ws");
    ws.send(true, wsgate_core::frame::OpCode::Binary, &[1u8; 1025]);
    ws.expect_close_now(1009);
}
