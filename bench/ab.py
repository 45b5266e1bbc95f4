#!/usr/bin/env python3
"""A/B of engine builds (and Redis) on redis-benchmark rows: a fresh server for every row of
every round, the builds alternating, so that neither a checkpoint left by an earlier row nor
the disk's drift over minutes favours one of them (the decision records' "a fresh instance
per row, alternating" figures were made the same way by hand before this script existed).

Each --build is NAME=PATH, optionally followed by a colon and comma-separated settings:
`KEY=VALUE` sets an environment variable of that server, `--flag=VALUE` adds an engine flag.
`--redis` adds redis-server (appendonly yes, appendfsync always) as one more contender.

  bench/ab.py --build old=/tmp/strand-old --build new=target/release/strand-engine --redis
  bench/ab.py --build two=target/release/strand-engine \\
              --build one=target/release/strand-engine:TOKIO_WORKER_THREADS=1 --rows get,50,1,100000

A row is TEST,CLIENTS,PIPELINE,REQUESTS (default: SET and GET at 1 and 50 clients, with and
without -P 16, as bench/compare_redis.py). Before a GET row the server is given 100,000
pipelined SETs over the keyspace (with the default keyspace, about 63 % of its keys then
exist); the engine's overlay holds them, as no checkpoint is due in its first 10 s unless
64 MiB were written. Prints each run as it goes, then a table of medians with each build's
ratio to the first build and, with --redis, to Redis; then the same for the server's CPU per
request (user and system time of all its threads, from /proc/PID/stat, in clock ticks: a
row's figure is good to one tick, 10 ms, over its requests, printed beside it), and for its
user time alone (its own code; the kernel's share is much the same for every contender and
wanders with the machine). It counts work done rather than time waited. A GET row still
running 10 s after its preload counts the preload's checkpoint too (the engine checkpoints
after 10 s without writes).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys

from benchlib import bench, cpu_times, engine_standalone, free_port, redis_aof_always, wait_port, work_dir

DEFAULT_ROWS = [
    "set,1,1,2000", "set,1,16,20000", "set,50,1,20000", "set,50,16,20000",
    "get,1,1,100000", "get,1,16,100000", "get,50,1,100000", "get,50,16,100000",
]


def parse_build(spec):
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        sys.exit(f"--build {spec!r}: expected NAME=PATH[:SETTING,...]")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        sys.exit(f"--build {spec!r}: a name is letters, digits, '_', '.' or '-'")
    path, _, settings = rest.partition(":")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(f"--build {spec!r}: {path} is not an executable file")
    env, flags = {}, []
    for setting in filter(None, settings.split(",")):
        key, sep, value = setting.partition("=")
        if not sep or not key:
            sys.exit(f"--build {spec!r}: setting {setting!r} is not KEY=VALUE or --flag=VALUE")
        if key.startswith("--"):
            flags += [key, value]
        else:
            env[key] = value
    return {"name": name, "path": os.path.abspath(path), "env": env, "flags": flags}


def parse_row(text):
    fields = text.lower().split(",")
    if len(fields) != 4 or fields[0] not in ("set", "get"):
        sys.exit(f"--rows {text!r}: expected set|get,CLIENTS,PIPELINE,REQUESTS")
    try:
        clients, pipeline, requests = (int(f) for f in fields[1:])
    except ValueError:
        sys.exit(f"--rows {text!r}: CLIENTS, PIPELINE and REQUESTS must be whole numbers")
    if min(clients, pipeline, requests) < 1:
        sys.exit(f"--rows {text!r}: CLIENTS, PIPELINE and REQUESTS must be at least 1")
    return (fields[0], clients, pipeline, requests)


def start(build, data):
    port = free_port()
    os.makedirs(data)
    if build is None:
        proc = subprocess.Popen(redis_aof_always(port, data), stdout=subprocess.DEVNULL)
        what = "redis-server"
    else:
        proc = subprocess.Popen(
            engine_standalone(build["path"], port, os.path.join(data, "d"), "ab") + build["flags"],
            env={**os.environ, **build["env"]}, stderr=subprocess.DEVNULL)
        what = build["name"]
    try:
        wait_port(port, proc, what)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def stop(proc):
    """Stops a server, killing it if it does not stop within a minute."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(proc, port, test, clients, pipeline, requests, keyspace, what):
    """The rate of one row, and the server's CPU per request in it, all and user time only
    (µs, all its threads; the GET rows' preload not counted)."""
    try:
        if test == "get":
            bench(port, "set", 50, 16, 100_000, keyspace)
        before = cpu_times(proc.pid)
        rate = bench(port, test, clients, pipeline, requests, keyspace)
        user, system = (b - a for a, b in zip(before, cpu_times(proc.pid)))
        per_request = 1e6 / requests
        return rate, (user + system) * per_request, user * per_request
    except subprocess.CalledProcessError as e:
        sys.exit(f"redis-benchmark failed against {what} (status {e.returncode}): {e.stderr or e.stdout}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="append", default=[], help="NAME=PATH[:SETTING,...] (repeat)")
    ap.add_argument("--redis", action="store_true", help="add redis-server (AOF always) as a contender")
    ap.add_argument("--rows", action="append", help="TEST,CLIENTS,PIPELINE,REQUESTS (repeat)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keyspace", type=int, default=100_000)
    args = ap.parse_args()
    builds = [parse_build(b) for b in args.build]
    if len({b["name"] for b in builds}) != len(builds) or any(b["name"] == "redis" for b in builds):
        sys.exit("build names must differ from each other and from 'redis'")
    contenders = builds + ([None] if args.redis else [])
    if len(contenders) < 2:
        sys.exit("give at least two contenders (--build twice, or --build and --redis)")
    if args.redis and not shutil.which("redis-server"):
        sys.exit("redis-server not found: apt-get install redis-server")
    if not shutil.which("redis-benchmark"):
        sys.exit("redis-benchmark not found: apt-get install redis-tools")
    if args.rounds < 1 or args.keyspace < 1:
        sys.exit("--rounds and --keyspace must be at least 1")
    rows = [parse_row(r) for r in (args.rows or DEFAULT_ROWS)]
    if len(set(rows)) != len(rows):
        sys.exit("--rows: each row once")
    names = [c["name"] if c else "redis" for c in contenders]
    results = {(row, name): [] for row in rows for name in names}
    cpu = {(row, name): [] for row in rows for name in names}
    user = {(row, name): [] for row in rows for name in names}
    work = work_dir("strand-ab-")
    try:
        for r in range(args.rounds):
            # Each contender goes first in turn (with two, one round each way).
            shift = r % len(contenders)
            order = list(zip(names, contenders))
            order = order[shift:] + order[:shift]
            for row in rows:
                test, clients, pipeline, requests = row
                for name, contender in order:
                    data = os.path.join(work, f"{name}-{r}-{test}-{clients}-{pipeline}")
                    proc, port = start(contender, data)
                    try:
                        rate, us, us_user = measure(proc, port, test, clients, pipeline, requests, args.keyspace,
                                                    name)
                    finally:
                        stop(proc)
                        shutil.rmtree(data, ignore_errors=True)
                    results[(row, name)].append(rate)
                    cpu[(row, name)].append(us)
                    user[(row, name)].append(us_user)
                    print(f"round {r + 1}/{args.rounds} {test.upper()} c={clients} P={pipeline} {name}: {rate:,.0f}/s, "
                          f"{us:.1f} µs CPU per request ({us_user:.2f} user)", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Every build against the first build, then every build against Redis (engine / Redis,
    # as in bench/compare_redis.py).
    first = names[0]
    engines = [c["name"] for c in builds]
    pairs = [(n, first) for n in engines[1:]] + ([(n, "redis") for n in engines] if args.redis else [])
    print_table(f"Medians of {args.rounds} rounds, requests per second (64-byte values, {args.keyspace:,} random "
                "keys); a fresh server per row:", rows, names, pairs, results, "{:,.0f}")
    # Work done rather than time waited: a change that saves work shows here even when the
    # rates of a shared machine drown it.
    tick = 1 / os.sysconf("SC_CLK_TCK")
    print()
    print_table(f"Medians of {args.rounds} rounds, the server's CPU per request (µs, user and system, all threads; "
                "the client's not counted; lower is less work; ± is one clock tick over the row's requests):",
                rows, names, pairs, cpu, "{:.1f}", ("±", lambda requests: f"{tick * 1e6 / requests:.2f}"))
    # The user time alone: the server's own code. The system time (the sockets, the disk,
    # the wake-ups) is much the same for every contender and wanders with the machine.
    print()
    print_table(f"Medians of {args.rounds} rounds, the server's user CPU per request (µs, all threads: its own code, "
                "not the kernel's; ± as above):",
                rows, names, pairs, user, "{:.2f}", ("±", lambda requests: f"{tick * 1e6 / requests:.2f}"))


def print_table(title, rows, names, pairs, samples, fmt, extra=None):
    """A markdown table of each contender's median per row and the ratios of `pairs`;
    `extra`, a (heading, function of the row's requests), adds a column before them."""
    extra_head, extra_cell = extra or (None, None)
    print(title + "\n")
    head = ([extra_head] if extra else []) + names + [f"{a} / {b}" for a, b in pairs]
    print(f"| command | clients | pipeline | requests | {' | '.join(head)} |")
    print("|---|---:|---:|---:|" + "---:|" * len(head))
    for row in rows:
        test, clients, pipeline, requests = row
        med = {n: statistics.median(samples[(row, n)]) for n in names}
        cells = ([extra_cell(requests)] if extra else []) + [fmt.format(med[n]) for n in names]
        cells += [f"{med[a] / med[b]:.2f}" if med[b] else "n/a" for a, b in pairs]
        print(f"| {test.upper()} | {clients} | {pipeline} | {requests:,} | {' | '.join(cells)} |")

if __name__ == "__main__":
    main()
