#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace without and with the embedded
# speech engine, the flakiness gate (the fast suites FLAKY_RUNS more times, default
# 5), the deploy/ validation, and the quick incident drills. Installs what it needs
# first (scripts/setup.sh). This is the README's test command; .ci/run adds fmt and
# clippy in front of it.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start ))s)"; }

step "system packages"
bash scripts/setup.sh

step "cargo test (workspace, without the local engine)"
cargo test --workspace --locked

step "flakiness gate: the fast suites ${FLAKY_RUNS:-5} times in a row"
bash scripts/flaky-gate.sh

step "cargo test (the local engine: real speech through hark)"
cargo test --locked -p hark -p hark-stt-local --features hark/local-stt,hark-stt-local/pocketsphinx

step "deploy/ validation"
bash scripts/validate-deploy.sh

if [[ -f scripts/drill-ci.sh ]]; then
  step "incident drills (--quick)"
  bash scripts/drill-ci.sh
fi

step "all tests passed"
