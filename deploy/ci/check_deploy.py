#!/usr/bin/env python3
"""Offline checks of deploy/ that need more than a linter: run by
scripts/validate-deploy.sh inside its pinned virtualenv (PyYAML,
kubernetes-validate); the `grafana` and `metrics` checks need only PyYAML.

  check_deploy.py k8s --kube-version 1.30 [--adapter-rules F] RENDERED.yaml...
      every object against the Kubernetes OpenAPI JSON schemas shipped in the
      kubernetes-validate wheel (strict: unknown fields are errors; a kind with
      no schema is an error, not a warning), then a few cross-object facts
      (ConfigMap/Secret references, probes on the admin port, grace period
      above the drain timeout, the HPA's metric served by prometheus-adapter).
  check_deploy.py adapter RULES.yaml
      the prometheus-adapter rule file's shape.
  check_deploy.py grafana DASHBOARD.json...
      datasource variable, `pod` variable, unique panel ids, and a panel for
      every metric of design §7.
  check_deploy.py metrics FILE...
      every metric name in rules/dashboards is one Hark exports.

Each prints problems one per line and exits 1 if there were any.
"""

import argparse
import json
import re
import sys

import yaml

# The metrics contract: design.md §7, plus hark_outbox_max_bytes (the
# configured --outbox-max-bytes, exported for the outbox-full alert).
# Histograms are listed by base name; their series add _bucket/_sum/_count.
CONTRACT_METRICS = {
    "hark_sessions_active",
    "hark_sessions_total",
    "hark_session_rejections_total",
    "pusher_circuit_breaker_state",
    "pusher_circuit_breaker_transitions_total",
    "pusher_circuit_breaker_rejections_total",
    "pusher_connect_attempts_total",
    "pusher_sessions_connected",
    "pusher_sessions_degraded",
    "pusher_dropped_bytes_total",
    "hark_conversations_total",
    "hark_outbox_records",
    "hark_outbox_bytes",
    "hark_outbox_replayed_total",
    "hark_stt_reconnects_total",
    "hark_transcript_latency_seconds",
    "hark_runtime_lag_seconds",
    "hark_conversations_parked",
    "hark_conversations_resumed_total",
    "hark_store_up",
    "hark_store_calls_total",
    "hark_quota_rejections_total",
}
EXTRA_METRICS = {
    "hark_outbox_max_bytes",
    "hark_shared_outbox_pending",
    "hark_shared_outbox_oldest_seconds",
    "hark_shared_outbox_claims_total",
}
HISTOGRAMS = {"hark_transcript_latency_seconds", "hark_runtime_lag_seconds"}
# The same pattern the project's metric-name test uses.
METRIC_RE = re.compile(r"\b(?:hark|pusher)_[a-z_]+")


def base_name(name):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------- kubernetes


