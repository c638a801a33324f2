#!/usr/bin/env bash
# Installs what the client suites need (gateway/tests/clients.rs runs them), only what is missing:
#   clients/python/.venv       a virtualenv with clients/python/requirements.txt (Python websockets)
#   clients/node/node_modules  `npm ci` of clients/node/package-lock.json (Node ws)
# A stamp file holding the hash of the requirements (lockfile) each was installed from makes a
# second run a no-op that takes well under a second; editing either file reinstalls that one.
set -euo pipefail
cd "$(dirname "$0")"

hash_of() { sha256sum "$@" | sha256sum | cut -d' ' -f1; }

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
  else
    echo "clients/setup.sh: please install $* (not root or no apt-get here)" >&2
    exit 1
  fi
}

# ---- Python websockets ---------------------------------------------------------------------
venv=python/.venv
if ! command -v python3 >/dev/null 2>&1; then
  apt_install python3 python3-venv
fi
want="$(hash_of python/requirements.txt) $(python3 -c 'import sys; print(sys.version.split()[0])')"
stamp="$venv/.requirements.stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import websockets' 2>/dev/null; then
  echo "clients/setup.sh: $venv is up to date"
else
  echo "clients/setup.sh: creating $venv and installing python/requirements.txt"
  rm -rf "$venv"
  if ! python3 -m venv "$venv"; then
    # Debian's python3 keeps ensurepip in a separate package
    rm -rf "$venv"
    apt_install python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
  "$venv/bin/python" -c 'import websockets; print("clients/setup.sh: websockets", websockets.__version__)'
  echo "$want" >"$stamp"
fi

# ---- Node ws --------------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
want="$(hash_of node/package.json node/package-lock.json) $(node --version)"
stamp=node/node_modules/.lockfile.stamp
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f node/node_modules/ws/package.json ]; then
  echo "clients/setup.sh: node/node_modules is up to date"
else
  echo "clients/setup.sh: npm ci in clients/node"
  (cd node && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
fi
