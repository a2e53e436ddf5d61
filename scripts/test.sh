#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration, property
# tests) and the deploy/ validation. Installs what it needs first (scripts/setup.sh
# when present). This is the README's test command; .ci/run adds fmt and clippy.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -x scripts/setup.sh || -f scripts/setup.sh ]]; then
  bash scripts/setup.sh
fi

echo "== cargo test (workspace)"
cargo test --workspace --locked

echo "== deploy/ validation"
bash scripts/validate-deploy.sh
