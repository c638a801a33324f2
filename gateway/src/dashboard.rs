//! The operator's dashboard at `/`, the JavaScript client at `/client.js`, and `/stats`, the
//! live numbers the dashboard polls.
//!
//! The page and the client are files in `gateway/src/dashboard/`, embedded in the binary: no
//! external assets, nothing to install next to it.

use crate::worker::Shared;

/// The dashboard page: one HTML file with its styles and script inline.
pub const PAGE: &str = include_str!("dashboard/index.html");

/// The JavaScript client served at `/client.js`.
pub const CLIENT_JS: &str = include_str!("dashboard/client.js");

/// The live numbers as JSON: per-worker counters, topics with subscriber counts.
pub fn stats(shared: &Shared, draining: bool) -> String {
    let topics: Vec<serde_json::Value> = shared
        .hub
        .topics()
        .into_iter()
        .map(|(name, n)| serde_json::json!({ "topic": &*name, "subscribers": n }))
        .collect();
    serde_json::json!({ "draining": draining, "topics": topics }).to_string()
}
