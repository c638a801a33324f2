#!/usr/bin/env bash
# Installs the servers that the cluster and load balancer tests (gateway/tests/cluster.rs) drive
# for real: redis-server (Redis 7 for sharded pub/sub), haproxy and nginx, from the distribution's
# packages (Debian/Ubuntu apt-get). A fast no-op when all three are there already.
set -euo pipefail

# Where a binary may live: PATH, and the sbin directories a non-root PATH often lacks.
have() {
  command -v "$1" >/dev/null 2>&1 && return 0
  local dir
  for dir in /usr/local/sbin /usr/sbin /sbin; do
    [ -x "$dir/$1" ] && return 0
  done
  return 1
}

# binary -> Debian package
missing=()
for pair in redis-server:redis-server haproxy:haproxy nginx:nginx; do
  bin=${pair%%:*}
  pkg=${pair#*:}
  have "$bin" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deploy/test-setup.sh: installing ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deploy/test-setup.sh: no apt-get here; install ${missing[*]} with this system's package manager" >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "deploy/test-setup.sh: not root and no sudo; install ${missing[*]} as root" >&2
    exit 1
  fi
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

# the tests start their own instances on free loopback ports; a packaged service that the
# install may have started does not get in their way
for pair in redis-server:redis-server haproxy:haproxy nginx:nginx; do
  bin=${pair%%:*}
  if ! have "$bin"; then
    echo "deploy/test-setup.sh: $bin still missing after apt-get install" >&2
    exit 1
  fi
done
