#!/usr/bin/env bash
# Runs Hark's libFuzzer targets on the stable toolchain (see docs/security.md,
# "Fuzzing").
#
#   fuzz/run.sh TARGET SECONDS [LIBFUZZER_ARGS...]  one target, e.g. pusher_frame 600
#   fuzz/run.sh smoke [SECONDS]                     every target, SECONDS each (30)
#   fuzz/run.sh merge TARGET                        add the work corpus's new
#                                                   coverage to the committed seeds
#   fuzz/run.sh list                                the targets
#
# One libFuzzer process at a time, in-process (no -jobs/-workers: with -jobs=1
# libFuzzer would fork a child and send its output to fuzz-0.log, for nothing).
# New inputs go to fuzz/target/corpus/TARGET (ignored by git); the committed seeds
# in fuzz/corpus/TARGET are only read. Crashes, timeouts and OOMs land in
# fuzz/artifacts/TARGET/ and make the script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")"

# cargo-fuzz passes nightly-only rustc flags (-Zsanitizer=address); the stable
# toolchain accepts them with RUSTC_BOOTSTRAP=1, and ships the ASan runtime.
export RUSTC_BOOTSTRAP=1

TARGETS=(pusher_frame deepgram_message listen_query outbox_record decode_pcm decode_opus decode_lc3 decode_aac)

# -malloc_limit_mb: any single allocation over 512 MiB is reported as an OOM (needs
#   the ASan build: libFuzzer sees mallocs through the sanitizer's hooks).
# -rss_limit_mb: the process growing past 2 GiB is an OOM (unbounded allocation).
# -timeout: one input taking over 10 s is a hang.
LIMITS=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1)

target_args() {
    case "$1" in
        # Tokens may be up to 8 KiB + the scheme: let inputs reach that bound.
        listen_query) echo "-max_len=8704 -dict=dict/listen_query.dict" ;;
        deepgram_message | outbox_record) echo "-max_len=4096 -dict=dict/json.dict" ;;
        pusher_frame) echo "-max_len=4096 -dict=dict/json.dict" ;;
        # A few frames of audio: Opus packets are at most 1275 bytes, ADTS frames
        # at most 8191, LC3 messages a few 30-byte frames.
        decode_pcm | decode_opus | decode_lc3) echo "-max_len=4096" ;;
        decode_aac) echo "-max_len=8192" ;;
        *) echo "unknown target $1 (fuzz/run.sh list)" >&2; exit 2 ;;
    esac
}

run() {
    local target=$1 seconds=$2
    shift 2
    local extra
    extra=$(target_args "$target")
    mkdir -p "target/corpus/$target" "corpus/$target" "artifacts/$target"
    echo "== fuzz $target for ${seconds}s ($(date -u +%FT%TZ))"
    # shellcheck disable=SC2086 # $extra is a list of flags
    cargo fuzz run "$target" "target/corpus/$target" "corpus/$target" -- \
        "${LIMITS[@]}" $extra -max_total_time="$seconds" "$@"
}

case "${1:-}" in
    list) printf '%s\n' "${TARGETS[@]}" ;;
    smoke)
        seconds=${2:-30}
        for t in "${TARGETS[@]}"; do run "$t" "$seconds"; done
        ;;
    merge)
        target=${2:?usage: fuzz/run.sh merge TARGET}
        target_args "$target" >/dev/null
        cargo fuzz run "$target" "corpus/$target" "target/corpus/$target" -- -merge=1
        ;;
    "" | -h | --help) sed -n '2,16p' "$0" ;;
    *)
        [[ $# -ge 2 ]] || { echo "usage: fuzz/run.sh TARGET SECONDS [ARGS...]" >&2; exit 2; }
        run "$@"
        ;;
esac
