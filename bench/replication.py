#!/usr/bin/env python3
"""Replication benchmarks, Strand and GT.M side by side in one run (release build, real
processes, loopback, same disk):

1. catch-up: a primary with a backlog of --catchup transactions (default 1,000,000) starts
   streaming to an empty standby; time until the standby holds them all.
2. steady-state lag: redis-benchmark writes to the primary (50 clients) while the backlog and
   lag reported by the primary are sampled every 100 ms; medians and maxima. GT.M's backlog is
   sampled as its primary's last posted seqno minus its standby's last applied one (its
   source's "not acknowledged" count trails far behind while it streams).
3. what a receiver costs its primary (Strand only): durable SETs from 50 clients on the
   primary with its source stopped and with it streaming to the standby, alternating for
   --rounds rounds (default 3), medians and their ratio; and the CPU each thread of the
   primary and of the standby spent per SET in those runs, and how long the standby took to
   apply the rest of each attached run once it ended. With --standby-idle every thread
   of the standby runs under SCHED_IDLE (only on a core nothing else wants): not the goal's
   figure, but what the source itself costs when the standby does not take its primary's
   cores, as on a machine of its own.
4. rollback: time to roll back --rollback transactions (default 100,000) into an
   unreplicated-transaction log.

Measurements 1, 2 and 4 run --repeats times (default 3), Strand and GT.M alternating which goes
first, each round on fresh instances; the table gives their medians (rates from the median
time; maxima the largest of any round) and each round's times. Measurement 3 runs last, on
fresh instances of its own.

GT.M (Debian's fis-gtm) runs measurements 1, 2 and 4 with its own tools: a passive
source server collects the backlog, activation starts the catch-up; `mupip journal -rollback
-backward -resync` rolls back into a lost-transaction file; a mumps process writes the load.
Each GT.M transaction is a mini-transaction setting one 64-byte global node, as each Strand
transaction is one 64-byte SET, and both write the same key pattern: random keys out of
1,000,000 (redis-benchmark `-r 1000000`, `^k($random(1000000))`). Catch-up ends on the same
event for both: the standby's last applied seqno reaches the primary's last seqno (Strand:
`journal_seqno` of the standby's status; GT.M: the receiver's "last transaction processed by
update process"). A figure that cannot be read fails the run. The work directory
($STRAND_BENCH_DIR, else the system's temporary directory) must not be a tmpfs.

Usage: bench/replication.py [--catchup N] [--rollback N] [--repeats N] [--rounds N]
                            [--apply-interval-ms N] [--standby-idle] [--no-gtm] [--out FILE]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from benchlib import ENGINE, ROOT, bench, cpu_by_thread_name, cpu_snapshot, ensure_engine, free_port, number, publish, work_dir


# Every engine and load process started, so that a run that fails part-way leaves none running.
ENGINES = []
LOADS = []


class Engine:
    def __init__(self, work, name, secret, *more):
        self.dir = os.path.join(work, name)
        self.port, self.repl = free_port(), free_port()
        self.proc = subprocess.Popen(
            [ENGINE, "run", "--data-dir", self.dir, "--name", name, "--resp-addr", f"127.0.0.1:{self.port}",
             "--repl-addr", f"127.0.0.1:{self.repl}", "--repl-secret-file", secret, "--disk-reserve-bytes", "0",
             "--log-level", "warn", *more], stderr=subprocess.DEVNULL)
        ENGINES.append(self)
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
        return int(number(self.admin("/v1/status").get("journal_seqno"), "journal_seqno from the admin status"))

    def admin(self, path):
        """GET on the admin socket without spawning a process (cheap enough to poll)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(os.path.join(self.dir, "admin.sock"))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        if b"chunked" in head.lower():
            out, rest = b"", body
            while rest:
                size, rest = rest.split(b"\r\n", 1)
                n = int(size, 16)
                if n == 0:
                    break
                out, rest = out + rest[:n], rest[n + 2:]
            body = out
        return json.loads(body)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Gtm:
    """A GT.M instance made by bench/gtm_instance.sh, driven through mupip and mumps."""

    def __init__(self, work, name):
        self.dir = os.path.join(work, "gtm-" + name)
        subprocess.run([os.path.join(ROOT, "bench", "gtm_instance.sh"), self.dir, name], check=True,
                       capture_output=True)
        self.env = dict(os.environ)
        with open(os.path.join(self.dir, "env")) as f:
            for line in f:
                k, v = line.replace("export ", "", 1).strip().split("=", 1)
                self.env[k] = v.strip('"')
        self.dist = self.env["gtm_dist"]

    def run(self, *args, check=True):
        r = subprocess.run(list(args), env=self.env, capture_output=True, text=True, cwd=self.dir)
        if check and r.returncode != 0:
            sys.exit(f"{args} failed: {r.stdout} {r.stderr}")
        return r.stdout + r.stderr

    def mupip(self, *args, check=True):
        return self.run(os.path.join(self.dist, "mupip"), *args, check=check)

    def mumps(self, code):
        return self.run(os.path.join(self.dist, "mumps"), "-run", "%XCMD", code)

    def _figure(self, out, marker, what):
        """The number on the line of `out` containing `marker`. GT.M prints the source's figures
        as `%GTM-I-LASTTRANS, Last transaction sequence number posted : 1000`, the receiver's
        as `1000 : sequence number of last transaction processed by update process` (beside
        `0 : number of backlog transactions … yet to be processed by update process`)."""
        for line in out.splitlines():
            if marker not in line:
                continue
            if line.lstrip().startswith("%GTM"):
                field = line.rsplit(":", 1)[1]
            else:
                field = line.split(":", 1)[0]
            return int(number(field.strip(), what))
        sys.exit(f"cannot read {what}: no line with {marker!r} in {out!r}")

    def last_written(self):
        """The primary's last seqno (posted to its journal pool)."""
        out = self.mupip("replicate", "-source", "-showbacklog", check=False)
        return self._figure(out, "sequence number posted", "the source's last seqno")

    def last_applied(self):
        """The standby's last seqno applied by its update process."""
        out = self.mupip("replicate", "-receive", "-showbacklog", check=False)
        return self._figure(out, "last transaction processed by update process", "the receiver's last applied seqno")

    def shutdown(self):
        self.mupip("replicate", "-receive", "-shutdown", "-timeout=0", check=False)
        self.mupip("replicate", "-source", "-shutdown", "-timeout=0", check=False)


