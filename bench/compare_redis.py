#!/usr/bin/env python3
"""Side-by-side durable-write benchmark: Strand vs redis-server (appendonly yes,
appendfsync always), same machine, same run, same redis-benchmark.

Runs SET and GET at 1 and 50 clients, with and without pipelining (-P 16), alternating the
two servers in each of --rounds rounds, and reports medians and Strand/Redis ratios, and
beside them each round's own ratio (the two servers back to back): their median and range,
which show how much of a row's ratio is the machine's noise. It also
measures the raw fsync rate of the disk holding the data (write 4 KiB + fdatasync in a loop),
the physical limit for one-at-a-time durable commits.

With --types it instead runs redis-benchmark's own command set across the data types
(`-t set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset`, 50
clients, no pipelining, its default keys and 3-byte values) against both servers in each round.

Usage: bench/compare_redis.py [--rounds 3] [--types] [--out docs/benchmarks.md]
Needs: redis-server, redis-benchmark. The release build of strand-engine is brought up to date
first. The work directory ($STRAND_BENCH_DIR, else the system's temporary directory) must
be on a disk: a tmpfs is refused.
"""

import argparse
import csv
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from benchlib import (ENGINE, bench, engine_standalone, ensure_engine, free_port, number, publish, redis_aof_always,
                      wait_port, work_dir)


def fsync_rate(directory, seconds=2.0):
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    block = b"\0" * 4096
    n, start = 0, time.time()
    try:
        while time.time() - start < seconds:
            os.pwrite(fd, block, (n % 256) * 4096)
            os.fdatasync(fd)
            n += 1
    finally:
        os.close(fd)
        os.unlink(path)
    return n / (time.time() - start)


TYPES_TESTS = "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset"


