#!/usr/bin/env bash
# Fleet benchmark (SPEC §9): four retention-proxy instances (a–d), each with its own SQLite
# log, shipping asynchronously to one central PostgreSQL store, all in front of one fast nginx
# upstream on loopback; audited Slack admin.conversations.setCustomRetention form posts at the
# maximum rate through all four for DURATION seconds. In the same run:
#   - records/s shipped (PostgreSQL's row count over the load) against records/s committed
#     locally, and how long the backlog takes to drain after the load;
#   - shipping lag: per record (`shipped_at - event_time`, in SQL) p50/p99/max, and the
#     instances' `retention_proxy_central_lag_seconds` / `_lag_records` sampled every second;
#     whether lag grew (first third of the run against the last third);
#   - PostgreSQL's CPU per shipped record (utime+stime of every postgres process, from /proc);
#   - the latency `mode = "sync"` adds per call: three more instances, e (async), f (sync) and
#     g (no central store, the local log only), one connection of sequential calls each, taking
#     turns, after the fleet load has drained and the machine is quiet again.
# A throw-away PostgreSQL cluster (the distribution's binaries: pg_config --bindir, else the
# newest /usr/lib/postgresql/*/bin, else initdb on PATH) on 127.0.0.1, password (SCRAM)
# authentication, PostgreSQL's default durability; run as the unprivileged user `retention-pg`
# (created when missing) when the script runs as root. Everything is stopped and removed at exit.
# Knobs: DURATION (s, default 60), CONNS (wrk connections per instance, default 16),
#        CHANNELS (distinct channel ids, default 1000), LAT_DURATION (s per sync/async latency
#        run, default 5), LAT_REPS (alternated runs of each, default 3), PROFILE (cargo profile
#        of the binary, default dist), PIN (1: proxies and PostgreSQL on PROXY_CPU, wrk and
#        nginx on LOAD_CPU; default 0, unpinned), BASE_PORT (first of 16 loopback ports, default
#        18680), NICE (scheduling niceness of the whole run, e.g. -10 on a machine shared with
#        builds; default unchanged).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
DURATION="${DURATION:-60}" CONNS="${CONNS:-16}" CHANNELS="${CHANNELS:-1000}"
LAT_DURATION="${LAT_DURATION:-5}" LAT_REPS="${LAT_REPS:-3}" PROFILE="${PROFILE:-dist}"
PIN="${PIN:-0}" PROXY_CPU="${PROXY_CPU:-1}" LOAD_CPU="${LOAD_CPU:-0}" BASE_PORT="${BASE_PORT:-18680}"
PG_USER_NAME=retention-pg NICE="${NICE:-}"

for tool in wrk nginx curl awk; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required (apt-get install -y wrk nginx curl)" >&2; exit 2; }
done
if [ -n "$NICE" ]; then
  renice -n "$NICE" -p $$ >/dev/null || { echo "bench: cannot set niceness $NICE (negative values need root)" >&2; exit 2; }
fi
# PostgreSQL's server programs, all from one directory.
pg_programs="initdb pg_ctl postgres pg_isready psql"
has_pg() { for p in $pg_programs; do [ -x "$1/$p" ] || return 1; done; }
pgbin=""
if command -v pg_config >/dev/null && d="$(pg_config --bindir 2>/dev/null)" && has_pg "$d"; then pgbin=$d; fi
if [ -z "$pgbin" ]; then
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n -r); do has_pg "$d" && { pgbin=$d; break; }; done
fi
if [ -z "$pgbin" ] && command -v initdb >/dev/null; then
  d="$(dirname "$(readlink -f "$(command -v initdb)")")"; has_pg "$d" && pgbin=$d
fi
[ -n "$pgbin" ] || { echo "bench: PostgreSQL's server programs ($pg_programs) were not found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH); apt-get install -y --no-install-recommends postgresql" >&2; exit 2; }
# Only what this script passes applies to psql and the server (no PGHOST, PGPORT, … from outside).
while read -r v; do unset "$v"; done < <(compgen -e | grep '^PG' || true)

