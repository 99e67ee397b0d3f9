#!/usr/bin/env bash
# Starts retention-proxy as "the product" for the peer-comparison harness (compare.sh), which
# expands {PORT} {UPSTREAM} {RUN}:
#   compare.sh "$PWD/bench/start-product.sh {PORT} {UPSTREAM} {RUN}" 19000 retention-proxy
# Writes a config with every upstream at http://UPSTREAM and the audit log under RUN, then
# execs the dist binary (whole-program LTO, as shipped) in the foreground (the harness stops it with SIGTERM).
set -eu
port="$1" upstream="$2" run="$3"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/dist/retention-proxy"
[ -x "$bin" ] || (cd "$root" && cargo build --profile dist --locked --bin retention-proxy >&2)
cat > "$run/retention-proxy.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:0"
[audit]
path = "$run/retention-proxy-audit.db"
[upstreams]
chime = "http://$upstream"
chime_messaging = "http://$upstream"
chime_identity = "http://$upstream"
slack = "http://$upstream"
TOML
exec "$bin" serve --config "$run/retention-proxy.toml" 2>>"$run/retention-proxy.log"
