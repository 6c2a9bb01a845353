"""Reloads under stress: a storm of SIGHUPs, a reload that never ends, a load past its limit.

A real `stackprobe run` for what an operator does to the process (signals, a config path
swapped for a FIFO); an App in this process for the load limit, which is two minutes long.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import stackprobe.app as app_module
from stackprobe.app import FULL_COLLECTION_EVERY, App
from stackprobe.config import parse_config
from stackprobe.probes import KINDS
from stackprobe.secrets import Redactor
from tests.support.exporter import Exporter, start_exporter, stop_exporter
from tests.support.polling import wait_until_async
from tests.support.processes import free_port

# Enough targets that a load takes a good part of a second, so a storm of SIGHUPs lands
# while one runs; probed rarely, on a port nothing listens on (each fails at once).
STORM_TARGETS = 1500


def storm_config(port: int, version: int, targets: int = STORM_TARGETS) -> str:
    listed = [
        {"name": f"t{i:04d}", "kind": "http", "url": f"http://127.0.0.1:{port}/{i}"}
        for i in range(targets)
    ]
    listed.append({"name": f"marker-{version}", "kind": "http", "url": f"http://127.0.0.1:{port}/"})
    return yaml.safe_dump({"defaults": {"interval": "1h", "timeout": "2s"}, "targets": listed})


def events(exporter: Exporter) -> list[dict[str, Any]]:
    found = []
    for line in exporter.logs().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def reloads(exporter: Exporter) -> dict[str, float]:
    return {
        s.labels["result"]: s.value
        for s in exporter.metrics()["stackprobe_config_reloads"]
        if s.name.endswith("_total")
    }


def running_markers(exporter: Exporter) -> set[str]:
    """The marker targets stackprobe runs, from the landing page, which lists its targets."""
    page = exporter.get("/").text
    return set(re.findall(r">(marker-\d+)<", page))


def waiting_in(pid: int) -> set[str]:
    """Where in the kernel each of the process's threads waits (`wait_for_partner`: opening a
    FIFO that no one has opened from the other end)."""
    return {(task / "wchan").read_text() for task in Path(f"/proc/{pid}/task").iterdir()}


def test_a_sighup_storm_is_one_reload_at_a_time_and_the_last_file_wins(tmp_path: Path) -> None:
    """20 SIGHUPs back to back, the file rewritten before each: each used to start a reload of
    its own that waited for the one before, 20 in all, one task each meanwhile. Now a storm
    is one reload running and one queued, which reads the file as the storm left it."""
    port = free_port()
    exporter = start_exporter(tmp_path, storm_config(port, 0), {})
    try:
        # made first, so that the storm is as fast as writing a file and sending a signal
        texts = [storm_config(port, version) for version in range(1, 21)]
        for text in texts:
            # Written whole, then renamed into place: a reload never reads half a file.
            written = exporter.config_path.with_suffix(".new")
            written.write_text(text)
            os.replace(written, exporter.config_path)
            exporter.process.send_signal(signal.SIGHUP)

        seen: list[dict[str, float]] = []

        def settled() -> bool:
            """The last file's marker runs, and no reload came since the last look."""
            seen.append(reloads(exporter))
            return running_markers(exporter) == {"marker-20"} and seen[-1] == seen[-2:][0]

        exporter.until(
            "the last file's marker to be what runs, and reloads to stop coming",
            lambda: settled() and time.sleep(2) is None and settled(),
            timeout=90,
        )

        done = reloads(exporter)
        lines = [
            e["event"]
            for e in events(exporter)
            if e["event"] in ("config reload started", "config reloaded")
        ]
        assert done.get("failure") == 0
        assert 1 <= done["success"] <= 3, done  # was 20: one per SIGHUP
        assert lines == ["config reload started", "config reloaded"] * int(done["success"])
        assert running_markers(exporter) == {"marker-20"}
    finally:
        stop_exporter(exporter)


def test_sigterm_while_a_reload_never_ends_exits_at_once(tmp_path: Path) -> None:
    """The config path becomes a FIFO nobody writes: opening it blocks forever. The reload's
    thread used to be the loop's executor's, which the interpreter waits for at exit, so
    SIGTERM left the process running. Meanwhile /metrics and another reload must answer."""
    good = {"targets": [{"name": "self", "kind": "http", "url": "http://127.0.0.1:1/"}]}
    exporter = start_exporter(tmp_path, good, {})
    try:
        exporter.config_path.unlink()
        os.mkfifo(exporter.config_path)
        exporter.process.send_signal(signal.SIGHUP)
        exporter.until(
            "the reload to be stuck opening the FIFO",
            lambda: "wait_for_partner" in waiting_in(exporter.process.pid),
        )

        assert exporter.get("/metrics").status_code == 200
        second = httpx.post(exporter.url + "/-/reload", timeout=5)
        assert "a reload is already running" in second.text, second.text
        exporter.process.send_signal(signal.SIGHUP)  # queued with the second: no more
        assert exporter.get("/metrics").status_code == 200

        started = time.monotonic()
        exporter.process.send_signal(signal.SIGTERM)
        code = exporter.process.wait(timeout=12)
        took = time.monotonic() - started
    except BaseException:
        exporter.process.kill()
        raise
    finally:
        exporter.log_file.close()

    assert code == 0, exporter.logs()
    assert took < 5, took
    stuck = [e for e in events(exporter) if "abandoned" in e["event"]]
    assert [e["event"] for e in stuck] == [
        "a config reload was still loading when stackprobe stopped; abandoned"
    ]
    assert stuck[0]["path"] == str(exporter.config_path)