BUFF = str(256 * 1024 * 1024)


def gtm_round(work, catchup, rollback, lines_by_name):
    primary, standby = Gtm(work, "Ardmore"), Gtm(work, "BrynMawr")
    port = free_port()
    try:
        standby.mupip("replicate", "-source", "-start", "-passive", "-updnotok", "-instsecondary=dummy",
                      "-buffsize=" + BUFF, "-log=" + os.path.join(standby.dir, "passive.log"))
        standby.mupip("replicate", "-receive", "-start", f"-listenport={port}", "-buffsize=" + BUFF,
                      "-log=" + os.path.join(standby.dir, "receive.log"))
        primary.mupip("replicate", "-source", "-start", "-passive", "-rootprimary", "-instsecondary=BrynMawr",
                      "-buffsize=" + BUFF, "-log=" + os.path.join(primary.dir, "source.log"))
        t0 = time.time()
        primary.mumps(f'for i=1:1:{catchup} set ^k($random(1000000))=$justify(i,64)')
        build = time.time() - t0
        t0 = time.time()
        last = primary.last_written()
        primary.mupip("replicate", "-source", "-activate", "-rootprimary", "-instsecondary=BrynMawr",
                      f"-secondary=127.0.0.1:{port}")
        while standby.last_applied() < last:
            time.sleep(0.05)
        took = time.time() - t0
        print(f"gtm catch-up: {catchup} in {took:.1f} s", file=sys.stderr)
        lines_by_name["catchup"] = (took, catchup / took, build)

        # lag under a single mumps writer at full speed
        writer = subprocess.Popen([os.path.join(primary.dist, "mumps"), "-run", "%XCMD",
                                   f'for i=1:1:200000 set ^w($random(1000000))=$justify(i,64)'], env=primary.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=primary.dir)
        LOADS.append(writer)
        backlogs = []
        t0 = time.time()
        while writer.poll() is None:
            backlogs.append(primary.last_written() - standby.last_applied())
            time.sleep(0.1)
        rate = 200000 / (time.time() - t0)
        lines_by_name["lag"] = (statistics.median(backlogs) if backlogs else 0, max(backlogs or [0]), rate)

        # rollback
        while standby.last_applied() < primary.last_written():
            time.sleep(0.05)
        primary.shutdown()
        standby.shutdown()
        total = catchup + 200000
        t0 = time.time()
        primary.mupip("journal", "-rollback", "-backward", f"-resync={total - rollback + 1}",
                      "-lost=" + os.path.join(primary.dir, "lost.mjl"), "*")
        took = time.time() - t0
        print(f"gtm rollback: {rollback} in {took:.1f} s", file=sys.stderr)
        lines_by_name["rollback"] = (took, rollback / took)
    finally:
        primary.shutdown()
        standby.shutdown()


