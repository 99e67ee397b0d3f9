#!/usr/bin/env bash
# Scale benchmark of the audit log: seeds EVENTS synthetic calls (default 1,000,000; two
# chained records each), then times the compliance commands with their peak memory, and sets
# each against its peer in the same run (SPEC §12): `audit verify` against `sha256sum` of the
# database file, `audit export --format cloudtrail` (standard output and --out DIR) against
# `gzip -1 -c` of it, and a filtered `audit query` (a day, an event name, --limit 100) in ms.
#   bash bench/audit_scale.sh [EVENTS]
#   PROFILE=ci REPS=3 bash bench/audit_scale.sh 200000
# Environment: PROFILE (cargo profile, default dist), REPS (runs per command, the median is
# reported; default 3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-1000000}"
PROFILE="${PROFILE:-dist}" REPS="${REPS:-3}"
command -v /usr/bin/time >/dev/null || { echo "bench: /usr/bin/time is required (apt-get install -y time)" >&2; exit 2; }
run="$(mktemp -d)"
trap 'rm -rf "$run"' EXIT
cd "$root"
cargo build --profile "$PROFILE" --locked --bin retention-proxy --example seed_audit >/dev/null 2>&1 \
  || { echo "bench: cargo build failed" >&2; exit 1; }
bin="$root/target/$PROFILE/retention-proxy"
db="$run/audit.db"

# measure LABEL COMMAND...: runs it REPS times (output discarded, an --out directory emptied
# between runs); sets $secs (median wall seconds) and $mib (largest peak RSS), prints a row.
measure() {
  local label="$1"; shift
  local times=() peak=0 i start end rss
  for ((i = 0; i < REPS; i++)); do
    rm -rf "$run/export"
    start=$(date +%s%N)
    /usr/bin/time -o "$run/rss" -f '%M' "$@" >/dev/null 2>"$run/stderr" || { cat "$run/stderr" >&2; exit 1; }
    end=$(date +%s%N)
    times+=("$(( (end - start) / 1000 ))")
    rss=$(tail -1 "$run/rss"); (( rss > peak )) && peak=$rss
  done
  local median; median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  secs=$(awk -v us="$median" 'BEGIN {printf "%.3f", us / 1e6}')
  mib=$(awk -v k="$peak" 'BEGIN {printf "%.1f", k / 1024}')
  printf '%-62s %9.3f s %9s ms %8s MiB\n' "$label" "$secs" "$(awk -v s="$secs" 'BEGIN {printf "%.0f", s * 1000}')" "$mib"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "profile $PROFILE, $(nproc) cores, median of $REPS runs"
REPS=1 measure "seed $n events ($((2 * n)) records, a signed checkpoint every 10,000)" "$root/target/$PROFILE/examples/seed_audit" "$db" "$n"
printf 'database: %s MiB\n' "$(du -m "$db" | cut -f1)"
cat "$db" >/dev/null # the page cache holds it for every command alike

since=$(date -u -d '-10 days' +%Y-%m-%dT%H:%M:%SZ); until=$(date -u -d '-9 days' +%Y-%m-%dT%H:%M:%SZ)
measure "audit query: a day + event name + --limit 100 (jsonl)" "$bin" audit query --db "$db" --since "$since" --until "$until" --event-name PutRetentionSettings --limit 100 --format jsonl
query_ms=$(awk -v s="$secs" 'BEGIN {printf "%.0f", s * 1000}')
measure "audit query: a day + event name, all (json)" "$bin" audit query --db "$db" --since "$since" --until "$until" --event-name PutRetentionSettings --format json
measure "audit query: one actor, --limit 100" "$bin" audit query --db "$db" --actor AKIASEED000000000007 --limit 100 --format jsonl
measure "audit history --resource res-42" "$bin" audit history --db "$db" --resource res-42 --format jsonl

measure "sha256sum (the database file)" sha256sum "$db"; sha=$secs
"$bin" audit pubkey --db "$db" > "$run/pubkey.pem"
measure "audit verify --pubkey (links, content, checkpoints, signatures)" "$bin" audit verify --db "$db" --pubkey "$run/pubkey.pem"; verify=$secs
measure "gzip -1 -c (the database file)" gzip -1 -c "$db"; gz=$secs
measure "audit export --format cloudtrail (stdout)" "$bin" audit export --db "$db" --format cloudtrail; ct=$secs
measure "audit export --format cloudtrail --out DIR (gzip per hour)" "$bin" audit export --db "$db" --format cloudtrail --out "$run/export/"; dir=$secs
measure "audit export --format jsonl (stdout)" "$bin" audit export --db "$db" --format jsonl
measure "audit export --format csv (stdout)" "$bin" audit export --db "$db" --format csv

echo
echo "audit verify / sha256sum:                         $(ratio "$verify" "$sha")   (SPEC §12: at most 0.3)"
echo "audit export cloudtrail (stdout) / gzip -1:       $(ratio "$ct" "$gz")   (SPEC §12: at most 1.5)"
echo "audit export cloudtrail --out DIR / gzip -1:      $(ratio "$dir" "$gz")   (SPEC §12: at most 1.5)"
echo "audit query, a day + event name + --limit 100:    ${query_ms} ms   (SPEC §12: under 100 ms at 1,000,000 events)"
