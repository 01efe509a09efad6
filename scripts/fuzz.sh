#!/usr/bin/env bash
# Runs every fuzz target (fuzz/src/bin/*.rs) for a bounded time each: the first
# argument, or NETVERDICT_FUZZ_SECONDS, or 60 seconds. Each starts from its
# corpus kept in the repository (fuzz/corpus/<target>, read only: new inputs go
# to a temporary directory) and stops at the first failure, which cargo-fuzz
# saves under fuzz/artifacts/<target>/ (reproduce with
# `cargo +nightly fuzz run --fuzz-dir fuzz -s none <target> <file>`).
# Prints each target's executions per second. Needs the nightly toolchain and
# cargo-fuzz: installed first when missing (scripts/install-deps.sh --fuzz).
# CI runs it after scripts/test.sh (.ci/run, 60 s per target); the tests also
# run every target on its seeds with stable `cargo test`
# (netverdict_api::fuzzing, netverdict_collector::fuzzing). See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${NETVERDICT_FUZZ_SECONDS:-60}}
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    scripts/install-deps.sh --fuzz
fi
# Safe Rust throughout: no sanitizer (twice the executions); overflow checks
# and debug assertions stay on (cargo-fuzz's default). Built under target/.
flags=(--fuzz-dir fuzz --sanitizer none --target-dir target/fuzz)
cargo +nightly fuzz build "${flags[@]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
for source in fuzz/src/bin/*.rs; do
    target=$(basename "$source" .rs)
    mkdir -p "$work/$target" "fuzz/corpus/$target"
    echo "fuzz.sh: $target for ${seconds}s"
    if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$work/$target.log" 2>&1; then
        tail -n 60 "$work/$target.log" >&2
        echo "fuzz.sh: $target FAILED: the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$target.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$target.log")
    summary+=("$target: $runs runs, $rate/s")
done
printf 'fuzz.sh: %s\n' "${summary[@]}"
