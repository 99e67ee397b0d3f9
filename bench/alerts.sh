#!/usr/bin/env bash
# Alert sinks cost the request path nothing: audited-call throughput (Slack
# admin.conversations.setCustomRetention, committed with synchronous=FULL before forwarding)
# of two retention-proxy processes in one run, in front of one nginx upstream on loopback:
#   none   — no [[alerts]]
#   sinks  — two webhook sinks: one answered by nginx, one black-holed (a listener that
#            accepts connections and never reads or answers), stuck retrying an alert from
#            before the load (a shortening), with its lag growing through the run.
# The targets alternate within each repetition; medians are compared. The aim: sinks within 3 %.
# Knobs: CONNS (default 64), DURATION (s, default 10), REPS (default 5), WRK_THREADS (default 1),
#        PROXY_CPU / LOAD_CPU (taskset pinning, default 1 / 0; PIN=0 disables),
#        PROFILE (cargo profile of the binary, default dist).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
CONNS="${CONNS:-64}" DURATION="${DURATION:-10}" REPS="${REPS:-5}" WRK_THREADS="${WRK_THREADS:-1}"
PIN="${PIN:-1}" PROXY_CPU="${PROXY_CPU:-1}" LOAD_CPU="${LOAD_CPU:-0}" PROFILE="${PROFILE:-dist}"
for tool in wrk nginx python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required (apt-get install -y wrk nginx python3 curl)" >&2; exit 2; }
done
run="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$run"; }
trap cleanup EXIT INT TERM
pin() { if [ "$PIN" = 1 ] && command -v taskset >/dev/null; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }

UP=18580 HOLE=18581 RP0=18582 AD0=18583 RP1=18584 AD1=18585
cat > "$run/upstream.conf" <<NGINX
worker_processes 1; daemon off; pid $run/up.pid; error_log $run/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $run/ucb; proxy_temp_path $run/up; fastcgi_temp_path $run/uf; uwsgi_temp_path $run/uu; scgi_temp_path $run/us;
  server { listen 127.0.0.1:$UP backlog=4096; default_type application/json;
    location / { return 200 '{"ok":true}'; } } }
NGINX
# The black hole: accepts and holds every connection, never reads.
cat > "$run/hole.py" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    held.append(s.accept()[0])
PY
printf 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n' > "$run/hook.key"; chmod 600 "$run/hook.key"
conf() { # listen admin db extra
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
[audit]
path = "$3"
[upstreams]
chime = "http://127.0.0.1:$UP"
chime_messaging = "http://127.0.0.1:$UP"
chime_identity = "http://127.0.0.1:$UP"
slack = "http://127.0.0.1:$UP"
$4
TOML
}
sinks=$(cat <<TOML
[[alerts]]
id = "answered"
kind = "webhook"
url = "http://127.0.0.1:$UP/hook"
secret_file = "$run/hook.key"
[[alerts]]
id = "black-hole"
kind = "webhook"
url = "http://127.0.0.1:$HOLE/hook"
secret_file = "$run/hook.key"
timeout = "5s"
TOML
)
conf $RP0 $AD0 "$run/none.db" "" > "$run/none.toml"
conf $RP1 $AD1 "$run/sinks.db" "$sinks" > "$run/sinks.toml"
cat > "$run/load.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "channel_id=C0123456789&duration_days=400"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Bearer xoxp-0000000000-bench"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status))
end
LUA

(cd "$root" && cargo build --profile "$PROFILE" --locked --bin retention-proxy >/dev/null 2>&1) || { echo "bench: cargo build failed" >&2; exit 1; }
dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
bin="$root/target/$dir/retention-proxy"
(pin "$LOAD_CPU" nginx -p "$run" -c "$run/upstream.conf" -e "$run/up.err") & pids+=($!)
(pin "$LOAD_CPU" python3 "$run/hole.py" $HOLE) & pids+=($!)
(pin "$PROXY_CPU" "$bin" serve --config "$run/none.toml" 2>"$run/none.log") & none_pid=$!; pids+=($none_pid)
(pin "$PROXY_CPU" "$bin" serve --config "$run/sinks.toml" 2>"$run/sinks.log") & sinks_pid=$!; pids+=($sinks_pid)
for a in $AD0 $AD1; do
  for _ in $(seq 1 1000); do curl -sf "http://127.0.0.1:$a/readyz" >/dev/null 2>&1 && break; sleep 0.01; done
done
# Before the load, on both: a first setting, then a shortening (the alert the black hole keeps).
for p in $RP0 $RP1; do
  for d in 400 30; do
    curl -sf -o /dev/null -H 'Authorization: Bearer xoxp-0000000000-bench' \
      --data "channel_id=C0999999999&duration_days=$d" "http://127.0.0.1:$p/api/admin.conversations.setCustomRetention"
  done
done
metric() { curl -s "http://127.0.0.1:$AD1/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
for _ in $(seq 1 100); do [ "$(metric 'retention_proxy_alerts_sent_total{sink="answered"}')" = 1 ] && break; sleep 0.1; done

one() { (pin "$LOAD_CPU" timeout $((DURATION + 10)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s \
  -s "$run/load.lua" "http://127.0.0.1:$1/api/admin.conversations.setCustomRetention") | awk '/^RESULT/'; }
declare -A rps p99
for t in none sinks; do rps[$t]=""; p99[$t]=""; done
for rep in $(seq 1 "$REPS"); do
  order="none sinks"; [ $((rep % 2)) = 0 ] && order="sinks none"
  for t in $order; do
    port=$RP0; [ "$t" = sinks ] && port=$RP1
    line=$(one $port)
    echo "rep $rep $t: $line" >&2
    rps[$t]+="$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line") "
    p99[$t]+="$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line") "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=$(median "${rps[none]}") s=$(median "${rps[sinks]}")
printf '\nmachine: %s cores; wrk -t%s -c%s -d%ss x %s reps; profile %s; proxies pinned to CPU %s, load to CPU %s (PIN=%s)\n' \
  "$(nproc)" "$WRK_THREADS" "$CONNS" "$DURATION" "$REPS" "$PROFILE" "$PROXY_CPU" "$LOAD_CPU" "$PIN"
printf '%-6s %10s %8s\n' target req/s p99_us
printf '%-6s %10.0f %8s\n' none "$n" "$(median "${p99[none]}")"
printf '%-6s %10.0f %8s\n' sinks "$s" "$(median "${p99[sinks]}")"
printf 'sinks / none: %.3f (aim: at least 0.970)\n' "$(awk -v a="$s" -v b="$n" 'BEGIN{print a/b}')"
printf 'black-hole sink: sent %s, failed %s, lag %s records / %s s; answered sink: sent %s, lag %s records\n' \
  "$(metric 'retention_proxy_alerts_sent_total{sink="black-hole"}')" "$(metric 'retention_proxy_alerts_failed_total{sink="black-hole"}')" \
  "$(metric 'retention_proxy_alerts_lag_records{sink="black-hole"}')" "$(metric 'retention_proxy_alerts_lag_seconds{sink="black-hole"}')" \
  "$(metric 'retention_proxy_alerts_sent_total{sink="answered"}')" "$(metric 'retention_proxy_alerts_lag_records{sink="answered"}')"
