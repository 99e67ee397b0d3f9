#!/usr/bin/env bash
# Load benchmark: the same wrk load, in one run, against
#   nginx      — nginx as a reverse proxy (the peer a platform team would otherwise deploy)
#   haproxy    — HAProxy, one thread, http-reuse always (when installed)
#   pass       — retention-proxy, a non-retention path (streamed through, no audit)
#   audited    — retention-proxy, Slack admin.conversations.setCustomRetention (parsed,
#                committed with synchronous=FULL before forwarding, outcome committed after)
#   aws        — retention-proxy, a reverse-mode Chime PutRetentionSettings (audited, re-signed
#                with the proxy's own key), loopback listener without client keys
#   aws_verify — the same call through a second instance with `[reverse] clients_file`: the
#                client's SigV4 signature is verified first (the cost of SPEC §13)
#   floor      — with FLOOR=1: examples/hyper_floor.rs, the smallest forwarder built from the
#                proxy's own crates (hyper, hyper-util, tokio) with the connection layers the
#                proxy uses and none of its work: the part of the gap that is the stack's
# all in front of one fast nginx upstream, on loopback, bounded in time.
# Prints req/s, p50/p99 latency and peak RSS per target, with ratios.
# Knobs: CONNS (default 64), DURATION (s, default 10), REPS (default 3), WRK_THREADS (default 1),
#        FLOOR (1 adds the floor target), MAX_STEAL (%, default 100) and RETRIES (default 3): a run
#        with more hypervisor steal than MAX_STEAL is run again, up to RETRIES times, and the run
#        with the least steal is kept,
#        PROXY_CPU / LOAD_CPU (taskset pinning, default 1 / 0; PIN=0 disables),
#        BASELINE_BIN (a retention-proxy binary built from an earlier commit: adds its pass-through
#        and audited targets, `base_pass` and `base_aud`, to the same run, for before/after ratios).
#        PROFILE (cargo profile the proxy is built with, default dist),
#        AUDIT / BASE_AUDIT (TOML lines added to the `[audit]` table of every instance / of the
#        baseline instance only: e.g. BASELINE_BIN=target/dist/retention-proxy
#        BASE_AUDIT='checkpoint_every = 9223372036854775807' sets signed checkpoints (on by
#        default, every 10,000 records) against none in the same run).
BASELINE_BIN="${BASELINE_BIN:-}" PROFILE="${PROFILE:-dist}" AUDIT="${AUDIT:-}" BASE_AUDIT="${BASE_AUDIT:-}"
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
CONNS="${CONNS:-64}" DURATION="${DURATION:-10}" REPS="${REPS:-3}" WRK_THREADS="${WRK_THREADS:-1}"
PIN="${PIN:-1}" PROXY_CPU="${PROXY_CPU:-1}" LOAD_CPU="${LOAD_CPU:-0}" FLOOR="${FLOOR:-0}"
MAX_STEAL="${MAX_STEAL:-100}" RETRIES="${RETRIES:-3}"
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required (apt-get install -y wrk nginx)" >&2; exit 2; }
done
run="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$run"; }
trap cleanup EXIT INT TERM
# Runs "$2..." pinned to CPU "$1" (taskset execs the command, so $! is the process itself).
pin() { if [ "$PIN" = 1 ] && command -v taskset >/dev/null; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }

UP=18480 NGX=18481 RP=18482 ADMIN=18483 HAP=18484 FLR=18486 RPB=18487 ADMINB=18488 RPV=18489 ADMINV=18490
cat > "$run/upstream.conf" <<NGINX
worker_processes 1; daemon off; pid $run/up.pid; error_log $run/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $run/ucb; proxy_temp_path $run/up; fastcgi_temp_path $run/uf; uwsgi_temp_path $run/uu; scgi_temp_path $run/us;
  server { listen 127.0.0.1:$UP backlog=4096; default_type application/json;
    location / { return 200 '{"ok":true}'; } } }
