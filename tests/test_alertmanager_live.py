"""The example routing in a real Alertmanager on loopback: alerts posted to it reach the
receiver their priority names, carry the runbook link, and inhibit what they explain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from tests.support.alerting import example_config
from tests.support.polling import wait_until_async
from tests.support.processes import free_port, require_binary

RUNBOOK = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md"


def fast(node: Any) -> Any:
    """The example's timings, shortened so a test does not wait minutes for a group."""
    if isinstance(node, dict):
        return {
            k: ("1s" if k in ("group_wait", "group_interval") else fast(v)) for k, v in node.items()
        }
    if isinstance(node, list):
        return [fast(v) for v in node]
    return node


class Webhooks:
    """The receivers' far end: every notification, by receiver."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        self.received.setdefault(request.match_info["receiver"], []).append(await request.json())
        return web.Response(text="ok")

    def alerts(self, receiver: str, status: str = "firing") -> dict[str, dict[str, Any]]:
        return {
            alert["labels"]["alertname"]: alert
            for payload in self.received.get(receiver, [])
            for alert in payload["alerts"]
            if alert["status"] == status
        }

    async def until(self, what: str, condition: Callable[[], object], seconds: float) -> None:
        """Until what was received meets `condition`; the test's loop serves the webhooks."""

        async def met() -> object:
            return condition()

        await wait_until_async(met, seconds, what=what)


@pytest.fixture
async def webhooks() -> AsyncIterator[tuple[Webhooks, int]]:
    hooks = Webhooks()
    app = web.Application()
    app.router.add_post("/{receiver}", hooks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield hooks, port
    await runner.cleanup()


@pytest.fixture
async def alertmanager(tmp_path: Path, webhooks: tuple[Webhooks, int]) -> AsyncIterator[str]:
    binary = require_binary("prometheus-alertmanager")
    _, hook_port = webhooks
    config = fast(example_config(f"http://127.0.0.1:{hook_port}"))
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("w") as stderr:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={path}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: a single instance
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as client:

                async def ready() -> bool:
                    return (await client.get(f"{url}/-/ready")).status_code == 200

                await wait_until_async(
                    ready,
                    10,
                    what="alertmanager to start",
                    logs=[log],
                    ignore=(httpx.TransportError,),
                )
            yield url
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 10)


def alert(name: str, priority: str, **labels: str) -> dict[str, Any]:
    severity = {"P0": "critical", "P1": "critical", "P2": "warning", "P3": "info"}
    return {
        "labels": {
            "alertname": name,
            "priority": priority,
            "severity": severity.get(priority, "none"),
            **labels,
        },
        "annotations": {
            "summary": f"{name} summary.",
            "runbook_url": f"{RUNBOOK}#{name.lower()}",
        },
    }


