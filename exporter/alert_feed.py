"""The firing alerts the console shows on top, read from Alertmanager (after its inhibitions
and silences: what actually paged) or, without one, from Prometheus.

One fetch at a time, kept for a few seconds, so any number of open pages costs the
Alertmanager one request per `FRESH_SECONDS`; a slow or broken one costs a page at most
`TIMEOUT_SECONDS` and is shown as a sentence, never as an error page.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from stackprobe.console import ConsoleSettings
from stackprobe.daemon_thread import run_in_daemon_thread

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
    """The JSON of a 200 answer within TIMEOUT_SECONDS, whole and at most BODY_MAX_BYTES.

    http.client on a thread of its own: the one request a few seconds this makes does not
    warrant an async client's memory in every process, most of which never show the
    console. It follows no redirect (a login page is reported, not fetched) and reads no
    proxy from the environment (the Alertmanager is beside stackprobe). Past the deadline
    the socket is shut down, so the thread ends then too, however slowly a peer trickles."""
    connection, target = _connection(url)
    reading = run_in_daemon_thread(lambda: _read(connection, target), "alert feed")
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            return json.loads(await reading)
    except TimeoutError:
        _hang_up(connection)
        raise


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the URL's server, not yet open, and the request target to ask it."""
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError("its URL is not an http:// or https:// URL")
    target = f"{split.path or '/'}?{split.query}" if split.query else split.path or "/"
    if split.scheme == "https":
        secure = http.client.HTTPSConnection(split.hostname, split.port, timeout=TIMEOUT_SECONDS)
        return secure, target
    plain = http.client.HTTPConnection(split.hostname, split.port, timeout=TIMEOUT_SECONDS)
    return plain, target


def _read(connection: http.client.HTTPConnection, target: str) -> bytes:
    try:
        connection.request("GET", target, headers={"Accept": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise ValueError(f"it answered HTTP {response.status}")
        body = response.read(BODY_MAX_BYTES + 1)
        if len(body) > BODY_MAX_BYTES:
            raise ValueError(f"its answer is larger than {BODY_MAX_BYTES // 1024 // 1024} MiB")
        announced = response.getheader("Content-Length", "")
        if announced.isdigit() and len(body) < int(announced):  # read(n) does not say so
            raise ValueError("its answer was cut short")
        return body
    except http.client.HTTPException as exc:  # not HTTP, or cut short
        raise ValueError(f"its answer is not HTTP ({type(exc).__name__})") from None
    finally:
        connection.close()


def _hang_up(connection: http.client.HTTPConnection) -> None:
    """Wake the thread blocked on the socket: its read fails at once."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


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