def bench_types(port, requests):
    """Every row of redis-benchmark's own command set: {test name: requests per second}."""
    cmd = ["redis-benchmark", "-p", str(port), "-t", TYPES_TESTS, "-c", "50", "-n", str(requests), "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    result = {}
    for row in rows[1:]:
        if len(row) > 1:
            result[row[0]] = number(row[1], f"the {row[0]} rate in redis-benchmark's output {out!r}")
    if len(result) < 14:
        sys.exit(f"redis-benchmark reported {len(result)} of the expected tests: {out}")
    return result


BIG_ZSET = 200_000


def load_big_zset(port):
    """Sorted set `bigz`: members m:000000000000 … with their index as score (batches of 1000)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        f = sock.makefile("rb")
        for start in range(0, BIG_ZSET, 1000):
            args = ["ZADD", "bigz"]
            for i in range(start, min(start + 1000, BIG_ZSET)):
                args += [str(i), f"m:{i:012d}"]
            sock.sendall(f"*{len(args)}\r\n".encode() + b"".join(
                f"${len(a)}\r\n{a}\r\n".encode() for a in args))
            reply = f.readline()
            if not reply.startswith(b":"):
                sys.exit(f"loading bigz failed: {reply!r}")


BIG_ZSET_TESTS = [
    ("ZRANK (random member)", ["ZRANK", "bigz", "m:__rand_int__"]),
    ("ZRANGE 10 at rank 100,000", ["ZRANGE", "bigz", "100000", "100009"]),
    ("ZCOUNT over 150,000 members", ["ZCOUNT", "bigz", "1000", "150999"]),
]


def bench_big_zset(port, requests):
    """Rank and count queries on a 200,000-member sorted set: {test: requests per second}."""
    result = {}
    for name, command in BIG_ZSET_TESTS:
        cmd = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests), "-r", str(BIG_ZSET),
               "--csv"] + command
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows = list(csv.reader(io.StringIO(out)))
        if len(rows) < 2 or len(rows[1]) < 2:
            sys.exit(f"no result for {name} in redis-benchmark's output {out!r}")
        result[name] = number(rows[1][1], f"the {name} rate in redis-benchmark's output {out!r}")
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--types", action="store_true", help="redis-benchmark's command set across the types")
    ap.add_argument("--out", help="write the markdown report here")
    ap.add_argument("--scale", type=int, default=1,
                    help="multiply every row's request count (sustained rates: the background "
                         "checkpoints then run within the measurement)")
    args = ap.parse_args()
    if args.scale < 1:
        sys.exit("--scale must be at least 1")
    for tool in ("redis-server", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install redis-server redis-tools")
    ensure_engine()

    work = work_dir("strand-bench-")
    strand_port, redis_port = free_port(), free_port()
    strand = subprocess.Popen(engine_standalone(ENGINE, strand_port, os.path.join(work, "strand"), "bench"),
                              stderr=subprocess.DEVNULL)
    os.makedirs(os.path.join(work, "redis"))
    redis = subprocess.Popen(redis_aof_always(redis_port, os.path.join(work, "redis")), stdout=subprocess.DEVNULL)
    try:
        wait_port(strand_port, strand, "strand-engine")
        wait_port(redis_port, redis, "redis-server")
        rate = fsync_rate(work)
        if args.types:
            runs = {"strand": [], "redis": []}
            for r in range(args.rounds):
                order = [("strand", strand_port), ("redis", redis_port)]
                if r % 2:
                    order.reverse()
                for name, port in order:
                    runs[name].append(bench_types(port, 20000))
                    print(f"round {r + 1}/{args.rounds} {name}: {runs[name][-1]}", file=sys.stderr)
            for port in (strand_port, redis_port):
                load_big_zset(port)
            for r in range(args.rounds):
                order = [("strand", strand_port), ("redis", redis_port)]
                if r % 2:
                    order.reverse()
                for name, port in order:
                    runs[name][r].update(bench_big_zset(port, 20000))
                    print(f"round {r + 1}/{args.rounds} {name} bigz: {runs[name][r]}", file=sys.stderr)
            lines = [
                f"Raw disk fsync rate (4 KiB write + fdatasync, one at a time): **{rate:.0f}/s**",
                "",
                f"redis-benchmark's command set, then rank and count queries on a sorted set of "
                f"{BIG_ZSET:,} members (scores 0 … {BIG_ZSET - 1:,}); 50 clients, no pipelining; medians of "
                f"{args.rounds} rounds, requests per second:",
                "",
                "| test | Strand | Redis (AOF always) | Strand / Redis |",
                "|---|---:|---:|---:|",
            ]
            for test in runs["strand"][0]:
                s_med = statistics.median(run[test] for run in runs["strand"])
                r_med = statistics.median(run[test] for run in runs["redis"])
                lines.append(f"| {test} | {s_med:.0f} | {r_med:.0f} | {s_med / r_med:.2f} |")
            report = "\n".join(lines) + "\n"
            publish(report, args.out)
            return
        cases = []
        for test in ("set", "get"):
            for clients in (1, 50):
                for pipeline in (1, 16):
                    if test == "set" and clients == 1 and pipeline == 1:
                        requests = 2000
                    elif test == "set":
                        requests = 20000
                    else:
                        requests = 100000
                    cases.append((test, clients, pipeline, requests * args.scale))
        results = {c: {"strand": [], "redis": []} for c in cases}
        for r in range(args.rounds):
            for case in cases:
                test, clients, pipeline, requests = case
                # Alternate which server goes first to spread any drift evenly.
                order = [("strand", strand_port), ("redis", redis_port)]
                if r % 2:
                    order.reverse()
                for name, port in order:
                    results[case][name].append(bench(port, test, clients, pipeline, requests))
                print(f"round {r + 1}/{args.rounds} {test.upper()} c={clients} P={pipeline}: "
                      f"strand {results[case]['strand'][-1]:.0f}/s redis {results[case]['redis'][-1]:.0f}/s",
                      file=sys.stderr)
    finally:
        for p in (strand, redis):
            p.terminate()
        for p in (strand, redis):
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Raw disk fsync rate (4 KiB write + fdatasync, one at a time): **{rate:.0f}/s**",
        "",
        f"Medians of {args.rounds} rounds, requests per second (64-byte values, 100k random keys); "
        "the last column is each round's own ratio (the two servers ran back to back in it): "
        "their median and range:",
        "",
        "| command | clients | pipeline | requests | Strand | Redis (AOF always) | Strand / Redis | rounds' ratios |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        test, clients, pipeline, requests = case
        s = statistics.median(results[case]["strand"])
        r = statistics.median(results[case]["redis"])
        rounds = [a / b for a, b in zip(results[case]["strand"], results[case]["redis"])]
        spread = f"{statistics.median(rounds):.2f} ({min(rounds):.2f}–{max(rounds):.2f})"
        lines.append(f"| {test.upper()} | {clients} | {pipeline} | {requests:,} | {s:.0f} | {r:.0f} | {s / r:.2f} "
                     f"| {spread} |")
    report = "\n".join(lines) + "\n"
    publish(report, args.out)


if __name__ == "__main__":
    main()
