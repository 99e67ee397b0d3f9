#!/usr/bin/env bash
# Real-client suite: drives the built retention-proxy binary with boto3, the AWS CLI and
# slack_sdk against a local fake vendor.
# Needs: pip install -r tests/clients/requirements.txt, and a built binary
# (cargo build --release, or RETENTION_PROXY_BIN=path/to/retention-proxy).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1
exec python3 -m pytest -q -p no:cacheprovider tests/clients "$@"
