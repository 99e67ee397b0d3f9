#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the real-client suite
# (boto3, the AWS CLI, slack_sdk) against the binary those tests built, with the `release`
# profile that `cargo run --release` uses too, so one build serves both (see Cargo.toml).
#
# The client suite's Python packages go into a virtual environment this script creates
# (`.venv-clients`, or $CLIENTS_VENV), never into the system interpreter: a stock Debian
# refuses `pip install` there (externally-managed-environment). The JavaScript clients
# (tests/clients/js) come from its package-lock.json with `npm ci`, on Node.js 20.18 or later.
#
# SETUP_ONLY=1 stops after installing what the tests need (scripts/check-readme-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# The alert tests start a private rsyslogd (the distribution's package) on a loopback port.
if ! command -v rsyslogd >/dev/null 2>&1 && [ ! -x /usr/sbin/rsyslogd ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y --no-install-recommends rsyslog
  else
    echo "test-all: rsyslogd is missing; install it first: sudo apt-get install -y rsyslog" >&2
    exit 1
  fi
fi
# The viewer's browser tests drive the distribution's Chromium (Playwright never downloads one).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y --no-install-recommends chromium
  else
    echo "test-all: chromium is missing; install it first: sudo apt-get install -y chromium" >&2
    exit 1
  fi
fi
# The central-store tests (SPEC §9) start private PostgreSQL clusters, each on a loopback port
# in a temporary directory, from the distribution's server programs (initdb, pg_ctl); the
# system cluster the package may create is never used.
have_initdb() {
  local d
  d="$(pg_config --bindir 2>/dev/null || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then return 0; fi
  for d in /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ]; then return 0; fi
  done
  command -v initdb >/dev/null 2>&1
}
if ! have_initdb; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y --no-install-recommends postgresql
  else
    echo "test-all: PostgreSQL's server programs are missing; install them first: sudo apt-get install -y --no-install-recommends postgresql" >&2
    exit 1
  fi
fi
# Debian's python3 makes virtual environments only with python3-venv (ensurepip).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y --no-install-recommends python3-venv
  else
    echo "test-all: python3 cannot make a virtual environment; install it first: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
fi
venv="${CLIENTS_VENV:-$PWD/.venv-clients}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
# The JavaScript clients need Node.js 20.18+ (@slack/web-api 8, the AWS SDK v3, undici 7).
# Debian bookworm's nodejs is 18: then Node.js 20 comes from the npm registry's node-linux-*
# package (the release binary, nothing downloaded at install time) into .node/.
node_ok() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)'
}
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y --no-install-recommends nodejs npm
  else
    echo "test-all: Node.js and npm are missing; install them first: sudo apt-get install -y nodejs npm" >&2
    exit 1
  fi
fi
if ! node_ok; then
  case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) arch="$(uname -m)" ;; esac
  npm install --silent --no-save --no-package-lock --prefix "$PWD/.node" "node-linux-$arch@20.20.2"
  export PATH="$PWD/.node/node_modules/node-linux-$arch/bin:$PATH"
  node_ok || { echo "test-all: Node.js 20.18 or later is needed for tests/clients/js" >&2; exit 1; }
fi
(cd tests/clients/js && npm ci --no-audit --no-fund --loglevel=error)
if [ "${SETUP_ONLY:-0}" = 1 ]; then
  echo "test-all: set-up done (SETUP_ONLY=1): $("$venv/bin/python" --version), node $(node --version)"
  exit 0
fi
cargo test --release --locked
bin="$PWD/target/release/retention-proxy"
RETENTION_PROXY_BIN="$bin" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/clients
# The JavaScript clients against the same binary and the same fake vendor (the venv's Python runs it).
(cd tests/clients/js && RETENTION_PROXY_BIN="$bin" CLIENTS_PYTHON="$venv/bin/python" node --test)
