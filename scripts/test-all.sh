#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the real-client suite
# (boto3, the AWS CLI, slack_sdk) against the binary those tests built, with the `release`
# profile that `cargo run --release` uses too, so one build serves both (see Cargo.toml).
#
# The client suite's Python packages go into a virtual environment this script creates
# (`.venv-clients`, or $CLIENTS_VENV), never into the system interpreter: a stock Debian
# refuses `pip install` there (externally-managed-environment).
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
cargo test --release --locked
venv="${CLIENTS_VENV:-$PWD/.venv-clients}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
RETENTION_PROXY_BIN="$PWD/target/release/retention-proxy" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/clients
