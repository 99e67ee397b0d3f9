#!/usr/bin/env bash
# Fuzzes the readers of untrusted input: the recogniser (method, path, headers, body), strict
# JSON, Slack form and JSON bodies, path normalisation, the SigV4 Authorization reader, the
# SigV4 verifier and the configuration loader. Each target runs for SECONDS (default 30) from
# its seed corpus in fuzz/corpus/<target>/ (new inputs go to a scratch directory, so the
# committed corpus stays curated), with a memory bound; a crash, a failed assertion, a timeout
# or the bound stops it.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET ...]
#
# libFuzzer with coverage instrumentation and no sanitizer (the product has no unsafe code):
# the same build `cargo fuzz build --sanitizer none` makes, without needing cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
each="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(recognise strict_json form_body path sigv4_authorization sigv4_verify config)
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
# An explicit --target keeps the instrumentation off build scripts and proc-macros.
triple="$(rustc -vV | sed -n 's/^host: //p')"
# Not --locked: the product's own dependencies change under it; cargo adds what is missing to
# fuzz/Cargo.lock and keeps the rest.
cargo build --release --bins --target "$triple"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  echo "fuzz: $t for ${each}s" >&2
  "$CARGO_TARGET_DIR/$triple/release/$t" -max_total_time="$each" -rss_limit_mb=1024 -malloc_limit_mb=512 -timeout=10 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="artifacts/$t/" "$scratch/$t" "corpus/$t" 2>"$scratch/$t.log" || {
    tail -40 "$scratch/$t.log" >&2
    echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  }
  grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$scratch/$t.log" | sed "s/^/$t /" >&2
done