NGINX
cat > "$run/proxy.conf" <<NGINX
worker_processes 1; daemon off; pid $run/px.pid; error_log $run/px.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $run/pcb; proxy_temp_path $run/pp; fastcgi_temp_path $run/pf; uwsgi_temp_path $run/pu; scgi_temp_path $run/ps;
  upstream backend { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NGX backlog=4096;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
                 proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
NGINX
cat > "$run/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend fe
    bind 127.0.0.1:$HAP
    default_backend be
backend be
    server up1 127.0.0.1:$UP maxconn 1024
HAPROXY
cat > "$run/rp.toml" <<TOML
[server]
listen = "127.0.0.1:$RP"
admin_listen = "127.0.0.1:$ADMIN"
[audit]
path = "$run/audit.db"
[upstreams]
chime = "http://127.0.0.1:$UP"
chime_messaging = "http://127.0.0.1:$UP"
chime_identity = "http://127.0.0.1:$UP"
slack = "http://127.0.0.1:$UP"
TOML
# add_audit FILE LINES: LINES go into FILE's [audit] table, after its path.
add_audit() { [ -z "$2" ] || { awk -v add="$2" '{print} /^path = /{print add}' "$1" > "$1.new" && mv "$1.new" "$1"; }; }
add_audit "$run/rp.toml" "$AUDIT"
sed -e "s/:$RP\"/:$RPB\"/; s/:$ADMIN\"/:$ADMINB\"/; s|$run/audit.db|$run/audit-base.db|" "$run/rp.toml" > "$run/rpb.toml"
add_audit "$run/rpb.toml" "$BASE_AUDIT"
# The second instance authenticates reverse-mode AWS callers against one client key.
sed -e "s/:$RP\"/:$RPV\"/; s/:$ADMIN\"/:$ADMINV\"/; s|$run/audit.db|$run/audit-verify.db|" "$run/rp.toml" > "$run/rpv.toml"
printf '[[client]]\nname = "bench-client"\naccess_key_id = "RPBENCHCLIENT0000001"\nsecret_access_key = "bench/secret/bench/secret/bench/secret00"\n' > "$run/clients.toml"
chmod 600 "$run/clients.toml"
printf '\n[reverse]\nclients_file = "%s"\n' "$run/clients.toml" >> "$run/rpv.toml"
# The proxy's own key, for re-signing (never reaches a vendor: nginx answers).
export AWS_ACCESS_KEY_ID=AKIDBENCHPROXY000001 AWS_SECRET_ACCESS_KEY=bench-proxy-secret AWS_EC2_METADATA_DISABLED=true
AWS_PATH="/accounts/12a3456b-7c89-012d-3456-78901e23fg45/retention-settings"
AWS_BODY='{"RetentionSettings":{"RoomRetentionSettings":{"RetentionDays":365}}}'
# A SigV4 signature for the verifying instance's host, as botocore makes it (content-type, host
# and x-amz-date signed); valid for 15 minutes, longer than the run.
read -r AWS_DATE AWS_AUTH < <(python3 - "$RPV" "$AWS_PATH" "$AWS_BODY" <<'PY'
import datetime, hashlib, hmac, sys
port, path, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
akid, secret, region, service = "RPBENCHCLIENT0000001", "bench/secret/bench/secret/bench/secret00", "us-east-1", "chime"
t = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
canonical_path = "".join(c if c.isalnum() or c in "-_.~/" else "%%%02X" % ord(c) for c in path)
headers = {"content-type": "application/json", "host": f"127.0.0.1:{port}", "x-amz-date": t}
signed = ";".join(sorted(headers))
creq = "\n".join(["PUT", canonical_path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, hashlib.sha256(body).hexdigest()])
scope = f"{t[:8]}/{region}/{service}/aws4_request"
sts = "\n".join(["AWS4-HMAC-SHA256", t, scope, hashlib.sha256(creq.encode()).hexdigest()])
k = ("AWS4" + secret).encode()
for part in (t[:8], region, service, "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
print(t, f"AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={signed}, Signature={sig}")
PY
)
cat > "$run/load.lua" <<'LUA'
wrk.method = os.getenv("METHOD") or "GET"
local body = os.getenv("BODY")
if body and body ~= "" then wrk.body = body end
wrk.headers["Content-Type"] = os.getenv("CTYPE") or "application/json"
wrk.headers["Authorization"] = os.getenv("AUTH") or "Bearer xoxp-0000000000-bench"
if os.getenv("AMZDATE") then wrk.headers["X-Amz-Date"] = os.getenv("AMZDATE") end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d http_err=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

(cd "$root" && cargo build --profile "$PROFILE" --locked --bin retention-proxy >/dev/null 2>&1) || { echo "bench: cargo build failed" >&2; exit 1; }
bin="$root/target/$PROFILE/retention-proxy"
if [ "$FLOOR" = 1 ]; then
  (cd "$root" && cargo build --profile "$PROFILE" --locked --example hyper_floor >/dev/null 2>&1) || { echo "bench: cargo build of the floor failed" >&2; exit 1; }
fi
(pin "$LOAD_CPU" nginx -p "$run" -c "$run/upstream.conf" -e "$run/up.err") & pids+=($!)
(pin "$PROXY_CPU" nginx -p "$run" -c "$run/proxy.conf" -e "$run/px.err") & pids+=($!)
haproxy_pid=""
if command -v haproxy >/dev/null; then
  (pin "$PROXY_CPU" haproxy -db -f "$run/haproxy.cfg" 2>"$run/haproxy.log") & haproxy_pid=$!; pids+=($haproxy_pid)
fi
floor_pid=""
if [ "$FLOOR" = 1 ]; then
  (pin "$PROXY_CPU" "$root/target/$PROFILE/examples/hyper_floor" "127.0.0.1:$FLR" "127.0.0.1:$UP" \
    auto graceful header-timeout request-timeout) & floor_pid=$!; pids+=($floor_pid)
fi
# The peers finish starting first, so that the start-up measured below is the proxy's own.
for port in $NGX ${haproxy_pid:+$HAP} ${floor_pid:+$FLR}; do
  for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.01; done
done
t0=$(date +%s%N)
(pin "$PROXY_CPU" "$bin" serve --config "$run/rp.toml" 2>"$run/rp.log") & rp_pid=$!; pids+=($rp_pid)
for _ in $(seq 1 1000); do curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.002; done
t1=$(date +%s%N)
ready_ms=$(( (t1 - t0) / 1000000 ))
(pin "$PROXY_CPU" "$bin" serve --config "$run/rpv.toml" 2>"$run/rpv.log") & rpv_pid=$!; pids+=($rpv_pid)
for _ in $(seq 1 1000); do curl -sf "http://127.0.0.1:$ADMINV/readyz" >/dev/null 2>&1 && break; sleep 0.002; done
base_pid=""
if [ -n "$BASELINE_BIN" ]; then
  (pin "$PROXY_CPU" "$BASELINE_BIN" serve --config "$run/rpb.toml" 2>"$run/rpb.log") & base_pid=$!; pids+=($base_pid)
  for _ in $(seq 1 1000); do curl -sf "http://127.0.0.1:$ADMINB/readyz" >/dev/null 2>&1 && break; sleep 0.002; done
fi
nginx_pid=$(cat "$run/px.pid" 2>/dev/null || echo "")
nginx_worker=$(pgrep -P "$nginx_pid" | head -1); nginx_worker=${nginx_worker:-$nginx_pid}
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
commits_before=$(metric retention_proxy_audit_commit_seconds_count)
commit_s_before=$(metric retention_proxy_audit_commit_seconds_sum)

rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU time (user+system, clock ticks) of a process and its threads.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)
# Hypervisor steal over a run, as a share of the machine's CPU time: on a shared VM a run with
# much steal measures the neighbours, not the target.
steal_ticks() { awk '$1 == "cpu" {print $9 + 0, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit}' /proc/stat; }
one() { # name url method body ctype [authorization amz-date]
  (METHOD="$3" BODY="$4" CTYPE="$5" AUTH="${6:-}" AMZDATE="${7:-}" pin "$LOAD_CPU" timeout $((DURATION + 10)) \
    wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s -s "$run/load.lua" "$2") | awk '/^RESULT/'
}
declare -A rps p50 p99 errs cpu stl
targets=(nginx)
[ -n "$haproxy_pid" ] && targets+=(haproxy)
[ -n "$floor_pid" ] && targets+=(floor)
targets+=(pass audited aws aws_verify)
[ -n "$base_pid" ] && targets+=(base_pass base_aud)
for t in "${targets[@]}"; do rps[$t]=""; cpu[$t]=""; done
for rep in $(seq 1 "$REPS"); do
  for t in "${targets[@]}"; do
    case $t in nginx) tpid=$nginx_worker;; haproxy) tpid=$haproxy_pid;; floor) tpid=$floor_pid;; base_*) tpid=$base_pid;; aws_verify) tpid=$rpv_pid;; *) tpid=$rp_pid;; esac
    best_line="" best_steal=101 best_ticks=0
    for attempt in $(seq 0 "$RETRIES"); do
      c0=$(cpu_ticks "$tpid"); read -r st0 all0 < <(steal_ticks)
      case $t in
        nginx)   line=$(one nginx "http://127.0.0.1:$NGX/api/v4/retention/policies/8f1c2a" PUT '{"retention_days":90}' application/json) ;;
        haproxy) line=$(one haproxy "http://127.0.0.1:$HAP/api/v4/retention/policies/8f1c2a" PUT '{"retention_days":90}' application/json) ;;
        floor)   line=$(one floor "http://127.0.0.1:$FLR/api/v4/retention/policies/8f1c2a" PUT '{"retention_days":90}' application/json) ;;
        pass)    line=$(one pass "http://127.0.0.1:$RP/api/v4/retention/policies/8f1c2a" PUT '{"retention_days":90}' application/json) ;;
        audited) line=$(one audited "http://127.0.0.1:$RP/api/admin.conversations.setCustomRetention" POST 'channel_id=C0123456789&duration_days=400' application/x-www-form-urlencoded) ;;
        aws)     line=$(one aws "http://127.0.0.1:$RP$AWS_PATH" PUT "$AWS_BODY" application/json "$AWS_AUTH" "$AWS_DATE") ;;
        aws_verify) line=$(one aws_verify "http://127.0.0.1:$RPV$AWS_PATH" PUT "$AWS_BODY" application/json "$AWS_AUTH" "$AWS_DATE") ;;
        base_pass) line=$(one base_pass "http://127.0.0.1:$RPB/api/v4/retention/policies/8f1c2a" PUT '{"retention_days":90}' application/json) ;;
        base_aud) line=$(one base_aud "http://127.0.0.1:$RPB/api/admin.conversations.setCustomRetention" POST 'channel_id=C0123456789&duration_days=400' application/x-www-form-urlencoded) ;;
      esac
      c1=$(cpu_ticks "$tpid"); read -r st1 all1 < <(steal_ticks)
      steal=$(awk -v s="$((st1 - st0))" -v a="$((all1 - all0))" 'BEGIN{ if (a > 0) printf "%.0f", 100 * s / a; else print 0 }')
      echo "rep $rep $t: $line steal=${steal}%" >&2
      if [ "$steal" -lt "$best_steal" ]; then best_line=$line best_steal=$steal best_ticks=$((c1 - c0)); fi
      [ "$steal" -le "$MAX_STEAL" ] && break
    done
    line=$best_line steal=$best_steal
    r=$(sed -E 's/.*rps=([0-9.]+).*/\1/' <<<"$line"); a=$(sed -E 's/.*p50_us=([0-9]+).*/\1/' <<<"$line")
    b=$(sed -E 's/.*p99_us=([0-9]+).*/\1/' <<<"$line"); e=$(sed -E 's/.*errors=([0-9]+) http_err=([0-9]+).*/\1+\2/' <<<"$line")
    rps[$t]+="$r "; p50[$t]+="$a "; p99[$t]+="$b "; errs[$t]+="$e "; stl[$t]+="$steal "
    cpu[$t]+="$(awk -v c="$best_ticks" -v hz="$hz" -v r="$r" -v d="$DURATION" 'BEGIN{ if (r > 0) printf "%.1f", c / hz * 1e6 / (r * d); else print 0 }') "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n_rps=$(median "${rps[nginx]}"); p_rps=$(median "${rps[pass]}")
