"""PostgreSQL and Redis of the demo's own, for a machine where the ones it expects do not
let it in (none on the port, or a server that wants a password it lacks): started from the
local binaries, on ports of their own, and gone when the demo stops. Without the binaries,
`missing` says in one line what to install or pass instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

START_SECONDS = 30.0  # initdb and a first start of a cluster take a few seconds


async def postgres_refuses(dsn: str) -> str | None:
    """Why the demo cannot connect to `dsn` (e.g. "InvalidPasswordError"), or None."""
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return type(exc).__name__
    await connection.close(timeout=5)
    return None


async def redis_refuses(url: str) -> str | None:
    """Why the demo cannot use the Redis at `url`, or None."""
    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        return type(exc).__name__
    finally:
        await client.aclose()
    return None


def postgres_tool(name: str) -> str | None:
    """Debian keeps initdb and pg_ctl out of PATH, under /usr/lib/postgresql/VERSION/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; as root, run its tools as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def free_port() -> int:
    """A loopback port nothing listens on now, for a server the demo starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise OSError(f"nothing listens on 127.0.0.1:{port} after {START_SECONDS:g} s")


class OwnPostgres:
    """A throwaway cluster trusting loopback connections, in a directory of its own. (As
    root it runs as the `postgres` user: PostgreSQL refuses to run as root.)"""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stackprobe-demo-pg-"))
        self.data = self.dir / "data"
        self._as_root = os.geteuid() == 0

    @staticmethod
    def missing() -> str | None:
        """What to do when the binaries are not here, or None when they are."""
        if postgres_tool("initdb") and postgres_tool("pg_ctl"):
            return None
        return "apt-get install postgresql, or pass --postgres-dsn"

    def _run(self, *args: str) -> None:
        subprocess.run(
            as_postgres(list(args)), check=True, capture_output=True, timeout=START_SECONDS
        )

    def start(self) -> str:
        """Blocking: create and start the cluster; its DSN."""
        if self._as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        initdb, pg_ctl = postgres_tool("initdb"), postgres_tool("pg_ctl")
        assert initdb is not None and pg_ctl is not None  # `missing()` said so
        self._run(initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.dir} -c fsync=off"
        )
        log = str(self.dir / "log")
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-w", "-l", log, "start")
        _wait_port(self.port)
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Blocking: stop the cluster and remove its directory."""
        pg_ctl = postgres_tool("pg_ctl")
        if pg_ctl is not None and self.data.exists():
            # not started, or already gone: the directory goes either way
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self._run(pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnRedis:
    """A redis-server on a port of its own, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        if shutil.which("redis-server"):
            return None
        return "apt-get install redis-server, or pass --redis-url"

    def start(self) -> str:
        """Blocking: start the server; its URL."""
        binary = shutil.which("redis-server")
        assert binary is not None  # `missing()` said so
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        self._process = subprocess.Popen(
            [*command, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Blocking: SIGTERM, and SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
