#!/usr/bin/env python3
"""End-to-end tests of the family lifecycle on the local control plane (issue: the operator
drives the family). Each scenario runs with a client writing throughout and recording every
acknowledged write, then checks that each one is on the family's primary or in an
unreplicated-transaction log, never anywhere else:

  switchover by YAML, switchover by the plugin, the operator SIGKILLed mid-switchover, the
  primary SIGKILLed and kept down, the primary frozen past the failover delay then thawed,
  SI re-pointing with Malvern in step and with Malvern ahead, a new member seeded from a
  snapshot of a primary whose journal no longer reaches back, a drain of the primary through
  the Eviction API, two operator replicas whose leader is killed and frozen, and the
  hot-standby version upgrade (docs/upgrades.md), unsupervised and supervised.

Usage: tests/cluster/lifecycle.py [DIR] [--only NAME,...] [--keep]
       tests/cluster/lifecycle.py --bench N [DIR]   (switchover write gap and failover time,
                                                     median of N, for docs/benchmarks.md)
       tests/cluster/lifecycle.py --bench-upgrade N (the upgrade's write gap, median of N
                                                     runs on fresh clusters)

Needs the engine, operator and plugin binaries built (`cargo build`), and the next version's
engine (`cargo build -p strand-engine --features next-version --target-dir target/next`). Python standard library
only; Redis is spoken with a minimal RESP client.
"""

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TARGET = os.path.join(REPO, "target", "debug")
NS = "default"
OPERATOR_NS = "strand-system"
# Short delays so the test is quick; the chart's defaults are 30 s / 60 s / 15 s / 5 s.
LIFECYCLE = {
    "lifecycle.failoverDelaySeconds": "8",
    "lifecycle.switchoverTimeoutSeconds": "30",
    "lifecycle.roleLeaseSeconds": "6",
    "lifecycle.refreshSeconds": "2",
}


class Fail(Exception):
    pass


def log(*args):
    print("lifecycle:", *args, flush=True)


# ---- a minimal RESP client ----

