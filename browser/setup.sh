#!/usr/bin/env bash
# What the browser tests need, installed only when missing (run by ./run-tests.sh before
# cargo test; idempotent, and quick once done):
#   - Debian's chromium at /usr/bin/chromium (apt-get; sudo when not root)
#   - playwright-core, pinned in browser/package-lock.json (npm ci when node_modules is missing
#     or the lock file changed since the last install)
set -euo pipefail
cd "$(dirname "$0")"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ! -x /usr/bin/chromium ]; then
  echo "browser/setup.sh: installing Debian's chromium"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
/usr/bin/chromium --version 2>/dev/null | head -n 1 || true

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "browser/setup.sh: installing Node.js and npm"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "browser/setup.sh: node $(node --version) is too old; the browser tests need Node.js 20 or later" >&2
  exit 1
fi

stamp=node_modules/.wsgate-setup-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -d node_modules/playwright-core ]; then
  echo "browser/setup.sh: npm ci"
  # playwright-core downloads no browser; the tests use Debian's chromium
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi
echo "browser/setup.sh: ready (playwright-core $(node -p 'require("./node_modules/playwright-core/package.json").version'), node $(node --version))"
