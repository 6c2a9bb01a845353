"""The runbooks' incidents, played on `stackprobe demo`, through the real Prometheus with the
shipped rules and the real Alertmanager with the example routing: each fault fires its alert
with its priority and runbook link, reaches the receiver its priority names, mutes what it
explains, and resolves once the fault is gone. Then every dashboard query has data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stackprobe.demo import world
from tests.e2e.stack import E2E, bystander_id, running, wait
from tests.test_dashboards import dashboard_queries

RUNBOOK = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md"
RECEIVERS = {"P0": ("pager", "incident-channel"), "P1": ("pager",), "P2": ("chat",)}
FIRE_WITHIN = 90.0  # seconds
# CloudWatch-fed alerts: the minute the fault began in still counts what happened before
# it, so its effect is read up to two minutes later, then the range and `for` pass
CLOUDWATCH_WITHIN = 2 * 60 + 60.0


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[E2E, list[Path]]]:
    with running(tmp_path_factory.mktemp("e2e")) as stack:
        yield stack


@dataclass
class Incident:
    runbook: str
    fault: str
    alerts: dict[str, dict[str, str]]  # alertname -> labels it must carry (priority included)
    muted: dict[str, dict[str, str]] = field(default_factory=dict)  # suppressed while it fires
    within: float = FIRE_WITHIN
    # what the demo's fault cannot do from inside, done before the alert it causes is awaited
    also: tuple[str, Callable[[E2E, bool], None]] | None = None


def matches(alert: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(alert["labels"].get(k) == v for k, v in labels.items())


def play(e2e: E2E, logs: list[Path], incident: Incident) -> None:
    since = time.time()
    e2e.fault(incident.fault)
    for name, labels in incident.alerts.items():
        if incident.also and incident.also[0] == name:
            incident.also[1](e2e, True)
        for receiver in RECEIVERS[labels["priority"]]:
            found = wait(
                f"{incident.runbook}: {name} at {receiver}",
                lambda r=receiver, n=name, lb=labels: [
                    a for a in e2e.receivers.alerts(r, n, since=since) if matches(a, lb)
                ],
                incident.within,
                logs,
            )
            assert found[0]["annotations"]["runbook_url"] == f"{RUNBOOK}#{name.lower()}"
            assert found[0]["labels"]["runbook_url"] == f"{RUNBOOK}#{name.lower()}"
            assert found[0]["annotations"]["summary"]
    for name, labels in incident.muted.items():
        suppressed = wait(
            f"{incident.runbook}: {name} firing and muted in Alertmanager",
            lambda n=name, lb=labels: [
                a
                for a in e2e.am_alerts(n)
                if matches(a, lb) and a["status"]["state"] == "suppressed"
            ],
            FIRE_WITHIN,
            logs,
        )
        assert suppressed[0]["status"]["inhibitedBy"], suppressed
        if name in incident.alerts:
            continue  # it paged before its cause was known; muted from then on
        for receiver in {r for rs in RECEIVERS.values() for r in rs}:
            heard = [
                a for a in e2e.receivers.alerts(receiver, name, since=since) if matches(a, labels)
            ]
            assert not heard, f"{incident.runbook}: {name} reached {receiver} though muted"
    e2e.fault(incident.fault, on=False)
    if incident.also:
        incident.also[1](e2e, False)
    for name, labels in incident.alerts.items():
        receiver = RECEIVERS[labels["priority"]][0]
        wait(
            f"{incident.runbook}: {name} resolved at {receiver}",
            lambda r=receiver, n=name, lb=labels: [
                a
                for a in e2e.receivers.alerts(r, n, status="resolved", since=since)
                if matches(a, lb)
            ],
            FIRE_WITHIN,
            logs,
        )
    for name, labels in incident.muted.items():
        if name in incident.alerts:
            continue
        # not on the way back either: a symptom that outlives its cause would page now
        for receiver in {r for rs in RECEIVERS.values() for r in rs}:
            heard = [
                a for a in e2e.receivers.alerts(receiver, name, since=since) if matches(a, labels)
            ]
            assert not heard, f"{incident.runbook}: {name} reached {receiver} on recovery"


def redis_down(e2e: E2E, on: bool) -> None:
    """Beyond transport errors: Redis itself goes away, then comes back on its port."""
    if on:
        # the closed connections were stackprobe's only: another client's is still there
        assert bystander_id(e2e.redis) == e2e.bystander, "the fault closed someone else's client"
        e2e.redis.kill()
    else:
        e2e.redis.start()


def wait_for_alert(e2e: E2E, name: str) -> None:
    firing = f'ALERTS{{alertname="{name}",alertstate="firing"}}'
    wait(f"{name} firing in Prometheus", lambda: e2e.query(firing), FIRE_WITHIN, [])


WAVE_ONE = [
    Incident(
        "AEP Incident 2: unhealthy targets",
        "unhealthy-targets",
        {
            "AlbUnhealthyTargets": {
                "priority": "P1",
                "target_group": world.TARGET_GROUPS[world.BACKEND],
                "reason": "Target.ResponseCodeMismatch",
            },
            "AlbNoHealthyTargets": {
                "priority": "P0",
                "target_group": world.TARGET_GROUPS[world.BACKEND],
            },
            # and the cause, named: the health check asks a path the app does not serve
            "AlbHealthCheckPathDrift": {
                "priority": "P1",
                "target_group": world.TARGET_GROUPS[world.BACKEND],
            },
        },
    ),
    Incident(
        "AEP Incident 3: Redis transport closed",
        "redis-transport-closed",
        {
            "RedisConnectionErrors": {
                "priority": "P1",
                "target": "aep-redis",
                "reason": "connection_closed",
            },
            # the site's readiness and each task's
            "DependencyComponentDown": {"priority": "P1", "component": "redis"},
            # the symptom the runbook starts from: /health/ready 503, on the site and each task
            "HealthReadyFailing": {"priority": "P1", "target": "aep-ready"},
            "EcsTaskReadyFailing": {"priority": "P1", "target": "aep-backend-tasks"},
            "RedisDown": {"priority": "P1", "target": "aep-redis"},
        },
        muted={"DependencyComponentDown": {"component": "redis"}},
        also=("RedisDown", redis_down),
    ),
    Incident(
        "AEP Incident 4: database pool exhausted",
        "db-pool-exhausted",
        {"PostgresAppPoolExhausted": {"priority": "P1", "target": "aep-db"}},
    ),
    Incident(
        "VivaCampo Scenario 2: S3 bucket growth",
        "s3-growth",
        {"S3BucketGrowingFast": {"priority": "P2", "bucket": world.BUCKET}},
    ),
    Incident(
        "VivaCampo Scenario 4: worker jobs stuck",
        "jobs-stuck",
        {"SqsJobsStuck": {"priority": "P1", "queue": world.QUEUE}},
        within=CLOUDWATCH_WITHIN,
    ),
]

OUTAGE = Incident(
    "AEP Incident 6: complete outage",
    "scaled-to-zero",
    {
        "EcsServiceScaledToZero": {"priority": "P0", "service": world.BACKEND},
        "HealthLiveFailing": {"priority": "P0", "target": "aep-live"},
    },
    muted={
        "AlbNoHealthyTargets": {"service": world.BACKEND},
        "HealthReadyFailing": {"target": "aep-ready", "service": world.BACKEND},
    },
)


PLAYED: list[bool] = []  # the incidents' run, whose history the dashboards are checked on


def test_incidents_fire_route_mute_and_resolve(e2e: tuple[E2E, list[Path]]) -> None:
    stack, logs = e2e
    # independent incidents at once (each on its own part of the stack), so the run takes
    # as long as the slowest; the outage then takes the backend away on its own
    with ThreadPoolExecutor(len(WAVE_ONE)) as pool:
        for future in [pool.submit(play, stack, logs, i) for i in WAVE_ONE]:
            future.result()
    play(stack, logs, OUTAGE)
    PLAYED.append(True)
    # nothing else came anywhere: each notification is an incident's alert, with its labels,
    # at a receiver its priority names
    expected = [(n, lb) for i in [*WAVE_ONE, OUTAGE] for n, lb in i.alerts.items()]
    for _, receiver, payload in stack.receivers.received:
        for alert in payload["alerts"]:
            name = alert["labels"]["alertname"]
            owners = [lb for n, lb in expected if n == name and matches(alert, lb)]
            assert owners, f"unexpected at {receiver}: {alert['labels']}"
            assert receiver in RECEIVERS[owners[0]["priority"]], (receiver, alert["labels"])


def test_every_dashboard_query_has_data(e2e: tuple[E2E, list[Path]]) -> None:
    """Over the run so far, as a dashboard's time range shows it, with a crash loop and an
    env drift on so their panels (and the firing-alerts table) have something to show."""
    stack, _ = e2e
    if not PLAYED:
        pytest.skip("needs the incidents' history: run the whole module")
    stack.fault("oom-kill")
    stack.fault("env-drift")
    try:
        wait_for_alert(stack, "EcsTaskDefinitionEnvDrift")
        wanted = dashboard_queries()
        empty = set(wanted)
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=stack.prometheus, timeout=10) as client:
            while empty and time.monotonic() < deadline:
                for name in sorted(empty):
                    params = {
                        "query": wanted[name],
                        "start": stack.started,
                        "end": time.time(),
                        "step": 5,
                    }
                    answer = client.get("/api/v1/query_range", params=params).json()
                    if answer.get("status") == "success" and answer["data"]["result"]:
                        empty.discard(name)
                if empty:
                    time.sleep(2)
        assert not empty, f"no data for: {sorted(empty)}"
    finally:
        stack.fault("oom-kill", on=False)
        stack.fault("env-drift", on=False)