events=$("$bin" audit query --db "$run/audit.db" --format jsonl --event-name admin.conversations.setCustomRetention | wc -l)
printf '\nmachine: %s cores; wrk -t%s -c%s -d%ss x %s reps; proxy pinned to CPU %s, load+upstream to CPU %s (PIN=%s)\n' \
  "$(nproc)" "$WRK_THREADS" "$CONNS" "$DURATION" "$REPS" "$PROXY_CPU" "$LOAD_CPU" "$PIN"
printf '%-9s %10s %8s %8s %9s %10s %10s %12s %7s %s\n' target req/s p50_us p99_us x_nginx x_pass cpu_us/rq peak_rss_MiB steal% errors
for t in "${targets[@]}"; do
  m=$(median "${rps[$t]}")
  case $t in nginx) rss=$(rss_kib "$nginx_pid");; haproxy) rss=$(rss_kib "$haproxy_pid");; floor) rss=$(rss_kib "$floor_pid");; base_*) rss=$(rss_kib "$base_pid");; aws_verify) rss=$(rss_kib "$rpv_pid");; *) rss=$(rss_kib "$rp_pid");; esac
  printf '%-9s %10.0f %8s %8s %9.2f %10.2f %10s %12.1f %7s %s\n' "$t" "$m" "$(median "${p50[$t]}")" "$(median "${p99[$t]}")" \
    "$(awk -v a="$m" -v b="$n_rps" 'BEGIN{print a/b}')" "$(awk -v a="$m" -v b="$p_rps" 'BEGIN{print a/b}')" "$(median "${cpu[$t]}")" \
    "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$(median "${stl[$t]}")" "${errs[$t]}"
