#!/usr/bin/env bash
# Relay cost, hark beside nginx (loadtest's `bench`, issue 12): builds the release
# binaries, then runs every workload (pcm16-100ms, pcm16-20ms, opus-20ms) three
# times through nginx and through hark with the default 500 sessions and a 30 s
# window. The table goes to stdout; the JSON report (machine, command line, every
# figure) to ${BENCH_OUT:-bench-out}/bench-<UTC time>.json. Extra arguments go to
# the bench, e.g. `scripts/bench.sh --sessions 100 --window 10`, or
# `scripts/bench.sh --relay hark --sessions 2000` (scale mode, hark alone).
# Takes about 3 × 3 × 2 × (ramp + settle + window + wind-down) ≈ 15 min at 500.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build --release -p hark -p hark-loadtest --bins"
cargo build --release --locked -p hark -p hark-loadtest --bins

out=${BENCH_OUT:-bench-out}
mkdir -p "$out"
json="$out/bench-$(date -u +%Y%m%dT%H%M%SZ).json"
echo "== bench --runs 3 $*"
target/release/bench --no-build --runs 3 --json "$json" "$@"
echo "== JSON report: $json"
