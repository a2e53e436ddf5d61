#!/usr/bin/env bash
# Installs the Debian packages Hark needs to build, test and benchmark every
# crate (Debian 12 bookworm). Safe to run again: it installs only what is
# missing and refreshes the package lists only when they are stale.
#
#   scripts/setup.sh           install what is missing (root, or sudo)
#   scripts/setup.sh --check   only report what is missing; exit 1 if anything is
#
# Add a package by appending it to PACKAGES, with a comment saying who needs it.
set -euo pipefail

PACKAGES=(
    # Building: C toolchain for build scripts and the FFI signature test, pkg-config for linking.
    gcc
    libc6-dev
    pkg-config
    # hark-stt-local --features pocketsphinx: the library and its header,
    libpocketsphinx-dev
    # the en-us acoustic model, language model and dictionary,
    pocketsphinx-en-us
    # pocketsphinx_continuous (the reference the `wer` tool compares against),
    pocketsphinx
    # test audio with transcripts (goforward.raw, librivox/); also hark-codec's
    # round-trip tests and benchmark.
    pocketsphinx-testdata
    # hark-store's tests (and the gateway's and hark's, through its `testing`
    # feature) run real engines: initdb/pg_ctl under /usr/lib/postgresql/*/bin,
    postgresql
    # and redis-server. Each test starts its own server in a temp dir.
    redis-server
    # hark-codec: libopus for Opus (linked via pkg-config by opusic-sys),
    libopus-dev
    # liblc3 for LC3 (lc3_fs1030),
    liblc3-dev
    # and the ffmpeg CLI, whose AAC encoder makes the AAC test audio.
    ffmpeg
    # loadtest's `bench` runs the same swarm through nginx (a plain WebSocket
    # tunnel) as the baseline for hark's relay cost (scripts/bench.sh, its test).
    nginx
)

# Package lists younger than this are used as they are.
LISTS_MAX_AGE_MINUTES=$((24 * 60))

say() { printf 'setup.sh: %s\n' "$*" >&2; }

missing_packages() {
    local pkg status
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || printf '%s\n' "$pkg"
    done
}

lists_are_fresh() {
    [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' \
        -mmin "-$LISTS_MAX_AGE_MINUTES" -print -quit 2>/dev/null) ]]
}

main() {
    local check_only=false
    case "${1:-}" in
        "") ;;
        --check) check_only=true ;;
        -h | --help)
            sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
            return 0
            ;;
        *)
            say "unknown argument: $1 (try --help)"
            return 64
            ;;
    esac

    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        say "this script installs Debian packages and needs dpkg and apt-get"
        return 1
    fi

    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        say "all ${#PACKAGES[@]} packages are installed"
        return 0
    fi
    if $check_only; then
        say "missing: ${missing[*]}"
        return 1
    fi

    local -a sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null; then
            sudo=(sudo)
        else
            say "need root to install ${missing[*]}: run as root, or install sudo"
            return 1
        fi
    fi

    export DEBIAN_FRONTEND=noninteractive
    if ! lists_are_fresh; then
        say "refreshing package lists"
        "${sudo[@]}" apt-get update -q
    fi
    say "installing: ${missing[*]}"
    if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        # Fresh-looking lists can still miss a package (or a mirror moved): retry once.
        say "install failed; refreshing package lists and retrying"
        "${sudo[@]}" apt-get update -q
        "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi

    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} != 0)); then
        say "still missing after install: ${missing[*]}"
        return 1
    fi
    say "done"
}

main "$@"
