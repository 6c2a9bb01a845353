"""The console as a person sees it, in headless Chromium, on `stackprobe demo` with no fault
and with each fault in turn: the page puts an unhealthy row first, says why in words, and
links the runbook section of an alert the fault pages (demo/faults.py). A screenshot of each
state is kept (tests/support/browser.py says where)."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from stackprobe.demo.faults import FAULTS
from tests.support.browser import dom, png_size, screenshot
from tests.support.datastores import PROBE_PASSWORD, PROBE_ROLE
from tests.support.e2e_stack import DATABASE, datastores
from tests.support.polling import wait_until
from tests.support.processes import free_port, stop

RUNBOOK = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md"
ROOT = Path(__file__).resolve().parent.parent.parent
# Faults whose verdict needs more time than a run or two: the kind's own window.
SLOW = {"jobs-stuck", "oom-kill", "db-too-many-clients"}
# Verdicts over a window the kind keeps in real time (docs/console.md): they stay degraded
# minutes after their fault is cleared, as their alerts would in production.
LINGER = {"RedisConnectionErrors", "EcsServiceCrashLooping", "EcsDeploymentRolledBack"}
# Played last: its verdict lingers the runbook's 30 minutes on the ECS row, which the other
# ECS faults' verdicts need.
LAST = ("deploy-rolled-back",)
# A task-discovering http target finding no task cannot tell a service scaled to 0 from one
# whose tasks all died (docs/console.md): it links the second.
ALSO = {"scaled-to-zero": {"EcsServiceNoRunningTasks"}}
# What a busy 2-core machine shows now and then whatever the fault: a run past its deadline
# (moto answering slowly), a slow answer. True on the page, and not the fault's doing.
LOAD = {"StackprobeCannotMeasure", "EndpointSlow"}


def muted_by(alerts: set[str]) -> set[str]:
    """The alerts alert_rules/alertmanager.yml's inhibitions mute when one of `alerts` fires:
    a fault's symptoms, which the console shows failing as well (it shows what is measured;
    Alertmanager decides what pages)."""
    config = yaml.safe_load((ROOT / "alert_rules" / "alertmanager.yml").read_text())
    found = set()
    for rule in config.get("inhibit_rules", ()):
        sources = _names(rule.get("source_matchers", ()))
        if sources & alerts:
            found |= _names(rule.get("target_matchers", ()))
    return found


def _names(matchers: list[str]) -> set[str]:
    names = set()
    for matcher in matchers:
        match = re.fullmatch(r'alertname(=~?)"([^"]*)"', matcher.strip())
        if match:
            names |= set(match[2].split("|"))
    return names


@dataclass
class Row:
    health: str
    target: str
    why: str
    alert: str  # from its runbook link's text, "" when it has none
    href: str


_ROW = re.compile(r'<tr class="(ok|degraded|failing|pending)">(.*?)</tr>', re.S)
_TARGET = re.compile(r'<a href="/target\?name=[^"]*">([^<]*)</a>')
_WHY = re.compile(r'<td class="why">(.*?)</td>', re.S)
_RUNBOOK = re.compile(r'<a class="runbook" href="([^"]*)">runbook: ([^<]*)</a>')


class Console:
    """The target rows of the console in page order (stackprobe's own rows left out)."""

    def __init__(self, text: str) -> None:
        self.rows: list[Row] = []
        for health, cells in _ROW.findall(text):
            target = _TARGET.search(cells)
            if target is None:
                continue
            why = _WHY.search(cells)
            runbook = _RUNBOOK.search(cells)
            self.rows.append(
                Row(
                    health,
                    html.unescape(target[1]),
                    " ".join(html.unescape(re.sub("<[^>]+>", " ", why[1])).split()) if why else "",
                    runbook[2] if runbook else "",
                    html.unescape(runbook[1]) if runbook else "",
                )
            )

    def unhealthy(self) -> list[Row]:
        return [r for r in self.rows if r.health in ("failing", "degraded")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    work = tmp_path_factory.mktemp("console")
    log = work / "demo.log"
    console, app = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        redis, postgres = datastores(stack)
        out = stack.enter_context(log.open("wb"))
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stackprobe",
                "demo",
                f"--listen={console}",
                f"--app-listen={app}",
                "--interval=1s",
                f"--postgres-dsn={postgres.dsn(PROBE_ROLE, DATABASE)}",
                f"--redis-url={redis.url()}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PGPASSWORD": PROBE_PASSWORD},
        )
        stack.callback(stop, process)
        wait_until(
            lambda: all_ok(f"http://{console}"),
            90,
            what="every target of the demo ok",
            logs=[log],
            interval=1,
            ignore=(httpx.TransportError,),
        )
        yield f"http://{console}", f"http://{app}", log


