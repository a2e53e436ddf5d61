#!/usr/bin/env bash
# Sets up and starts hark on its embedded speech engine: no cloud account needed.
# Installs the Debian packages (scripts/setup.sh), builds hark with the local
# PocketSphinx engine and runs it on 127.0.0.1:8080 (admin on 127.0.0.1:9090).
# Extra arguments go to hark, e.g. scripts/quickstart.sh --pusher-url ws://127.0.0.1:7002
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release --locked -p hark --features local-stt -- --stt local "$@"