def load_docs(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((path, doc))
    return docs


def kname(doc):
    return "%s/%s" % (doc.get("kind", "?"), doc.get("metadata", {}).get("name", "?"))


def parse_duration(text):
    """Seconds in a humantime-style duration such as 30s, 2m, 1m30s, 250ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError("cannot parse duration %r" % text)
    return sum(float(n) * units[u] for n, u in parts)


def schema_errors(docs, versions):
    # Imported here so the grafana/metrics checks run without the package.
    import kubernetes_validate

    errors = []
    for path, doc in docs:
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path) or "(root)"
                errors.append("%s: %s: k8s %s schema: %s: %s" % (path, kname(doc), e.version, where, e.message))
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                errors.append("%s: %s: %s" % (path, kname(doc), e.message))
            except kubernetes_validate.VersionNotSupportedError as e:
                errors.append("kubernetes-validate does not know Kubernetes %s" % e.version)
                return errors
    return errors


def pod_spec(doc):
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc.get("spec", {}).get("template", {}).get("spec", {})
    return None


def policy_errors(docs, adapter_names):
    errors = []
    by_kind = {}
    for _, doc in docs:
        by_kind.setdefault(doc.get("kind"), {})[doc.get("metadata", {}).get("name")] = doc
    configmaps = by_kind.get("ConfigMap", {})

    for path, doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        name = kname(doc)
        env = {}
        for c in spec.get("containers", []):
            for src in c.get("envFrom", []):
                ref = src.get("configMapRef", {}).get("name")
                if ref is None:
                    continue
                if ref not in configmaps:
                    errors.append("%s: %s: envFrom ConfigMap %r is not in the rendered output" % (path, name, ref))
                else:
                    env.update(configmaps[ref].get("data", {}))
        for c in spec.get("containers", []):
            ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
            for key, port_name in (("HARK_LISTEN", "client"), ("HARK_ADMIN_LISTEN", "admin")):
                addr = env.get(key)
                if addr is None:
                    errors.append("%s: %s: %s is not set" % (path, name, key))
                elif not addr.endswith(":%s" % ports.get(port_name)):
                    errors.append("%s: %s: %s=%s does not match containerPort %s=%s"
                                  % (path, name, key, addr, port_name, ports.get(port_name)))
            for probe, route in (("livenessProbe", "/healthz"), ("readinessProbe", "/ready")):
                get = c.get(probe, {}).get("httpGet", {})
                if get.get("path") != route or get.get("port") not in ("admin", ports.get("admin")):
                    errors.append("%s: %s: %s must be GET %s on the admin port" % (path, name, probe, route))
            mounts = {m.get("mountPath") for m in c.get("volumeMounts", [])}
            outbox = env.get("HARK_OUTBOX_DIR")
            if outbox and outbox not in mounts:
                errors.append("%s: %s: HARK_OUTBOX_DIR=%s is not a volume mount (records would be lost)"
                              % (path, name, outbox))
        drain = env.get("HARK_DRAIN_TIMEOUT")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if drain is not None:
            try:
                if grace <= parse_duration(drain):
                    errors.append("%s: %s: terminationGracePeriodSeconds=%s must exceed HARK_DRAIN_TIMEOUT=%s"
                                  % (path, name, grace, drain))
            except ValueError as e:
                errors.append("%s: %s: HARK_DRAIN_TIMEOUT: %s" % (path, name, e))

    for path, doc in docs:
        if doc.get("kind") != "HorizontalPodAutoscaler":
            continue
        ref = doc.get("spec", {}).get("scaleTargetRef", {})
        if ref.get("name") not in by_kind.get(ref.get("kind"), {}):
            errors.append("%s: %s: scaleTargetRef %s/%s is not in the rendered output"
                          % (path, kname(doc), ref.get("kind"), ref.get("name")))
        for metric in doc.get("spec", {}).get("metrics", []):
            if metric.get("type") == "Resource":
                errors.append("%s: %s: scales on a Resource metric; Hark scales on sessions" % (path, kname(doc)))
            if metric.get("type") == "Pods" and adapter_names is not None:
                mname = metric["pods"]["metric"]["name"]
                if mname not in adapter_names:
                    errors.append("%s: %s: Pods metric %r is not served by a prometheus-adapter rule"
                                  % (path, kname(doc), mname))
    return errors


# ---------------------------------------------------------------- prometheus-adapter


def adapter_rules(path):
    """(errors, names the rules expose)."""
    errors, names = [], set()
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    rules = (config or {}).get("rules")
    if not isinstance(rules, list) or not rules:
        return ["%s: expected a non-empty `rules:` list" % path], names
    for i, rule in enumerate(rules):
        where = "%s: rules[%d]" % (path, i)
        for key in ("seriesQuery", "resources", "name", "metricsQuery"):
            if key not in rule:
                errors.append("%s: missing %s" % (where, key))
        unknown = set(rule) - {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}
        if unknown:
            errors.append("%s: unknown keys %s" % (where, sorted(unknown)))
        query = rule.get("metricsQuery", "")
        for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            if placeholder not in query:
                errors.append("%s: metricsQuery lacks %s" % (where, placeholder))
        overrides = rule.get("resources", {}).get("overrides", {})
        if rule.get("resources", {}).get("template") is None and {"namespace", "pod"} - set(overrides):
            errors.append("%s: resources must map both namespace and pod" % where)
        series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule.get("seriesQuery", ""))
        if not series:
            errors.append("%s: seriesQuery does not start with a metric name" % where)
            continue
        name = rule.get("name", {})
        matches = name.get("matches", "^(.*)$")
        try:
            exposed = re.sub(matches, name.get("as", "$1").replace("$", "\\"), series.group(1))
        except re.error as e:
            errors.append("%s: name.matches: %s" % (where, e))
            continue
        if not re.search(matches, series.group(1)):
            errors.append("%s: name.matches %r does not match %s" % (where, matches, series.group(1)))
        names.add(exposed)
    return errors, names


# ---------------------------------------------------------------- grafana


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def grafana_errors(path):
    errors = []
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("%s: needs a Prometheus datasource variable DS_PROMETHEUS" % path)
    if "pod" not in variables:
        errors.append("%s: needs a `pod` template variable" % path)
    seen_ids, used = set(), set()
    for panel in walk_panels(dash.get("panels", [])):
        title = panel.get("title", "?")
        if panel.get("id") in seen_ids:
            errors.append("%s: panel id %s used twice" % (path, panel.get("id")))
        seen_ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        for holder in [panel] + panel.get("targets", []):
            if holder.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                errors.append("%s: panel %r: datasource must be ${DS_PROMETHEUS}" % (path, title))
        if not panel.get("targets"):
            errors.append("%s: panel %r has no queries" % (path, title))
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if "$pod" not in expr:
                errors.append("%s: panel %r: query ignores the pod variable: %s" % (path, title, expr))
            used.update(base_name(m) for m in METRIC_RE.findall(expr))
    for missing in sorted((CONTRACT_METRICS | EXTRA_METRICS) - used):
        errors.append("%s: no panel shows %s" % (path, missing))
    return errors


# ---------------------------------------------------------------- metric names


def metric_name_errors(paths):
    errors = []
    known = CONTRACT_METRICS | EXTRA_METRICS
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                for name in METRIC_RE.findall(line):
                    if base_name(name) not in known:
                        errors.append("%s:%d: %s is not a metric Hark exports (design §7)" % (path, lineno, name))
    return errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    k8s = sub.add_parser("k8s")
    k8s.add_argument("--kube-version", action="append", required=True)
    k8s.add_argument("--adapter-rules")
    k8s.add_argument("--display", help="name to show for the rendered files in messages")
    k8s.add_argument("files", nargs="+")
    sub.add_parser("adapter").add_argument("file")
    sub.add_parser("grafana").add_argument("files", nargs="+")
    sub.add_parser("metrics").add_argument("files", nargs="+")
    args = parser.parse_args()

    try:
        if args.cmd == "k8s":
            docs = load_docs(args.files)
            if args.display:
                docs = [(args.display, doc) for _, doc in docs]
            if not docs:
                errors = ["no objects in %s" % " ".join(args.files)]
            else:
                names = adapter_rules(args.adapter_rules)[1] if args.adapter_rules else None
                errors = schema_errors(docs, args.kube_version)
                # The cross-checks assume well-typed objects.
                errors = errors or policy_errors(docs, names)
                if not errors:
                    print("%d objects valid against Kubernetes %s"
                          % (len(docs), ", ".join(args.kube_version)))
        elif args.cmd == "adapter":
            errors, names = adapter_rules(args.file)
            if not errors:
                print("serves %s" % ", ".join(sorted(names)))
        elif args.cmd == "grafana":
            errors = [e for path in args.files for e in grafana_errors(path)]
        else:
            errors = metric_name_errors(args.files)
    except (OSError, ValueError, yaml.YAMLError) as e:
        # json.JSONDecodeError is a ValueError.
        errors = [str(e)]
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