class Conn:
    """One client connection, kept open across commands as a real client's is."""

    def __init__(self, addr, timeout=1.0):
        self.addr = addr
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.s.settimeout(timeout)
        self.f = self.s.makefile("rb")

    def close(self):
        self.f.close()
        self.s.close()

    def command(self, *args):
        """Returns ('ok', value) or ('err', message). Raises OSError when the connection fails."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        line = self.f.readline()
        if not line:
            raise OSError("connection closed")
        kind, rest = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"+":
            return ("ok", rest.decode())
        if kind == b"-":
            return ("err", rest.decode())
        if kind == b":":
            return ("ok", int(rest))
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return ("ok", None)
            data = self.f.read(n + 2)[:n]
            return ("ok", data.decode())
        raise OSError("unexpected reply %r" % line)


def resp_command(addr, *args, timeout=1.0):
    """Sends one command on a new connection; returns ('ok', value) or ('err', message).
    Raises OSError when the connection fails."""
    c = Conn(addr, timeout)
    try:
        return c.command(*args)
    finally:
        c.close()


# ---- the cluster ----

class Cluster:
    def __init__(self, dir):
        self.dir = dir
        self.env = dict(os.environ)
        self.env["KUBECONFIG"] = os.path.join(dir, "kubeconfig")
        # `kubectl strand` is found on the PATH like any kubectl plugin.
        self.env["PATH"] = os.path.join(dir, "bin") + ":" + TARGET + ":" + self.env.get("PATH", "")

    def run(self, *args, input=None, check=True):
        p = subprocess.run(list(args), input=input, capture_output=True, text=True, env=self.env)
        if check and p.returncode != 0:
            raise Fail("%s failed (%d): %s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def k(self, *args, input=None, check=True):
        return self.run("kubectl", *args, input=input, check=check).stdout

    def get(self, kind, name, ns=NS):
        p = self.run("kubectl", "get", kind, name, "-n", ns, "-o", "json", check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def status(self, kind, name):
        obj = self.get(kind, name)
        return (obj or {}).get("status") or {}

    def family(self, name="ardmore"):
        return self.status("family", name)

    def pod_ips(self):
        """Pod name → IP of every pod in the namespace (one call)."""
        out = self.k("get", "pods", "-n", NS, "-o",
                     "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}")
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def pod_ip(self, instance):
        pod = self.get("pod", instance + "-0")
        return ((pod or {}).get("status") or {}).get("podIP")

    def token(self, instance):
        import base64
        return base64.b64decode(self.get("secret", instance + "-admin")["data"]["token"]).decode()

    def engine(self, instance, path, method="GET", body=None, timeout=5):
        ip = self.pod_ip(instance)
        req = urllib.request.Request("http://%s:8080%s" % (ip, path), method=method,
                                     headers={"Authorization": "Bearer " + self.token(instance)},
                                     data=json.dumps(body).encode() if body is not None else None)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def signal(self, pod, sig, ns=NS):
        self.run(os.path.join(HERE, "pod-signal"), self.dir, ns, pod, sig)

    def plugin(self, *args, check=True):
        return self.run("kubectl", "strand", *args, check=check)

    def wait(self, what, seconds, fn):
        deadline = time.time() + seconds
        last = None
        while time.time() < deadline:
            try:
                last = fn()
                if last:
                    return last
            except (OSError, KeyError, TypeError, ValueError, Fail) as e:
                last = e
            time.sleep(0.25)
        raise Fail("timed out after %ds waiting for %s (last: %r)" % (seconds, what, last))

    def operator_pods(self):
        pods = json.loads(self.k("get", "pods", "-n", OPERATOR_NS, "-l",
                                 "app.kubernetes.io/name=strand-operator", "-o", "json"))["items"]
        return [p["metadata"]["name"] for p in pods]

    def leader(self):
        lease = self.get("lease", "strand-operator", ns=OPERATOR_NS)
        return ((lease or {}).get("spec") or {}).get("holderIdentity")

    def events(self, name, reason):
        items = json.loads(self.k("get", "events", "-n", NS, "--field-selector",
                                  "involvedObject.name=%s,reason=%s" % (name, reason), "-o", "json"))["items"]
        return [(e.get("note") or e.get("message") or "", e.get("count") or ((e.get("series") or {}).get("count")) or 1)
                for e in items]

    def healthy(self, family="ardmore"):
        f = self.family(family)
        return f.get("phase") == "Healthy" and not f.get("procedure")


# ---- the client ----

class Writer(threading.Thread):
    """Writes w<n> = <n> in order to whichever instance takes writes (trying the others on a
    READONLY or a failed connection), recording every acknowledgement: (n, instance, time)."""

    def __init__(self, cluster, instances, prefix):
        super().__init__(daemon=True)
        self.cluster, self.instances, self.prefix = cluster, list(instances), prefix
        self.addrs = {}
        self.acks = []
        self.errors = 0
        self.stopping = threading.Event()
        self.n = 0

    def refresh(self):
        ips = self.cluster.pod_ips()
        for i in self.instances:
            if ips.get(i + "-0"):
                self.addrs[i] = "%s:6379" % ips[i + "-0"]

    def follow(self):
        """Keeps the instances' addresses current, as a client's endpoint discovery does (a
        pod that restarts may come back at another address)."""
        while not self.stopping.wait(1.0):
            try:
                self.refresh()
            except Fail:
                pass

    def send(self, instance, *args):
        """One command on the instance's open connection (opened on first use or when the
        instance moved, dropped when it fails)."""
        conn = self.conns.get(instance)
        addr = self.addrs.get(instance)
        if conn is not None and conn.addr != addr:
            conn.close()
            del self.conns[instance]
            conn = None
        try:
            if conn is None:
                if addr is None:
                    raise OSError("no address")
                conn = self.conns[instance] = Conn(addr)
            return conn.command(*args)
        except OSError:
            if conn is not None:
                conn.close()
            self.conns.pop(instance, None)
            raise

    def run(self):
        self.refresh()
        self.conns = {}
        threading.Thread(target=self.follow, daemon=True).start()
        at = 0
        misses = 0
        while not self.stopping.is_set():
            instance = self.instances[at % len(self.instances)]
            key = "%s%d" % (self.prefix, self.n)
            try:
                kind, value = self.send(instance, "SET", key, str(self.n))
            except OSError:
                kind, value = "err", "connection"
            if kind == "ok":
                self.acks.append((self.n, instance, time.time()))
                self.n += 1
                misses = 0
                continue
            self.errors += 1
            at += 1
            misses += 1
            if misses % len(self.instances) == 0:
                time.sleep(0.05)

    def stop(self):
        self.stopping.set()
        self.join(10)
        for conn in self.conns.values():
            conn.close()

    def max_gap(self, since=0.0):
        times = [t for (_, _, t) in self.acks if t >= since]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def lost_logs(c, instance):
    """Every (key, value) in the unreplicated-transaction logs of an instance."""
    out = {}
    try:
        logs = c.engine(instance, "/v1/lost-transactions")
    except OSError:
        return out
    for entry in logs:
        log_ = c.engine(instance, "/v1/lost-transactions/" + entry["file"])
        for t in log_["transactions"]:
            for ch in t["changes"]:
                if ch.get("key") is not None and ch.get("after") is not None:
                    out.setdefault(ch["key"], set()).add(ch["after"])
    return out


def verify(c, writer, members, family="ardmore", expect_lost=None):
    """Every acknowledged write is on the primary or in a lost-transaction log."""
    primary = c.family(family)["primary"]
    addr = "%s:6379" % c.pod_ip(primary)
    logs = {}
    for m in members:
        for k, vs in lost_logs(c, m).items():
            logs.setdefault(k, set()).update(vs)
    kept = lost = 0
    conn = Conn(addr, timeout=5)
    for (n, _, _) in writer.acks:
        key = "%s%d" % (writer.prefix, n)
        _, value = conn.command("GET", key)
        if value == str(n):
            kept += 1
        elif str(n) in logs.get(key, set()):
            lost += 1
        else:
            raise Fail("acknowledged write %s=%d is neither on %s (%r) nor in a lost-transaction log" % (key, n, primary, value))
    conn.close()
    if expect_lost is not None and not expect_lost(lost):
        raise Fail("%d acknowledged writes went to a lost-transaction log" % lost)
    return kept, lost


# ---- scenarios ----

def install(c):
    log("helm install (two replicas, short lifecycle delays)")
    sets = []
    for k, v in LIFECYCLE.items():
        sets += ["--set", "%s=%s" % (k, v)]
    c.run("helm", "install", "strand", os.path.join(REPO, "charts", "strand-operator"), "--namespace", OPERATOR_NS,
          "--create-namespace", "--set", "logFormat=text", "--set", "replicaCount=2",
          "--set", "logLevel=info\\,strand_operator::controller::family=debug", *sets, "--wait", "--timeout", "120s")
    c.wait("the operator to lead", 60, c.leader)
    c.wait("the webhook's endpoints", 60, lambda: c.k(
        "get", "endpointslices", "-n", OPERATOR_NS, "-l", "kubernetes.io/service-name=strand-strand-operator-webhook",
        "-o", "jsonpath={.items[*].endpoints[*].addresses[*]}").strip())
    c.k("apply", "-f", os.path.join(REPO, "deploy", "examples", "bc-pair.yaml"),
        "-f", os.path.join(REPO, "deploy", "examples", "malvern.yaml"))
    c.wait("family ardmore healthy", 180, lambda: c.healthy() and c.healthy("malvern"))
    c.wait("malvern's SI stream", 60, lambda: c.status("replicationlink", "ardmore-to-malvern").get("state") == "Streaming")


def instance_yaml(name, annotations):
    ann = "".join("\n    %s: %s" % (k, json.dumps(v)) for k, v in annotations.items())
    return ("apiVersion: strand.dev/v1alpha1\nkind: Instance\nmetadata:\n  name: %s\n  annotations:%s\n"
            "spec:\n  image: strand-engine:0.1.0\n  storage:\n    size: 1Gi\n") % (name, ann)


def switch(c, how, to, results):
    members = ["ardmore", "brynmawr"]
    before = c.family()["term"]
    rollbacks = {m: c.status("instance", m).get("lastRollback") for m in members + ["malvern"]}
    w = Writer(c, members, "sw-%s-" % how)
    w.start()
    time.sleep(2)
    started = time.time()
    if how == "yaml":
        # The request lives in the Instance's YAML, as it would in git.
        c.k("apply", "-f", "-", input=instance_yaml(to, {"strand.dev/switchover": "yaml-1"}))
    else:
        p = c.plugin("switchover", "ardmore", "--to", to)
        log("  " + p.stdout.strip().replace("\n", "\n  "))
    c.wait("%s to be primary" % to, 90, lambda: c.family()["primary"] == to and not c.family().get("procedure"))
    elapsed = time.time() - started
    time.sleep(2)
    w.stop()
    record = c.family()["history"][-1]
    if record["outcome"] != "Succeeded" or record["to"] != to:
        raise Fail("switchover record: %r" % record)
    if c.family()["term"] <= before:
        raise Fail("the term did not rise")
    kept, lost = verify(c, w, members, expect_lost=lambda n: n == 0)
    for m in members + ["malvern"]:
        if c.status("instance", m).get("lastRollback") != rollbacks[m]:
            raise Fail("%s rolled back during a switchover" % m)
    gap = w.max_gap(since=started - 1)
    results.setdefault("switchover_gap", []).append(gap)
    log("  switchover by %s to %s: %d acknowledged writes, 0 lost, write gap %.3fs, done in %.1fs" % (how, to, kept, gap, elapsed))
    # SI follows the family's primary, Malvern in step: no rollback.
    c.wait("the SI stream to come from %s" % to, 60,
           lambda: c.status("replicationlink", "ardmore-to-malvern").get("currentSource") == to
           and c.status("replicationlink", "ardmore-to-malvern").get("state") == "Streaming")
    # Kept in YAML, the request does not act again.
    if how == "yaml":
        time.sleep(5)
        if c.family()["primary"] != to:
            raise Fail("the request acted twice")
    c.wait("the family healthy", 60, c.healthy)


def scenario_switchover_yaml(c, results):
    switch(c, "yaml", "brynmawr", results)


def scenario_switchover_plugin(c, results):
    switch(c, "plugin", "ardmore", results)
    out = c.plugin("status").stdout
    log("  kubectl strand status:\n    " + out.strip().replace("\n", "\n    "))
    if "FAMILY ardmore  primary ardmore" not in out or "brynmawr" not in out:
        raise Fail("kubectl strand status does not show the family: %s" % out)
    data = json.loads(c.plugin("status", "ardmore", "-o", "json").stdout)
    if data[0]["primary"] != "ardmore" or len(data[0]["members"]) != 2:
        raise Fail("kubectl strand status -o json: %r" % data)


def scenario_operator_killed_mid_switchover(c, results):
    primary = c.family()["primary"]
    to = "brynmawr" if primary == "ardmore" else "ardmore"
    term = c.family()["term"]
    c.plugin("switchover", "ardmore", "--to", to, "--no-wait")
    c.wait("the switchover to begin", 30, lambda: (c.family().get("procedure") or {}).get("step"))
    leader = c.leader()
    log("  SIGKILL the leading operator %s during step %s" % (leader, c.family()["procedure"]["step"]))
    c.signal(leader, "KILL", ns=OPERATOR_NS)
    c.wait("the switchover to finish", 120, lambda: c.family()["primary"] == to and not c.family().get("procedure"))
    c.wait("the family healthy", 60, c.healthy)
    new_term = c.family()["term"]
    promoted = sum(count for (note, count) in c.events(to, "Promoted") if "at term %d" % new_term in note)
    fenced = sum(count for (note, count) in c.events(primary, "Fenced") if "term %d)" % term in note)
    # At most once each: the killed replica may have acted without getting to record it.
    if promoted > 1:
        raise Fail("%s promoted %d times at term %d" % (to, promoted, new_term))
    if fenced > 1:
        raise Fail("%s fenced %d times" % (primary, fenced))
    writable = [m for m in ("ardmore", "brynmawr") if c.engine(m, "/v1/status")["role"] == "primary"]
    if writable != [to]:
        raise Fail("primaries after the restart: %r" % writable)
    log("  converged on %s at term %d: promoted once, fenced once" % (to, new_term))


def scenario_failover_kept_down(c, results):
    primary = c.family()["primary"]
    other = "brynmawr" if primary == "ardmore" else "ardmore"
    w = Writer(c, ["ardmore", "brynmawr"], "fo-")
    w.start()
    time.sleep(2)
    killed = time.time()
    c.signal(primary + "-0", "DOWN")
    c.wait("%s promoted" % other, 120, lambda: c.family()["primary"] == other and not c.family().get("procedure"))
    promoted = time.time()
    c.wait("a write acknowledged by %s" % other, 60, lambda: any(i == other and t > killed for (_, i, t) in w.acks))
    first = min(t for (_, i, t) in w.acks if i == other and t > killed)
    results.setdefault("failover_time", []).append(first - killed)
    time.sleep(2)
    w.stop()
    log("  %s killed and kept down: %s primary after %.1fs, writes again after %.1fs" % (primary, other, promoted - killed, first - killed))
    c.signal(primary + "-0", "UP")
    c.wait("%s to rejoin as a secondary" % primary, 120,
           lambda: c.status("instance", primary).get("role") == "secondary" and c.healthy())
    kept, lost = verify(c, w, ["ardmore", "brynmawr"])
    log("  %d acknowledged writes on %s, %d in %s's lost-transaction log" % (kept, other, lost, primary))


def scenario_frozen_primary(c, results):
    primary = c.family()["primary"]
    other = "brynmawr" if primary == "ardmore" else "ardmore"
    link = "ardmore-to-brynmawr"
    # The secondary stops receiving, so the primary holds acknowledged writes it lacks.
    c.plugin("pause", link)
    c.wait("the link paused", 30, lambda: c.status("replicationlink", link).get("state") == "Paused")
    w = Writer(c, [primary], "fz-")
    w.start()
    c.wait("writes on %s only" % primary, 30, lambda: len(w.acks) >= 20)
    frozen = time.time()
    c.signal(primary + "-0", "STOP")
    c.wait("%s promoted" % other, 120, lambda: c.family()["primary"] == other and not c.family().get("procedure"))
    w.stop()
    unreplicated = len(w.acks)
    log("  %s frozen; %s promoted after %.1fs; %d writes only %s had" % (primary, other, time.time() - frozen, unreplicated, primary))
    c.signal(primary + "-0", "CONT")
    kind, message = resp_command("%s:6379" % c.pod_ip(primary), "SET", "after-thaw", "1", timeout=5)
    if kind != "err" or "READONLY" not in message:
        raise Fail("the thawed %s took a write: %r %r" % (primary, kind, message))
    log("  thawed %s refuses writes: %s" % (primary, message[:90]))
    c.plugin("resume", link)
    c.wait("%s to rejoin with autorollback" % primary, 120,
           lambda: c.status("instance", primary).get("role") == "secondary" and c.healthy()
           and (c.status("instance", primary).get("lastRollback") or {}).get("transactions"))
    rb = c.status("instance", primary)["lastRollback"]
    if not c.events(primary, "RolledBack"):
        raise Fail("no RolledBack event on %s" % primary)
    kept, lost = verify(c, w, ["ardmore", "brynmawr"])
    if lost != unreplicated:
        raise Fail("%d writes only %s had, %d found in its lost-transaction log" % (unreplicated, primary, lost))
    out = c.plugin("lost-transactions", primary).stdout
    if "fz-0" not in out:
        raise Fail("kubectl strand lost-transactions does not show them: %s" % out[:500])
    log("  rejoined: rolled off %d transactions (%d..=%d) into %s, reported" % (rb["transactions"], rb["fromSeqno"], rb["toSeqno"], rb["logPath"]))


def scenario_rollback_by_plugin(c, results):
    """Without autorollback a returning primary stays RollbackRequired until a person rolls it
    back with the plugin."""
    primary = c.family()["primary"]
    other = "brynmawr" if primary == "ardmore" else "ardmore"
    link = "ardmore-to-brynmawr"
    c.k("patch", "replicationlink", link, "--type", "merge", "-p", '{"spec":{"autorollback":false}}')
    c.plugin("pause", link)
    c.wait("the link paused", 30, lambda: c.status("replicationlink", link).get("state") == "Paused")
    addr = "%s:6379" % c.pod_ip(primary)
    for i in range(3):
        if resp_command(addr, "SET", "rb-%d" % i, str(i))[0] != "ok":
            raise Fail("write on %s refused" % primary)
    c.signal(primary + "-0", "DOWN")
    c.wait("%s promoted" % other, 120, lambda: c.family()["primary"] == other and not c.family().get("procedure"))
    c.plugin("resume", link)
    c.signal(primary + "-0", "UP")

    def rollback_required():
        conds = {x["type"]: x for x in c.status("instance", primary).get("conditions", [])}
        return conds.get("RollbackRequired", {}).get("status") == "True" and \
            c.status("replicationlink", link).get("state") == "RollbackRequired"
    c.wait("%s to be RollbackRequired" % primary, 120, rollback_required)
    time.sleep(3)
    if not rollback_required():
        raise Fail("%s left RollbackRequired by itself" % primary)
    p = c.plugin("rollback", primary)
    log("  " + p.stdout.strip().replace("\n", "\n  "))
    c.wait("%s streaming again" % primary, 120, lambda: c.healthy() and not rollback_required())
    logged = lost_logs(c, primary)
    if not all("rb-%d" % i in logged for i in range(3)):
        raise Fail("the rolled-off writes are not in %s's log: %r" % (primary, sorted(logged)))
    c.k("patch", "replicationlink", link, "--type", "merge", "-p", '{"spec":{"autorollback":true}}')
    log("  %s was RollbackRequired until `kubectl strand rollback`; its 3 writes are in its log" % primary)


def scenario_si_malvern_ahead(c, results):
    primary = c.family()["primary"]
    other = "brynmawr" if primary == "ardmore" else "ardmore"
    link = "ardmore-to-brynmawr"
    before = c.status("instance", "malvern").get("lastRollback")
    c.plugin("pause", link)
    c.wait("the link paused", 30, lambda: c.status("replicationlink", link).get("state") == "Paused")
    addr = "%s:6379" % c.pod_ip(primary)
    for i in range(5):
        if resp_command(addr, "SET", "si-ahead-%d" % i, str(i))[0] != "ok":
            raise Fail("write on %s refused" % primary)
    maddr = "%s:6379" % c.pod_ip("malvern")
    c.wait("malvern to have the writes %s's family member lacks" % other, 30,
           lambda: resp_command(maddr, "GET", "si-ahead-4") == ("ok", "4"))
    p = c.plugin("failover", "ardmore", "--to", other, "--force")
    log("  " + p.stdout.strip().replace("\n", "\n  "))
    c.plugin("resume", link)
    c.wait("malvern to roll back and take the SI stream from %s" % other, 120,
           lambda: c.status("instance", "malvern").get("lastRollback") != before
           and c.status("replicationlink", "ardmore-to-malvern").get("currentSource") == other
           and c.status("replicationlink", "ardmore-to-malvern").get("state") == "Streaming")
    rb = c.status("instance", "malvern")["lastRollback"]
    logged = lost_logs(c, "malvern")
    if not all("si-ahead-%d" % i in logged for i in range(5)):
        raise Fail("malvern's lost-transaction log lacks the rolled-off writes: %r" % sorted(logged))
    if resp_command(maddr, "GET", "si-ahead-0") != ("ok", None):
        raise Fail("malvern still holds a rolled-off write")
    if not c.events("malvern", "RolledBack"):
        raise Fail("no RolledBack event on malvern")
    c.wait("the family healthy", 120, c.healthy)
    log("  malvern was ahead: rolled off %d transactions into %s and streams from %s" % (rb["transactions"], rb["logPath"], other))


def scenario_seeding(c, results):
    """A member the primary's journal no longer reaches joins from a snapshot: Paoli, alone
    and keeping no journal past what receivers need, takes writes until a checkpoint trims
    its journal; then Wayne and a BC link are applied, and the operator's receiver (always
    started with seeding allowed) takes Paoli's snapshot and streams on from it."""
    c.k("apply", "-f", "-", input="""
apiVersion: strand.dev/v1alpha1
kind: Instance
metadata: {name: paoli}
spec: {image: strand-engine:0.1.0, storage: {size: 1Gi}, journal: {keepBytes: 0}}
""")
    # Alone it is standalone (it takes writes); the link below makes it its family's primary.
    c.wait("paoli to take writes", 180, lambda: c.engine("paoli", "/v1/status")["role"] == "standalone")
    addr = "%s:6379" % c.pod_ip("paoli")
    conn = Conn(addr, 5)
    try:
        for i in range(2000):
            kind, value = conn.command("SET", "seed-%d" % i, "v" * 100)
            if kind != "ok":
                raise Fail("SET on paoli: %s" % value)
    finally:
        conn.close()
    c.wait("paoli's journal to be trimmed", 60,
           lambda: c.engine("paoli", "/v1/status")["journal"]["first_seqno"] > 1000)
    c.k("apply", "-f", "-", input="""
apiVersion: strand.dev/v1alpha1
kind: Instance
metadata: {name: wayne}
spec: {image: strand-engine:0.1.0, storage: {size: 1Gi}}
---
apiVersion: strand.dev/v1alpha1
kind: ReplicationLink
metadata: {name: paoli-to-wayne}
spec: {source: paoli, target: wayne, mode: BC, autorollback: true}
""")
    c.wait("the link to stream", 180, lambda: c.status("replicationlink", "paoli-to-wayne").get("state") == "Streaming"
           and c.healthy("paoli"))
    receiver = c.engine("wayne", "/v1/status")["receiver"]
    seed = receiver.get("snapshot") or {}
    if not seed.get("installed") or seed.get("nodes_total", 0) < 2000:
        raise Fail("wayne joined without a snapshot: %r" % receiver)
    want = resp_command(addr, "DBSIZE")
    got = resp_command("%s:6379" % c.pod_ip("wayne"), "DBSIZE")
    if want != got or want[1] < 2000:
        raise Fail("wayne holds %r keys, paoli %r" % (got, want))
    kind, value = resp_command("%s:6379" % c.pod_ip("wayne"), "GET", "seed-1999")
    if value != "v" * 100:
        raise Fail("wayne's seed-1999: %r %r" % (kind, value))
    log("  wayne seeded from a snapshot of %d nodes at seqno %d in %.2fs, then streamed"
        % (seed["nodes_total"], seed["seqno"], seed["seconds"]))
    c.k("delete", "replicationlink", "paoli-to-wayne", "--wait=true")
    c.k("delete", "instance", "wayne", "paoli", "--wait=true", "--timeout=120s")


