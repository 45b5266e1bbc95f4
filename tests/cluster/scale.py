#!/usr/bin/env python3
"""The operator at scale on the local control plane, with a real engine per Instance.

Brings up the control plane, installs the chart (one operator replica, the chart's
defaults: 5 s refresh), applies N Instances in F families (each a founder with BC links to
the others of its family: a star), waits until every family is Healthy, then measures, over
a quiet minute and over the bring-up:

- Family reconcile latency, p50 and p99 (from the operator's
  `strand_operator_reconcile_duration_seconds` histogram);
- API requests per minute at rest (the API server's `apiserver_request_total`, every client:
  the operator, the process node, the controllers) and writes to Strand objects per minute;
- the operator's resident memory (VmRSS of its process);
- how long the bring-up took.

Every engine is the real `strand-engine` (the release build, ~10 MB resident each): 1,000 of
them fit this 24 GiB machine, so nothing is stubbed. The operator is the release build too
(--operator runs another binary, e.g. an older commit's, for a before/after comparison).

Usage:
  tests/cluster/scale.py [--instances 1000] [--families 300] [--rest 60] [--operator BINARY]
                         [--out FILE] [--keep]
The default is the documented scale run (about 15 minutes here); CI runs
`--instances 60 --families 18 --rest 30`.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lifecycle import HERE, NS, OPERATOR_NS, REPO, Cluster, Fail, log, metric_sum  # noqa: E402


def families_of(n, f):
    """F families of N instances, sizes as even as possible: family i is s<i>-0 (the founder)
    with s<i>-1 … as its secondaries."""
    sizes = [n // f + (1 if i < n % f else 0) for i in range(f)]
    return [["s%d-%d" % (i, j) for j in range(size)] for i, size in enumerate(sizes)]


def manifests(families):
    docs = []
    for members in families:
        for m in members:
            docs.append({"apiVersion": "strand.dev/v1alpha1", "kind": "Instance", "metadata": {"name": m},
                         "spec": {"image": "strand-engine:0.1.0", "storage": {"size": "64Mi"}}})
        for m in members[1:]:
            docs.append({"apiVersion": "strand.dev/v1alpha1", "kind": "ReplicationLink",
                         "metadata": {"name": "%s-to-%s" % (members[0], m)},
                         "spec": {"source": members[0], "target": m, "mode": "BC"}})
    return "\n---\n".join(json.dumps(d) for d in docs)


def histogram(text, name, **labels):
    """Cumulative buckets (le → count) of a histogram in Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line.startswith(name + "_bucket{"):
            continue
        head, _, value = line.rpartition(" ")
        if not all('%s="%s"' % (k, v) in head for k, v in labels.items()):
            continue
        le = re.search(r'le="([^"]+)"', head).group(1)
        key = float("inf") if le == "+Inf" else float(le)
        out[key] = out.get(key, 0) + float(value)
    return out


def quantile(before, after, q):
    """The q-quantile of what a histogram observed between two scrapes (upper bucket bound)."""
    delta = sorted((le, after.get(le, 0) - before.get(le, 0)) for le in after)
    total = delta[-1][1] if delta else 0
    if total <= 0:
        return None
    for le, count in delta:
        if count >= q * total:
            return le
    return delta[-1][0]


