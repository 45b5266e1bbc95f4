"""What the benchmark scripts share: where the release binary is, and free loopback ports."""

import os
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE = os.path.join(ROOT, "target", "release", "strand-engine")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_engine():
    """Builds the release binary if it is missing."""
    if not os.path.exists(ENGINE):
        subprocess.run(["cargo", "build", "--release", "-p", "strand-engine"], cwd=ROOT, check=True)