UP=$BASE_PORT PGP=$((BASE_PORT + 1))
names=(a b c d e f g)
declare -A LPORT APORT
for i in "${!names[@]}"; do LPORT[${names[$i]}]=$((BASE_PORT + 2 + 2 * i)); APORT[${names[$i]}]=$((BASE_PORT + 3 + 2 * i)); done
for port in $UP $PGP "${LPORT[@]}" "${APORT[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "bench: 127.0.0.1:$port is in use (set BASE_PORT)" >&2; exit 2; fi
done

run="$(mktemp -d)"
pgdir="$(mktemp -d)"
pids=()
pg_started=0
pg_user="" runas=()
as_pg() { "${runas[@]}" "$@"; }
cleanup() {
  # Once, in the script's own shell (a command substitution interrupted by the same signal
  # must not do it), and not interrupted by a second signal.
  [ "${BASHPID:-$$}" = "$$" ] || return 0
  trap '' INT TERM; trap - EXIT
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "$pg_started" = 1 ]; then
    postmaster=$(head -1 "$pgdir/data/postmaster.pid" 2>/dev/null)
    if ! as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -w -t 60 stop -m immediate >/dev/null 2>&1 \
      && [ -n "$postmaster" ] && grep -qa "$pgdir/data" "/proc/$postmaster/cmdline" 2>/dev/null; then
      kill -KILL "$postmaster" 2>/dev/null
    fi
  fi
  rm -rf "$run" "$pgdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
pin() { if [ "$PIN" = 1 ] && command -v taskset >/dev/null; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }

# --- PostgreSQL ---------------------------------------------------------------------------
if [ "$(id -u)" = 0 ]; then
  pg_user=$PG_USER_NAME
  id -u "$PG_USER_NAME" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_NAME" 2>/dev/null \
    || id -u "$PG_USER_NAME" >/dev/null 2>&1 || { echo "bench: cannot create the user $PG_USER_NAME that PostgreSQL runs as (it refuses to run as root)" >&2; exit 2; }
  command -v runuser >/dev/null || PATH="$PATH:/usr/sbin:/sbin"
  command -v runuser >/dev/null || { echo "bench: runuser is required to start PostgreSQL as $PG_USER_NAME (util-linux)" >&2; exit 2; }
  runas=(runuser -u "$PG_USER_NAME" --)
fi
rand_hex() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
su_pw=$(rand_hex) rp_pw=$(rand_hex)
chmod 700 "$pgdir"
mkdir -m 700 "$pgdir/socket"
printf '%s\n' "$su_pw" > "$pgdir/su.pw"; chmod 600 "$pgdir/su.pw"
[ -n "$pg_user" ] && chown -R "$PG_USER_NAME:" "$pgdir"
as_pg env LC_ALL=C "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=scram-sha-256 -E UTF8 --locale=C --no-sync \
  --pwfile="$pgdir/su.pw" >"$run/initdb.log" 2>&1 || { echo "bench: initdb failed:" >&2; tail -20 "$run/initdb.log" >&2; exit 1; }
# PostgreSQL's defaults (fsync and synchronous_commit on) except where it listens, and a log
# line for every statement slower than 100 ms (a stalled insert or commit: `shipped_at` is the
# time its transaction began, so the per-record lag does not see how long the commit took).
printf "\n# bench\nlisten_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = '%s'\nmax_connections = 100\nlog_min_duration_statement = 100\nlog_line_prefix = '%%m [%%p] %%a: '\n" \
  "$PGP" "$pgdir/socket" >> "$pgdir/data/postgresql.conf"
pg_started=1
(pin "$PROXY_CPU" "${runas[@]}" env LC_ALL=C "$pgbin/pg_ctl" -D "$pgdir/data" -w -t 60 -l "$pgdir/server.log" start) >/dev/null 2>&1 \
  || { echo "bench: PostgreSQL did not start:" >&2; tail -20 "$pgdir/server.log" >&2 || true; exit 1; }
sql_on() { PGPASSWORD=$su_pw PGCONNECT_TIMEOUT=10 "$pgbin/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGP" -U postgres -d "$1" -c "$2"; }
sql() { sql_on audit "$1"; }
sql_on postgres "CREATE ROLE retention LOGIN PASSWORD '$rp_pw'" >/dev/null
sql_on postgres "CREATE DATABASE audit OWNER retention" >/dev/null
url="postgres://retention:$rp_pw@127.0.0.1:$PGP/audit"
pg_version=$(sql "SHOW server_version")

