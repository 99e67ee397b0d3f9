#!/usr/bin/env bash
# Scale benchmark of the audit log: seeds EVENTS synthetic calls (default 1,000,000; two
# chained records each), then times the compliance commands and reports their peak memory.
#   bash bench/audit_scale.sh [EVENTS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-1000000}"
run="$(mktemp -d)"
trap 'rm -rf "$run"' EXIT
cd "$root"
cargo build --release --locked --bin retention-proxy --example seed_audit >/dev/null 2>&1
bin="$root/target/release/retention-proxy"
db="$run/audit.db"
measure() { # label, command...
  local label="$1"; shift
  local out; out=$( { /usr/bin/time -f '%e %M' "$@" >/dev/null; } 2>&1 | tail -1 )
  printf '%-58s %8.2f s %9.1f MiB\n' "$label" "$(cut -d' ' -f1 <<<"$out")" "$(awk '{print $2/1024}' <<<"$out")"
}
command -v /usr/bin/time >/dev/null || { echo "bench: /usr/bin/time is required (apt-get install -y time)" >&2; exit 2; }
measure "seed $n events ($((2 * n)) records)" "$root/target/release/examples/seed_audit" "$db" "$n"
printf 'database: %s MiB\n' "$(du -m "$db" | cut -f1)"
since=$(date -u -d '-10 days' +%Y-%m-%dT%H:%M:%SZ); until=$(date -u -d '-9 days' +%Y-%m-%dT%H:%M:%SZ)
measure "audit query: 1-day window + event name (json)" "$bin" audit query --db "$db" --since "$since" --until "$until" --event-name PutRetentionSettings --format json
measure "audit query: one actor, limit 100" "$bin" audit query --db "$db" --actor AKIASEED000000000007 --limit 100 --format jsonl
measure "audit history --resource res-42" "$bin" audit history --db "$db" --resource res-42 --format jsonl
measure "audit verify" "$bin" audit verify --db "$db"
measure "audit export --format cloudtrail (stdout)" "$bin" audit export --db "$db" --format cloudtrail
measure "audit export --format cloudtrail --out DIR (gzip per hour)" "$bin" audit export --db "$db" --format cloudtrail --out "$run/export/"
