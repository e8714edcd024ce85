#!/usr/bin/env python3
"""Checks of the deployment files, run by scripts/test-deploy.sh (`make deploy`).

    check.py kubernetes VERSION SCHEMAS FILE...   every document of the rendered
        manifests against Kubernetes VERSION's schemas (kubernetes-validate,
        strict: unknown fields are errors), or, for a kind Kubernetes does not
        define (a CRD's), against SCHEMAS/<kind>-<group>-<version>.json; a
        document with neither fails.
    check.py consistency BASE OVERLAY ADAPTER OUT   what a schema cannot see:
        probes, drain timing, hardening, selectors, Secret references, the HPA
        metric against the adapter rule. Writes OUT/orinari.toml (the
        ConfigMap's) and OUT/adapter-rules.yml (the adapter's query, for
        promtool).
    check.py metrics TELEMETRY_SRC OUT FILE...   every metric name in the
        Grafana dashboards (.json) and Prometheus rule files (.yml) is one the
        telemetry crate registers; writes the dashboard queries to
        OUT/dashboard-rules.yml, for promtool.
    check.py sandbox UNIT GROUPS TRACE WORKDIR   what `orinari serve` did under
        `strace -f` (TRACE) fits the systemd unit's sandbox: every system call
        in its SystemCallFilter (GROUPS: `systemd-analyze syscall-filter`),
        every socket in RestrictAddressFamilies, no writable and executable
        memory (MemoryDenyWriteExecute), and every file it wrote, created or
        removed under WORKDIR (the StateDirectory) or /tmp (ProtectSystem=strict).

Needs PyYAML and, for `kubernetes`, kubernetes-validate (and its jsonschema):
the test script's virtual environment has both.
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml


def fail(msg):
    print(f"FAIL {msg}")
    return 1


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind):
    found = by_kind(docs, kind)
    if len(found) != 1:
        raise SystemExit(f"FAIL expected one {kind}, found {len(found)}")
    return found[0]


# --- kubernetes -----------------------------------------------------------


def cmd_kubernetes(version, schemas, files):
    import jsonschema
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    errors = 0
    count = 0
    for path in files:
        for doc in load_docs(path):
            count += 1
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                print(f"ok   {path}: {name} (Kubernetes {version} schema, strict)")
                continue
            except SchemaNotFoundError:
                pass
            except jsonschema.ValidationError as e:
                errors += fail(f"{path}: {name}: {e.message} at {'.'.join(map(str, e.absolute_path))}")
                continue
            group_version = doc.get("apiVersion", "")
            api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", group_version)
            pinned = pathlib.Path(schemas) / f"{doc['kind'].lower()}-{api}.json"
            if not pinned.is_file():
                errors += fail(
                    f"{path}: {name}: no schema for {group_version} in Kubernetes {version} "
                    f"(a CRD) and none pinned at {pinned}"
                )
                continue
            schema = json.loads(pinned.read_text())
            validator = jsonschema.Draft202012Validator(schema)
            problems = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
            if problems:
                for e in problems:
                    errors += fail(f"{path}: {name}: {e.message} at {'.'.join(map(str, e.absolute_path))}")
            else:
                print(f"ok   {path}: {name} (CRD {group_version}: pinned schema {pinned})")
    print(f"kubernetes: {count} documents, {errors} errors")
    return 1 if errors else 0


# --- consistency ------------------------------------------------------------


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def check_workload(docs, label, problems):
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    (c,) = [c for c in spec["containers"] if c["name"] == "orinari"]
    cm = one(docs, "ConfigMap")
    text = cm["data"]["orinari.toml"]
    cfg = tomllib.loads(text)

    def need(cond, what):
        if not cond:
            problems.append(f"{label}: {what}")

    # Probes: startup and liveness on /healthz, readiness on /readyz, on the named port.
    probe = lambda kind: c.get(kind, {}).get("httpGet", {})  # noqa: E731
    need(probe("startupProbe").get("path") == "/healthz", "startupProbe is not GET /healthz")
    need(probe("livenessProbe").get("path") == "/healthz", "livenessProbe is not GET /healthz")
    need(probe("readinessProbe").get("path") == "/readyz", "readinessProbe is not GET /readyz")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    listen_port = int(cfg["server"]["listen"].rsplit(":", 1)[1])
    need(ports.get("http") == listen_port, f"container port http != [server] listen port {listen_port}")
    need(cfg["server"]["listen"].startswith("0.0.0.0:"), "[server] listen is not on every interface")
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        need(probe(kind).get("port") == "http", f"{kind} is not on the port named http")

    # Drain: the grace period covers the preStop pause and shutdown_timeout_ms,
    # with at least 5 s to close the store and stop the status service.
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    drain = cfg["server"].get("shutdown_timeout_ms", 30000) / 1000
    grace = spec.get("terminationGracePeriodSeconds", 30)
    need(pre_stop >= 3, "preStop does not pause (sleep) before SIGTERM")
    need(
        grace >= pre_stop + drain + 5,
        f"terminationGracePeriodSeconds {grace} < preStop {pre_stop} + drain {drain} + 5",
    )
    print(
        f"ok   {label}: drain: preStop {pre_stop}s + shutdown_timeout_ms {drain:.0f}s "
        f"+ 5s <= terminationGracePeriodSeconds {grace}"
    )

    # Hardening.
    psc = spec.get("securityContext", {})
    sc = c.get("securityContext", {})
    need(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0, "pod may run as root")
    need(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "no RuntimeDefault seccomp profile")
    need(sc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
    need(sc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
    need(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities not all dropped")
    need(spec.get("automountServiceAccountToken") is False, "service account token mounted")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            need(r in res.get(part, {}), f"no {part}.{r}")

    # Writable paths are volumes; every mount has a volume; the config is the ConfigMap.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    for m in mounts.values():
        need(m["name"] in volumes, f"volumeMount {m['name']} has no volume")
    need(c.get("workingDir") in mounts, "workingDir (the SQLite store's base) is not a volume")
    need("/tmp" in mounts, "/tmp is not a volume")
    config_path = c["args"][c["args"].index("--config") + 1]
    config_mount = mounts.get(str(pathlib.PurePosixPath(config_path).parent))
    need(
        config_mount is not None
        and volumes[config_mount["name"]].get("configMap", {}).get("name") == cm["metadata"]["name"],
        "--config is not the ConfigMap's file",
    )

    # Secrets by reference only.
    need(not by_kind(docs, "Secret"), "a Secret with values is part of the manifests")
    for e in c.get("env", []):
        secretish = re.search(r"TOKEN|KEY|PASSWORD|SECRET|_URL$", e["name"])
        if secretish:
            need("secretKeyRef" in e.get("valueFrom", {}), f"env {e['name']} is not a Secret reference")
    need(not re.search(r"://[^/\s\"]*:[^/\s\"]*@", text), "a password in the ConfigMap's orinari.toml")

    # Selectors: everything points at the pods.
    svc = one(docs, "Service")
    need(svc["spec"]["selector"].items() <= labels.items(), "Service selector does not match the pods")
    need(
        all(p["targetPort"] in ports for p in svc["spec"]["ports"]),
        "Service targetPort is not a container port name",
    )
    need(matches(dep["spec"]["selector"], labels), "Deployment selector does not match its pods")
    for kind in ("PodDisruptionBudget", "ServiceMonitor"):
        need(matches(one(docs, kind)["spec"]["selector"], {**labels, **svc["metadata"]["labels"]}), f"{kind} selector")
    need(matches(one(docs, "NetworkPolicy")["spec"]["podSelector"], labels), "NetworkPolicy podSelector")
    sm_ports = {e["port"] for e in one(docs, "ServiceMonitor")["spec"]["endpoints"]}
    need(sm_ports <= {p["name"] for p in svc["spec"]["ports"]}, "ServiceMonitor port is not a Service port")
    need(
        any(e.get("path") == "/metrics" for e in one(docs, "ServiceMonitor")["spec"]["endpoints"]),
        "ServiceMonitor does not scrape /metrics",
    )
    np_ports = {p["port"] for r in one(docs, "NetworkPolicy")["spec"].get("ingress", []) for p in r.get("ports", [])}
    need(np_ports & {"http", listen_port}, "NetworkPolicy does not let the HTTP port in")
    print(f"ok   {label}: probes, hardening, volumes, Secret references, selectors")
    return dep, c, text


def cmd_consistency(base_path, overlay_path, adapter_path, out):
    problems = []
    out = pathlib.Path(out)
    base = load_docs(base_path)
    overlay = load_docs(overlay_path)
    adapter = load_docs(adapter_path)
    _, _, text = check_workload(base, "base", problems)
    (out / "orinari.toml").write_text(text)
    dep, c, overlay_text = check_workload(overlay, "overlay", problems)
    if overlay_text != text:
        problems.append("overlay: the ConfigMap differs from base's (its settings belong in env)")

    env = {e["name"]: e for e in c.get("env", [])}
    for var, key in (("ORINARI_STORAGE_URL", "storage-url"), ("ORINARI_CLUSTER_REDIS_URL", "redis-url")):
        ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
        if ref.get("key") != key:
            problems.append(f"overlay: {var} is not the Secret's {key}")
    hpa = one(overlay, "HorizontalPodAutoscaler")
    if hpa["spec"]["scaleTargetRef"]["name"] != dep["metadata"]["name"]:
        problems.append("overlay: the HPA does not scale the Deployment")
    if hpa["spec"]["minReplicas"] != dep["spec"]["replicas"]:
        problems.append("overlay: replicas differ from the HPA's minReplicas")
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    if kinds != {"Resource", "Pods"}:
        problems.append(f"overlay: the HPA's metrics are {kinds}, expected CPU and a pod metric")
    (pod_metric,) = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]

    # The adapter rule exposes exactly the HPA's metric, from orinari_queue_depth.
    rules = yaml.safe_load(one(adapter, "ConfigMap")["data"]["config.yaml"])["rules"]
    exposed = {}
    for r in rules:
        series = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", r["seriesQuery"]).group(1)
        exposed[re.sub(r["name"]["matches"], r["name"]["as"], series)] = r
    if pod_metric not in exposed:
        problems.append(f"adapter: no rule exposes {pod_metric} (exposes {sorted(exposed)})")
    else:
        rule = exposed[pod_metric]
        over = rule["resources"]["overrides"]
        if over.get("pod", {}).get("resource") != "pod" or over.get("namespace", {}).get("resource") != "namespace":
            problems.append("adapter: the rule does not map the pod and namespace labels")
        if not rule["seriesQuery"].startswith("orinari_queue_depth"):
            problems.append("adapter: the rule does not read orinari_queue_depth")
        # The query as the adapter expands it, for `promtool check rules`.
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", "orinari_queue_depth")
            .replace("<<.LabelMatchers>>", 'namespace="default",pod=~"orinari-a|orinari-b"')
            .replace("<<.GroupBy>>", "pod")
        )
        doc = {"groups": [{"name": "prometheus-adapter", "rules": [{"record": "adapter:orinari_queue_depth", "expr": query}]}]}
        (out / "adapter-rules.yml").write_text(yaml.safe_dump(doc))
        print(f"ok   HPA metric pods/{pod_metric} <- adapter rule {rule['seriesQuery']!r}")

    for p in problems:
        fail(p)
    print(f"consistency: {len(problems)} problems")
    return 1 if problems else 0


# --- metrics ---------------------------------------------------------------

# Series Prometheus makes itself, and PromQL words that look like names.
NOT_EXPORTED = {"up"}
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def registered_names(src):
    names = set()
    for f in pathlib.Path(src).glob("*.rs"):
        names |= set(re.findall(r'"((?:orinari|process)_[a-z0-9_]+)"', f.read_text()))
    return names


def base_name(metric, registered):
    if metric in registered:
        return metric
    for s in SUFFIXES:
        if metric.endswith(s) and metric[: -len(s)] in registered:
            return metric[: -len(s)]
    return None


def exprs_of(path):
    if path.endswith(".json"):
        dash = json.loads(pathlib.Path(path).read_text())
        found = []

        def walk(panels):
            for p in panels:
                found.extend((f"panel {p['title']!r}", t["expr"]) for t in p.get("targets", []) if "expr" in t)
                walk(p.get("panels", []))

        walk(dash["panels"])
        for v in dash.get("templating", {}).get("list", []):
            q = v.get("query")
            if isinstance(q, dict):
                q = q.get("query")
            if v.get("type") == "query" and q:
                found.append((f"variable {v['name']}", q))
        return found
    doc = yaml.safe_load(pathlib.Path(path).read_text())
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for g in doc["groups"] for r in g["rules"]]


def cmd_metrics(src, out, files):
    registered = registered_names(src)
    errors = 0
    used = set()
    queries = []
    for path in files:
        for where, expr in exprs_of(path):
            for metric in set(re.findall(r"\b((?:orinari|process)_[a-z0-9_]+|up)\b", expr)):
                if metric in NOT_EXPORTED:
                    continue
                if base_name(metric, registered) is None:
                    errors += fail(f"{path}: {where}: {metric} is not a metric the telemetry crate registers")
                used.add(metric)
            if path.endswith(".json") and not where.startswith("variable"):
                # Grafana's variables as Prometheus would see them.
                q = expr.replace("$__rate_interval", "5m").replace('=~"$instance"', '=~".*"').replace('=~"$model"', '=~".*"')
                queries.append({"record": f"dashboard:q{len(queries)}", "expr": q})
        print(f"ok   {path}: metric names checked")
    if queries:
        doc = {"groups": [{"name": "dashboard", "rules": queries}]}
        (pathlib.Path(out) / "dashboard-rules.yml").write_text(yaml.safe_dump(doc))
    missing = sorted(n for n in registered if n.startswith("orinari_") and not any(base_name(u, {n}) for u in used))
    print(f"metrics: {len(used)} names used, all registered in {src}" if not errors else f"metrics: {errors} unknown names")
    if missing:
        print(f"note: registered but on no panel or alert: {', '.join(missing)}")
    return 1 if errors else 0


# --- sandbox -----------------------------------------------------------------


def syscall_groups(path):
    groups, cur = {}, None
    for line in pathlib.Path(path).read_text().splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.split()[0], [])
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return groups


def expand(groups, names):
    out = set()
    for n in names:
        out |= expand(groups, groups[n]) if n.startswith("@") else {n}
    return out


def unit_settings(unit, key):
    return [
        line.split("=", 1)[1].strip()
        for line in pathlib.Path(unit).read_text().splitlines()
        if line.startswith(key + "=")
    ]


def cmd_sandbox(unit, groups_file, trace, workdir):
    groups = syscall_groups(groups_file)
    allowed, denied = set(), set()
    for value in unit_settings(unit, "SystemCallFilter"):
        negate = value.startswith("~")
        (denied if negate else allowed).update(expand(groups, value.lstrip("~").split()))
    # An allow list (the unit's first SystemCallFilter= has no ~), minus the
    # denied groups; systemd always allows these for exec and exit.
    allowed = (allowed - denied) | {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
    families = set(" ".join(unit_settings(unit, "RestrictAddressFamilies")).split())
    problems = []
    calls = set()
    writes = set()
    workdir = str(pathlib.Path(workdir).resolve())
    started = False
    call_re = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]")
    for line in pathlib.Path(trace).read_text(errors="replace").splitlines():
        m = call_re.match(line)
        if not m:
            continue
        name = m.group(1)
        if not started:
            # Only what orinari does, from its execve on.
            started = name == "execve" and "orinari" in line
            continue
        if line.split(None, 1)[1].startswith("+++") or line.split(None, 1)[1].startswith("---"):
            continue
        calls.add(name)
        if name in ("socket", "socketpair"):
            fam = re.search(r"\((AF_[A-Z0-9]+)", line)
            if fam and fam.group(1) not in families:
                problems.append(f"{name}({fam.group(1)}): not in RestrictAddressFamilies {sorted(families)}")
        if name in ("mmap", "mprotect", "pkey_mprotect") and "PROT_WRITE" in line and "PROT_EXEC" in line:
            problems.append(f"writable and executable memory: {line.strip()[:120]}")
        path = None
        if name in ("open", "openat", "creat") and re.search(r"O_(WRONLY|RDWR|CREAT|TRUNC)", line):
            path = re.search(r'"([^"]*)"', line)
        elif name in ("mkdir", "mkdirat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "rmdir", "truncate"):
            path = re.search(r'"([^"]*)"', line)
        if path:
            p = path.group(1)
            full = p if p.startswith("/") else f"{workdir}/{p}"
            writes.add(full)
            if not (full.startswith(workdir + "/") or full == workdir or full.startswith("/tmp/") or full in ("/dev/null",)):
                problems.append(f"{name} {p!r}: outside {workdir} and /tmp (ProtectSystem=strict)")
    if not started:
        problems.append(f"{trace}: no execve of orinari found")
    outside = sorted(c for c in calls if c not in allowed)
    for c in outside:
        problems.append(f"system call {c} is outside the unit's SystemCallFilter")
    if not outside:
        print(f"ok   {len(calls)} distinct system calls, all in the unit's SystemCallFilter")
    if not problems:
        print(f"ok   sockets only of {' '.join(sorted(families))}; no writable executable memory")
        print(f"ok   {len(writes)} paths written, created or removed, all under {workdir} or /tmp")
    for p in sorted(set(problems)):
        fail(p)
    print(f"sandbox: {len(set(problems))} problems")
    return 1 if problems else 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "kubernetes":
        return cmd_kubernetes(args[0], args[1], args[2:])
    if cmd == "consistency":
        return cmd_consistency(*args)
    if cmd == "metrics":
        return cmd_metrics(args[0], args[1], args[2:])
    if cmd == "sandbox":
        return cmd_sandbox(*args)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