# --- upstream, proxies ----------------------------------------------------------------------
cat > "$run/upstream.conf" <<NGINX
worker_processes 1; daemon off; pid $run/up.pid; error_log $run/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $run/ucb; proxy_temp_path $run/up; fastcgi_temp_path $run/uf; uwsgi_temp_path $run/uu; scgi_temp_path $run/us;
  server { listen 127.0.0.1:$UP backlog=4096; default_type application/json;
    location / { return 200 '{"ok":true}'; } } }
NGINX
for n in "${names[@]}"; do
  mode=async; [ "$n" = f ] && mode=sync
  central="[audit.central]
url = \"$url\"
mode = \"$mode\"
max_lag = \"5m\""
  [ "$n" = g ] && central=""
  cat > "$run/$n.toml" <<TOML
[server]
listen = "127.0.0.1:${LPORT[$n]}"
admin_listen = "127.0.0.1:${APORT[$n]}"
[audit]
path = "$run/$n.db"
proxy_instance = "$n"
$central
[upstreams]
chime = "http://127.0.0.1:$UP"
chime_messaging = "http://127.0.0.1:$UP"
chime_identity = "http://127.0.0.1:$UP"
slack = "http://127.0.0.1:$UP"
TOML
done
# Each request names one of CHANNELS channels, in turn (wrk's request() hook).
cat > "$run/load.lua" <<'LUA'
local channels = tonumber(os.getenv("CHANNELS") or "1000")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Bearer xoxp-0000000000-bench"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format("channel_id=C%09d&duration_days=400", n % channels))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT calls=%d rps=%.1f p50_us=%d p99_us=%d errors=%d http_err=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

