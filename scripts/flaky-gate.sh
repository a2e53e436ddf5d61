#!/usr/bin/env bash
# The flakiness gate: runs the fast test suites FLAKY_RUNS times in a row (default
# 5) and fails on the first failing run, naming the tests that failed, so a flaky
# test fails CI the day it lands rather than at random later.
#
# "Fast" is `cargo test --workspace` without the two stress tests that each hold
# thousands of sockets (hostile clients, idle memory); the local engine's tests
# (a feature build) and the drills (scripts/drill-ci.sh) are not part of it. The
# tests are built once first, so every run only runs them.
#
#   scripts/flaky-gate.sh              5 runs
#   FLAKY_RUNS=20 scripts/flaky-gate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${FLAKY_RUNS:-5}
if ! [[ $runs =~ ^[0-9]+$ ]] || (( runs < 1 )); then
  echo "flaky-gate: FLAKY_RUNS must be a positive whole number, not '$runs'" >&2
  exit 64
fi
# Test names (substrings) left out: minutes of socket stress, and the bench's end-to-end
# run (two relays and a build), each run once by test.sh.
skip=(hostile_clients_get_named_outcomes idle_connections_are_dropped bench_measures_both_relays_end_to_end)
skip_args=()
for name in "${skip[@]}"; do skip_args+=(--skip "$name"); done

log=$(mktemp -t flaky-gate.XXXXXX)
trap 'rm -f "$log"' EXIT

echo "== flaky-gate: building the tests once"
cargo test --workspace --locked --no-run --quiet

start=$(date +%s)
for (( run = 1; run <= runs; run++ )); do
  run_start=$(date +%s)
  if ! cargo test --workspace --locked --quiet -- "${skip_args[@]}" >"$log" 2>&1; then
    echo "== flaky-gate: run $run of $runs FAILED after $(( $(date +%s) - run_start ))s" >&2
    # The failing tests, then their output as cargo test printed it.
    grep -E '^test .* FAILED$|^---- .* stdout ----$' "$log" >&2 || tail -n 50 "$log" >&2
    echo "== flaky-gate: full output of the failing run:" >&2
    cat "$log" >&2
    exit 1
  fi
  passed=$(grep -Eo '^test result: ok\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
  echo "== flaky-gate: run $run of $runs passed ($passed tests) in $(( $(date +%s) - run_start ))s"
done
echo "== flaky-gate: $runs runs passed in $(( $(date +%s) - start ))s"