def page(console: str) -> Console:
    return Console(httpx.get(f"{console}/", timeout=10).text)


def all_ok(console: str) -> bool:
    """Every row ok, but those an earlier fault left degraded over a real-time window and
    what the machine's load does."""
    found = page(console)
    left = [
        r
        for r in found.unhealthy()
        if not (r.health == "degraded" and r.alert in LINGER) and r.alert not in LOAD
    ]
    return bool(found.rows) and not left and all(r.health != "pending" for r in found.rows)


def switch(app: str, fault: str, on: bool) -> None:
    answer = httpx.request("POST" if on else "DELETE", f"{app}/faults/{fault}", timeout=30)
    assert answer.status_code == 200, answer.text


def test_with_no_fault_every_row_is_ok_and_links_nothing(
    demo: tuple[str, str, Path], tmp_path: Path
) -> None:
    console, _, _ = demo
    seen = Console(dom(f"{console}/"))
    assert len(seen.rows) >= 10 and all(r.health == "ok" for r in seen.rows), seen.rows
    assert not any(r.href for r in seen.rows)
    shot = screenshot(f"{console}/", "console-no-fault", tmp_path)
    assert png_size(shot)[0] >= 1000


@pytest.mark.parametrize("fault", [*(f for f in FAULTS if f not in LAST), *LAST])
def test_each_fault_puts_its_target_first_with_why_and_runbook(
    demo: tuple[str, str, Path], fault: str, tmp_path: Path
) -> None:
    console, app, log = demo
    pages = set(FAULTS[fault].alerts)
    expected = pages | muted_by(pages) | ALSO.get(fault, set())
    before = {(r.target, r.alert) for r in page(console).unhealthy()}  # left by earlier faults
    switch(app, fault, True)
    try:

        def new(found: Console) -> list[Row]:
            return [
                r
                for r in found.unhealthy()
                if (r.target, r.alert) not in before
                and (r.alert in expected or r.alert not in LOAD)
            ]

        def shown() -> Console | None:
            found = page(console)
            first = new(found)[:1]
            paging = {r.alert for r in found.unhealthy()} & pages
            return found if first and first[0].alert in expected and paging else None

        wait_until(
            shown,
            90 if fault in SLOW else 30,
            what=lambda: (
                f"{fault}: a first row linking one of {sorted(expected)} and a row for one of "
                f"{sorted(pages)}, "
                f"saw {page(console).unhealthy()[:3]}"
            ),
            logs=[log],
            interval=0.5,
        )

        # What Chromium renders, after the page's own script ran: the same, once a run of
        # the fault's target is not the one a busy machine made late (it then says so, a
        # LOAD row) between the poll above and Chromium's own request.
        def rendered() -> Console | None:
            found = Console(dom(f"{console}/"))
            first = new(found)[:1]
            return found if first and first[0].alert in expected else None

        seen = wait_until(
            rendered,
            30,
            what=lambda: f"{fault}: Chromium's page, saw {page(console).unhealthy()[:3]}",
            logs=[log],
            interval=0.5,
        )
        assert seen.rows[0].health in ("failing", "degraded"), seen.rows[:3]
        first = new(seen)[0]
        assert first.alert in expected, (fault, first)
        # and what pages for it has its row too
        assert {r.alert for r in seen.unhealthy()} & pages, (pages, seen.unhealthy())
        # above it, at most what an earlier fault left degraded over a real-time window, or
        # the machine's load
        above = seen.rows[: seen.rows.index(first)]
        assert all(
            (r.health == "degraded" and r.alert in LINGER) or r.alert in LOAD for r in above
        ), above
        assert first.why and not first.why.startswith("no run"), first
        assert first.href == f"{RUNBOOK}#{first.alert.lower()}", first
        shot = screenshot(f"{console}/", f"console-{fault}", tmp_path)
        assert png_size(shot)[0] >= 1000
        detail = dom(f"{console}/target?name={first.target}")
        assert re.search(rf">\s*{re.escape(first.target)}\s*<", detail), detail[:2000]
        assert "What the last run saw" in detail
    finally:
        switch(app, fault, False)
        wait_until(
            lambda: all_ok(console),
            120,
            what=lambda: f"{fault} cleared: every row ok, saw {page(console).unhealthy()[:3]}",
            logs=[log],
            interval=0.5,
        )
