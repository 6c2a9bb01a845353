"""Three stackprobe replicas on one machine, as `deploy/ha/` runs them: members from ECS (a
moto server, the task metadata endpoint served here), an HA pair of Prometheus with the
shipped rules on the e2e clock, three clustered Alertmanagers, VictoriaMetrics deduplicating
the pair's remote writes, a site to probe with an incident switch, and a single-process
stackprobe beside them probing the same AWS targets for the baseline of API calls."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml
from moto.server import ThreadedMotoServer
from prometheus_client.parser import text_string_to_metric_families

from stackprobe.demo.alerting import faster_rules, resend_delay, timing
from stackprobe.demo.moto_stack import EcsStack
from tests.support.alerting import RULE_FILES, example_config
from tests.support.aws import REGION, faithful_responses
from tests.support.e2e_stack import Receivers, spawn
from tests.support.polling import wait_http
from tests.support.processes import free_port, free_port_below, require_binary

SPEED = 60
SLACK = 5.0
REFRESH = 2.0  # cluster.refresh
INTERVAL = 1.0  # the http targets' interval
TIMEOUT = 0.5
WEB_TARGETS = 24
QUEUES = 4
QUEUE_INTERVAL = 2.0
INCIDENT = "site-ready"  # http, role readiness: HealthReadyFailing (P1, the pager)
HA_PROMETHEUS = Path(__file__).parent.parent.parent / "deploy" / "ha" / "prometheus.yml"


class Loopback:
    """A loopback HTTP server answering each GET with `answer(path)`: a status and a body."""

    def __init__(self, answer: Callable[[str], tuple[int, bytes]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = answer(self.path)
                with contextlib.suppress(OSError):  # a replica killed mid-request
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Site(Loopback):
    """What the http targets probe: every path answers 200, but `/incident` answers 503
    while `failing`."""

    def __init__(self) -> None:
        self.failing = False
        super().__init__(self._answer)

    def _answer(self, path: str) -> tuple[int, bytes]:
        down = path.startswith("/incident") and self.failing
        return (503, b"down") if down else (200, b"ok")


def metadata(tasks: list[str], cluster: str) -> Loopback:
    """The task metadata endpoint (v4) of each replica's task, at `/r<i>/task`."""

    def answer(path: str) -> tuple[int, bytes]:
        task = {"TaskARN": tasks[int(path.split("/")[1][1:])], "Cluster": cluster}
        return 200, json.dumps({**task, "ServiceName": "stackprobe"}).encode()

    return Loopback(answer)


def config(
    site: str, moto: str, cluster: bool, web: int = WEB_TARGETS, queues: int = QUEUES
) -> str:
    lines = []
    if cluster:
        lines += [
            "cluster:",
            f"  ecs: {{service: stackprobe, region: {REGION}, endpoint_url: '{moto}'}}",
            f"  refresh: {REFRESH:g}s",
        ]
    lines += [
        f"aws: {{endpoint_url: '{moto}', region: {REGION}}}",
        f"defaults: {{interval: {INTERVAL:g}s, timeout: {TIMEOUT * 1000:g}ms}}",
        "targets:",
        f"  - {{name: {INCIDENT}, kind: http, url: '{site}/incident', role: readiness,"
        " labels: {service: site}}",
    ]
    lines += [f"  - {{name: web-{i:02d}, kind: http, url: '{site}/ok/{i}'}}" for i in range(web)]
    lines += [
        f"  - {{name: jobs-{q}, kind: sqs, queues: [jobs-{q}], interval: {QUEUE_INTERVAL:g}s,"
        " timeout: 1s}"
        for q in range(queues)
    ]
    return "\n".join(lines) + "\n"


def wanted(web: int = WEB_TARGETS, queues: int = QUEUES) -> dict[str, int]:
    """Each target's owners by the shipped defaults: 2 for http, 1 for the AWS kinds."""
    found = {INCIDENT: 2} | {f"web-{i:02d}": 2 for i in range(web)}
    return found | {f"jobs-{q}": 1 for q in range(queues)}


