#!/usr/bin/env bash
# The drills CI gates on: `drill --quick` for the `incident`, `http-429` and
# `fleet` scenarios (50 sessions, about a minute each, hark's timings scaled
# down; `fleet` runs two hark pods on a throwaway Postgres, so it needs the
# postgresql package from scripts/setup.sh and fails without it), built in
# release mode. Fails if any target is missed, or a drill errors or hangs.
# Reports (JSON, Markdown, SVG) and every process's log land in
# ${DRILL_OUT:-drill-out/ci}/<scenario>/.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build --release -p hark -p hark-loadtest --bins"
cargo build --release --locked -p hark -p hark-loadtest --bins

out=${DRILL_OUT:-drill-out/ci}
mkdir -p "$out"
failed=()
for scenario in incident http-429 fleet; do
  echo "== drill --quick --scenario $scenario"
  start=$(date +%s)
  # The drill bounds every wait itself; the timeout is a backstop against a hang.
  if timeout --kill-after=10 150 target/release/drill --quick --no-build \
      --scenario "$scenario" --out "$out/$scenario"; then
    result=pass
  else
    result="FAIL (exit $?)"
    failed+=("$scenario")
  fi
  echo "== drill $scenario: $result in $(( $(date +%s) - start ))s; report: $out/$scenario/drill-report.md"
done

if (( ${#failed[@]} )); then
  echo "== drills failed: ${failed[*]}" >&2
  exit 1
fi
echo "== drills passed"