class Scale:
    def __init__(self, c):
        self.c = c

    def operator(self):
        pods = self.c.operator_pods()
        if len(pods) != 1:
            raise Fail("expected one operator replica, found %r" % pods)
        pod = self.c.get("pod", pods[0], ns=OPERATOR_NS)
        return pods[0], pod["status"]["podIP"]

    def sample(self):
        pod, ip = self.operator()
        with urllib.request.urlopen("http://%s:8081/metrics" % ip, timeout=10) as r:
            op = r.read().decode()
        api = self.c.k("get", "--raw", "/metrics")
        requests = metric_sum(api, "apiserver_request_total")
        writes = sum(metric_sum(api, "apiserver_request_total", group="strand.dev", verb=v)
                     for v in ("APPLY", "PATCH", "UPDATE", "CREATE", "DELETE"))
        by_kind = {}
        for line in api.splitlines():
            if line.startswith("apiserver_request_total{"):
                head, _, value = line.rpartition(" ")
                lab = dict(re.findall(r'(\w+)="([^"]*)"', head))
                key = "%s %s%s" % (lab.get("verb"), lab.get("resource"),
                                   "/" + lab["subresource"] if lab.get("subresource") else "")
                by_kind[key] = by_kind.get(key, 0) + float(value)
        return {"t": time.time(), "op": op, "requests": requests, "writes": writes, "by_kind": by_kind,
                "family_seconds": histogram(op, "strand_operator_reconcile_duration_seconds", kind="Family"),
                "rss_kib": self.rss(pod)}

    def rss(self, pod):
        for d in os.listdir(os.path.join(self.c.dir, "node", "pods")):
            if d.startswith("%s_%s_" % (OPERATOR_NS, pod)):
                with open(os.path.join(self.c.dir, "node", "pods", d, "operator.pid")) as f:
                    pid = f.read().strip()
                with open("/proc/%s/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            return int(line.split()[1])
        raise Fail("cannot find the operator's process")

    def healthy_count(self):
        items = json.loads(self.c.k("get", "families", "-n", NS, "-o", "json"))["items"]
        return sum(1 for f in items if (f.get("status") or {}).get("phase") == "Healthy"), len(items)


RELEASE = os.path.join(REPO, "target", "release")


def run(n, f, rest, settle, operator_binary, keep):
    # Release builds, as users run them (the images are made from them too).
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "strand-engine", "-p", "strand-operator"],
                   cwd=REPO, check=True)
    dir = tempfile.mkdtemp(prefix="strand-scale.")
    images = os.path.join(dir, "scale-images.json")
    engine = os.path.join(RELEASE, "strand-engine")
    version = subprocess.run([engine, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    with open(images, "w") as fh:
        json.dump({"images": {"strand-engine:%s" % version: engine,
                              "strand-operator:%s" % version: operator_binary or os.path.join(RELEASE, "strand-operator")}},
                  fh)
    # Room for every pod: 254 addresses per /24, and the node's pod capacity.
    env = dict(os.environ, STRAND_IMAGES=images, STRAND_POD_NETS=str(n // 250 + 1), STRAND_MAX_PODS=str(n + 20))
    c = Cluster(dir)
    s = Scale(c)
    try:
        subprocess.run([os.path.join(HERE, "up"), dir], check=True, env=env)
        c.run("helm", "install", "strand", os.path.join(REPO, "charts", "strand-operator"), "--namespace",
              OPERATOR_NS, "--create-namespace", "--set", "logFormat=text", "--set", "logLevel=warn",
              "--wait", "--timeout", "120s")
        c.wait("the operator to lead", 60, c.leader)
        fams = families_of(n, f)
        log("applying %d instances in %d families (%d links)" % (n, f, n - f))
        start = s.sample()
        c.k("apply", "--server-side", "-f", "-", input=manifests(fams))
        deadline = time.time() + max(300, n * 1.5)
        last = None
        while True:
            healthy, total = s.healthy_count()
            if (healthy, total) != last:
                log("  %d of %d families healthy (%d objects) after %.0fs" % (healthy, f, total, time.time() - start["t"]))
                last = (healthy, total)
            if healthy == f:
                break
            if time.time() > deadline:
                raise Fail("only %d of %d families healthy after %.0fs" % (healthy, f, time.time() - start["t"]))
            time.sleep(5)
        healthy_at = s.sample()
        log("all %d families healthy after %.0fs; %ds to settle, then %ds at rest" %
            (f, healthy_at["t"] - start["t"], settle, rest))
        # The garbage collector, the StatefulSet and disruption controllers finish with the
        # last objects created: rest is measured after them.
        time.sleep(settle)
        up = s.sample()
        time.sleep(rest)
        end = s.sample()
        minutes = (end["t"] - up["t"]) / 60
        result = {
            "instances": n, "families": f, "links": n - f,
            "bring_up_seconds": round(healthy_at["t"] - start["t"]),
            "bring_up_p50": quantile(start["family_seconds"], healthy_at["family_seconds"], 0.5),
            "bring_up_p99": quantile(start["family_seconds"], healthy_at["family_seconds"], 0.99),
            "rest_p50": quantile(up["family_seconds"], end["family_seconds"], 0.5),
            "rest_p99": quantile(up["family_seconds"], end["family_seconds"], 0.99),
            "rest_family_reconciles_per_minute": round(
                (metric_sum(end["op"], "strand_operator_reconciles_total", kind="Family")
                 - metric_sum(up["op"], "strand_operator_reconciles_total", kind="Family")) / minutes),
            "rest_requests_per_minute": round((end["requests"] - up["requests"]) / minutes),
            "rest_strand_writes_per_minute": round((end["writes"] - up["writes"]) / minutes),
            "operator_rss_mib": round(end["rss_kib"] / 1024, 1),
            "rest_top_requests_per_minute": dict(sorted(
                ((k, round((v - up["by_kind"].get(k, 0)) / minutes)) for k, v in end["by_kind"].items()),
                key=lambda kv: -kv[1])[:6]),
            "refresh_seconds": 5,
        }
        return result
    finally:
        if not keep:
            subprocess.run([os.path.join(HERE, "down"), dir, "--remove"], capture_output=True)


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--families", type=int, default=300)
    ap.add_argument("--rest", type=int, default=60)
    ap.add_argument("--settle", type=int, default=30, help="seconds between all families healthy and the rest window")
    ap.add_argument("--operator", help="the operator binary to run (default: target/release/strand-operator)")
    ap.add_argument("--out", help="append the result as a JSON line to this file")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--max-p99", type=float, help="fail if the p99 Family reconcile at rest exceeds this (seconds)")
    args = ap.parse_args()
    if args.families < 1 or args.instances < args.families:
        sys.exit("scale: need at least one instance per family")
    try:
        r = run(args.instances, args.families, args.rest, args.settle, args.operator, args.keep)
    except Fail as e:
        print("scale: FAIL: %s" % e, file=sys.stderr)
        return 1
    log(json.dumps(r))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(r) + "\n")
    # The timer bounds the work at rest: one Family reconcile per family and refresh interval.
    bound = 2 * r["families"] * 60 / r["refresh_seconds"] + 10
    if r["rest_family_reconciles_per_minute"] > bound:
        print("scale: FAIL: %d family reconciles a minute at rest, more than %d" %
              (r["rest_family_reconciles_per_minute"], bound), file=sys.stderr)
        return 1
    if args.max_p99 is not None and (r["rest_p99"] is None or r["rest_p99"] > args.max_p99):
        print("scale: FAIL: p99 Family reconcile at rest %r s, above %s s" % (r["rest_p99"], args.max_p99),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
