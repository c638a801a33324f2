#!/usr/bin/env bash
# The one command that tests wsgate on a fresh machine: installs what the tests need, then runs
# formatting, lint and every test of the workspace (unit, integration, doc tests, and each
# criterion bench once in test mode).
set -euo pipefail
cd "$(dirname "$0")"

# Toolchain components the checks use.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

# Servers and clients the integration tests drive for real: Redis, HAProxy and nginx (cluster
# and load balancer tests), Chromium (browser tests), Python websockets and Node ws (client
# suites). Each setup script installs only what is missing.
for setup in deploy/test-setup.sh clients/setup.sh browser/setup.sh; do
  if [ -x "$setup" ]; then
    echo "== $setup"
    "$setup"
  fi
done

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --all-targets --locked
cargo test -p wsgate --features fault-injection --test faults --locked
cargo test --workspace --doc --locked

echo "== Autobahn TestSuite (cases 1-7, 9, 10 and a permessage-deflate subset of 12, 13 against /echo)"
cargo build --release -p wsgate --locked
gateway/tests/autobahn/run.sh target/release/wsgate
