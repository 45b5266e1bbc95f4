#!/usr/bin/env python3
"""Checks that the dashboard and the alert rules ask only for what Strand exports.

    monitoring/check.py                  # against the metric catalog (docs/observability.md,
                                         # generated from the code)
    monitoring/check.py --cluster DIR    # also against a running local control plane: scrapes
                                         # every engine and operator, starts a real Prometheus
                                         # (Debian's package) on them and runs every query
    monitoring/check.py --chart-rules F  # prints the PrometheusRule of `helm template` output F
                                         # as a rule file (for promtool)

monitoring/picture.py renders docs/dashboard.png with the same Prometheus.

It fails when a query names a metric nothing declares, a label the metric does not carry
(nor Prometheus's target labels), when a scrape shows a metric the catalog does not list, when
a declared metric is missing from the scrape without being an event-only one (below), or when
a query that should have data returns an error or nothing on the real Prometheus.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DOCS = os.path.join(REPO, "docs", "observability.md")
RULES = os.path.join(REPO, "charts", "strand-operator", "files", "alerts.yaml")

# Labels Prometheus adds to every scraped series (the chart's PodMonitor and ServiceMonitor).
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "endpoint", "service"}

# Declared metrics a healthy, idle family does not export: vectors whose labels appear only
# when something happens. Each is still checked against the catalog.
EVENT_ONLY = {
    "strand_commit_failures_total": "a commit failed",
    "strand_replication_errors_total": "a replication connection failed",
    "strand_operator_reconcile_errors_total": "a reconcile failed",
    "strand_operator_engine_call_errors_total": "an engine call failed",
    "strand_operator_procedures_total": "a procedure finished",
    "strand_operator_procedure_step_duration_seconds": "a procedure finished",
    "strand_operator_procedure_step": "a switchover or failover runs",
    "strand_operator_upgrade_step": "an image upgrade runs",
    "strand_stream_seqno": "only on supplementary instances",
    "strand_operator_link_lag_seconds": "only while a source reports lag",
}

PROMQL_WORDS = {
    "by", "on", "without", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "increase", "irate",
    "delta", "deriv", "changes", "predict_linear", "histogram_quantile", "absent", "vector",
    "label_values", "humanize", "le",
}


class Fail(Exception):
    pass


# ---- what is declared ----

def catalog():
    """name → (type, set of labels), from the generated tables in docs/observability.md."""
    out = {}
    with open(DOCS) as f:
        for line in f:
            m = re.match(r"\| `(strand_[a-z_]+)` \| (\w+) \| ([^|]*) \|", line)
            if m:
                labels = {l.strip() for l in m.group(3).split(",") if l.strip() and l.strip() != "—"}
                out[m.group(1)] = (m.group(2), labels)
    if not out:
        raise Fail("no metric tables in %s" % DOCS)
    return out


def base_name(name, cat):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in cat and cat[name[: -len(suffix)]][0] == "histogram":
            return name[: -len(suffix)], suffix
    return name, ""


# ---- the queries ----

def rule_queries():
    """Every `expr` of the alert rules file (single-line or block scalar)."""
    out, lines = [], open(RULES).read().splitlines()
    i = 0
    alert = None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- alert: (\S+)", line)
        if m:
            alert = m.group(1)
        m = re.match(r"(\s*)expr: (.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", ">"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                out.append({"where": "alert %s" % alert, "expr": " ".join(body)})
                continue
            out.append({"where": "alert %s" % alert, "expr": rest})
        i += 1
    return out


def dashboard_queries():
    p = subprocess.run([sys.executable, os.path.join(HERE, "dashboard.py"), "--queries"],
                       capture_output=True, text=True, check=True)
    return [json.loads(l) for l in p.stdout.splitlines()]


def references(expr):
    """(metric, {label matchers}) for each metric named in `expr`, and the label names used in
    by/on/group_left/… clauses and label_values()."""
    metrics = []
    for m in re.finditer(r"\b(strand_[a-z_]+)\s*(\{[^}]*\})?", expr):
        matchers = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", m.group(2) or ""))
        metrics.append((m.group(1), matchers))
    clauses = set()
    for m in re.finditer(r"\b(?:by|on|without|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        clauses |= {l.strip() for l in m.group(1).split(",") if l.strip()}
    for m in re.finditer(r"label_values\(\s*[^,]*,\s*(\w+)\s*\)", expr):
        clauses.add(m.group(1))
    return metrics, clauses


def check_static(cat, queries):
    problems = []
    for q in queries:
        metrics, clauses = references(q["expr"])
        if not metrics:
            problems.append("%s: names no Strand metric: %s" % (q["where"], q["expr"]))
        known = set(TARGET_LABELS)
        for name, matchers in metrics:
            base, suffix = base_name(name, cat)
            if base not in cat:
                problems.append("%s: %s is not a metric Strand exports" % (q["where"], name))
                continue
            labels = cat[base][1] | TARGET_LABELS | ({"le"} if suffix == "_bucket" else set())
            known |= labels
            for l in matchers - labels:
                problems.append("%s: %s has no label %r" % (q["where"], name, l))
        for l in clauses - known:
            problems.append("%s: no metric in it carries the label %r" % (q["where"], l))
    return problems


# ---- a running cluster ----

def kubectl(dir, *args):
    env = dict(os.environ, KUBECONFIG=os.path.join(dir, "kubeconfig"))
    p = subprocess.run([os.path.join(dir, "bin", "kubectl"), *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise Fail("kubectl %s: %s" % (" ".join(args), p.stderr.strip()))
    return p.stdout


def targets(dir):
    """(job, namespace, pod, host:port) of every engine's admin port and operator's metrics port."""
    pods = json.loads(kubectl(dir, "get", "pods", "-A", "-o", "json"))["items"]
    out = []
    for p in pods:
        labels = p["metadata"].get("labels") or {}
        ip = (p.get("status") or {}).get("podIP")
        if not ip:
            continue
        name = labels.get("app.kubernetes.io/name")
        if name == "strand-engine":
            out.append(("strand-engines", p["metadata"]["namespace"], p["metadata"]["name"], "%s:8080" % ip))
        elif name == "strand-operator":
            out.append(("strand-operator", p["metadata"]["namespace"], p["metadata"]["name"], "%s:8081" % ip))
    return out


def scrape(addr):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=5) as r:
        return r.read().decode()


def scraped(text):
    """name → set of label names, from one Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{(.*)\})?\s", line)
        if m:
            labels = set(re.findall(r'(\w+)="', m.group(3) or ""))
            out.setdefault(m.group(1), set()).update(labels)
    return out