def scrape(address: str) -> dict[str, list[Any]]:
    """A replica's /metrics, by family; empty when it does not answer."""
    try:
        text = httpx.get(f"http://{address}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@dataclass
class Replica:
    index: int
    address: str
    task: str
    process: subprocess.Popen[bytes]
    alive: bool = True

    def owned(self) -> set[str]:
        return owned(scrape(self.address))

    def wanted(self) -> dict[str, int]:
        samples = scrape(self.address).get("stackprobe_target_replicas", [])
        return {s.labels["target"]: int(s.value) for s in samples}


def owned(families: dict[str, list[Any]]) -> set[str]:
    """The targets a replica's scrape says it owns."""
    samples = families.get("stackprobe_target_owned", [])
    return {s.labels["target"] for s in samples if s.value == 1}


def results(families: dict[str, list[Any]]) -> set[str]:
    """The targets whose probe_success a replica's scrape has: those it runs."""
    return {s.labels["target"] for s in families.get("probe_success", [])}


def coverage(replicas: list[Replica]) -> tuple[Counter[str], bool]:
    """From one scrape of each replica: every target's owners among them, and whether each
    owner has results for all it owns."""
    scrapes = [scrape(r.address) for r in replicas]
    counts = Counter(name for families in scrapes for name in owned(families))
    return counts, all(owned(families) <= results(families) for families in scrapes)


def covered(replicas: list[Replica], wanted: dict[str, int]) -> bool:
    """Every target has exactly its wanted owners among `replicas`, each with results."""
    counts, running = coverage(replicas)
    return counts == wanted and running


def aws_calls(address: str) -> float:
    samples = scrape(address).get("stackprobe_aws_api_calls", [])
    return sum(s.value for s in samples if s.name.endswith("_total"))


@dataclass
class Fleet:
    """The replicas, the single process beside them, what they probe and ECS."""

    replicas: list[Replica]
    baseline: str  # the single process's address
    site: Site
    ecs: EcsStack
    logs: list[Path]
    wanted: dict[str, int]

    @property
    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    def kill_replica(self, replica: Replica) -> None:
        """What a task's death looks like: the process gone at once, and ECS marking the
        task STOPPED."""
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait()
        replica.alive = False
        self.ecs.stop(replica.task, "Essential container in task exited")


@dataclass
class Cluster(Fleet):
    """The fleet with the HA pair, the Alertmanager cluster and VictoriaMetrics."""

    prometheus: list[tuple[str, subprocess.Popen[bytes]]]
    alertmanagers: list[tuple[str, subprocess.Popen[bytes]]]  # by their external URL
    victoria: str
    receivers: Receivers

    def query(self, url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        answer = httpx.get(f"{url}/api/v1/query", params=params, timeout=10)
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result


def _moto(stack: ExitStack) -> str:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    stack.enter_context(faithful_responses())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    stack.callback(server.stop)
    return f"http://127.0.0.1:{server.get_host_and_port()[1]}"


def start_fleet(
    stack: ExitStack, work: Path, replicas: int = 3, web: int = WEB_TARGETS, queues: int = QUEUES
) -> Fleet:
    """A moto server with stackprobe's ECS service of `replicas` tasks and `queues` SQS
    queues, the task metadata endpoint, the site, the replicas sharing `web` http targets
    and the queues, and one process probing them all alone; each answering."""
    moto = _moto(stack)

    def client(service: str) -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=moto,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    # a cluster of its own: moto's backends outlive a server, and a second fleet in one
    # process (bench/cluster_replicas.py) must not see the first one's tasks
    name = f"probes-{uuid.uuid4().hex[:8]}"
    ecs = EcsStack(client, name, REGION)
    ecs.service("stackprobe", desired=replicas, task_definition=ecs.task_definition("sp"))
    tasks = ecs.run_tasks("stackprobe", replicas)
    sqs = client("sqs")
    for q in range(queues):
        sqs.create_queue(QueueName=f"jobs-{q}")
    endpoint = metadata(tasks, name)
    stack.callback(endpoint.close)
    site = Site()
    stack.callback(site.close)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
    }
    (work / "cluster.yml").write_text(config(site.url, moto, True, web, queues))
    (work / "single.yml").write_text(config(site.url, moto, False, web, queues))
    logs: list[Path] = []
    members: list[Replica] = []

    def stackprobe(
        name: str, config: str, address: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        logs.append(work / f"{name}.log")
        argv = ["run", "--config", str(work / config), "--listen", address]
        return spawn(stack, [sys.executable, "-m", "stackprobe", *argv], logs[-1], env)

    for i in range(replicas):
        address = f"127.0.0.1:{free_port()}"
        metadata_env = {"ECS_CONTAINER_METADATA_URI_V4": f"{endpoint.url}/r{i}"}
        process = stackprobe(f"replica-{i}", "cluster.yml", address, {**env, **metadata_env})
        members.append(Replica(i, address, tasks[i], process))
    baseline = f"127.0.0.1:{free_port()}"
    single = stackprobe("single", "single.yml", baseline, env)
    for replica in members:
        wait_http(f"http://{replica.address}/-/healthy", 60, process=replica.process, logs=logs)
    wait_http(f"http://{baseline}/-/healthy", 60, process=single, logs=logs)
    return Fleet(members, baseline, site, ecs, logs, wanted(web, queues))


@contextmanager
def running(work: Path, replicas: int = 3) -> Iterator[Cluster]:
    prometheus_bin = require_binary("prometheus")
    alertmanager_bin = require_binary("prometheus-alertmanager")
    victoria_bin = require_binary("victoria-metrics")
    with ExitStack() as stack:
        fleet = start_fleet(stack, work, replicas)
        logs, members = fleet.logs, fleet.replicas
        receivers = Receivers()
        stack.callback(receivers.close)

        vm_port = free_port()
        victoria = f"http://127.0.0.1:{vm_port}"
        logs.append(work / "victoria.log")
        vm = spawn(
            stack,
            [
                victoria_bin,
                f"-storageDataPath={work / 'vm'}",
                f"-httpListenAddr=127.0.0.1:{vm_port}",
                # one sample per series per scrape interval, whichever Prometheus wrote it
                "-dedup.minScrapeInterval=1s",
                "-retentionPeriod=1d",
                "-search.latencyOffset=0s",
            ],
            logs[-1],
        )

        am_config = example_config(receivers.url)
        timing(am_config)
        (work / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
        gossip = [free_port_below() for _ in range(3)]
        alertmanagers = []
        for i in range(3):
            web = f"127.0.0.1:{free_port()}"
            logs.append(work / f"alertmanager-{i}.log")
            peers = [f"--cluster.peer=127.0.0.1:{p}" for j, p in enumerate(gossip) if j != i]
            process = spawn(
                stack,
                [
                    alertmanager_bin,
                    f"--config.file={work / 'alertmanager.yml'}",
                    f"--storage.path={work / f'am-{i}'}",
                    f"--web.listen-address={web}",
                    f"--web.external-url=http://{web}",  # what its notifications say
                    f"--cluster.listen-address=127.0.0.1:{gossip[i]}",
                    f"--cluster.advertise-address=127.0.0.1:{gossip[i]}",
                    *peers,
                    # the example's waits are seconds here (timing()); so are the cluster's
                    "--cluster.peer-timeout=2s",
                    "--cluster.gossip-interval=100ms",
                    "--cluster.pushpull-interval=2s",
                    "--cluster.settle-timeout=5s",
                ],
                logs[-1],
            )
            alertmanagers.append((f"http://{web}", process))

        rules = faster_rules(
            RULE_FILES, work / "rules", SPEED, SLACK, inhibit_rules=am_config["inhibit_rules"]
        )
        prometheus = []
        for name in ("a", "b"):
            port = free_port()
            # deploy/ha/prometheus.yml as shipped (its relabelings are what is tested), with
            # the test's clock, addresses and discovery
            prometheus_config = yaml.safe_load(HA_PROMETHEUS.read_text())
            prometheus_config["global"].update(scrape_interval="1s", evaluation_interval="1s")
            prometheus_config["global"]["external_labels"]["replica"] = name
            prometheus_config["rule_files"] = [str(p) for p in rules]
            prometheus_config["alerting"]["alertmanagers"] = [
                {"static_configs": [{"targets": [u[7:] for u, _ in alertmanagers]}]}
            ]
            (scrape,) = prometheus_config["scrape_configs"]
            del scrape["dns_sd_configs"]
            scrape["static_configs"] = [{"targets": [r.address for r in members]}]
            (write,) = prometheus_config["remote_write"]
            write.update(url=f"{victoria}/api/v1/write", queue_config={"batch_send_deadline": "1s"})
            path = work / f"prometheus-{name}.yml"
            path.write_text(yaml.safe_dump(prometheus_config))
            logs.append(work / f"prometheus-{name}.log")
            process = spawn(
                stack,
                [
                    prometheus_bin,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={work / f'prom-{name}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    f"--rules.alert.resend-delay={resend_delay(SPEED)}",
                ],
                logs[-1],
            )
            prometheus.append((f"http://127.0.0.1:{port}", process))

        wait_http(f"{victoria}/health", 60, process=vm, logs=logs)
        for url, process in [*alertmanagers, *prometheus]:
            wait_http(f"{url}/-/ready", 60, process=process, logs=logs)
        yield Cluster(
            **{f.name: getattr(fleet, f.name) for f in fields(Fleet)},
            prometheus=prometheus,
            alertmanagers=alertmanagers,
            victoria=victoria,
            receivers=receivers,
        )
