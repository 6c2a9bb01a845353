"""The firing alerts the console shows on top, read from Alertmanager (after its inhibitions
and silences: what actually paged) or, without one, from Prometheus.

One fetch at a time, kept for a few seconds, so any number of open pages costs the
Alertmanager one request per `FRESH_SECONDS`; a slow or broken one costs a page at most
`TIMEOUT_SECONDS` and is shown as a sentence, never as an error page.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from stackprobe.console import ConsoleSettings

FRESH_SECONDS = 5.0
TIMEOUT_SECONDS = 2.0
BODY_MAX_BYTES = 4 * 1024 * 1024
SHOWN_MAX = 50
# What one alert keeps of its strings: the cached feed holds at most SHOWN_MAX of them.
FIELD_MAX = 200
SUMMARY_MAX = 500
URL_MAX = 2000
_PRIORITIES = ("P0", "P1", "P2", "P3")


@dataclass(frozen=True, slots=True)
class FiringAlert:
    name: str
    priority: str
    summary: str
    runbook: str
    target: str
    since: float  # unix time it started firing; 0 when the source did not say


@dataclass(frozen=True, slots=True)
class Feed:
    source: str  # "Alertmanager at URL"
    alerts: tuple[FiringAlert, ...] = ()
    problem: str = ""  # why there are no alerts to show, in one sentence
    more: int = 0  # firing alerts left out past SHOWN_MAX


class AlertFeed:
    """Firing alerts for the console, fetched at most once per FRESH_SECONDS."""

    def __init__(self) -> None:
        self._feed: Feed | None = None
        self._fetched = 0.0
        self._from: tuple[str | None, str | None] = (None, None)
        self._lock = asyncio.Lock()

    async def get(self, settings: ConsoleSettings) -> Feed | None:
        sources = (settings.alertmanager_url, settings.prometheus_url)
        if sources == (None, None):
            return None
        async with self._lock:
            now = time.monotonic()
            if self._feed is None or sources != self._from or now - self._fetched > FRESH_SECONDS:
                self._feed = await fetch(*sources)
                self._fetched, self._from = time.monotonic(), sources
            return self._feed


async def fetch(alertmanager: str | None, prometheus: str | None) -> Feed:
    if alertmanager is not None:
        source = f"Alertmanager at {alertmanager}"
        url = f"{alertmanager}/api/v2/alerts?active=true&silenced=false&inhibited=false"
    else:
        assert prometheus is not None
        source = f"Prometheus at {prometheus}"
        url = f"{prometheus}/api/v1/alerts"
    try:
        data = await _get_json(url)
        raw = data if alertmanager is not None else _prometheus_firing(data)
        if not isinstance(raw, list):  # a proxy's or a login page's JSON: never "none firing"
            raise TypeError("not a list of alerts")
        alerts = sorted(
            (
                _alert(item)
                for item in raw
                if isinstance(item, Mapping) and _pages(_strings(item.get("labels")))
            ),
            key=lambda a: (_rank(a.priority), -a.since, a.name, a.target),
        )
    except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, KeyError) as exc:
        return Feed(source, problem=f"could not read the firing alerts: {_why(exc)}")
    return Feed(source, tuple(alerts[:SHOWN_MAX]), more=max(0, len(alerts) - SHOWN_MAX))


async def _get_json(url: str) -> Any:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
    async with (
        aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
        session.get(url, headers={"Accept": "application/json"}, allow_redirects=False) as response,
    ):
        if response.status != 200:
            raise ValueError(f"it answered HTTP {response.status}")
        body = await response.content.read(BODY_MAX_BYTES + 1)
        if len(body) > BODY_MAX_BYTES:
            raise ValueError(f"its answer is larger than {BODY_MAX_BYTES // 1024 // 1024} MiB")
        return json.loads(body)


def _prometheus_firing(data: Any) -> list[Any]:
    alerts = data["data"]["alerts"]
    return [a for a in alerts if isinstance(a, Mapping) and a.get("state") == "firing"]


def _pages(labels: Mapping[str, str]) -> bool:
    """Watchdog and its like (`priority: none`, routed to no one) are not news at 3 a.m."""
    return labels.get("priority") != "none"


def _alert(item: Mapping[str, Any]) -> FiringAlert:
    labels = _strings(item.get("labels"))
    notes = _strings(item.get("annotations"))
    return FiringAlert(
        name=labels.get("alertname", "?")[:FIELD_MAX],
        priority=labels.get("priority", "")[:FIELD_MAX],
        summary=notes.get("summary", "")[:SUMMARY_MAX],
        runbook=(notes.get("runbook_url", "") or labels.get("runbook_url", ""))[:URL_MAX],
        target=(labels.get("target", "") or labels.get("service", ""))[:FIELD_MAX],
        since=_time(item.get("startsAt") or item.get("activeAt")),
    )


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _time(value: Any) -> float:
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _rank(priority: str) -> int:
    return _PRIORITIES.index(priority) if priority in _PRIORITIES else len(_PRIORITIES)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS:g} s"
    if isinstance(exc, json.JSONDecodeError | KeyError | TypeError):
        return "its answer is not the alerts API's JSON (is the URL the API's root?)"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
