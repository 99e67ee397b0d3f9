#!/usr/bin/env bash
# Checks the README's set-up on a clean clone with the distribution's own Python: clones this
# checkout (its committed state) into a temporary directory and runs the set-up part of
# scripts/test-all.sh there (SETUP_ONLY=1: the virtual environment, `pip install -r
# tests/clients/requirements.txt`, `npm ci`) with `python3` on PATH being /usr/bin/python3,
# whose pip refuses to install into it on Debian 12 and later (externally-managed-environment).
# Asserts that the set-up succeeds, that its Python packages landed in the clone's virtual
# environment, and that the system interpreter's site-packages are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
sys_py=/usr/bin/python3
if [ ! -x "$sys_py" ]; then
  echo "check-readme-setup: $sys_py is missing (Debian: apt-get install -y python3)" >&2
  exit 1
fi
fail() { echo "check-readme-setup: FAIL: $*" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# What the system interpreter has installed, before and after (names and versions).
site_listing() {
  "$sys_py" - <<'EOF'
import site, sysconfig, os
dirs = set(site.getsitepackages()) | {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
for d in sorted(dirs):
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            print(os.path.join(d, name))
EOF
}
site_listing >"$tmp/site-before"

# The premise: the system interpreter is externally managed, so `pip install` into it fails.
marker="$("$sys_py" -c 'import sysconfig, os; print(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))')"
[ -f "$marker" ] || fail "$sys_py is not externally managed ($marker missing): this check needs Debian's python3"
if "$sys_py" -m pip --version >/dev/null 2>&1; then
  if "$sys_py" -m pip install --dry-run --no-deps --disable-pip-version-check six >"$tmp/pip.out" 2>&1; then
    fail "$sys_py -m pip install was accepted; the system interpreter is not protected"
  fi
  grep -q externally-managed-environment "$tmp/pip.out" ||
    fail "$sys_py -m pip install failed for another reason: $(cat "$tmp/pip.out")"
fi

git clone --quiet --no-hardlinks . "$tmp/repo"
mkdir "$tmp/bin"
ln -s "$sys_py" "$tmp/bin/python3"
start=$SECONDS
(
  cd "$tmp/repo"
  unset CLIENTS_VENV VIRTUAL_ENV PYTHONHOME PYTHONPATH
  export PATH="$tmp/bin:$PATH" SETUP_ONLY=1
  [ "$(command -v python3)" = "$tmp/bin/python3" ] || fail "python3 on PATH is $(command -v python3)"
  bash scripts/test-all.sh
) || fail "the set-up part of scripts/test-all.sh failed in a clean clone with $sys_py"

venv_py="$tmp/repo/.venv-clients/bin/python"
[ -x "$venv_py" ] || fail "no virtual environment at .venv-clients/ in the clone"
base="$("$venv_py" -c 'import sys; print(sys.base_prefix)')"
[ "$base" = "/usr" ] || fail "the clone's virtual environment was made from $base, not $sys_py"
"$venv_py" -c 'import boto3, awscli, slack_sdk, pytest, playwright' ||
  fail "the client suite's packages are not importable from the clone's virtual environment"
[ -d "$tmp/repo/tests/clients/js/node_modules/@aws-sdk/client-chime" ] ||
  fail "npm ci did not install tests/clients/js's packages"
site_listing >"$tmp/site-after"
diff -u "$tmp/site-before" "$tmp/site-after" >&2 ||
  fail "the set-up changed the system interpreter's site-packages"
echo "check-readme-setup: OK: a clean clone sets up with $sys_py ($("$sys_py" --version)) in $((SECONDS - start)) s; the system interpreter is untouched"
