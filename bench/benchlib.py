"""What the benchmark scripts share: the release binary (rebuilt when its sources changed),
free loopback ports, a work directory that is on a real disk, and a process's CPU time."""

import csv
import io
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(ROOT, "target", "release", "strand-engine")
# Filesystems where fsync costs nothing: durable-write figures measured there are not figures.
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


def stat_times(path):
    """The name, the user and the system CPU seconds in a /proc `stat` file (a process's: all
    its threads, exited ones included; a thread's: its own)."""
    with open(path) as f:
        head, tail = f.read().rsplit(")", 1)
    fields = tail.split()
    # After the command's closing parenthesis: state is field 3, utime 14 and stime 15.
    tick = os.sysconf("SC_CLK_TCK")
    return head.split("(", 1)[1], int(fields[11]) / tick, int(fields[12]) / tick


def stat_cpu(path):
    """The name and the user and system CPU seconds together in a /proc `stat` file."""
    name, user, system = stat_times(path)
    return name, user + system


def cpu_times(pid):
    """User and system CPU seconds of every thread of process `pid` so far, apart."""
    return stat_times(f"/proc/{pid}/stat")[1:]


def cpu_seconds(pid):
    """User and system CPU of every thread of process `pid` so far."""
    return sum(cpu_times(pid))


def cpu_snapshot(pid):
    """The CPU process `pid` has used so far: all its threads' (exited ones included) and each
    live thread's, as {thread id: (thread name, seconds)}."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            threads[tid] = stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except OSError:
            continue  # exited meanwhile: counted in the total
    return cpu_seconds(pid), threads


def cpu_by_thread_name(before, after):
    """CPU seconds between two snapshots of one process, by thread name (`strand-writer`,
    `tokio-rt-worker` …), and under "(exited threads, rounding)" the process's total less its
    live threads': what threads that ended in between used, and up to a clock tick per thread
    by which the kernel's per-thread and per-process counts round apart."""
    out = {}
    for tid, (name, seconds) in after[1].items():
        out[name] = out.get(name, 0) + seconds - before[1].get(tid, (name, 0))[1]
    exited = (after[0] - before[0]) - sum(out.values())
    if exited > 0:
        out["(exited threads, rounding)"] = exited
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    """Waits up to 30 s until `proc` (called `what`) accepts connections on `port`; exits if
    it ends first or never does."""
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early (status {proc.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start")


def engine_standalone(binary, port, data_dir, name):
    """The command line of a standalone engine with its defaults (every acknowledged write
    fsync'd), serving RESP on `port`; no disk reserve, warnings only."""
    return [binary, "run", "--data-dir", data_dir, "--name", name, "--resp-addr", f"127.0.0.1:{port}",
            "--disk-reserve-bytes", "0", "--log-level", "warn"]


def redis_aof_always(port, directory):
    """The command line of the durable Redis peer: AOF with an fsync per write, no RDB."""
    return ["redis-server", "--port", str(port), "--dir", directory, "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--protected-mode", "no"]


def ensure_engine():
    """Builds the release binary; cargo does nothing when it is up to date with its sources."""
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "strand-engine"], cwd=ROOT, check=True)


def filesystem_of(path):
    """The type of the filesystem holding `path`, from the longest mount point above it."""
    path = os.path.realpath(path)
    best, kind = "", None
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 3:
                continue
            mount = fields[1].replace("\\040", " ")
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                best, kind = mount, fields[2]
    return kind


def work_dir(prefix):
    """A fresh work directory under $STRAND_BENCH_DIR (or the system's temporary directory),
    refused if it is on a memory filesystem."""
    base = os.environ.get("STRAND_BENCH_DIR") or tempfile.gettempdir()
    kind = filesystem_of(base)
    if kind in MEMORY_FILESYSTEMS:
        sys.exit(f"{base} is on {kind}, where fsync is free: durable-write figures would mean nothing. "
                 "Set STRAND_BENCH_DIR to a directory on a disk.")
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def number(text, what):
    """Parses a figure, failing the run (never reading as 0) when it is not one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        sys.exit(f"cannot read {what} from {text!r}")


def bench(port, test, clients, pipeline, requests, keyspace=100000):
    """One redis-benchmark run of `test` (64-byte values over `keyspace` random keys): its
    requests per second."""
    cmd = ["redis-benchmark", "-p", str(port), "-t", test, "-c", str(clients), "-n", str(requests),
           "-P", str(pipeline), "-r", str(keyspace), "-d", "64", "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    for row in rows[1:]:
        if len(row) > 1 and row[0].upper().startswith(test.upper()):
            return number(row[1], f"the {test} rate in redis-benchmark's output {out!r}")
    sys.exit(f"no result in redis-benchmark output: {out}")


def publish(report, out):
    """Prints the report's table and, with --out, writes it to that file too."""
    print(report)
    if out:
        with open(out, "w") as f:
            f.write(report)