async def test_alerts_reach_their_receivers_and_causes_mute_symptoms(
    alertmanager: str, webhooks: tuple[Webhooks, int]
) -> None:
    hooks, _ = webhooks
    posted = [
        alert("EcsServiceNoRunningTasks", "P0", area="ecs", cluster="aep", service="api"),
        # the same service's target group (labelled by relabeling, docs/alerts.md): muted
        alert(
            "AlbNoHealthyTargets", "P0", area="alb", target="alb", target_group="api", service="api"
        ),
        # another service's readiness: an outage of api does not explain it
        alert("HealthReadyFailing", "P1", area="health", target="worker-ready", service="worker"),
        # a site that is not alive is not ready either
        alert("HealthLiveFailing", "P0", area="health", target="web-live", service="web"),
        alert("HealthReadyFailing", "P1", area="health", target="web-ready", service="web"),
        alert("RedisDown", "P1", area="redis", target="aep-redis", service="api"),
        alert("RedisConnectionErrors", "P1", area="redis", target="aep-redis", service="api"),
        # api's readiness says redis: false: its Redis being down explains it
        alert(
            "AppRedisPoolBroken",
            "P1",
            area="health",
            target="api-ready",
            service="api",
            component="redis",
        ),
        # another service's Redis is another Redis: not muted
        alert(
            "AppRedisPoolBroken",
            "P1",
            area="health",
            target="worker-tasks",
            task="t1",
            service="worker",
            component="redis",
        ),
        # a readiness body naming the broken dependency explains that check's failure
        alert(
            "DependencyComponentDown",
            "P1",
            area="health",
            target="billing-ready",
            service="billing",
            component="database",
        ),
        alert("HealthReadyFailing", "P1", area="health", target="billing-ready", service="billing"),
        # requests failing for a pool connection mute the pool's 90 % of the same service
        alert(
            "AppQueuePoolExhaustedLogged",
            "P1",
            area="logs",
            target="billing-logs",
            log_group="/ecs/billing",
            pattern="queuepool_exhausted",
            service="billing",
        ),
        alert("PostgresAppPoolExhausted", "P1", area="postgres", target="db", service="billing"),
        alert("SqsDeadLetterMessages", "P2", area="sqs", target="jobs", queue="jobs"),
        alert("S3NoLifecycleRule", "P3", area="s3", target="b", bucket="rasters"),
        alert("Watchdog", "none", area="stackprobe"),
    ]
    async with httpx.AsyncClient(base_url=alertmanager) as client:
        assert (await client.post("/api/v2/alerts", json=posted)).status_code == 200
        await hooks.until(
            "a notification at every receiver",
            lambda: all(
                hooks.received.get(r) for r in ("pager", "incident-channel", "chat", "tickets")
            ),
            10,
        )
        await asyncio.sleep(1.5)  # a group interval more, for anything that should not come
        state = (await client.get("/api/v2/alerts")).json()

    assert set(hooks.alerts("pager")) == {
        "EcsServiceNoRunningTasks",
        "HealthLiveFailing",
        "RedisDown",
        "HealthReadyFailing",
        "AppRedisPoolBroken",
        "DependencyComponentDown",
        "AppQueuePoolExhaustedLogged",
    }
    assert hooks.alerts("pager")["AppRedisPoolBroken"]["labels"]["service"] == "worker"
    assert set(hooks.alerts("incident-channel")) == {
        "EcsServiceNoRunningTasks",
        "HealthLiveFailing",
    }
    assert hooks.alerts("pager")["HealthReadyFailing"]["labels"]["service"] == "worker"
    assert set(hooks.alerts("chat")) == {"SqsDeadLetterMessages"}
    assert set(hooks.alerts("tickets")) == {"S3NoLifecycleRule"}
    delivered = {name for receiver in hooks.received for name in hooks.alerts(receiver)}
    assert "Watchdog" not in delivered  # its route's receiver has no integration here
    paged = hooks.alerts("pager")["RedisDown"]
    assert paged["labels"]["priority"] == "P1"
    assert paged["annotations"]["runbook_url"] == f"{RUNBOOK}#redisdown"
    inhibited = {
        (a["labels"]["alertname"], a["labels"].get("service"))
        for a in state
        if a["status"]["inhibitedBy"]
    }
    assert inhibited == {
        ("AlbNoHealthyTargets", "api"),
        ("RedisConnectionErrors", "api"),
        ("AppRedisPoolBroken", "api"),
        ("HealthReadyFailing", "web"),
        ("HealthReadyFailing", "billing"),
        ("PostgresAppPoolExhausted", "billing"),
    }


async def test_a_resolved_cause_lets_its_symptom_through(
    alertmanager: str, webhooks: tuple[Webhooks, int]
) -> None:
    hooks, _ = webhooks
    cause = alert("RedisDown", "P1", area="redis", target="aep-redis")
    symptom = alert("RedisConnectionErrors", "P1", area="redis", target="aep-redis")
    async with httpx.AsyncClient(base_url=alertmanager) as client:
        await client.post("/api/v2/alerts", json=[cause, symptom])
        await hooks.until("a page", lambda: hooks.alerts("pager"), 5)
        assert set(hooks.alerts("pager")) == {"RedisDown"}
        # Redis is back (the alert resolves) but its connections still fail
        cause["endsAt"] = "2000-01-01T00:00:00Z"
        await client.post("/api/v2/alerts", json=[cause, symptom])
        await hooks.until(
            "RedisConnectionErrors paged once its cause resolved",
            lambda: "RedisConnectionErrors" in hooks.alerts("pager"),
            8,
        )

    assert "RedisConnectionErrors" in hooks.alerts("pager")
    assert "RedisDown" in hooks.alerts("pager", status="resolved")


async def test_one_stackprobe_down_mutes_no_alert_on_a_target(
    alertmanager: str, webhooks: tuple[Webhooks, int]
) -> None:
    """Alerts on targets carry no `instance` (the rules aggregate over the replicas that
    probe a target): a replica that is down must not mute what another replica sees."""
    hooks, _ = webhooks
    down = alert("StackprobeDown", "P1", area="stackprobe", job="stackprobe", instance="a:9877")
    database = alert("PostgresDown", "P0", area="postgres", target="db", job="stackprobe")
    cache = alert("RedisDown", "P1", area="redis", target="cache", job="stackprobe")
    async with httpx.AsyncClient(base_url=alertmanager) as client:
        await client.post("/api/v2/alerts", json=[down, database, cache])
        await hooks.until(
            "all three paged",
            lambda: {"StackprobeDown", "PostgresDown", "RedisDown"} <= set(hooks.alerts("pager")),
            5,
        )

    assert set(hooks.alerts("pager")) == {"StackprobeDown", "PostgresDown", "RedisDown"}
