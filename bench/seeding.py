#!/usr/bin/env python3
"""Full seeding of a new secondary, Strand and Redis side by side in one run (release build,
real processes, loopback, same disk).

Both primaries are loaded with the same --keys keys (default 1,000,000: `key:0` … with
64-byte values, pipelined SETs over one connection). Then, --rounds times (default 3), a new
empty secondary joins and the time until it holds everything is taken:

- Strand: the primary runs with `--journal-keep-bytes 0`, so once a checkpoint has trimmed
  its journal the new member cannot stream from seqno 1 and is seeded from a snapshot
  (`receiver start --seed`); done when its journal seqno reaches the primary's.
- Redis (appendonly yes, appendfsync always on both, otherwise its defaults): a new, empty
  `redis-server` is told `REPLICAOF` the primary; done when the replica reports
  `master_link_status:up` with no sync in progress and DBSIZE equals the primary's.

Both clocks start when the running, empty member is told to replicate.

Medians of the rounds, and the ratio of rates. A figure that cannot be read fails the run.
The work directory ($STRAND_BENCH_DIR, else the system's temporary directory) must not be a
tmpfs.

Usage: bench/seeding.py [--keys N] [--rounds N] [--out FILE]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from benchlib import ensure_engine, free_port, number, publish, work_dir
from replication import Engine


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def call(port, *args):
    """One command on a fresh connection; the reply's first line (enough for integers and
    status replies) or the whole bulk string."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(resp(*args))
        data = b""
        while True:
            data += s.recv(1 << 20)
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                n = int(head[1:])
                if n < 0 or len(rest) >= n + 2:
                    return rest[:max(n, 0)].decode()
            elif data.endswith(b"\r\n"):
                return data.decode().strip()


def load(port, keys, batch=10_000):
    """`keys` SETs of 64-byte values, pipelined in batches; every reply must be +OK."""
    value = b"v" * 64
    with socket.create_connection(("127.0.0.1", port)) as s:
        for start in range(0, keys, batch):
            n = min(batch, keys - start)
            s.sendall(b"".join(resp(b"SET", f"key:{i}".encode(), value) for i in range(start, start + n)))
            want = b"+OK\r\n" * n
            got = b""
            while len(got) < len(want):
                chunk = s.recv(1 << 20)
                if not chunk:
                    sys.exit("the server closed the connection during the load")
                got += chunk
                if not want.startswith(got[:len(want)]):
                    sys.exit(f"a SET failed: {got[-200:]!r}")


def dbsize(port):
    return int(number(call(port, "DBSIZE").lstrip(":"), "DBSIZE"))


def redis_server(work, name, port, *more):
    d = os.path.join(work, name)
    os.makedirs(d)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--dir", d, "--appendonly", "yes", "--appendfsync", "always",
         "--save", "", "--protected-mode", "no", *more], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if call(port, "PING") == "+PONG":
                return proc
        except OSError:
            time.sleep(0.05)
    sys.exit(f"redis-server {name} did not start")


def replication_info(port):
    info = call(port, "INFO", "replication")
    return dict(line.split(":", 1) for line in info.splitlines() if ":" in line)