def scenario_eviction(c, results):
    primary = c.family()["primary"]
    other = "brynmawr" if primary == "ardmore" else "ardmore"
    w = Writer(c, ["ardmore", "brynmawr"], "ev-")
    w.start()
    time.sleep(1)
    eviction = json.dumps({"apiVersion": "policy/v1", "kind": "Eviction",
                           "metadata": {"name": primary + "-0", "namespace": NS}})
    path = "/api/v1/namespaces/%s/pods/%s-0/eviction" % (NS, primary)
    tries = 0
    deadline = time.time() + 120
    started = time.time()
    while True:
        tries += 1
        p = c.run("kubectl", "create", "--raw", path, "-f", "-", input=eviction, check=False)
        if p.returncode == 0:
            break
        if "disruption budget" not in (p.stdout + p.stderr) and "429" not in (p.stdout + p.stderr):
            raise Fail("eviction failed otherwise: %s" % (p.stdout + p.stderr))
        if time.time() > deadline:
            raise Fail("the eviction never got through")
        time.sleep(1)
    if c.family()["primary"] != other:
        raise Fail("the primary's pod was evicted before the switchover")
    if tries < 2:
        raise Fail("the first eviction of the primary got through")
    log("  eviction of %s-0 refused %d times, then let through after the switchover to %s (%.1fs)" % (primary, tries - 1, other, time.time() - started))
    c.wait("%s back as a secondary" % primary, 120,
           lambda: c.status("instance", primary).get("role") == "secondary" and c.healthy())
    w.refresh()
    time.sleep(2)
    w.stop()
    verify(c, w, ["ardmore", "brynmawr"], expect_lost=lambda n: n == 0)
    # A secondary's pod is evicted at once.
    p = c.run("kubectl", "create", "--raw", "/api/v1/namespaces/%s/pods/%s-0/eviction" % (NS, primary), "-f", "-",
              input=eviction.replace(other + "-0", primary + "-0"), check=False)
    if p.returncode != 0:
        raise Fail("evicting a secondary was refused: %s" % (p.stdout + p.stderr))
    c.wait("the family healthy", 120, c.healthy)