(cd "$root" && cargo build --profile "$PROFILE" --locked --bin retention-proxy >/dev/null 2>&1) || { echo "bench: cargo build --profile $PROFILE failed" >&2; exit 1; }
# How busy the machine is before anything of this run starts (other work skews every figure).
idle_ticks() { awk '$1 == "cpu" {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }
read -r i0 a0 < <(idle_ticks); sleep 1; read -r i1 a1 < <(idle_ticks)
busy_before=$(( 100 - 100 * (i1 - i0) / (a1 - a0 > 0 ? a1 - a0 : 1) ))
[ "$busy_before" -le 15 ] || echo "bench: warning: the machine was ${busy_before} % busy before the run (other processes); the figures will show it" >&2
dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
bin="$root/target/$dir/retention-proxy"
(pin "$LOAD_CPU" nginx -p "$run" -c "$run/upstream.conf" -e "$run/up.err") & pids+=($!)
declare -A PID
for n in "${names[@]}"; do
  (pin "$PROXY_CPU" "$bin" serve --config "$run/$n.toml" 2>"$run/$n.log") & PID[$n]=$!; pids+=($!)
done
metrics() { curl -s --max-time 5 "http://127.0.0.1:${APORT[$1]}/metrics"; }
# metric INSTANCE NAME: the value of NAME (labels included in NAME when the series has them).
metric() { metrics "$1" | awk -v m="$2" '$1 == m {print $2}'; }
for n in "${names[@]}"; do
  ok=0
  for _ in $(seq 1 500); do curl -sf "http://127.0.0.1:${APORT[$n]}/readyz" >/dev/null 2>&1 && { ok=1; break; }; sleep 0.02; done
  [ $ok = 1 ] || { echo "bench: instance $n did not become ready:" >&2; tail -20 "$run/$n.log" >&2; exit 1; }
done
# One call through each instance first: the tables exist and every shipper is connected.
for n in "${names[@]}"; do
  curl -sf -o /dev/null -H 'Authorization: Bearer xoxp-0000000000-bench' \
    --data "channel_id=C999999999&duration_days=400" "http://127.0.0.1:${LPORT[$n]}/api/admin.conversations.setCustomRetention" \
    || { echo "bench: a first audited call through $n failed:" >&2; tail -20 "$run/$n.log" >&2; exit 1; }
done
for n in a b c d e f; do
  ok=0
  for _ in $(seq 1 500); do [ "$(metric "$n" "retention_proxy_central_lag_records{instance=\"$n\"}")" = 0 ] \
    && [ "$(metric "$n" "retention_proxy_central_shipped_seq{instance=\"$n\"}")" -ge 2 ] 2>/dev/null && { ok=1; break; }; sleep 0.02; done
  [ $ok = 1 ] || { echo "bench: instance $n did not ship its first call:" >&2; tail -20 "$run/$n.log" >&2; exit 1; }
done

# --- CPU accounting --------------------------------------------------------------------------
hz=$(getconf CLK_TCK)
postmaster=$(head -1 "$pgdir/data/postmaster.pid")
# CPU ticks of every postgres process: the postmaster (its reaped children included) and each
# live child.
pg_ticks() {
  local t=0 c
  t=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat")
  for c in $(pgrep -P "$postmaster"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
proxy_ticks() { local t=0 n; for n in a b c d; do t=$((t + $(awk '{print $14 + $15}' "/proc/${PID[$n]}/stat"))); done; echo "$t"; }
steal_ticks() { awk '$1 == "cpu" {print $9 + 0, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }
pg_count() { sql "SELECT count(*) FROM audit_records WHERE instance IN ('a','b','c','d')"; }
committed() { local t=0 n; for n in a b c d; do t=$((t + $(metric "$n" retention_proxy_audit_records_committed_total))); done; echo "$t"; }
now_s() { date +%s.%N; }

# --- the fleet load ------------------------------------------------------------------------------
echo "bench: PostgreSQL $pg_version ($pgbin), profile $PROFILE, 4 async instances x $CONNS connections for ${DURATION}s" >&2
# Sampler: every second, per instance: time lag_seconds lag_records shipped_total errors_total.
(
  while :; do
    t=$(now_s)
    for n in a b c d; do
      metrics "$n" | awk -v t="$t" -v n="$n" '
        $1 ~ /^retention_proxy_central_lag_seconds\{/ {ls=$2} $1 ~ /^retention_proxy_central_lag_records\{/ {lr=$2}
        $1 ~ /^retention_proxy_central_shipped_records_total\{/ {sh=$2} $1 ~ /^retention_proxy_central_shipping_errors_total\{/ {er=$2}
        END {print t, n, ls, lr, sh, er}'
    done
    sleep 1
  done
) > "$run/samples" & sampler=$!; pids+=($sampler)
rows0=$(pg_count) committed0=$(committed)
wal0=$(sql "SELECT pg_current_wal_lsn()") ckpt0=$(sql "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
pg0=$(pg_ticks) px0=$(proxy_ticks); read -r st0 all0 < <(steal_ticks)
t0=$(now_s)
wrk_pid=()
for n in a b c d; do
  (CHANNELS=$CHANNELS pin "$LOAD_CPU" timeout $((DURATION + 30)) wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$run/load.lua" \
    "http://127.0.0.1:${LPORT[$n]}/api/admin.conversations.setCustomRetention" > "$run/wrk-$n.out" 2>&1) & wrk_pid[${#wrk_pid[@]}]=$!
done
pids+=("${wrk_pid[@]}")
for p in "${wrk_pid[@]}"; do wait "$p" || true; done
t1=$(now_s)
rows1=$(pg_count) committed1=$(committed)
wal1=$(sql "SELECT pg_current_wal_lsn()")
pg1=$(pg_ticks) px1=$(proxy_ticks); read -r st1 all1 < <(steal_ticks)
# Drain: until every instance has shipped everything it committed.
drained=""
for _ in $(seq 1 1200); do
  left=0
  for n in a b c d; do v=$(metric "$n" "retention_proxy_central_lag_records{instance=\"$n\"}"); left=$((left + ${v:-1})); done
  [ "$left" = 0 ] && { drained=$(now_s); break; }
  sleep 0.1
done
kill "$sampler" 2>/dev/null || true
pg2=$(pg_ticks); rows2=$(pg_count)
# Statements over 100 ms by the proxies (not this script's psql) during the load and drain.
read -r slow_n slow_max < <(awk '/ retention-proxy: .*duration: [0-9.]+ ms/ { for (i = 1; i < NF; i++) if ($i == "duration:") { d = $(i + 1) + 0; n++; if (d > m) m = d } }
  END { printf "%d %.0f\n", n, m }' "$pgdir/server.log" 2>/dev/null || echo "- -")
wal_bytes=$(sql "SELECT pg_wal_lsn_diff('$wal1', '$wal0')")
ckpts=$(( $(sql "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter") - ckpt0 ))
read -r store_bytes store_rows < <(sql "SELECT (SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(array['audit_records','audit_actors','audit_resources','audit_observed']) t), (SELECT count(*) FROM audit_records)" | tr '|' ' ')
echo "bench: load done, backlog drained; sync/async latency next" >&2

calls=0 http_err=0 sock_err=0
for n in a b c d; do
  line=$(grep '^RESULT' "$run/wrk-$n.out" || true)
  [ -n "$line" ] || { echo "bench: wrk against $n printed no result:" >&2; cat "$run/wrk-$n.out" >&2; exit 1; }
  echo "instance $n: $line" >&2
  calls=$((calls + $(sed -E 's/.*calls=([0-9]+).*/\1/' <<<"$line")))
  sock_err=$((sock_err + $(sed -E 's/.*errors=([0-9]+).*/\1/' <<<"$line")))
  http_err=$((http_err + $(sed -E 's/.*http_err=([0-9]+).*/\1/' <<<"$line")))
done
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')
shipped=$((rows1 - rows0)) produced=$((committed1 - committed0))
# Per-record lag of the records the load made, from PostgreSQL's own rows; and by thirds of
# the load (by event time).
lag_sql="WITH l AS (
  SELECT extract(epoch FROM event_time::timestamptz)::float8 AS et, extract(epoch FROM shipped_at - event_time::timestamptz)::float8 AS lag
  FROM audit_records WHERE instance IN ('a','b','c','d') AND event_time::timestamptz >= to_timestamp($t0) AND event_time::timestamptz < to_timestamp($t1))"
read -r lag_n lag_p50 lag_p99 lag_max < <(sql "$lag_sql
  SELECT count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric * 1000, 1), round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric * 1000, 1), round(max(lag)::numeric * 1000, 1) FROM l" | tr '|' ' ')
sql "$lag_sql
  SELECT least(width_bucket(et, $t0::float8, $t1::float8, 3), 3) AS third, count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric * 1000, 1),
         round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric * 1000, 1) FROM l GROUP BY third ORDER BY third" | tr '|' ' ' > "$run/thirds"
third() { awk -v k="$1" -v c="$2" '$1 == k {print $c}' "$run/thirds"; }
# Samples within the load, by thirds of it: lag_seconds p50/p99/max (every instance), mean lag_records
# (the four summed), shipped records/s (the four summed).
awk -v a="$t0" -v b="$t1" '$1 >= a && $1 <= b' "$run/samples" > "$run/in-load"
pct() { sort -g | awk -v p="$1" '{v[NR]=$1} END {if (NR == 0) {print "-"; exit} i = int(p * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i]}'; }
s_p50=$(awk '{print $3}' "$run/in-load" | pct 0.5) s_p99=$(awk '{print $3}' "$run/in-load" | pct 0.99)
s_max=$(awk '{print $3}' "$run/in-load" | pct 1)
by_third() { # column format: the mean of one column over each third's samples (all instances)
  awk -v a="$t0" -v b="$t1" -v col="$1" -v f="$2" '{ k = int(3 * ($1 - a) / (b - a)); if (k > 2) k = 2; s[k] += $col; m[k]++ }
    END { for (k = 0; k < 3; k++) printf f " ", (m[k] ? s[k] / m[k] : 0); print "" }' "$run/in-load"
}
read -r rec_1 rec_2 rec_3 < <(by_third 4 %.0f)
read -r sec_1 sec_2 sec_3 < <(by_third 3 %.3f)
# The shipped counter's rate per instance in each third (first and last sample of the third).
read -r rate_1 rate_2 rate_3 < <(awk -v a="$t0" -v b="$t1" '{ k = int(3 * ($1 - a) / (b - a)); if (k > 2) k = 2; key = k SUBSEP $2
    if (!(key in t0)) { t0[key] = $1; v0[key] = $5 } t1[key] = $1; v1[key] = $5 }
  END { for (k = 0; k < 3; k++) { r = 0; for (key in t0) { split(key, p, SUBSEP); if (p[1] == k && t1[key] > t0[key]) r += (v1[key] - v0[key]) / (t1[key] - t0[key]) } printf "%.0f ", r } print "" }' "$run/in-load")
errors_total=0
for n in a b c d; do errors_total=$((errors_total + $(metric "$n" "retention_proxy_central_shipping_errors_total{instance=\"$n\"}"))); done
# Grew: the last third's per-record p50 or p99 is more than twice the first third's plus 50 ms.
grew=$(awk -v f50="$(third 1 3)" -v l50="$(third 3 3)" -v f99="$(third 1 4)" -v l99="$(third 3 4)" \
  'BEGIN{ if (l50 > 2 * f50 + 50 || l99 > 2 * f99 + 50) print "yes"; else print "no" }')

# --- sync against async, one connection ----------------------------------------------------
# The fleet load's after-effects (autovacuum of the new rows, checkpoints) would land in the
# middle of these runs: do them now, then wait until the machine is quiet (at least 85 % idle
# over a second, at most 60 s).
sql "VACUUM ANALYZE" >/dev/null; sql "CHECKPOINT" >/dev/null
quiet=no
for _ in $(seq 1 60); do
  read -r i0 a0 < <(idle_ticks); sleep 1; read -r i1 a1 < <(idle_ticks)
  [ $((100 * (i1 - i0))) -ge $((85 * (a1 - a0))) ] && { quiet=yes; break; }
done
# What one small synchronous write costs on this file system now (PostgreSQL's WAL and the
# local logs are on it): 200 x (8 KiB write + fdatasync), p50 and p99 in microseconds.
fsync_probe=$(python3 - "$pgdir" 2>/dev/null <<'PY' || echo "- -"
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
buf, t = b"\0" * 8192, []
for i in range(200):
    a = time.perf_counter(); os.pwrite(fd, buf, 0); os.fdatasync(fd); t.append(time.perf_counter() - a)
os.close(fd); os.unlink(path); t.sort()
print(int(t[100] * 1e6), int(t[197] * 1e6))
PY
)
read -r fs50 fs99 <<<"$fsync_probe"
lat() { # instance seconds
  (CHANNELS=$CHANNELS pin "$LOAD_CPU" timeout $(($2 + 30)) wrk -t1 -c1 -d"${2}s" --timeout 10s -s "$run/load.lua" \
    "http://127.0.0.1:${LPORT[$1]}/api/admin.conversations.setCustomRetention") | awk '/^RESULT/'
}
lat e 1 >/dev/null; lat f 1 >/dev/null; lat g 1 >/dev/null
declare -A l50 l99 lrps lerr
for rep in $(seq 1 "$LAT_REPS"); do
  case $((rep % 3)) in 1) order="e f g";; 2) order="f g e";; 0) order="g e f";; esac
  for n in $order; do
    line=$(lat "$n" "$LAT_DURATION")
    [ -n "$line" ] || { echo "bench: wrk against $n printed no result" >&2; exit 1; }
    echo "latency rep $rep $n: $line" >&2
    l50[$n]+="$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line") "
    l99[$n]+="$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line") "
    lrps[$n]+="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line") "
    lerr[$n]+="$(sed -E 's/.*errors=([0-9]+) http_err=([0-9]+).*/\1+\2/' <<<"$line") "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f_shipped=$(metric f 'retention_proxy_central_shipped_seq{instance="f"}')
f_lag=$(metric f 'retention_proxy_central_lag_records{instance="f"}')

# --- summary -----------------------------------------------------------------------------------
f1() { awk -v x="$1" 'BEGIN{printf "%.1f", x}'; }
pg_cpu_s=$(awk -v t=$((pg1 - pg0)) -v hz="$hz" 'BEGIN{print t / hz}')
drain_s="not within 120 s"; [ -n "$drained" ] && drain_s="$(awk -v a="$t1" -v b="$drained" 'BEGIN{printf "%.2f s", b - a}')"
cat <<EOF

== fleet: 4 async instances, one PostgreSQL ($(date -u +%Y-%m-%d), $(nproc) CPUs, profile $PROFILE, PostgreSQL $pg_version, PIN=$PIN, nice $(nice)) ==
machine busy before the run: $busy_before %
load: wrk -t1 -c$CONNS per instance for $(f1 "$elapsed") s; $calls calls ($(f1 "$(awk -v c="$calls" -v e="$elapsed" 'BEGIN{print c / e}')") calls/s), socket errors $sock_err, non-2xx $http_err; steal $(awk -v s=$((st1 - st0)) -v a=$((all1 - all0)) 'BEGIN{printf "%.0f", ((a > 0) ? 100 * s / a : 0)}') %
records committed locally:  $produced ($(f1 "$(awk -v c="$produced" -v e="$elapsed" 'BEGIN{print c / e}')")/s)
records shipped (PostgreSQL rows during the load): $shipped ($(f1 "$(awk -v c="$shipped" -v e="$elapsed" 'BEGIN{print c / e}')")/s); backlog at the end of the load drained in $drain_s; shipping errors $errors_total
per-record lag (shipped_at - event_time, $lag_n records): p50 $lag_p50 ms, p99 $lag_p99 ms, max $lag_max ms
  by thirds of the load: p50 $(third 1 3) / $(third 2 3) / $(third 3 3) ms, p99 $(third 1 4) / $(third 2 4) / $(third 3 4) ms
sampled lag_seconds (every instance, every second): p50 $s_p50 s, p99 $s_p99 s, max $s_max s; mean by thirds $sec_1 / $sec_2 / $sec_3 s
sampled lag_records (per instance), mean by thirds: $rec_1 / $rec_2 / $rec_3; shipped records/s by thirds: $rate_1 / $rate_2 / $rate_3
lag grew over the run (last third's per-record p50 or p99 above twice the first third's + 50 ms): $grew
PostgreSQL CPU (inserts, and each change's fleet-wide previous-value read): $(f1 "$pg_cpu_s") s during the load ($(awk -v c="$pg_cpu_s" -v e="$elapsed" 'BEGIN{printf "%.2f", c / e}') CPUs), $(f1 "$(awk -v c="$pg_cpu_s" -v r="$shipped" 'BEGIN{print ((r > 0) ? c * 1e6 / r : 0)}')") us per shipped record ($(f1 "$(awk -v t=$((pg2 - pg0)) -v hz="$hz" -v r=$((rows2 - rows0)) 'BEGIN{print ((r > 0) ? t / hz * 1e6 / r : 0)}')") us with the drain)
PostgreSQL statements slower than 100 ms (load and drain): $slow_n, the slowest $slow_max ms
PostgreSQL WAL: $(f1 "$(awk -v b="$wal_bytes" -v r="$shipped" 'BEGIN{print ((r > 0) ? b / r : 0)}')") bytes per shipped record, $ckpts checkpoints during the load and drain; storage (4 tables, indexes included) $(f1 "$(awk -v b="$store_bytes" -v r="$store_rows" 'BEGIN{print ((r > 0) ? b / r : 0)}')") bytes per record
proxies' CPU (a-d): $(f1 "$(awk -v t=$((px1 - px0)) -v hz="$hz" -v c="$calls" 'BEGIN{print ((c > 0) ? t / hz * 1e6 / c : 0)}')") us per call
sync vs async, one connection, $LAT_REPS x ${LAT_DURATION} s each, taking turns (medians; machine quiet before: $quiet; 8 KiB write + fdatasync here: p50 $fs50 us, p99 $fs99 us):
  local only (g): p50 $(median "${l50[g]}") us, p99 $(median "${l99[g]}") us, $(median "${lrps[g]}") calls/s, errors ${lerr[g]}
  async      (e): p50 $(median "${l50[e]}") us, p99 $(median "${l99[e]}") us, $(median "${lrps[e]}") calls/s, errors ${lerr[e]}
  sync       (f): p50 $(median "${l50[f]}") us, p99 $(median "${l99[f]}") us, $(median "${lrps[f]}") calls/s, errors ${lerr[f]}
  sync adds to async: p50 $(( $(median "${l50[f]}") - $(median "${l50[e]}") )) us, p99 $(( $(median "${l99[f]}") - $(median "${l99[e]}") )) us per call (f shipped up to seq $f_shipped, $f_lag records behind)
  async adds to local only: p50 $(( $(median "${l50[e]}") - $(median "${l50[g]}") )) us, p99 $(( $(median "${l99[e]}") - $(median "${l99[g]}") )) us per call
EOF
