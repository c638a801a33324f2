//! The dashboard's HTTP side without a browser: `/` and `/client.js` served (and `/` off with
//! `--dashboard false`), `/stats` as JSON that counts what clients did.

mod common;
use common::*;

use std::time::Duration;

fn stats(gw: &Gateway) -> serde_json::Value {
    let r = get(gw.addr, "/stats");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[test]
fn page_and_client_are_served_and_the_page_can_be_switched_off() {
    let gw = Gateway::start(&[]);
    for path in ["/", "/index.html"] {
        let r = get(gw.addr, path);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        let page = r.text();
        assert!(page.contains("wsgate dashboard"));
        assert!(page.contains("/stats") && page.contains("/client.js"));
        // self-contained: no external assets
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
    let js = get(gw.addr, "/client.js");
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("Content-Type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.text().contains("class WsgateClient"));

    let off = Gateway::start(&["--dashboard", "false"]);
    assert_eq!(get(off.addr, "/").status, 404);
    assert_eq!(get(off.addr, "/index.html").status, 404);
    // the client and the numbers stay
    assert_eq!(get(off.addr, "/client.js").status, 200);
    assert_eq!(get(off.addr, "/stats").status, 200);
}

#[test]
fn stats_count_connections_messages_and_topics() {
    let gw = Gateway::start(&["--workers", "2"]);
    let before = stats(&gw);
    assert_eq!(before["workers"].as_array().unwrap().len(), 2);
    assert_eq!(before["draining"], false);
    assert!(before["now_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(before["topics_total"], 0);

    let mut subs: Vec<Ws> = (0..3).map(|_| ws(gw.addr, "/ws?subscribe=alpha")).collect();
    let _beta = ws(gw.addr, "/ws?subscribe=beta,alpha");
    let mut publisher = ws(gw.addr, "/ws");
    for i in 0..5 {
        ws_send(
            &mut publisher,
            &format!(r#"{{"type":"publish","topic":"alpha","data":{i},"id":{i}}}"#),
        );
        assert_eq!(
            ws_text(&mut publisher),
            format!(r#"{{"type":"ack","id":{i}}}"#)
        );
    }
    for s in &mut subs {
        for i in 0..5 {
            assert_eq!(
                ws_text(s),
                format!(r#"{{"type":"message","topic":"alpha","data":{i}}}"#)
            );
        }
    }

    let after = stats(&gw);
    let t = &after["totals"];
    assert!(t["connections_open"].as_i64().unwrap() >= 5, "{after}");
    assert_eq!(after["sessions"], 5, "{after}");
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(n(t, "publishes") - n(&before["totals"], "publishes"), 5);
    assert_eq!(
        n(t, "fanout_deliveries") - n(&before["totals"], "fanout_deliveries"),
        20
    );
    assert!(n(t, "messages_in") >= 5 && n(t, "bytes_in") > 0 && n(t, "bytes_out") > 0);
    // totals are the sum of the workers
    let workers = after["workers"].as_array().unwrap();
    for key in [
        "connections_total",
        "messages_in",
        "messages_out",
        "bytes_in",
    ] {
        assert_eq!(
            workers.iter().map(|w| n(w, key)).sum::<u64>(),
            n(t, key),
            "{key}"
        );
    }
    assert_eq!(
        after["topics"],
        serde_json::json!([
            {"topic": "alpha", "subscribers": 4},
            {"topic": "beta", "subscribers": 1},
        ])
    );
    assert_eq!(after["topics_total"], 2);

    // a topic without subscribers leaves the list
    drop(_beta);
    assert!(eventually(Duration::from_secs(5), || {
        stats(&gw)["topics_total"] == 1
    }));
}
