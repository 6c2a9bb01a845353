"""The on-call loop on one machine: `stackprobe demo` (with a PostgreSQL cluster and a Redis of
the test's own, to fill, stop and restart), a real Prometheus with the shipped rules, a real
Alertmanager with the example routing, and the receivers' far end.

Time runs 60 times faster for the rules: every `for`, range and offset in them is divided by 60
(15m becomes 15s, 1d 24m; a `for` gets 5s more, and 5s again for each alert that mutes it, see
demo/alerting.py, which `stackprobe demo --with-alerts` runs them with too), the expressions
are otherwise as shipped. An alert that waits an hour in production waits a minute here (and 5
s); one that compares with yesterday compares with 24 minutes ago, which Prometheus learns from
a block backfilled by promtool (what the bucket held "yesterday").
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml

from stackprobe.demo import world
from stackprobe.demo.alerting import backfill, faster_rules, resend_delay, timing
from tests.support.alerting import RULE_FILES, example_config
from tests.support.datastores import (
    PROBE_PASSWORD,
    PROBE_ROLE,
    RedisServer,
    ThrowawayCluster,
    ensure_probe_role,
    pg_bin,
)
from tests.support.polling import wait_http, wait_until
from tests.support.processes import free_port, require_binary, stop

SPEED = 60
DATABASE = "aep_e2e"
# Small enough for db-too-many-clients to fill: the app's warmed pools (10), stackprobe's own
# connection and a few leaked ones.
MAX_CONNECTIONS, RESERVED = 20, 3
# the rules' clock: `for` slack in seconds (five probe runs, see demo/alerting.py)
SLACK = 5.0


class Receivers:
    """The far end of every webhook receiver: each notification with when it came."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        receivers = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receivers.lock:
                    receivers.received.append((time.time(), self.path.strip("/"), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(
        self, receiver: str, alertname: str, status: str = "firing", since: float = 0
    ) -> list[dict[str, Any]]:
        with self.lock:
            return [
                alert
                for at, name, payload in self.received
                if name == receiver and at >= since
                for alert in payload["alerts"]
                if alert["labels"]["alertname"] == alertname and alert["status"] == status
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class E2E:
    demo: str  # stackprobe's /metrics address
    app: str  # the demo app and its fault switch
    prometheus: str
    alertmanager: str
    receivers: Receivers
    redis: RedisServer
    postgres: ThrowawayCluster
    bystander: str = ""  # CLIENT ID of a connection of someone else's, opened at start
    bystander_socket: socket.socket | None = None
    started: float = field(default_factory=time.time)

    def fault(self, name: str, on: bool = True) -> None:
        answer = httpx.request("POST" if on else "DELETE", f"{self.app}/faults/{name}", timeout=30)
        assert answer.status_code == 200, answer.text

    def connect_bystander(self) -> None:
        """Someone else's client of the same Redis: the demo's faults must leave it alone."""
        if self.bystander_socket is not None:
            self.bystander_socket.close()
        self.bystander_socket = socket.create_connection(("127.0.0.1", self.redis.port), timeout=5)
        self.bystander_command("CLIENT SETNAME bystander")
        self.bystander = wait_until(
            lambda: bystander_id(self.redis), 10, what="the bystander's connection", interval=0.5
        )

    def bystander_command(self, command: str) -> None:
        assert self.bystander_socket is not None
        self.bystander_socket.sendall(command.encode() + b"\r\n")
        answer = self.bystander_socket.recv(256)
        assert answer.startswith(b"+OK"), (command, answer)

    def am_alerts(self, alertname: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.alertmanager}/api/v2/alerts",
            params={"filter": f'alertname="{alertname}"'},
            timeout=5,
        )
        alerts: list[dict[str, Any]] = answer.json()
        return alerts

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result


def bystander_id(redis: RedisServer) -> str:
    """The CLIENT ID of the connection named `bystander`, or "" when it is gone."""
    for line in redis.cli("CLIENT", "LIST").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name") == "bystander":
            return fields["id"]
    return ""


def spawn(
    stack: ExitStack, args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = stack.enter_context(log.open("wb"))
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    stack.callback(stop, process)
    return process


async def _database(cluster: ThrowawayCluster) -> None:
    """The app's database, with pg_stat_statements, and the role stackprobe and the app log in
    as: no superuser, so a full server refuses it as it refuses the app."""
    admin = await asyncpg.connect(cluster.dsn(), password="admin")
    try:
        await admin.execute(f"CREATE DATABASE {DATABASE}")
        await ensure_probe_role(admin)
        # A replication slot, as a standby or a CDC task would leave: not reserving WAL, so it
        # keeps nothing on disk, but the slots' panel has its series.
        await admin.execute("SELECT pg_create_physical_replication_slot('aep_standby')")
    finally:
        await admin.close()
    db = await asyncpg.connect(cluster.dsn(database=DATABASE), password="admin")
    try:
        await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await db.close()


def datastores(stack: ExitStack) -> tuple[RedisServer, ThrowawayCluster]:
    """A Redis and a PostgreSQL of the demo's own, small enough for its faults to fill, with
    the app's database; both gone when `stack` closes."""
    redis = RedisServer().start()
    stack.callback(redis.stop)
    postgres = ThrowawayCluster(
        MAX_CONNECTIONS, RESERVED, "-c shared_preload_libraries=pg_stat_statements"
    ).create()
    stack.callback(postgres.destroy)
    asyncio.run(_database(postgres))
    return redis, postgres


def _backfill(promtool: str, data: Path, demo: str, work: Path) -> None:
    """What Prometheus scraped "yesterday" (24 minutes ago on the test's clock): the bucket's
    size before it grew, with the labels the demo's series carry."""
    labels = {
        "bucket": world.BUCKET,
        "instance": demo,
        "job": "stackprobe",
        "storage_type": "StandardStorage",
        "target": "aep-rasters",
    }
    backfill(promtool, data, work, "aws_s3_bucket_size_bytes", labels, world.BUCKET_BYTES, SPEED)


@contextmanager
def running(work: Path) -> Iterator[tuple[E2E, list[Path]]]:
    prometheus_bin = require_binary("prometheus")
    promtool = require_binary("promtool")
    alertmanager_bin = require_binary("prometheus-alertmanager")
    pg_bin("initdb")
    ports = {name: free_port() for name in ("demo", "app", "prometheus", "alertmanager")}
    demo = f"127.0.0.1:{ports['demo']}"
    logs = [work / f"{name}.log" for name in ("demo", "prometheus", "alertmanager")]
    with ExitStack() as stack:
        redis, postgres = datastores(stack)
        receivers = Receivers()
        stack.callback(receivers.close)

        env = {**os.environ, "PGPASSWORD": PROBE_PASSWORD}
        demo_process = spawn(
            stack,
            [
                sys.executable,
                "-m",
                "stackprobe",
                "demo",
                f"--listen={demo}",
                f"--app-listen=127.0.0.1:{ports['app']}",
                "--interval=1s",
                f"--postgres-dsn={postgres.dsn(PROBE_ROLE, DATABASE)}",
                f"--redis-url={redis.url()}",
            ],
            logs[0],
            env,
        )

        am_config = example_config(receivers.url)
        timing(am_config)
        (work / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        am_process = spawn(
            stack,
            [
                alertmanager_bin,
                f"--config.file={work / 'alertmanager.yml'}",
                f"--storage.path={work / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                "--cluster.listen-address=",
            ],
            logs[2],
        )

        data = work / "prom-data"
        _backfill(promtool, data, demo, work)
        prometheus_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [
                str(p)
                for p in faster_rules(
                    RULE_FILES,
                    work / "rules",
                    SPEED,
                    SLACK,
                    inhibit_rules=am_config["inhibit_rules"],
                )
            ],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}
                ]
            },
            "scrape_configs": [{"job_name": "stackprobe", "static_configs": [{"targets": [demo]}]}],
        }
        (work / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config))
        prometheus_process = spawn(
            stack,
            [
                prometheus_bin,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                f"--rules.alert.resend-delay={resend_delay(SPEED)}",
            ],
            logs[1],
        )
        e2e = E2E(
            demo=demo,
            app=f"http://127.0.0.1:{ports['app']}",
            prometheus=f"http://127.0.0.1:{ports['prometheus']}",
            alertmanager=f"http://127.0.0.1:{ports['alertmanager']}",
            receivers=receivers,
            redis=redis,
            postgres=postgres,
        )
        e2e.connect_bystander()
        stack.callback(lambda: e2e.bystander_socket and e2e.bystander_socket.close())
        wait_http(f"http://{demo}/metrics", 60, process=demo_process, logs=logs[:1])
        wait_http(f"{e2e.alertmanager}/-/ready", 60, process=am_process, logs=logs[2:])
        wait_http(f"{e2e.prometheus}/-/ready", 60, process=prometheus_process, logs=logs[1:2])
        # every target has run and been scraped before a fault plays: a kind that learns from
        # its previous run (the revision a deployment replaced) must have had one
        config = yaml.safe_load(httpx.get(f"{e2e.app}/config", timeout=10).text)
        names = {t["name"] for t in config["targets"]}
        wait_until(
            lambda: names <= {r["metric"]["target"] for r in e2e.query("probe_success")},
            60,
            what=lambda: (
                "every target in Prometheus; missing: "
                + ", ".join(
                    sorted(names - {r["metric"]["target"] for r in e2e.query("probe_success")})
                )
            ),
            logs=logs,
            interval=0.5,
        )
        yield e2e, logs
