"""The runbooks' incidents, played on `stackprobe demo`, through the real Prometheus with the
shipped rules and the real Alertmanager with the example routing: each fault fires its alerts
with their priority and runbook link, reaches the receivers its priority names, mutes what it
explains, and resolves once the fault is gone. Every P0 and P1 alert of a runbook row is
played here (docs/alerts.md lists which incident proves which alert). Then every dashboard
query has data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.dashboards import dashboard_queries
from tests.support.e2e_stack import E2E, running
from tests.support.incidents import (
    FIRE_WITHIN,
    HEAR_RESOLVED,
    INCIDENTS,
    RECEIVERS,
    RUNBOOK,
    WAVES,
    Incident,
)
from tests.support.polling import wait_until


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[E2E, list[Path]]]:
    with running(tmp_path_factory.mktemp("e2e")) as stack:
        yield stack


def matches(alert: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(alert["labels"].get(k) == v for k, v in labels.items())


def heard(e2e: E2E, name: str, labels: dict[str, str], since: float) -> list[str]:
    receivers = {r for rs in RECEIVERS.values() for r in rs}
    return [
        r
        for r in receivers
        if any(matches(a, labels) for a in e2e.receivers.alerts(r, name, since=since))
    ]


def play(e2e: E2E, logs: list[Path], incident: Incident) -> None:
    if incident.before:
        incident.before(e2e, True)
    since = time.time()
    counts = {pattern: count(e2e, pattern) for pattern in incident.counted}
    if incident.fault:
        e2e.fault(incident.fault)
    for name, labels in incident.alerts.items():
        if incident.also and incident.also[0] == name:
            incident.also[1](e2e, True)
        for receiver in RECEIVERS[labels["priority"]]:
            found = wait_until(
                lambda r=receiver, n=name, lb=labels: [
                    a for a in e2e.receivers.alerts(r, n, since=since) if matches(a, lb)
                ],
                incident.within,
                what=f"{incident.runbook}: {name} at {receiver}",
                logs=logs,
                interval=0.5,
            )
            assert found[0]["annotations"]["runbook_url"] == f"{RUNBOOK}#{name.lower()}"
            assert found[0]["labels"]["runbook_url"] == f"{RUNBOOK}#{name.lower()}"
            assert found[0]["annotations"]["summary"]
            if name in incident.says:
                description = found[0]["annotations"]["description"]
                assert incident.says[name] in description, (name, description)
    for name, labels in incident.muted.items():
        suppressed = wait_until(
            lambda n=name, lb=labels: [
                a
                for a in e2e.am_alerts(n)
                if matches(a, lb) and a["status"]["state"] == "suppressed"
            ],
            FIRE_WITHIN,
            what=f"{incident.runbook}: {name} firing and muted in Alertmanager",
            logs=logs,
            interval=0.5,
        )
        assert suppressed[0]["status"]["inhibitedBy"], suppressed
        if name in incident.alerts:
            continue  # it paged before its cause was known; muted from then on
        where = heard(e2e, name, labels, since)
        assert not where, f"{incident.runbook}: {name} reached {where} though muted"
    for pattern, before in counts.items():
        wait_until(
            lambda p=pattern, b=before: count(e2e, p) > b,
            FIRE_WITHIN,
            what=f"{incident.runbook}: the {pattern} lines counted",
            logs=logs,
            interval=0.5,
        )
    if incident.fault:
        e2e.fault(incident.fault, on=False)
    if incident.also:
        incident.also[1](e2e, False)
    for name, labels in incident.alerts.items():
        receiver = RECEIVERS[labels["priority"]][0]
        if receiver in HEAR_RESOLVED:
            wait_until(
                lambda r=receiver, n=name, lb=labels: [
                    a
                    for a in e2e.receivers.alerts(r, n, status="resolved", since=since)
                    if matches(a, lb)
                ],
                FIRE_WITHIN,
                what=f"{incident.runbook}: {name} resolved at {receiver}",
                logs=logs,
                interval=0.5,
            )
        else:  # a ticket stays open; the alert itself ends
            selector = ",".join(f'{k}="{v}"' for k, v in {"alertname": name, **labels}.items())
            wait_until(
                lambda s=selector: not e2e.query(f"ALERTS{{{s}}}") or None,
                FIRE_WITHIN,
                what=f"{incident.runbook}: {name} no longer firing",
                logs=logs,
                interval=0.5,
            )
    quiet = {n: lb for n, lb in incident.muted.items() if n not in incident.alerts}
    for name, labels in {**quiet, **incident.quiet}.items():
        # not on the way back either: a symptom that outlives its cause would page now
        where = heard(e2e, name, labels, since)
        assert not where, f"{incident.runbook}: {name} reached {where} during or after it"


def count(e2e: E2E, pattern: str) -> float:
    """The logs kind's count of `pattern`, all log groups together."""
    found = e2e.query(f'sum(stackprobe_logs_pattern_matches_total{{pattern="{pattern}"}})')
    return float(found[0]["value"][1]) if found else 0.0


