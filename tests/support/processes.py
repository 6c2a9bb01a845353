"""Processes the tests start: the binaries they need, the ports they listen on, how they stop."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str) -> str:
    """The binary's path; in CI a missing one fails the test, elsewhere it skips with why."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = f"{name} is not installed; `make test` (scripts/setup.sh) installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout`."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A loopback port nothing listens on now, for a server the test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """A tool's exit code and output, for a test to assert on rather than raise."""
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, check=False
    )


def free_port_below(limit: int = 32768, start: int = 20000) -> int:
    """A loopback port below the kernel's ephemeral range, free for TCP and UDP alike: what
    Alertmanager's cluster (memberlist) binds, which must not collide with a port the kernel
    hands out meanwhile."""
    import random

    for _ in range(200):
        port = random.randrange(start, limit)
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {start} and {limit}")
