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
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
    except (OSError, ValueError, TypeError, KeyError) as exc:  # TimeoutError is an OSError
        return Feed(source, problem=f"could not read the firing alerts: {_why(exc)}")
    return Feed(source, tuple(alerts[:SHOWN_MAX]), more=max(0, len(alerts) - SHOWN_MAX))


async def _get_json(url: str) -> Any:
    # urllib in a thread: the one request a few seconds this makes does not warrant an async
    # client's memory in every process, most of which never show the console.
    async with asyncio.timeout(TIMEOUT_SECONDS):
        return json.loads(await asyncio.to_thread(_read, url, time.monotonic() + TIMEOUT_SECONDS))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to report (a login page, a moved API), not one to follow."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No proxy from the environment (the Alertmanager is beside stackprobe), no redirects.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


def _read(url: str, deadline: float) -> bytes:
    """The body of a 200 answer, read whole by `deadline` and at most BODY_MAX_BYTES."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with _OPENER.open(request, timeout=TIMEOUT_SECONDS) as response:
            if response.status != 200:
                raise ValueError(f"it answered HTTP {response.status}")
            body = bytearray()
            while chunk := response.read1(64 * 1024):
                body += chunk
                if len(body) > BODY_MAX_BYTES:
                    raise ValueError(
                        f"its answer is larger than {BODY_MAX_BYTES // 1024 // 1024} MiB"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError
            return bytes(body)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise ValueError(f"it answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise ValueError(f"cannot reach it: {exc.reason}") from None


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