def test_a_reload_while_one_runs_is_answered_over_http_at_once(tmp_path: Path) -> None:
    """The HTTP side of coalescing: a second POST /-/reload does not wait in line behind the
    first (which may never end); it queues one more, which runs once the first has ended."""
    config = {"targets": [{"name": "x", "kind": "http", "url": "http://127.0.0.1:1/"}]}
    exporter = start_exporter(tmp_path, config, {})
    try:
        exporter.config_path.write_text(storm_config(free_port(), 1, targets=6000))
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, exporter.url + "/-/reload", timeout=60)
            time.sleep(0.3)  # loading 6,000 targets takes seconds
            second = httpx.post(exporter.url + "/-/reload", timeout=5)
            assert "config reloaded: 6001 targets" in first.result().text
        assert "a reload is already running" in second.text, second.text
        exporter.until(
            "the queued reload to run",
            lambda: reloads(exporter).get("success") == 2,
            timeout=60,
        )
    finally:
        stop_exporter(exporter)


@pytest.fixture
def held_fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO, and a second name for it so the test can always release a reader it blocks."""
    fifo = tmp_path / "stackprobe.yml"
    os.mkfifo(fifo)
    keep = tmp_path / "fifo-kept"
    os.link(fifo, keep)
    yield fifo
    # Opening it to write returns once a reader waits, and closing it ends that read.
    with contextlib.suppress(OSError):  # no reader was waiting
        os.close(os.open(keep, os.O_WRONLY | os.O_NONBLOCK))


CONFIG = "targets:\n  - {name: a, kind: http, url: 'http://127.0.0.1:1/', interval: 1h}\n"


def stuck_app(fifo: Path) -> App:
    app = App(
        parse_config(CONFIG, str(fifo), KINDS), kinds=KINDS, redactor=Redactor(), config_path=fifo
    )
    app.start()
    return app


async def test_a_load_past_its_limit_is_abandoned_and_the_queued_reload_runs(
    held_fifo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "LOAD_LIMIT_SECONDS", 1.0)
    switch_interval = sys.getswitchinterval()
    app = stuck_app(held_fifo)
    try:
        app.request_reload()  # stuck opening the FIFO
        await asyncio.sleep(0.2)
        busy = await app.reload()
        assert not busy.ok and "a reload is already running" in busy.message
        # The operator puts a file in its place; the stuck open does not see it.
        replacement = held_fifo.with_name("new.yml")
        replacement.write_text(CONFIG.replace("name: a", "name: b"))
        os.replace(replacement, held_fifo)
        app.request_reload()

        def counted() -> dict[str, float]:
            return {
                s.labels["result"]: s.value
                for s in app.metrics.reloads.collect()[0].samples
                if s.name.endswith("_total")
            }

        async def reloaded() -> bool:
            return counted()["success"] == 1

        await wait_until_async(reloaded, 10, what="the queued reload to run")
        assert counted() == {"failure": 1.0, "success": 1.0}
        assert [t.name for t in app.scheduler.targets] == ["b"]
        assert app.last_reload_error == ""
        # What a load changes for the whole process is put back.
        assert sys.getswitchinterval() == switch_interval
        assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY
    finally:
        await app.stop()


async def test_a_reload_stuck_at_stop_is_abandoned_and_answers(held_fifo: Path) -> None:
    app = stuck_app(held_fifo)
    reload = asyncio.create_task(app.reload())  # as POST /-/reload does
    await asyncio.sleep(0.2)

    app.abandon_reload()
    outcome = await asyncio.wait_for(reload, 2)
    await app.stop()

    assert (outcome.ok, outcome.message) == (
        False,
        "stackprobe is stopping: the reload was abandoned",
    )


def test_a_reload_that_brings_a_new_kind_imports_it_and_serves_its_families(
    tmp_path: Path,
) -> None:
    """Kinds are imported when a config first names them (probes/__init__.py): one that
    appears on reload gets its resources opened and its families declared, so its first
    run renders (an undeclared family would be reason internal_error)."""
    closed = free_port()
    redis_only = {
        "targets": [{"name": "cache", "kind": "redis", "url": f"redis://127.0.0.1:{closed}"}]
    }
    exporter = start_exporter(tmp_path, redis_only, {})
    try:
        exporter.wait_ready()
        assert "probe_http_duration_seconds" not in exporter.get("/metrics").text
        web = {"name": "web", "kind": "http", "url": f"http://127.0.0.1:{closed}/health/ready"}
        exporter.config_path.write_text(yaml.safe_dump({"targets": [*redis_only["targets"], web]}))
        reloaded = httpx.post(exporter.url + "/-/reload", timeout=30)
        assert reloaded.status_code == 200, reloaded.text

        def reasons() -> dict[str, str]:
            samples = exporter.metrics().get("stackprobe_probe_failure_reason", [])
            return {s.labels["target"]: s.labels["reason"] for s in samples}

        exporter.until("the new http target's first run", lambda: "web" in reasons())
        assert reasons()["web"] == "connect_refused"
        text = exporter.get("/metrics").text
        assert re.search(r'^probe_http_duration_seconds\{[^}]*target="web"', text, re.M), text
    finally:
        stop_exporter(exporter)
