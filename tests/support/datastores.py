"""Real PostgreSQL and Redis servers for the tests: the Debian cluster that `make test` starts,
throwaway clusters with tiny limits, and Redis servers a test may kill, freeze and restart."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from stackprobe.demo.datastores import as_postgres, postgres_tool
from tests.support.polling import wait_port
from tests.support.processes import IN_CI, free_port, require_binary

# The role scripts/setup.sh creates in the Debian cluster.
ADMIN_DSN = os.environ.get(
    "STACKPROBE_TEST_PG_DSN", "postgresql://stackprobe_test:stackprobe_test@127.0.0.1:5432/postgres"
)


# The role the probes connect as: no rights but reading other roles' sessions.
PROBE_ROLE = "sp_probe"
PROBE_PASSWORD = "CANARY-pg-7d1f3a"


async def ensure_probe_role(admin: Any) -> None:
    await admin.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PROBE_ROLE}') THEN "
        f"CREATE ROLE {PROBE_ROLE} LOGIN PASSWORD '{PROBE_PASSWORD}'; END IF; END $$"
    )
    await admin.execute(f"GRANT pg_read_all_stats TO {PROBE_ROLE}")


def require_postgres() -> str:
    """The admin DSN if the test cluster answers; in CI its absence fails the test."""
    host, port = "127.0.0.1", 5432
    with socket.socket() as sock:
        sock.settimeout(2)
        if sock.connect_ex((host, port)) != 0:
            message = "PostgreSQL is not running on 127.0.0.1:5432; `make test` starts it"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    return ADMIN_DSN


def pg_bin(name: str) -> str:
    return postgres_tool(name) or require_binary(name)


class ThrowawayCluster:
    """A PostgreSQL cluster of its own (own port and data directory) with small limits,
    for filling up, stopping and restarting without disturbing anything else."""

    def __init__(self, max_connections: int = 6, reserved: int = 2, extra: str = "") -> None:
        self.max_connections, self.reserved = max_connections, reserved
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="stackprobe-pg-", dir="/tmp"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
            f"-c max_connections={max_connections} "
            f"-c superuser_reserved_connections={reserved} -c fsync=off {extra}"
        ).strip()

    def create(self) -> ThrowawayCluster:
        pwfile = self.dir / "pw"
        pwfile.write_text("admin\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run(
            as_postgres(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "admin",
                    "--pwfile",
                    str(pwfile),
                    "-A",
                    "scram-sha-256",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self.start()
        return self

    def start(self) -> None:
        subprocess.run(
            as_postgres(
                [
                    pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    self.options,
                    "-w",
                    "-l",
                    str(self.dir / "log"),
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        wait_port(self.port)

    def standby(self, slot: str) -> ThrowawayCluster:
        """A streaming standby of this cluster (pg_basebackup -R), replicating through a
        physical slot of that name, started on a port of its own."""
        # a hot standby needs at least the primary's max_connections
        standby = ThrowawayCluster(self.max_connections, self.reserved)
        source = f"postgresql://admin:admin@127.0.0.1:{self.port}/postgres"
        subprocess.run(
            as_postgres(
                [
                    pg_bin("pg_basebackup"),
                    "-d",
                    source,
                    "-D",
                    str(standby.data),
                    "-R",
                    "-X",
                    "stream",
                    "-C",
                    "-S",
                    slot,
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        standby.start()
        return standby

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            as_postgres([pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )
        wait_port(self.port, up=False)

    def dsn(self, user: str = "admin", database: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """One redis-server of the test's own, which the test may kill, freeze and restart."""

    def __init__(self, *extra: str, port: int | None = None) -> None:
        self.binary = require_binary("redis-server")
        self.port = port or free_port()
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="stackprobe-redis-", dir="/tmp")

    def start(self) -> RedisServer:
        os.makedirs(self.dir, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            # a replica writes the copy it receives from its master to disk: not here
            "--dir",
            self.dir,
            *self.extra,
        ]
        if "--tls-port" in self.extra:
            args[2] = "0"  # TLS only
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.listening_port)
        return self

    @property
    def listening_port(self) -> int:
        if "--tls-port" in self.extra:
            return int(self.extra[self.extra.index("--tls-port") + 1])
        return self.port

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=10)
        wait_port(self.listening_port, up=False)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, scheme: str = "redis") -> str:
        return f"{scheme}://127.0.0.1:{self.listening_port}/0"

    def cli(self, *args: str, password: str | None = None) -> Any:
        cli = shutil.which("redis-cli") or "redis-cli"
        auth = ["-a", password, "--no-auth-warning"] if password else []
        done = subprocess.run(
            [cli, "-p", str(self.port), *auth, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return done.stdout.strip()
