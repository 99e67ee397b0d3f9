#!/usr/bin/env bash
# The audit viewer at scale: seeds EVENTS synthetic calls (default 1,000,000), starts the
# proxy on that database, and times the viewer's pages in headless Chromium (the first page,
# filtered pages, a resource's history). Each must load in under 300 ms.
#   bash bench/viewer_scale.sh [EVENTS]
# Needs the distribution's chromium and a Python with playwright (PYTHON, default python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-1000000}"
py="${PYTHON:-python3}"
run="$(mktemp -d)"
cd "$root"
cargo build --profile "${PROFILE:-dist}" --locked --bin retention-proxy --example seed_audit >/dev/null 2>&1
bin="$root/target/${PROFILE:-dist}/retention-proxy"
"$root/target/${PROFILE:-dist}/examples/seed_audit" "$run/audit.db" "$n"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$run/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:$port"

[audit]
path = "$run/audit.db"
proxy_instance = "seed"
TOML
"$bin" serve --config "$run/proxy.toml" >"$run/proxy.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$run"' EXIT
for _ in $(seq 1 600); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
printf 'database: %s MiB, %s events\n' "$(du -m "$run/audit.db" | cut -f1)" "$n"
"$py" "$root/bench/viewer_scale.py" "http://127.0.0.1:$port"