def strand_rounds(work, secret, keys, rounds):
    primary = Engine(work, "Ardmore", secret, "--journal-keep-bytes", "0")
    primary.ctl("promote")
    t0 = time.time()
    load(primary.port, keys)
    print(f"strand: loaded {keys:,} keys in {time.time() - t0:.1f} s", file=sys.stderr)
    # The next checkpoint (at the latest the 10-second one) trims the journal: a new member
    # then cannot stream from the start.
    deadline = time.time() + 60
    while primary.admin("/v1/status")["journal"]["first_seqno"] <= 1:
        if time.time() > deadline:
            sys.exit("the primary's journal was never trimmed")
        time.sleep(0.2)
    target = primary.seqno()
    times = []
    for r in range(rounds):
        standby = Engine(work, f"BrynMawr{r}", secret)
        standby.ctl("receiver", "start", "--seed")
        t0 = time.time()
        primary.ctl("source", "start", "--receiver", f"BrynMawr{r}", "--addr", f"127.0.0.1:{standby.repl}")
        while standby.seqno() < target:
            time.sleep(0.05)
        took = time.time() - t0
        seed = standby.admin("/v1/status")["receiver"].get("snapshot") or {}
        if not seed.get("installed") or seed.get("nodes_total", 0) < keys:
            sys.exit(f"the standby caught up without a full seeding: {seed}")
        print(f"strand round {r}: seeded {seed['nodes_total']:,} nodes in {took:.1f} s", file=sys.stderr)
        times.append(took)
        primary.ctl("source", "stop", "--receiver", f"BrynMawr{r}")
        standby.stop()
        shutil.rmtree(standby.dir, ignore_errors=True)
    primary.stop()
    return times


def redis_rounds(work, keys, rounds, label, *primary_args):
    port = free_port()
    primary = redis_server(work, f"redis-primary-{label}", port, *primary_args)
    try:
        t0 = time.time()
        load(port, keys)
        print(f"redis: loaded {keys:,} keys in {time.time() - t0:.1f} s", file=sys.stderr)
        want = dbsize(port)
        times = []
        for r in range(rounds):
            rport = free_port()
            # Started first, then told to replicate: the clock runs from the same event as
            # Strand's (the stream is started to an already running member).
            replica = redis_server(work, f"redis-replica-{label}{r}", rport)
            t0 = time.time()
            if call(rport, "REPLICAOF", "127.0.0.1", port) != "+OK":
                sys.exit("REPLICAOF was refused")
            while True:
                info = replication_info(rport)
                if (info.get("master_link_status") == "up" and info.get("master_sync_in_progress") == "0"
                        and dbsize(rport) == want):
                    break
                time.sleep(0.05)
            took = time.time() - t0
            print(f"redis ({label}) round {r}: full sync of {want:,} keys in {took:.1f} s", file=sys.stderr)
            times.append(took)
            # A throwaway: no need to wait for the AOF rewrite it starts after the sync.
            replica.kill()
            replica.wait(timeout=60)
            shutil.rmtree(os.path.join(work, f"redis-replica-{label}{r}"), ignore_errors=True)
        return times
    finally:
        primary.terminate()
        primary.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server not found: apt-get install redis-server")
    ensure_engine()
    work = work_dir("strand-seed-bench-")
    secret = os.path.join(work, "secret")
    with open(secret, "w") as f:
        f.write("bench-secret\n")
    try:
        strand = strand_rounds(work, secret, args.keys, args.rounds)
        redis = redis_rounds(work, args.keys, args.rounds, "default")
        # Redis 7's default diskless sync waits repl-diskless-sync-delay (5 s) for more
        # replicas before it starts; without that wait:
        redis0 = redis_rounds(work, args.keys, args.rounds, "nodelay", "--repl-diskless-sync-delay", "0")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = statistics.median(strand)
    rows = []
    for what, times in (("defaults", redis), ("repl-diskless-sync-delay 0", redis0)):
        r = statistics.median(times)
        rows.append(
            f"| full seeding of a new secondary, {args.keys:,} keys of 64 bytes, median of {args.rounds} "
            f"(Redis: {what}) | {s:.1f} s ({args.keys / s:,.0f} keys/s) | {r:.1f} s ({args.keys / r:,.0f} keys/s) "
            f"| {r / s:.2f} |")
        rows.append(f"| rounds | {', '.join(f'{t:.1f}' for t in strand)} s | {', '.join(f'{t:.1f}' for t in times)} s | |")
    report = "| measurement | Strand | Redis 7.0 | Strand / Redis (rate) |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    publish(report, args.out)


if __name__ == "__main__":
    main()