done
groups=$(metric retention_proxy_audit_commit_seconds_count)
commit_s=$(metric retention_proxy_audit_commit_seconds_sum)
printf 'retention-proxy start-up to ready: %s ms; audited events committed: %s in %s group commits (%.1f records per fsync)\n' \
  "$ready_ms" "$events" "$((groups - commits_before))" "$(awk -v e="$events" -v g="$((groups - commits_before))" 'BEGIN{ if (g > 0) print 2*e/g; else print 0 }')"
# The latency target: audited p99 minus pass-through p99 below one group commit (fsync
# included) plus 1 ms.
commit_us=$(awk -v s="$commit_s" -v s0="$commit_s_before" -v g="$((groups - commits_before))" 'BEGIN{ if (g > 0) printf "%.0f", (s - s0) / g * 1e6; else print 0 }')
printf 'mean group commit (fsync included): %s us; audited latency added to pass-through: p50 %s us, p99 %s us (target p99: below %s us)\n' \
  "$commit_us" "$(( $(median "${p50[audited]}") - $(median "${p50[pass]}") ))" \
  "$(( $(median "${p99[audited]}") - $(median "${p99[pass]}") ))" "$((commit_us + 1000))"
"$bin" audit verify --db "$run/audit.db" >&2
"$bin" audit verify --db "$run/audit-verify.db" >&2
verified=$("$bin" audit query --db "$run/audit-verify.db" --format jsonl --actor bench-client | grep -c '"verified":true' || true)
printf 'client verification (SPEC §13): CPU per audited AWS call %s us with it, %s us without: %.1f %% of the call; %s calls recorded as verified\n' \
  "$(median "${cpu[aws_verify]}")" "$(median "${cpu[aws]}")" \
  "$(awk -v a="$(median "${cpu[aws_verify]}")" -v b="$(median "${cpu[aws]}")" 'BEGIN{ if (a > 0) print 100 * (a - b) / a; else print 0 }')" "$verified"
if [ -n "$base_pid" ]; then
  printf 'against the baseline binary in the same run: pass-through %.3fx, audited %.3fx (req/s); CPU per request: pass %s vs %s us, audited %s vs %s us\n' \
    "$(awk -v a="$p_rps" -v b="$(median "${rps[base_pass]}")" 'BEGIN{print a/b}')" \
    "$(awk -v a="$(median "${rps[audited]}")" -v b="$(median "${rps[base_aud]}")" 'BEGIN{print a/b}')" \
    "$(median "${cpu[pass]}")" "$(median "${cpu[base_pass]}")" "$(median "${cpu[audited]}")" "$(median "${cpu[base_aud]}")"
fi