def operator_actions(c):
    """(time, replica) of every engine call each operator replica logged."""
    out = []
    for d in os.listdir(os.path.join(c.dir, "node", "pods")):
        if not d.startswith(OPERATOR_NS + "_"):
            continue
        pod = d.split("_")[1]
        path = os.path.join(c.dir, "node", "pods", d, "operator.log")
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            for line in f:
                if "engine admin call" not in line:
                    continue
                m = re.search(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
                if m:
                    out.append((m.group(1), pod))
    return sorted(out)


def scenario_two_replicas(c, results):
    pods = c.operator_pods()
    if len(pods) != 2:
        raise Fail("expected two operator replicas, found %r" % pods)
    first = c.leader()
    # Killed and kept down (a restarted container keeps its identity and would simply lead on).
    log("  leader %s; SIGKILL it and keep it down" % first)
    c.signal(first, "DOWN", ns=OPERATOR_NS)
    second = c.wait("another replica to lead", 60, lambda: c.leader() != first and c.leader())
    c.signal(first, "UP", ns=OPERATOR_NS)
    c.wait("%s back as a standby" % first, 60, lambda: first in c.operator_pods() and c.get("pod", first, ns=OPERATOR_NS)["status"].get("containerStatuses", [{}])[0].get("ready"))
    log("  %s leads; SIGSTOP it for 25s" % second)
    c.wait("the new leader to act", 30, lambda: any(p == second for (_, p) in operator_actions(c)))
    c.signal(second, "STOP", ns=OPERATOR_NS)
    third = c.wait("the other replica to take over", 60, lambda: c.leader() != second and c.leader())
    time.sleep(max(0, 25 - 15))
    c.signal(second, "CONT", ns=OPERATOR_NS)
    log("  %s leads; %s thawed" % (third, second))
    time.sleep(8)
    c.wait("the family healthy", 60, c.healthy)
    # Never both: in the merged, time-ordered log of engine calls, the acting replica changes
    # only at the two handovers.
    acts = operator_actions(c)
    changes = sum(1 for a, b in zip(acts, acts[1:]) if a[1] != b[1])
    if changes > 2:
        runs = []
        for t, p in acts:
            if not runs or runs[-1][1] != p:
                runs.append([t, p])
        raise Fail("engine calls from both replicas interleave: %r" % runs[-10:])
    log("  %d engine calls, the acting replica changed %d times (the two handovers)" % (len(acts), changes))

# ---- upgrades (docs/upgrades.md) ----

OLD_IMAGE = "strand-engine:0.1.0"


def next_image():
    with open(os.path.join(REPO, "Cargo.toml")) as f:
        version = re.search(r'^version = "(\d+)\.(\d+)\.\d+"', f.read(), re.M)
    return "strand-engine:%s.%d.0" % (version.group(1), int(version.group(2)) + 1)


class MismatchProbe(threading.Thread):
    """Sends PING to each instance's data port over and over, keeping the first error reply
    that says MISMATCH (a standby in version-mismatch mode) per instance."""

    def __init__(self, cluster, instances):
        super().__init__(daemon=True)
        self.cluster, self.instances = cluster, instances
        self.seen = {}
        self.stopping = threading.Event()

    def run(self):
        ips, looked = {}, 0.0
        while not self.stopping.is_set():
            if time.time() - looked > 0.3:
                try:
                    ips = self.cluster.pod_ips()
                except (Fail, ValueError):
                    pass
                looked = time.time()
            for i in self.instances:
                try:
                    if not ips.get(i + "-0"):
                        continue
                    kind, value = resp_command("%s:6379" % ips[i + "-0"], "PING", timeout=0.5)
                    if kind == "err" and value.startswith("MISMATCH"):
                        self.seen.setdefault(i, value)
                except (OSError, Fail, KeyError, TypeError, ValueError):
                    pass
            time.sleep(0.05)

    def stop(self):
        self.stopping.set()
        self.join(10)


def patch_image(c, instances, image):
    for i in instances:
        c.k("patch", "instance", i, "--type", "merge", "-p", json.dumps({"spec": {"image": image}}))


def upgraded(c, instances, image, family):
    """Every instance runs `image`'s binary on its format, and the family's upgrade is done."""
    f = c.family(family)
    if f.get("upgrade") or f.get("procedure") or f.get("phase") != "Healthy":
        return False
    version = image.split(":")[1]
    for i in instances:
        st = c.status("instance", i)
        conds = {x["type"]: x["status"] for x in st.get("conditions", [])}
        if st.get("binaryVersion") != version or st.get("formatVersion") != 2 or conds.get("VersionMismatch") != "False":
            return False
    return True


def upgrade_record(c, family):
    records = [r for r in c.family(family).get("history", []) if r["kind"] == "Upgrade"]
    if not records or records[-1]["outcome"] != "Succeeded":
        raise Fail("%s's last upgrade record: %r" % (family, records[-1:]))
    return records[-1]


def scenario_upgrade(c, results):
    """The seed's GemStone procedure driven by an image change: Ardmore → BrynMawr plus Malvern
    (SI), a client writing throughout."""
    members, image = ["ardmore", "brynmawr"], next_image()
    probe = MismatchProbe(c, members + ["malvern"])
    probe.start()
    w = Writer(c, members, "up-")
    w.start()
    time.sleep(2)
    started = time.time()
    primary = c.family()["primary"]
    log("  %s → %s on ardmore, brynmawr, malvern (primary %s)" % (OLD_IMAGE, image, primary))
    patch_image(c, members + ["malvern"], image)
    c.wait("every instance on %s's format" % image, 300,
           lambda: upgraded(c, members, image, "ardmore") and upgraded(c, ["malvern"], image, "malvern"))
    elapsed = time.time() - started
    c.wait("the SI stream again", 60, lambda: c.status("replicationlink", "ardmore-to-malvern").get("state") in ("Streaming", "CatchingUp"))
    w.refresh()
    time.sleep(2)
    w.stop()
    probe.stop()
    record = upgrade_record(c, "ardmore")
    upgrade_record(c, "malvern")
    new_primary = c.family()["primary"]
    if new_primary == primary:
        raise Fail("the primary role did not move (unsupervised switchover expected)")
    switches = [r for r in c.family()["history"] if r["kind"] == "Switchover" and r["reason"].startswith("upgrade to")]
    if not switches or switches[-1]["outcome"] != "Succeeded" or switches[-1]["to"] != new_primary:
        raise Fail("the upgrade's switchover: %r" % switches[-1:])
    # The secondary first, the old primary last (after the switchover).
    names = [st["step"] for st in record["steps"]]
    first, last = "Secondaries: %s" % new_primary, "Finishing: %s" % primary
    if first not in names or last not in names or names.index(first) > names.index(last):
        raise Fail("upgrade order: %r" % names)
    kept, lost = verify(c, w, members, expect_lost=lambda n: n == 0)
    gap = w.max_gap(since=started)
    results.setdefault("upgrade_gap", []).append(gap)
    steps = ", ".join(s["step"] for s in record["steps"])
    log("  done in %.0fs: %d acknowledged writes, 0 lost, write gap %.3fs; primary %s → %s; steps: %s"
        % (elapsed, kept, gap, primary, new_primary, steps))
    # A standby in version-mismatch mode refused the client with the documented error.
    if new_primary not in probe.seen:
        raise Fail("no MISMATCH reply from %s while it was a standby in version-mismatch mode (seen: %r)" % (new_primary, probe.seen))
    message = probe.seen[new_primary]
    if "strand %s " % image.split(":")[1] not in message or "written by strand 0.1.0" not in message:
        raise Fail("the MISMATCH error does not name both versions: %r" % message)
    log("  a client of %s in version-mismatch mode got: %s" % (new_primary, message))
    # Every step in Events: on the Family object, on the secondary rolled first, on the
    # instance whose format moved.
    for obj, reason in (("ardmore", "UpgradeStarted"), (new_primary, "UpgradeRolling"),
                        (primary, "UpgradeRolling"), (new_primary, "FormatUpgraded"), ("ardmore", "UpgradeDone")):
        if not c.events(obj, reason):
            raise Fail("no %s event on %s" % (reason, obj))
    # Malvern took the SI stream across the versions and holds the family's writes.
    maddr = "%s:6379" % c.pod_ip("malvern")
    last = "up-%d" % w.acks[-1][0]
    c.wait("malvern to have %s" % last, 60, lambda: resp_command(maddr, "GET", last)[1] is not None)


def scenario_upgrade_supervised(c, results):
    """The same with primaryUpdateStrategy: supervised on a new pair: the operator rolls the
    secondary, then waits for `kubectl strand switchover`."""
    image = next_image()
    pair = """
apiVersion: strand.dev/v1alpha1
kind: Instance
metadata: {name: oxford}
spec: {image: %(old)s, storage: {size: 1Gi}, primaryUpdateStrategy: supervised}
---
apiVersion: strand.dev/v1alpha1
kind: Instance
metadata: {name: newtown}
spec: {image: %(old)s, storage: {size: 1Gi}, primaryUpdateStrategy: supervised}
---
apiVersion: strand.dev/v1alpha1
kind: ReplicationLink
metadata: {name: oxford-to-newtown}
spec: {source: oxford, target: newtown, mode: BC, autorollback: true}
""" % {"old": OLD_IMAGE}
    c.k("apply", "-f", "-", input=pair)
    c.wait("family oxford healthy", 180, lambda: c.healthy("oxford"))
    members = ["oxford", "newtown"]
    w = Writer(c, members, "sup-")
    w.start()
    time.sleep(1)
    patch_image(c, members, image)
    c.wait("the upgrade to wait for a person", 180,
           lambda: (c.family("oxford").get("upgrade") or {}).get("step") == "Primary"
           and "kubectl strand switchover" in (c.family("oxford").get("message") or ""))
    # It stays there: the primary keeps its image and role, the secondary is in mismatch mode.
    time.sleep(10)
    f = c.family("oxford")
    if f["primary"] != "oxford" or (f.get("upgrade") or {}).get("step") != "Primary":
        raise Fail("the supervised upgrade moved on by itself: %r" % f)
    conds = {x["type"]: x for x in c.status("instance", "newtown").get("conditions", [])}
    if conds.get("VersionMismatch", {}).get("status") != "True":
        raise Fail("newtown is not in version-mismatch mode: %r" % conds.get("VersionMismatch"))
    kind, message = resp_command("%s:6379" % c.pod_ip("newtown"), "GET", "sup-0")
    if kind != "err" or not message.startswith("MISMATCH"):
        raise Fail("a client of the standby in mismatch mode got %r %r" % (kind, message))
    log("  waiting at step Primary: %s" % f["message"])
    log("  a client of newtown (mismatch mode) got: %s" % message)
    switched = time.time()
    p = c.plugin("switchover", "oxford", "--to", "newtown")
    log("  " + p.stdout.strip().replace("\n", "\n  "))
    c.wait("every instance on %s's format" % image, 180, lambda: upgraded(c, members, image, "oxford"))
    w.refresh()
    time.sleep(2)
    w.stop()
    upgrade_record(c, "oxford")
    kept, _ = verify(c, w, members, family="oxford", expect_lost=lambda n: n == 0)
    log("  after the plugin's switchover: %d acknowledged writes, 0 lost, write gap %.3fs" % (kept, w.max_gap(since=switched)))


def scenario_monitoring(c, results):
    """The dashboard's and the alerts' queries against this running cluster: its scrapes and a
    real Prometheus (monitoring/check.py), with the dashboard's variables set to a family.
    The family has taken a write first: a new member reports its own name as its family until
    the first transaction it receives brings it the family's history."""
    reply = resp_command("%s:6379" % c.pod_ip("ardmore"), "SET", "monitoring", "1")
    if reply[0] != "ok":
        raise Fail("ardmore refused a write: %r" % (reply,))
    for m in ("brynmawr", "malvern"):
        c.wait("%s to receive a transaction" % m, 60, lambda m=m: c.engine(m, "/v1/status")["journal_seqno"] >= 1)
    p = subprocess.run([sys.executable, os.path.join(REPO, "monitoring", "check.py"), "--cluster", c.dir],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise Fail(p.stderr.strip() or p.stdout.strip())
    log("  " + p.stdout.strip())


def metric_sum(text, name, **labels):
    """The sum of a metric's samples in Prometheus text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all('%s="%s"' % (k, v) in head for k, v in labels.items()):
            total += float(value)
    return total


def scenario_quiet(c, results):
    """Under a steady write load the operator works at its timer's rate, not at the rate of
    writes: reconciles per family and writes to Strand objects stay within what one pass per
    refresh interval makes, and nothing else is reconciled."""
    leader = c.leader()
    ip = c.get("pod", leader, ns=OPERATOR_NS)["status"]["podIP"]

    def sample():
        with urllib.request.urlopen("http://%s:8081/metrics" % ip, timeout=5) as r:
            operator = r.read().decode()
        api = c.k("get", "--raw", "/metrics")
        writes = sum(metric_sum(api, "apiserver_request_total", group="strand.dev", verb=v)
                     for v in ("APPLY", "PATCH", "UPDATE", "CREATE", "DELETE"))
        return {
            "family": metric_sum(operator, "strand_operator_reconciles_total", kind="Family"),
            "instance": metric_sum(operator, "strand_operator_reconciles_total", kind="Instance"),
            "link": metric_sum(operator, "strand_operator_reconciles_total", kind="ReplicationLink"),
            "writes": writes,
        }

    w = Writer(c, ["ardmore", "brynmawr"], "quiet-")
    w.start()
    time.sleep(3)
    before, t0 = sample(), time.time()
    time.sleep(30)
    after, elapsed = sample(), time.time() - t0
    w.stop()
    if len(w.acks) < 100:
        raise Fail("the writer made only %d writes; the load did not run" % len(w.acks))
    d = {k: after[k] - before[k] for k in after}
    families = 2  # ardmore's (ardmore, brynmawr) and malvern's
    refresh = float(LIFECYCLE["lifecycle.refreshSeconds"])
    passes = families * elapsed / refresh
    # Each pass may be followed by one more for a status it wrote (at most one per pass), and
    # a pod or engine event now and then: twice the timer's rate bounds it.
    if d["family"] > 2 * passes + 4:
        raise Fail("%d family reconciles in %.0fs under load, more than twice the timer's %d" % (d["family"], elapsed, passes))
    if d["instance"] > 2 or d["link"] > 0:
        raise Fail("Instance or link reconciles under a write load: %r" % d)
    # Objects written per pass: at most each family's status and its instances' and links'
    # (ardmore: 2 instances + 1 link; malvern: 1 instance + 1 SI link; 2 families) = 7.
    if d["writes"] > 7 * passes / families + 7:
        raise Fail("%d writes to Strand objects in %.0fs under load (%d passes)" % (d["writes"], elapsed, passes))
    log("  %.0fs of load (%d acknowledged writes): %d family reconciles (timer: %.0f), %d instance, %d link, "
        "%d writes to Strand objects" % (elapsed, len(w.acks), d["family"], passes, d["instance"], d["link"], d["writes"]))
    results["quiet"] = d


SCENARIOS = [
    ("monitoring", scenario_monitoring),
    ("quiet", scenario_quiet),
    ("switchover-yaml", scenario_switchover_yaml),
    ("switchover-plugin", scenario_switchover_plugin),
    ("operator-killed", scenario_operator_killed_mid_switchover),
    ("failover-kept-down", scenario_failover_kept_down),
    ("frozen-primary", scenario_frozen_primary),
    ("rollback-by-plugin", scenario_rollback_by_plugin),
    ("si-malvern-ahead", scenario_si_malvern_ahead),
    ("seeding", scenario_seeding),
    ("eviction", scenario_eviction),
    ("two-replicas", scenario_two_replicas),
    # Last: they leave the families on the next version.
    ("upgrade-supervised", scenario_upgrade_supervised),
    ("upgrade", scenario_upgrade),
]


def bench(c, n):
    """Switchover write gap and failover time, median of n each."""
    results = {}
    for i in range(n):
        to = "brynmawr" if c.family()["primary"] == "ardmore" else "ardmore"
        switch(c, "plugin", to, results)
    for i in range(n):
        scenario_failover_kept_down(c, results)
        c.wait("the family healthy", 120, c.healthy)
    gaps, fails = results["switchover_gap"], results["failover_time"]
    print(json.dumps({
        "switchover_write_gap_seconds": {"median": statistics.median(gaps), "all": gaps},
        "failover_seconds": {"median": statistics.median(fails), "all": fails},
        "settings": LIFECYCLE,
    }, indent=2))


def bench_upgrade(n):
    """The hot-standby upgrade's write gap, median of n runs, each on a fresh cluster (the
    format moves only forward)."""
    gaps, took = [], []
    for i in range(n):
        dir = tempfile.mkdtemp(prefix="strand-upgrade-bench.")
        c = Cluster(dir)
        try:
            subprocess.run([os.path.join(HERE, "up"), dir], check=True, capture_output=True)
            install(c)
            results = {}
            t = time.time()
            scenario_upgrade(c, results)
            took.append(time.time() - t)
            gaps.append(results["upgrade_gap"][0])
        finally:
            subprocess.run([os.path.join(HERE, "down"), dir, "--remove"], capture_output=True)
    print(json.dumps({
        "upgrade_write_gap_seconds": {"median": statistics.median(gaps), "all": gaps},
        "upgrade_scenario_seconds": {"median": statistics.median(took), "all": took},
        "settings": LIFECYCLE,
    }, indent=2))


def main():
    args = sys.argv[1:]
    keep = "--keep" in args
    only = None
    n_bench = None
    n_bench_upgrade = None
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--only":
            only = args[i + 1].split(",")
            i += 2
        elif args[i] == "--bench":
            n_bench = int(args[i + 1])
            i += 2
        elif args[i] == "--bench-upgrade":
            n_bench_upgrade = int(args[i + 1])
            i += 2
        elif args[i] == "--keep":
            i += 1
        else:
            rest.append(args[i])
            i += 1
    for b in ("strand-engine", "strand-operator", "kubectl-strand"):
        if not os.access(os.path.join(TARGET, b), os.X_OK):
            print("lifecycle: build target/debug/%s first (cargo build)" % b, file=sys.stderr)
            return 2
    if not os.access(os.path.join(REPO, "target", "next", "debug", "strand-engine"), os.X_OK):
        print("lifecycle: build the next version first (cargo build -p strand-engine --features next-version "
              "--target-dir target/next)", file=sys.stderr)
        return 2
    if n_bench_upgrade:
        try:
            bench_upgrade(n_bench_upgrade)
            return 0
        except Fail as e:
            print("lifecycle: FAIL: %s" % e, file=sys.stderr)
            return 1
    dir = rest[0] if rest else tempfile.mkdtemp(prefix="strand-lifecycle.")
    c = Cluster(dir)
    started = time.time()
    try:
        subprocess.run([os.path.join(HERE, "up"), dir], check=True)
        install(c)
        if n_bench:
            bench(c, n_bench)
            return 0
        results = {}
        for name, fn in SCENARIOS:
            if only and name not in only:
                continue
            log(name)
            t = time.time()
            fn(c, results)
            log("  passed in %.0fs" % (time.time() - t))
        log("passed in %.0fs" % (time.time() - started))
        return 0
    except Fail as e:
        print("lifecycle: FAIL: %s" % e, file=sys.stderr)
        for cmd in (["get", "families,instances,replicationlinks,pods", "-A", "-o", "wide"],
                    ["get", "events", "-n", NS, "--sort-by=.lastTimestamp"]):
            print(c.k(*cmd, check=False)[-6000:], file=sys.stderr)
        for pod in c.operator_pods() if c.get("namespace", OPERATOR_NS, ns="") is not None else []:
            for d in os.listdir(os.path.join(dir, "node", "pods")):
                if pod in d:
                    path = os.path.join(dir, "node", "pods", d, "operator.log")
                    if os.path.exists(path):
                        with open(path, errors="replace") as f:
                            print("---- %s\n%s" % (pod, "".join(f.readlines()[-60:])), file=sys.stderr)
        # Said again last, so the end of a CI log names the failure.
        print("lifecycle: FAIL: %s" % e, file=sys.stderr)
        return 1
    finally:
        if not keep:
            # A directory of our own goes too.
            subprocess.run([os.path.join(HERE, "down"), dir] + ([] if rest else ["--remove"]), capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
