#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the real-client suite
# (boto3, the AWS CLI, slack_sdk) against the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
RETENTION_PROXY_BIN="$PWD/target/release/retention-proxy" python3 -m pytest -q tests/clients
