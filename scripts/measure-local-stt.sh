#!/usr/bin/env bash
# How many concurrent real-time sessions the embedded engine sustains on this machine.
# For N = 1..MAX sessions, starts `hark --stt local --stt-decoders N` (release), has
# `swarm` stream a LibriVox recording on a loop at real-time pace for DURATION, and
# reports hark's CPU per audio second (the real-time factor per session) and the
# audio hark had to drop because decoders fell behind (hark_stt_dropped_bytes_total).
# Usage: scripts/measure-local-stt.sh [MAX=4] [DURATION=40s]
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-4}
duration=${2:-40s}
source=/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav
cargo build --release --locked -q -p hark --features local-stt
cargo build --release --locked -q -p hark-loadtest --bin swarm
tick=$(getconf CLK_TCK)
out=$(mktemp -d)
# The recording plus 1.5 s of silence, so each pass of the loop ends an utterance.
wav="$out/speech-then-pause.wav"
python3 - "$source" "$wav" <<'PY'
import sys, wave
with wave.open(sys.argv[1]) as src:
    params, frames = src.getparams(), src.readframes(src.getnframes())
with wave.open(sys.argv[2], "wb") as dst:
    dst.setparams(params)
    dst.writeframes(frames + b"\0" * int(params.framerate * 1.5) * params.sampwidth)
PY
printf '%-9s %-12s %-22s %-16s %-10s\n' sessions "cores used" "RTF (cpu s/audio s)" "dropped audio" "transcripts received"
for n in $(seq 1 "$max"); do
  ./target/release/hark --stt local --stt-decoders "$n" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --log-format json --outbox-dir "$out/outbox-$n" 2> "$out/hark-$n.log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q '"hark is listening"' "$out/hark-$n.log" && break; sleep 0.1; done
  listen=$(grep '"hark is listening"' "$out/hark-$n.log" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["fields"]["listen"])')
  admin=$(grep '"hark is listening"' "$out/hark-$n.log" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["fields"]["admin"])')
  cpu0=$(awk '{print $14+$15}' "/proc/$pid/stat")
  ./target/release/swarm --url "ws://$listen" -n "$n" --ramp-rate 10 --duration "$duration" --wav "$wav" \
    --no-reconnect --settle 5s --result "$out/swarm-$n.json" > /dev/null 2> "$out/swarm-$n.err" || true
  cpu1=$(awk '{print $14+$15}' "/proc/$pid/stat")
  metrics=$(curl -s "http://$admin/metrics" 2>/dev/null || python3 -c "import urllib.request;print(urllib.request.urlopen('http://$admin/metrics').read().decode())")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$n" "$duration" "$cpu0" "$cpu1" "$tick" "$out/swarm-$n.json" <<PY
import json, sys, re
n, duration, cpu0, cpu1, tick, result = sys.argv[1:]
n = int(n); secs = float(re.sub(r'[^0-9.]', '', duration))
cpu = (float(cpu1) - float(cpu0)) / float(tick)
metrics = """$metrics"""
dropped = sum(float(l.split()[-1]) for l in metrics.splitlines() if l.startswith("hark_stt_dropped_bytes_total"))
try:
    r = json.load(open(result)); segs = r["words"]["segment_messages"]
except Exception:
    segs = "?"
audio = n * secs
print(f"{n:<9} {cpu/secs:<12.2f} {cpu/audio:<22.3f} {dropped/(n*secs*32000)*100:>5.1f}% of audio   {segs}")
PY
done