def check_scrapes(cat, texts, queries):
    problems = []
    seen = {}
    for t in texts:
        for name, labels in scraped(t).items():
            if not name.startswith("strand_"):
                continue
            base, suffix = base_name(name, cat)
            if base not in cat:
                problems.append("the scrape shows %s, which docs/observability.md does not list" % name)
                continue
            extra = labels - cat[base][1] - ({"le"} if suffix == "_bucket" else set())
            if extra:
                problems.append("%s carries undeclared labels %s" % (name, sorted(extra)))
            seen[base] = seen.get(base, set()) | labels
    for name in cat:
        if name not in seen and name not in EVENT_ONLY:
            problems.append("%s is declared but no engine or operator exports it" % name)
    for q in queries:
        for name, matchers in references(q["expr"])[0]:
            base, _ = base_name(name, cat)
            if base in seen:
                missing = matchers - seen[base] - TARGET_LABELS
                if missing:
                    problems.append("%s: %s is exported without %s" % (q["where"], name, sorted(missing)))
    return problems


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """Debian's Prometheus scraping the cluster's engines and operators every 2 s, with the
    target labels the chart's PodMonitor/ServiceMonitor give (namespace, pod, job) and, as the
    ServiceMonitor says, the operator's own `namespace` label kept over its target's."""

    def __init__(self, dir, targets):
        self.work = tempfile.mkdtemp(prefix="strand-prometheus.")
        self.port = free_port()
        jobs = {}
        for job, ns, pod, addr in targets:
            jobs.setdefault(job, []).append({"targets": [addr], "labels": {"namespace": ns, "pod": pod}})
        config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
                  "rule_files": [RULES],
                  "scrape_configs": [{"job_name": j, "static_configs": s, "honor_labels": j == "strand-operator"}
                                     for j, s in jobs.items()]}
        path = os.path.join(self.work, "prometheus.yml")
        with open(path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        binary = shutil.which("prometheus")
        if not binary:
            raise Fail("no prometheus binary (scripts/deps installs Debian's package)")
        self.log = open(os.path.join(self.work, "prometheus.log"), "w")
        self.proc = subprocess.Popen([binary, "--config.file=" + path, "--storage.tsdb.path=" + os.path.join(self.work, "data"),
                                      "--web.listen-address=127.0.0.1:%d" % self.port],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = "http://127.0.0.1:%d" % self.port

    def api(self, path, **params):
        url = "%s/api/v1/%s?%s" % (self.url, path, urllib.parse.urlencode(params))
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def wait_up(self, n, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                active = self.api("targets")["data"]["activeTargets"]
                if len(active) == n and all(t["health"] == "up" for t in active):
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise Fail("Prometheus's targets did not all come up: see %s" % self.log.name)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


def concrete(expr, rate="1m", namespace=".*", family=".*"):
    """A dashboard query with Grafana's variables filled in."""
    return (expr.replace("$__rate_interval", rate).replace("$__range", "5m")
            .replace('"$namespace"', '"%s"' % namespace).replace('"$family"', '"%s"' % family)
            .replace('"$instance"', '".*"'))


def chosen(prom):
    """(namespace, family) a person would pick in the dashboard's variables: those of a running
    family, as the engines report them."""
    r = prom.api("query", query="strand_instance_info")
    for s in r.get("data", {}).get("result", []):
        if s["metric"].get("namespace") and s["metric"].get("family"):
            return s["metric"]["namespace"], s["metric"]["family"]
    raise Fail("Prometheus has no strand_instance_info with a namespace and a family")


def check_prometheus(prom, queries):
    """Every query runs, and every panel shows data for a real namespace and family (so a
    label the dashboard filters on that Prometheus does not keep, fails here)."""
    problems = []
    namespace, family = chosen(prom)
    for q in queries:
        expr = concrete(q["expr"], namespace=namespace, family=family)
        if expr.startswith("label_values("):
            m = re.match(r"label_values\((.*),\s*(\w+)\)$", expr)
            r = prom.api("series", **{"match[]": m.group(1) if "{" in m.group(1) else m.group(1) + "{}"})
            ok = r.get("status") == "success" and any(m.group(2) in s for s in r["data"])
            if not ok:
                problems.append("%s: no series has the label %s: %r" % (q["where"], m.group(2), r))
            continue
        r = prom.api("query", query=expr)
        if r.get("status") != "success":
            problems.append("%s: Prometheus refused %s: %s" % (q["where"], expr, r.get("error")))
            continue
        names = {n for n, _ in references(q["expr"])[0]}
        event = any(base_name(n, {})[0] in EVENT_ONLY or n.startswith(tuple(EVENT_ONLY)) for n in names)
        if not r["data"]["result"] and not event and not q["where"].startswith(("alert", "annotation")):
            problems.append("%s: no data on a running family: %s" % (q["where"], expr))
    return problems


# ---- the picture ----

PICTURE_PANELS = [
    ("Journal seqno per instance", "Journal seqno"),
    ("Commits per second", "Commits per second"),
    ("Commit latency (p50, p99)", "Commit latency"),
    ("Link lag (seconds)", "Link lag"),
    ("Link backlog (transactions)", "Link backlog"),
    ("Group commit size (transactions per fsync)", "Group commit size"),
]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def fmt(v):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return "%.1f%s" % (v / div, unit)
    if 0 < abs(v) < 0.01:
        return "%.1fms" % (v * 1000) if abs(v) >= 0.0001 else "%.2fms" % (v * 1000)
    return "%.3g" % v


def legend_of(fmt_, metric):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt_) or json.dumps(metric)


def render(prom, minutes, out):
    import html
    d = json.loads(subprocess.run([sys.executable, os.path.join(HERE, "dashboard.py"), "--json"],
                                  capture_output=True, text=True, check=True).stdout)
    by_title = {p["title"]: p for p in d["panels"] if p.get("targets")}
    end = time.time()
    start = end - minutes * 60
    step = max(2, int(minutes * 60 / 200))
    W, H, cols = 560, 260, 2
    rows = (len(PICTURE_PANELS) + cols - 1) // cols
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="DejaVu Sans, sans-serif">'
           % (W * cols, H * rows + 40), '<rect width="100%" height="100%" fill="#111217"/>',
           '<text x="12" y="26" fill="#e0e0e0" font-size="18">Strand families — rendered from Prometheus (%d minutes)</text>' % minutes]
    for i, (caption, title) in enumerate(PICTURE_PANELS):
        x0, y0 = (i % cols) * W, 40 + (i // cols) * H
        series = []
        for t in by_title[title]["targets"]:
            r = prom.api("query_range", query=concrete(t["expr"], rate="20s"), start=start, end=end, step=step)
            for s in (r.get("data") or {}).get("result", []):
                pts = [(float(a), float(b)) for a, b in s["values"] if b not in ("NaN", "+Inf", "-Inf")]
                if pts:
                    series.append((legend_of(t["legendFormat"], s["metric"]), pts))
        px, py, pw, ph = x0 + 60, y0 + 34, W - 80, H - 90
        svg.append('<rect x="%d" y="%d" width="%d" height="%d" fill="#181b1f" stroke="#2c3235"/>' % (x0 + 6, y0 + 6, W - 12, H - 12))
        svg.append('<text x="%d" y="%d" fill="#d8d9da" font-size="14">%s</text>' % (x0 + 16, y0 + 26, html.escape(caption)))
        if not series:
            svg.append('<text x="%d" y="%d" fill="#888" font-size="12">no data</text>' % (px + 10, py + 20))
            continue
        lo = min(min(v for _, v in pts) for _, pts in series)
        hi = max(max(v for _, v in pts) for _, pts in series)
        lo = min(lo, 0)
        hi = hi if hi > lo else lo + 1
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            y = py + ph - ph * k / 4
            svg.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#2c3235"/>' % (px, y, px + pw, y))
            svg.append('<text x="%d" y="%.1f" fill="#9fa7b3" font-size="10" text-anchor="end">%s</text>' % (px - 4, y + 3, fmt(v)))
        for k, (name, pts) in enumerate(series[:8]):
            color = COLORS[k % len(COLORS)]
            path = " ".join("%.1f,%.1f" % (px + pw * (t - start) / (end - start), py + ph - ph * (v - lo) / (hi - lo)) for t, v in pts)
            svg.append('<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>' % (color, path))
            lx, ly = px + (k % 3) * (pw // 3), py + ph + 18 + (k // 3) * 13
            svg.append('<rect x="%d" y="%d" width="10" height="3" fill="%s"/>' % (lx, ly - 4, color))
            svg.append('<text x="%d" y="%d" fill="#c7d0d9" font-size="10">%s</text>' % (lx + 14, ly, html.escape(name[:34])))
    svg.append("</svg>")
    with tempfile.NamedTemporaryFile("w", suffix=".svg", delete=False) as f:
        f.write("\n".join(svg))
        tmp = f.name
    conv = shutil.which("rsvg-convert")
    if not conv:
        raise Fail("no rsvg-convert (Debian's librsvg2-bin; scripts/deps installs it)")
    subprocess.run([conv, "-o", out, tmp], check=True)
    os.unlink(tmp)
    print("wrote %s" % out)


def self_test(cat):
    """The checker catches what it is for (a checker that passes everything proves nothing)."""
    bad = {
        "strand_nope": "not a metric",
        'strand_term{color="x"}': "has no label",
        "sum by (flavour) (strand_term)": "carries the label",
        "label_values(strand_instance_info, nope)": "carries the label",
        'strand_commit_duration_seconds_count{le="1"}': "has no label",
    }
    good = ['rate(strand_commit_duration_seconds_bucket{le="1"}[1m])',
            "strand_writable * on (namespace, pod) group_left (name, family) strand_instance_info"]
    for expr, why in bad.items():
        found = check_static(cat, [{"where": "self-test", "expr": expr}])
        if not any(why in p for p in found):
            raise Fail("self-test: %r should fail (%s), got %r" % (expr, why, found))
    for expr in good:
        found = check_static(cat, [{"where": "self-test", "expr": expr}])
        if found:
            raise Fail("self-test: %r should pass, got %r" % (expr, found))
    text = '# HELP x\nstrand_term 3\nstrand_made_up{a="b"} 1\nstrand_writable{extra="1"} 1\n'
    found = check_scrapes(cat, [text], [])
    for why in ("strand_made_up, which docs/observability.md does not list", "undeclared labels ['extra']",
                "strand_journal_seqno is declared but no engine or operator exports it"):
        if not any(why in p for p in found):
            raise Fail("self-test: a scrape check missed %r: %r" % (why, found))


def chart_rules(template_output):
    """The PrometheusRule the chart renders, as a rule file (for promtool)."""
    for doc in open(template_output).read().split("\n---\n"):
        if "kind: PrometheusRule" in doc:
            spec = doc.split("\nspec:\n", 1)[1]
            return "\n".join(l[2:] for l in spec.splitlines()) + "\n"
    raise Fail("no PrometheusRule in %s" % template_output)


def main():
    args = sys.argv[1:]
    if "--chart-rules" in args:
        try:
            sys.stdout.write(chart_rules(args[args.index("--chart-rules") + 1]))
            return 0
        except Fail as e:
            print("monitoring: FAIL: %s" % e, file=sys.stderr)
            return 1
    cluster = args[args.index("--cluster") + 1] if "--cluster" in args else None
    try:
        cat = catalog()
        queries = dashboard_queries() + rule_queries()
        self_test(cat)
        problems = check_static(cat, queries)
        if cluster:
            ts = targets(cluster)
            if not any(t[0] == "strand-engines" for t in ts) or not any(t[0] == "strand-operator" for t in ts):
                raise Fail("no engines or no operator running in %s" % cluster)
            problems += check_scrapes(cat, [scrape(t[3]) for t in ts], queries)
            prom = Prometheus(cluster, ts)
            try:
                prom.wait_up(len(ts))
                time.sleep(8)  # a few scrapes, so that rates have two points
                problems += check_prometheus(prom, queries)
            finally:
                prom.stop()
        if problems:
            raise Fail("\n  ".join(["%d problems:" % len(problems)] + problems))
        print("monitoring: %d queries (dashboard and alerts) checked against %d declared metrics%s"
              % (len(queries), len(cat), " and a live cluster" if cluster else ""))
        return 0
    except Fail as e:
        print("monitoring: FAIL: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
