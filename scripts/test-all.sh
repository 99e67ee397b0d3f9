#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the real-client suite
# (boto3, the AWS CLI, slack_sdk) against the binary those tests built. The `ci` profile is
# `release` without whole-program LTO (see Cargo.toml): same code, much shorter links.
#
# The client suite's Python packages go into a virtual environment this script creates
# (`.venv-clients`, or $CLIENTS_VENV), never into the system interpreter: a stock Debian
# refuses `pip install` there (externally-managed-environment).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --profile ci --locked
venv="${CLIENTS_VENV:-$PWD/.venv-clients}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
RETENTION_PROXY_BIN="$PWD/target/ci/retention-proxy" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/clients
