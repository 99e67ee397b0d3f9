#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the real-client suite
# (boto3, the AWS CLI, slack_sdk) against the binary those tests built. The `ci` profile is
# `release` without whole-program LTO (see Cargo.toml): same code, much shorter links.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --profile ci --locked
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
RETENTION_PROXY_BIN="$PWD/target/ci/retention-proxy" python3 -m pytest -q tests/clients