def load(port, n, clients=50, pipeline=64):
    subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(n), "-c", str(clients),
                    "-P", str(pipeline), "-r", "1000000", "-d", "64", "-q"], capture_output=True, check=True)


def strand_round(args, work, secret):
    """One round of Strand's measurements in `work`: catch-up, lag, rollback."""
    strand = {}
    # 1. catch-up
    primary = Engine(work, "Ardmore", secret)
    primary.ctl("promote")
    t0 = time.time()
    load(primary.port, args.catchup)
    backlog = primary.seqno()
    build = time.time() - t0
    standby = Engine(work, "BrynMawr", secret, *paced(args))
    standby.ctl("receiver", "start")
    t0 = time.time()
    primary.ctl("source", "start", "--receiver", "BrynMawr", "--addr", f"127.0.0.1:{standby.repl}")
    while standby.seqno() < backlog:
        time.sleep(0.05)
    catchup = time.time() - t0
    print(f"catch-up: {backlog} transactions in {catchup:.1f} s", file=sys.stderr)
    strand["catchup"] = (catchup, backlog / catchup, build)

    # 2. steady-state lag under a write load
    writer = subprocess.Popen(["redis-benchmark", "-p", str(primary.port), "-t", "set", "-n", "200000", "-c", "50",
                               "-r", "1000000", "-d", "64", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    LOADS.append(writer)
    backlogs, lags = [], []
    t0 = time.time()
    while writer.poll() is None:
        b = primary.admin("/v1/backlog")[0]
        backlogs.append(b["backlog"])
        lags.append(b["lag_seconds"])
        time.sleep(0.1)
    load_time = time.time() - t0
    print(f"lag: {len(lags)} samples", file=sys.stderr)
    strand["lag"] = (statistics.median(backlogs), max(backlogs), 200000 / load_time,
                     statistics.median(lags), max(lags))
    standby.stop()

    # 4. rollback
    target = primary.seqno() - args.rollback
    primary.ctl("source", "stop", "--receiver", "BrynMawr")
    t0 = time.time()
    done = primary.ctl("rollback", "--to-seqno", str(target))
    took = time.time() - t0
    n = done["rollback"]["transactions"]
    print(f"rollback: {n} in {took:.1f} s", file=sys.stderr)
    strand["rollback"] = (took, n / took)
    primary.stop()
    return strand


def cost_round(args, work, secret):
    """3. What a receiver costs its primary: fresh instances, the standby caught up, durable
    SETs with the source stopped and streaming, alternating for --rounds rounds."""
    primary = Engine(work, "Ardmore", secret)
    primary.ctl("promote")
    standby = Engine(work, "BrynMawr", secret, *paced(args))
    if args.standby_idle:
        # Threads started later (blocking tasks) inherit the policy.
        subprocess.run(["chrt", "--idle", "--all-tasks", "--pid", "0", str(standby.proc.pid)], check=True)
    standby.ctl("receiver", "start")
    alone, attached, catchup = [], [], []
    # CPU per SET (µs) by thread name, for each run: the primary's when standalone, the
    # primary's and the standby's when attached.
    cpu = {"primary standalone": [], "primary attached": [], "standby attached": []}

    def per_set(before, after):
        return {name: s * 1e6 / args.cost_requests for name, s in cpu_by_thread_name(before, after).items()}

    running = False
    for r in range(args.rounds):
        for streaming in ((True, False) if r % 2 else (False, True)):
            if streaming and not running:
                primary.ctl("source", "start", "--receiver", "BrynMawr", "--addr", f"127.0.0.1:{standby.repl}")
            elif running and not streaming:
                primary.ctl("source", "stop", "--receiver", "BrynMawr")
            running = streaming
            if streaming:
                caught_up(primary, standby)
            before = cpu_snapshot(primary.proc.pid), cpu_snapshot(standby.proc.pid)
            rate = bench(primary.port, "set", 50, 1, args.cost_requests, keyspace=1_000_000)
            # The same window for the primary whether attached or not: the run's own.
            cpu["primary attached" if streaming else "primary standalone"].append(
                per_set(before[0], cpu_snapshot(primary.proc.pid)))
            if streaming:
                # The standby's share of these SETs includes applying what it still held;
                # how long that took says whether it kept up during the run.
                catchup.append(caught_up(primary, standby))
                cpu["standby attached"].append(per_set(before[1], cpu_snapshot(standby.proc.pid)))
            (attached if streaming else alone).append(rate)
            print(f"receiver cost round {r + 1}: {'attached' if streaming else 'standalone'} {rate:,.0f}/s",
                  file=sys.stderr)
    standby.stop()
    primary.stop()
    return statistics.median(alone), statistics.median(attached), alone, attached, cpu, catchup


def caught_up(primary, standby, limit=600):
    """Waits until the standby has applied everything the primary committed; the seconds it
    took. Exits if that takes longer than `limit` seconds."""
    start = time.monotonic()
    while standby.seqno() < primary.seqno():
        if time.monotonic() - start > limit:
            sys.exit(f"the standby did not catch up with its primary within {limit} s")
        time.sleep(0.01)
    return time.monotonic() - start


def cpu_table(cpu):
    """Medians of the CPU per SET by thread: a row per thread name (those under 0.1 µs in
    every column left out), a column per process and case, and their totals."""
    columns = list(cpu)
    names = sorted({n for runs in cpu.values() for run in runs for n in run})

    def median(column, name):
        return statistics.median(run.get(name, 0) for run in cpu[column]) if cpu[column] else 0

    rows = [(n, [median(c, n) for c in columns]) for n in names]
    rows = [r for r in rows if max(r[1]) >= 0.1]
    totals = [statistics.median(sum(run.values()) for run in cpu[c]) if cpu[c] else 0 for c in columns]
    out = "| thread | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns) + "\n"
    out += "".join(f"| {n} | " + " | ".join(f"{v:.1f}" for v in vals) + " |\n" for n, vals in rows)
    return out + "| all threads | " + " | ".join(f"{v:.1f}" for v in totals) + " |\n"


def paced(args):
    """The standby's --apply-interval-ms, when given."""
    return [] if args.apply_interval_ms is None else ["--apply-interval-ms", str(args.apply_interval_ms)]


def median_of(rounds, name, i):
    """The median of field `i` of measurement `name` over rounds."""
    return statistics.median(r[name][i] for r in rounds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--catchup", type=int, default=1_000_000)
    ap.add_argument("--rollback", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds of catch-up, lag and rollback, Strand and GT.M alternating (medians)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the receiver-cost measurement")
    ap.add_argument("--cost-requests", type=int, default=100_000,
                    help="SETs per run of the receiver-cost measurement")
    ap.add_argument("--apply-interval-ms", type=int,
                    help="the standby's --apply-interval-ms (default: the engine's own default)")
    ap.add_argument("--standby-idle", action="store_true",
                    help="run the receiver-cost standby under SCHED_IDLE (what the source alone costs)")
    ap.add_argument("--out")
    ap.add_argument("--no-gtm", action="store_true")
    args = ap.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        sys.exit("--rounds and --repeats must be at least 1")
    ensure_engine()
    work = work_dir("strand-repl-bench-")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write("bench-secret\n")
    strands, gtms = [], []
    try:
        for r in range(args.repeats):
            here = os.path.join(work, f"round-{r + 1}")
            os.makedirs(here)
            print(f"round {r + 1}/{args.repeats}", file=sys.stderr)
            # Alternate which peer goes first: the disk's speed drifts over minutes.
            order = ("strand", "gtm") if r % 2 == 0 else ("gtm", "strand")
            for peer in order:
                if peer == "strand":
                    strands.append(strand_round(args, here, secret))
                    shutil.rmtree(os.path.join(here, "Ardmore"), ignore_errors=True)
                    shutil.rmtree(os.path.join(here, "BrynMawr"), ignore_errors=True)
                elif not args.no_gtm:
                    gtm = {}
                    gtm_round(here, args.catchup, args.rollback, gtm)
                    gtms.append(gtm)
                    for name in ("Ardmore", "BrynMawr"):
                        shutil.rmtree(os.path.join(here, "gtm-" + name), ignore_errors=True)
        cost = cost_round(args, os.path.join(work, "cost"), secret)
    finally:
        for proc in [e.proc for e in ENGINES] + LOADS:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    def runs(xs, fmt="{:,.0f}"):
        return ", ".join(fmt.format(x) for x in xs)

    n = args.repeats
    lines = []
    # Rates from the median time (the same work each round), so that an even count of rounds
    # still gives one consistent figure; maxima are the largest of any round.
    c = [median_of(strands, "catchup", 0), args.catchup / median_of(strands, "catchup", 0),
         median_of(strands, "catchup", 2)]
    g = [median_of(gtms, "catchup", 0), args.catchup / median_of(gtms, "catchup", 0)] if gtms else None
    lines.append(f"| catch-up of a {args.catchup:,}-transaction backlog | {c[0]:.1f} s ({c[1]:,.0f}/s) | "
                 + (f"{g[0]:.1f} s ({g[1]:,.0f}/s) | {c[1] / g[1]:.2f} |" if g else "n/a | |"))
    rb = [median_of(strands, "rollback", 0), args.rollback / median_of(strands, "rollback", 0)]
    g = [median_of(gtms, "rollback", 0), args.rollback / median_of(gtms, "rollback", 0)] if gtms else None
    lines.append(f"| rollback of {args.rollback:,} transactions into the lost-transaction log | {rb[0]:.1f} s ({rb[1]:,.0f}/s) | "
                 + (f"{g[0]:.1f} s ({g[1]:,.0f}/s) | {rb[1] / g[1]:.2f} |" if g else "n/a | |"))
    lag = [median_of(strands, "lag", 0), max(r["lag"][1] for r in strands), median_of(strands, "lag", 2),
           median_of(strands, "lag", 3), max(r["lag"][4] for r in strands)]
    g = ([median_of(gtms, "lag", 0), max(r["lag"][1] for r in gtms), median_of(gtms, "lag", 2)]
         if gtms else None)
    lines.append(f"| backlog under a write load, median / max (Strand: redis-benchmark 50 clients at {lag[2]:,.0f}/s; "
                 + (f"GT.M: one mumps writer at {g[2]:,.0f}/s) | {lag[0]:.0f} / {lag[1]:.0f} | {g[0]:.0f} / {g[1]:.0f} | different loads: no ratio |" if g
                    else f"GT.M not run) | {lag[0]:.0f} / {lag[1]:.0f} | n/a | |"))
    lines.append(f"| Strand lag under its load, median / max | {lag[3] * 1000:.1f} / {lag[4] * 1000:.1f} ms | | |")
    lines.append(f"| (building the backlog: Strand redis-benchmark -P 64 / GT.M one mumps loop) | {c[2]:.1f} s | "
                 + (f"{median_of(gtms, 'catchup', 2):.1f} s | |" if gtms else "n/a | |"))
    report = (f"Medians of {n} rounds (Strand and GT.M alternating; a maximum is the largest of any round):\n\n"
              "| measurement | Strand | GT.M 7.0-005 | Strand / GT.M (rate) |\n|---|---:|---:|---:|\n" + "\n".join(lines) + "\n")
    report += "\nEach round (seconds):\n\n| round | Strand catch-up | GT.M catch-up | Strand rollback | GT.M rollback |\n|---|---:|---:|---:|---:|\n"
    for i, s in enumerate(strands):
        gt = gtms[i] if i < len(gtms) else None
        report += (f"| {i + 1} | {s['catchup'][0]:.1f} | " + (f"{gt['catchup'][0]:.1f}" if gt else "n/a")
                   + f" | {s['rollback'][0]:.2f} | " + (f"{gt['rollback'][0]:.2f}" if gt else "n/a") + " |\n")
    alone, attached, alone_runs, attached_runs, cpu, catchup = cost
    idle = " (standby under SCHED_IDLE)" if args.standby_idle else ""
    report += ("\n| Strand primary, durable SETs from 50 clients (median of "
               f"{args.rounds}) | standalone | one receiver attached{idle} | attached / standalone |\n|---|---:|---:|---:|\n"
               f"| requests per second | {alone:,.0f} | {attached:,.0f} | {attached / alone:.2f} |\n"
               f"| rounds | {runs(alone_runs)} | {runs(attached_runs)} | |\n")
    # Each round's two runs follow one another: their ratio does not see the machine's drift
    # over the whole run (the standalone rate has moved by up to 2.7× within one).
    paired = [a / s for s, a in zip(alone_runs, attached_runs)]
    report += (f"| each round's attached / standalone | | | {runs(paired, '{:.2f}')}; "
               f"median {statistics.median(paired):.2f} |\n")
    report += (f"| the standby's catch-up after each attached run's last SET (s) | | "
               f"{runs(catchup, '{:.2f}')} | |\n")
    report += ("\nCPU per SET in those runs, µs, medians by thread (user and system time from /proc; each "
               f"thread's good to one clock tick over {args.cost_requests:,} SETs, "
               f"{1e6 / os.sysconf('SC_CLK_TCK') / args.cost_requests:.2f} µs; the primary's over the run, the "
               "standby's until it has applied the run's SETs; a checkpoint counts in the run it falls in):\n\n"
               + cpu_table(cpu))
    publish(report, args.out)


if __name__ == "__main__":
    main()
