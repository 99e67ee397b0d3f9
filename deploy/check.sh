#!/usr/bin/env bash
# Checks the deployment examples against a built binary:
#  - deploy/systemd/retention-proxy.service passes `systemd-analyze verify` (a copy whose
#    ExecStart names the built binary, since verify needs the program to exist) with no
#    warning, and its hardening scores at most 2.0 in `systemd-analyze security`;
#  - deploy/systemd/retention-proxy.toml passes check-config (secret paths moved to stand-ins);
#  - the Kubernetes examples hold what they promise (deploy/check_kubernetes.py).
# Usage: deploy/check.sh PATH/TO/retention-proxy   (PYTHON: an interpreter with PyYAML)
set -euo pipefail
bin="$(realpath "$1")"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

unit="$work/retention-proxy.service"
sed "s#^ExecStart=/usr/local/bin/retention-proxy #ExecStart=$bin #" "$here/systemd/retention-proxy.service" > "$unit"
grep -q "^ExecStart=$bin serve " "$unit" || { echo "check: the unit's ExecStart is not /usr/local/bin/retention-proxy serve …" >&2; exit 1; }
if ! systemd-analyze verify "$unit" 2> "$work/verify.err" || [ -s "$work/verify.err" ]; then
  echo "check: systemd-analyze verify found problems in deploy/systemd/retention-proxy.service:" >&2
  cat "$work/verify.err" >&2
  exit 1
fi
grep -q '^ExecReload=/bin/kill -HUP \$MAINPID$' "$unit" || { echo "check: the unit does not reload with SIGHUP" >&2; exit 1; }
systemd-analyze security --offline=yes --threshold=20 "$unit" > "$work/security.out" 2>&1 || {
  tail -1 "$work/security.out" >&2
  echo "check: the unit's exposure is above 2.0" >&2
  exit 1
}
echo "retention-proxy.service: ok ($(tail -1 "$work/security.out" | sed 's/.*: //'))"

# The unit's configuration, its credential paths moved under $work.
root="$work/root"
cred=/run/credentials/retention-proxy.service
mkdir -p "$root$cred" "$root/etc/retention-proxy"
printf '[[client]]\nname = "check"\naccess_key_id = "RPCLIENTCHECK000001"\nsecret_access_key = "check-secret-key-check-secret-key-0000"\n' > "$root$cred/clients.toml"
printf 'stand-in-token\n' > "$root$cred/admin_token"
chmod 0400 "$root$cred/clients.toml" "$root$cred/admin_token"
sed -e "s#\"$cred/#\"$root$cred/#g" -e "s#\"/etc/retention-proxy/#\"$root/etc/retention-proxy/#g" \
    -e "s#\"/var/lib/retention-proxy/#\"$root/var/lib/retention-proxy/#g" \
    "$here/systemd/retention-proxy.toml" > "$work/config.toml"
for cred_name in $(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' "$here/systemd/retention-proxy.service"); do
  grep -q "\"$cred/$cred_name\"" "$here/systemd/retention-proxy.toml" \
    || { echo "check: credential $cred_name is loaded but the configuration does not read it" >&2; exit 1; }
done
for cred_name in $(grep -o "\"$cred/[^\"]*\"" "$here/systemd/retention-proxy.toml" | sed "s#\"$cred/##; s#\"##"); do
  grep -q "^LoadCredential=$cred_name:" "$here/systemd/retention-proxy.service" \
    || { echo "check: the configuration reads credential $cred_name, which the unit does not load" >&2; exit 1; }
done
if ! env -u RETENTION_PROXY_CONFIG "$bin" check-config --config "$work/config.toml" > "$work/check.out" 2>&1; then
  cat "$work/check.out" >&2
  echo "check: deploy/systemd/retention-proxy.toml does not pass check-config" >&2
  exit 1
fi
if grep -q stand-in-token "$work/check.out"; then
  echo "check: check-config shows the admin token" >&2
  exit 1
fi
echo "retention-proxy.toml: ok"

"$python" "$here/check_kubernetes.py" "$bin"
