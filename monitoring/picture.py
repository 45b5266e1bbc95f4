#!/usr/bin/env python3
"""Renders docs/dashboard.png: the dashboard's main panels as a real Prometheus sees a running
family on the local control plane, with a client writing throughout and a switchover halfway.

    monitoring/picture.py [DIR] [--minutes N] [--out docs/dashboard.png]

DIR is a local control plane with the operator installed and the examples applied (for
example `tests/cluster/lifecycle.py --only none --keep DIR`, or the demo's
`.cache/demo-cluster`); without DIR one is brought up and taken down. Needs Debian's
prometheus and librsvg2-bin (scripts/deps).
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
sys.path.insert(0, HERE)

import check  # noqa: E402
import lifecycle  # noqa: E402


def main():
    args = sys.argv[1:]
    minutes = int(args[args.index("--minutes") + 1]) if "--minutes" in args else 4
    out = args[args.index("--out") + 1] if "--out" in args else os.path.join(REPO, "docs", "dashboard.png")
    rest = [a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or not args[i - 1].startswith("--"))]
    own = not rest
    dir = rest[0] if rest else tempfile.mkdtemp(prefix="strand-picture.")
    c = lifecycle.Cluster(dir)
    try:
        if own:
            subprocess.run([os.path.join(REPO, "tests", "cluster", "up"), dir], check=True, capture_output=True)
            lifecycle.install(c)
        members = ["ardmore", "brynmawr"]
        w = lifecycle.Writer(c, members, "picture-")
        w.start()
        primary = c.family()["primary"]
        to = "brynmawr" if primary == "ardmore" else "ardmore"

        def switch_halfway():
            time.sleep(minutes * 30)
            c.plugin("switchover", "ardmore", "--to", to)
        threading.Thread(target=switch_halfway, daemon=True).start()
        ts = check.targets(dir)
        prom = check.Prometheus(dir, ts)
        try:
            prom.wait_up(len(ts))
            time.sleep(minutes * 60)
            check.render(prom, minutes, out)
        finally:
            prom.stop()
            w.stop()
        print("%d writes acknowledged; switched over from %s to %s halfway" % (len(w.acks), primary, to))
        return 0
    except (check.Fail, lifecycle.Fail) as e:
        print("picture: FAIL: %s" % e, file=sys.stderr)
        return 1
    finally:
        if own:
            subprocess.run([os.path.join(REPO, "tests", "cluster", "down"), dir], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