def timed(e2e: E2E, logs: list[Path], incident: Incident) -> None:
    began = time.monotonic()
    play(e2e, logs, incident)
    print(f"  {incident.name}: {time.monotonic() - began:.0f} s")


PLAYED: list[bool] = []  # the incidents' run, whose history the dashboards are checked on


# Its waves take four and a half minutes on a quiet machine: the default 300 s hang guard
# (pyproject.toml) would fail it on a busy one that is merely slower.
@pytest.mark.timeout(600)
def test_incidents_fire_route_mute_and_resolve(e2e: tuple[E2E, list[Path]]) -> None:
    stack, logs = e2e
    for number, wave in enumerate(WAVES, start=1):
        began = time.monotonic()
        with ThreadPoolExecutor(len(wave)) as pool:
            for future in [pool.submit(timed, stack, logs, i) for i in wave]:
                future.result()
        print(f"wave {number}: {time.monotonic() - began:.0f} s")  # the suite's budget
    PLAYED.append(True)
    # nothing else came anywhere: each notification is an incident's alert, with its labels,
    # at a receiver its priority names
    expected = [one for incident in INCIDENTS for one in incident.expected()]
    for _, receiver, payload in stack.receivers.received:
        for alert in payload["alerts"]:
            name = alert["labels"]["alertname"]
            owners = [lb for n, lb in expected if n == name and matches(alert, lb)]
            assert owners, f"unexpected at {receiver}: {alert['labels']}"
            assert receiver in RECEIVERS[owners[0]["priority"]], (receiver, alert["labels"])


# Series no target of the stack has, and where each is read from a real server instead: their
# queries must still run.
NO_SOURCE_HERE = {
    "redis_master_link_up": "only a replica has it; tests/probes/test_redis.py reads a real one",
}


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
        with httpx.Client(base_url=stack.prometheus, timeout=10) as client:

            def all_have_data() -> bool:
                for name in sorted(empty):
                    params = {
                        "query": wanted[name],
                        "start": stack.started,
                        "end": time.time(),
                        "step": 5,
                    }
                    answer = client.get("/api/v1/query_range", params=params).json()
                    ran = answer.get("status") == "success"
                    sourceless = any(series in wanted[name] for series in NO_SOURCE_HERE)
                    if ran and (answer["data"]["result"] or sourceless):
                        empty.discard(name)
                return not empty

            wait_until(all_have_data, 60, what=lambda: f"data for: {sorted(empty)}", interval=2)
    finally:
        stack.fault("oom-kill", on=False)
        stack.fault("env-drift", on=False)


def wait_for_alert(e2e: E2E, name: str) -> None:
    firing = f'ALERTS{{alertname="{name}",alertstate="firing"}}'
    wait_until(
        lambda: e2e.query(firing), FIRE_WITHIN, what=f"{name} firing in Prometheus", interval=0.5
    )
