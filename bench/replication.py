#!/usr/bin/env python3
"""Replication benchmarks for Strand (release build, real processes, loopback):

1. catch-up: a primary with a backlog of --catchup transactions (default 1,000,000) starts
   streaming to an empty standby; time until the standby holds them all.
2. steady-state lag: redis-benchmark writes to the primary (50 clients) while the backlog and
   lag reported by the primary are sampled every 100 ms; medians and maxima.
3. rollback: time to roll back --rollback transactions (default 100,000) into an
   unreplicated-transaction log.

Usage: bench/replication.py [--catchup N] [--rollback N] [--out FILE]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(ROOT, "target", "release", "strand-engine")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    def __init__(self, work, name, secret):
        self.dir = os.path.join(work, name)
        self.port, self.repl = free_port(), free_port()
        self.proc = subprocess.Popen(
            [ENGINE, "run", "--data-dir", self.dir, "--name", name, "--resp-addr", f"127.0.0.1:{self.port}",
             "--repl-addr", f"127.0.0.1:{self.repl}", "--repl-secret-file", secret, "--disk-reserve-bytes", "0",
             "--log-level", "warn"], stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.ctl("ready", check=False) is not None:
                return
            time.sleep(0.05)
        sys.exit(f"{name} did not start")

    def ctl(self, *args, check=True):
        r = subprocess.run([ENGINE, "ctl", "--data-dir", self.dir, *args], capture_output=True, text=True)
        if r.returncode != 0:
            if check:
                sys.exit(f"ctl {args} failed: {r.stderr}")
            return None
        return json.loads(r.stdout) if r.stdout.strip() else {}

    def seqno(self):
        return self.ctl("status", "--json")["journal_seqno"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def load(port, n, clients=50, pipeline=64):
    subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(n), "-c", str(clients),
                    "-P", str(pipeline), "-r", "1000000", "-d", "64", "-q"], capture_output=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--catchup", type=int, default=1_000_000)
    ap.add_argument("--rollback", type=int, default=100_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    if not os.path.exists(ENGINE):
        subprocess.run(["cargo", "build", "--release", "-p", "strand-engine"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="strand-repl-bench-")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write("bench-secret\n")
    lines = []
    try:
        # 1. catch-up
        primary = Engine(work, "Ardmore", secret)
        primary.ctl("promote")
        t0 = time.time()
        load(primary.port, args.catchup)
        backlog = primary.seqno()
        build = time.time() - t0
        standby = Engine(work, "BrynMawr", secret)
        standby.ctl("receiver", "start")
        t0 = time.time()
        primary.ctl("source", "start", "--receiver", "BrynMawr", "--addr", f"127.0.0.1:{standby.repl}")
        while standby.seqno() < backlog:
            time.sleep(0.05)
        catchup = time.time() - t0
        print(f"catch-up: {backlog} transactions in {catchup:.1f} s", file=sys.stderr)
        lines.append(f"| catch-up of a {backlog:,}-transaction backlog | {catchup:.1f} s | {backlog / catchup:,.0f} transactions/s |")
        lines.append(f"| (building that backlog with redis-benchmark -P 64, durable) | {build:.1f} s | {backlog / build:,.0f} transactions/s |")

        # 2. steady-state lag under a write load
        bench = subprocess.Popen(["redis-benchmark", "-p", str(primary.port), "-t", "set", "-n", "200000", "-c", "50",
                                  "-r", "1000000", "-d", "64", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        backlogs, lags = [], []
        t0 = time.time()
        while bench.poll() is None:
            b = primary.ctl("backlog", "--json")[0]
            backlogs.append(b["backlog"])
            lags.append(b["lag_seconds"])
            time.sleep(0.1)
        load_time = time.time() - t0
        print(f"lag: {len(lags)} samples", file=sys.stderr)
        lines.append(f"| backlog under 50-client SET load ({200000 / load_time:,.0f} SET/s), median / max | "
                     f"{statistics.median(backlogs):.0f} / {max(backlogs)} transactions | |")
        lines.append(f"| lag under the same load, median / max | {statistics.median(lags) * 1000:.1f} / {max(lags) * 1000:.1f} ms | |")
        standby.stop()

        # 3. rollback
        target = primary.seqno() - args.rollback
        primary.ctl("source", "stop", "--receiver", "BrynMawr")
        t0 = time.time()
        done = primary.ctl("rollback", "--to-seqno", str(target))
        took = time.time() - t0
        n = done["rollback"]["transactions"]
        print(f"rollback: {n} in {took:.1f} s", file=sys.stderr)
        lines.append(f"| rollback of {n:,} transactions into the log | {took:.1f} s | {n / took:,.0f} transactions/s |")
        primary.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = "| measurement | result | rate |\n|---|---:|---:|\n" + "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
