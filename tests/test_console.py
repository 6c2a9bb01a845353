"""The console (exporter/landing.py, exporter/console.py, exporter/alert_feed.py): verdicts
worst first by area, since when, the history strip, the runbook and dashboard links the
deployed rules carry, the firing alerts from a real Alertmanager and Prometheus, the detail
view, and nothing unescaped or secret on any of it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator
from enum import StrEnum
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml
from aiohttp import web

from stackprobe import alert_feed
from stackprobe.app import App
from stackprobe.config import ConfigError, parse_config
from stackprobe.console import STACKPROBE_RUNBOOK
from stackprobe.contract import (
    Area,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Verdict,
)
from stackprobe.results import HISTORY_RUNS
from stackprobe.secrets import Redactor, StrOrSecret
from stackprobe.server import Surface, WebOptions, make_web_app
from stackprobe.target import TargetConfig
from stackprobe.tools import runbooks
from tests.support.polling import wait_until_async
from tests.support.processes import free_port, require_binary
from tests.support.web_client import WebClient
from tests.test_alertmanager_live import alert, alertmanager, webhooks  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alert_rules"
SECRET = "hunter2-canary-9f8e7d"
VALUE = MetricSpec("console_test_value", "What the fake kind measured.")
DB_VALUE = MetricSpec("console_test_db_value", "What the fake database kind measured.")


class Reason(StrEnum):
    BROKEN = "broken"


class FakeTarget(TargetConfig):
    kind: Literal["fake"] = "fake"
    # a secret the config names, as a DSN's password: the redactor learns it from the config
    token: StrOrSecret | None = None

    def describe(self) -> str:
        return f"fake://{self.name}"


class DbTarget(FakeTarget):
    kind: Literal["fakedb"] = "fakedb"  # type: ignore[assignment]


# What each target's next run says, set by the test: health, why, alert, run failed.
SAYS: dict[str, tuple[Health, str, str, bool]] = {}


async def fake_probe(target: FakeTarget, ctx: ProbeContext) -> ProbeResult:
    health, why, alert_name, run_failed = SAYS.get(target.name, (Health.OK, "", "", False))
    verdict = Verdict(health, why, alert_name)
    evidence = (("status", "503 Service Unavailable"), ("body", f'{{"token": "{SECRET}"}}'))
    if run_failed:
        return ProbeResult.failed(
            Reason.BROKEN, f"refused with {SECRET}", verdict=verdict, evidence=evidence
        )
    spec = DB_VALUE if target.kind == "fakedb" else VALUE
    return ProbeResult.ok((spec(1),), verdict=verdict, evidence=evidence)


KINDS: dict[str, ProbeKind[Any]] = {
    "fake": ProbeKind("fake", FakeTarget, fake_probe, (VALUE,), Reason, "site", area=Area.SITE),
    "fakedb": ProbeKind(
        "fakedb", DbTarget, fake_probe, (DB_VALUE,), Reason, "db", area=Area.DATABASES
    ),
}


class Page(HTMLParser):
    """What a person reads: the text, the rows in order, and every link."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (class, href)
        self.rows: list[str] = []  # each <tr>'s class, in page order
        self.sections: list[str] = []
        self.scripts = 0
        self.text: list[str] = []
        self._in_h2 = False
        self._skip = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a":
            self.links.append((found.get("class") or "", found.get("href") or ""))
        if tag == "tr" and found.get("class"):
            self.rows.append(found["class"] or "")
        if tag == "h2":
            self._in_h2 = True
            self.sections.append("")
        if tag == "script":
            self.scripts += 1
        self._skip = tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_h2 = False
        self._skip = False

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text.append(data)
        if self._in_h2 and not self.sections[-1]:
            self.sections[-1] = data.strip()

    def all_text(self) -> str:
        return " ".join("".join(self.text).split())


def config(console: dict[str, Any] | None = None, **names: str) -> dict[str, Any]:
    targets = [
        {
            "name": name,
            "kind": kind,
            "interval": "1s",
            "timeout": "500ms",
            "token": {"from_env": "CONSOLE_TEST_TOKEN"},
        }
        for name, kind in (names or {"site-ready": "fake", "db": "fakedb"}).items()
    ]
    return {"console": console or {}, "targets": targets}


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[tuple[App, WebClient]]:
    SAYS.clear()
    app = await start(config(), tmp_path)
    client = WebClient(make_web_app(app, Surface(WebOptions())))
    await client.start_server()
    yield app, client
    await client.close()
    await app.stop()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret every test target names, from the environment as a config would."""
    monkeypatch.setenv("CONSOLE_TEST_TOKEN", SECRET)


async def start(raw: dict[str, Any], tmp_path: Path) -> App:
    path = tmp_path / "stackprobe.yml"
    path.write_text(yaml.safe_dump(raw))
    app = App(
        parse_config(path.read_text(), str(path), KINDS),
        kinds=KINDS,
        redactor=Redactor(),
        config_path=path,
    )
    app.start()
    return app


async def runs(app: App, name: str, health: Health, count: int = 2) -> None:
    """Until `name` has `count` runs in a row with `health`."""

    async def seen() -> bool:
        trail = app.store.trail(name)
        return trail is not None and trail.healths()[-count:] == [health] * count

    await wait_until_async(seen, 15, what=f"{name} {health} {count} times")


async def test_failing_targets_come_first_with_their_why_since_and_runbook(
    console: tuple[App, WebClient],
) -> None:
    app, client = console
    await runs(app, "db", Health.OK)
    SAYS["db"] = (
        Health.FAILING,
        "pool 100 % checked out (10 of 10)",
        "PostgresAppPoolExhausted",
        False,
    )
    SAYS["site-ready"] = (Health.DEGRADED, "slow: 2.1 s", "EndpointSlow", False)
    await runs(app, "db", Health.FAILING)
    await runs(app, "site-ready", Health.DEGRADED)

    page = Page(await (await client.get("/")).text())
    text = page.all_text()
    # the databases area holds the failing row, so it comes before site health
    areas = [s for s in page.sections if s]
    assert areas[:2] == [Area.DATABASES.value, Area.SITE.value], areas
    assert page.rows[:2] == ["failing", "degraded"]
    assert "pool 100 % checked out (10 of 10)" in text
    assert re.search(r"failing for \d+(\.\d)?s", text), text
    assert ("runbook", f"{STACKPROBE_RUNBOOK}#postgresapppoolexhausted") in page.links
    assert ("runbook", f"{STACKPROBE_RUNBOOK}#endpointslow") in page.links
    assert "1 failing" in (await (await client.get("/")).text()).split("</title>")[0]
    # the strip shows the ok runs before the failure, oldest first
    html = await (await client.get("/")).text()
    db_row = html[html.index(">db<") :]
    strip = db_row[db_row.index('class="strip"') :].split("</span>")[0]
    classes = re.findall(r'<i class="(\w+)">', strip)
    assert classes[0] == "ok" and classes[-1] == "failing", classes
    assert len(classes) <= HISTORY_RUNS


async def test_the_strip_is_bounded_and_since_resets_when_the_health_changes(
    console: tuple[App, WebClient],
) -> None:
    app, _ = console
    await runs(app, "db", Health.OK)
    trail = app.store.trail("db")
    assert trail is not None
    for _ in range(HISTORY_RUNS + 5):  # the store's own bound, without waiting for runs
        trail.add(Health.OK, time.time())
    assert len(trail.runs) == HISTORY_RUNS
    before = trail.since
    SAYS["db"] = (Health.FAILING, "down", "PostgresDown", False)
    await runs(app, "db", Health.FAILING, 1)
    assert trail.since > before
    assert len(trail.runs) == HISTORY_RUNS


async def test_nothing_on_the_page_or_detail_view_is_unescaped_or_secret(
    console: tuple[App, WebClient],
) -> None:
    app, client = console
    SAYS["db"] = (Health.FAILING, f"<script>alert(1)</script> saw {SECRET}", "PostgresDown", True)
    await runs(app, "db", Health.FAILING)
    for path in ("/", "/target?name=db"):
        text = await (await client.get(path)).text()
        assert SECRET not in text, path
        assert "<script>alert(1)" not in text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
        page = Page(text)
        assert page.scripts == 1, path  # the console's own refresh, and nothing else


async def test_the_detail_view_shows_the_last_run_its_evidence_and_series(
    console: tuple[App, WebClient],
) -> None:
    app, client = console
    SAYS["db"] = (Health.FAILING, "pool 100 % checked out", "PostgresAppPoolExhausted", False)
    await runs(app, "db", Health.FAILING)
    response = await client.get("/target?name=db")
    assert response.status == 200
    page = Page(await response.text())
    text = page.all_text()
    for shown in (
        "fake://db",
        "pool 100 % checked out",
        "PostgresAppPoolExhausted",
        "503 Service Unavailable",
        '"token": "<redacted>"',
        'console_test_db_value{target="db"} 1.0',
        'probe_success{target="db"} 1.0',
    ):
        assert shown in text, (shown, text)
    assert ("runbook", f"{STACKPROBE_RUNBOOK}#postgresapppoolexhausted") in page.links
    missing = await client.get("/target?name=nope")
    assert missing.status == 404
    assert "no target has that name" in await missing.text()


async def test_names_mode_shows_healths_but_no_why_no_detail_and_no_path(tmp_path: Path) -> None:
    SAYS.clear()
    SAYS["db"] = (Health.FAILING, "pool 100 % checked out", "PostgresAppPoolExhausted", False)
    app = await start(config(), tmp_path)
    client = WebClient(make_web_app(app, Surface(WebOptions(landing="names"))))
    await client.start_server()
    try:
        await runs(app, "db", Health.FAILING)
        text = await (await client.get("/")).text()
        assert "failing" in text and ">db<" in text
        assert "pool 100 %" not in text and str(tmp_path) not in text and "fake://" not in text
        assert (await client.get("/target?name=db")).status == 404
    finally:
        await client.close()
        await app.stop()


def shipped_annotations(folder: Path) -> dict[str, dict[str, str]]:
    found = {}
    for path in sorted(folder.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found[rule["alert"]] = rule.get("annotations", {})
    return found


def test_without_rules_every_alert_links_where_the_shipped_rules_do() -> None:
    links = parse_config(yaml.safe_dump(config()), "<test>", KINDS).console.links
    for name, notes in shipped_annotations(RULES).items():
        assert links.runbook(name) == notes["runbook_url"], name
        assert links.dashboard(name) == "", name  # grafana.example.com is no place to go


def test_with_the_teams_rules_and_map_the_links_are_those_the_pager_carries(
    tmp_path: Path,
) -> None:
    runbook_map = ROOT / "examples" / "runbook-maps" / "aep.yml"
    rendered = tmp_path / "rules"
    runbooks.render(RULES, runbooks.load_map(runbook_map), rendered, "https://grafana.corp")
    raw = config({"rules": str(rendered), "grafana_url": "https://grafana.corp"})
    links = parse_config(yaml.safe_dump(raw), "<test>", KINDS).console.links
    annotations = shipped_annotations(rendered)
    assert links.runbook("AppRedisPoolBroken").endswith("#incident-3-redis-transport-closed-error")
    for name, notes in annotations.items():
        assert links.runbook(name) == notes["runbook_url"], name
        assert links.dashboard(name) == notes.get("dashboard_url", ""), name
        if name in ("HealthLiveFailing", "PostgresDown"):
            assert links.dashboard(name).startswith("https://grafana.corp/d/"), name
    # the map given straight to the console, over the shipped rules, says the same
    raw = config({"rules": str(RULES), "runbook_map": str(runbook_map)})
    direct = parse_config(yaml.safe_dump(raw), "<test>", KINDS).console.links
    assert all(direct.runbook(n) == links.runbook(n) for n in annotations)


@pytest.mark.parametrize(
    ("console", "says"),
    [
        ({"rules": "/nonexistent"}, "is not a folder of *.rules.yml files"),
        ({"runbook_map": "/nonexistent.yml"}, "cannot read the runbook map"),
        ({"alertmanager_url": "http://user:pw@am:9093"}, "carries credentials"),
        ({"prometheus_url": "javascript:alert(1)"}, "expected an http:// or https:// URL"),
        ({"refresh": "0s"}, "between 1s and 1h"),
        ({"grafana": "x"}, "grafana_url"),
    ],
)
def test_a_bad_console_section_says_what_is_wrong(console: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(config(console)), "<test>", KINDS)
    message = str(caught.value)
    assert says in message and "console" in message, message
    assert "pw@" not in message


async def test_firing_alerts_from_alertmanager_come_on_top_with_their_runbook(
    alertmanager: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    posted = [
        alert("PostgresAppPoolExhausted", "P1", target="db", service="api"),
        alert("HealthLiveFailing", "P0", target="site-live", service="api"),
        alert("SqsJobsStuck", "P2", target="jobs"),
    ]
    posted[1]["annotations"]["runbook_url"] = "javascript:alert(1)"  # never a link
    async with httpx.AsyncClient() as http:
        (await http.post(f"{alertmanager}/api/v2/alerts", json=posted)).raise_for_status()
    SAYS.clear()
    app = await start(config({"alertmanager_url": alertmanager}), tmp_path)
    client = WebClient(make_web_app(app, Surface(WebOptions())))
    await client.start_server()
    try:

        async def listed() -> str:
            text = await (await client.get("/")).text()
            return text if "SqsJobsStuck" in text else ""

        text = await wait_until_async(listed, 20, what="the posted alerts on the console")
        page = Page(text)
        words = page.all_text()
        # on top, before the areas, P0 first
        assert words.index("Firing alerts") < words.index(Area.SITE.value)
        order = [
            words.index(n)
            for n in ("HealthLiveFailing", "PostgresAppPoolExhausted", "SqsJobsStuck")
        ]
        assert order == sorted(order), words
        assert "PostgresAppPoolExhausted on db: PostgresAppPoolExhausted summary." in words
        hrefs = [h for c, h in page.links if c == "runbook"]
        assert f"{STACKPROBE_RUNBOOK}#postgresapppoolexhausted" in hrefs
        assert not any(h.startswith("javascript") for _, h in page.links)
    finally:
        await client.close()
        await app.stop()


async def test_an_alertmanager_that_does_not_answer_is_a_sentence_not_an_error(
    tmp_path: Path,
) -> None:
    SAYS.clear()
    port = free_port()
    app = await start(config({"alertmanager_url": f"http://127.0.0.1:{port}"}), tmp_path)
    client = WebClient(make_web_app(app, Surface(WebOptions())))
    await client.start_server()
    try:
        response = await client.get("/")
        assert response.status == 200
        text = Page(await response.text()).all_text()
        assert f"Alertmanager at http://127.0.0.1:{port}: could not read the firing alerts" in text
    finally:
        await client.close()
        await app.stop()


async def test_firing_alerts_from_prometheus_when_there_is_no_alertmanager(
    tmp_path: Path,
) -> None:
    binary = require_binary("prometheus")
    rules = tmp_path / "always.rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "always",
                        "interval": "1s",
                        "rules": [
                            {
                                "alert": "StackprobeProbesStale",
                                "expr": "vector(1)",
                                "labels": {"priority": "P2", "target": "db"},
                                "annotations": {"summary": "Runs are late."},
                            }
                        ],
                    }
                ]
            }
        )
    )
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"rule_files": [str(rules)]}))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    SAYS.clear()
    app = await start(config({"prometheus_url": f"http://127.0.0.1:{port}"}), tmp_path)
    client = WebClient(make_web_app(app, Surface(WebOptions())))
    await client.start_server()
    try:

        async def listed() -> str:
            text = await (await client.get("/")).text()
            return text if "StackprobeProbesStale" in text else ""

        text = await wait_until_async(
            listed, 30, what="Prometheus's firing alert", logs=[tmp_path / "prometheus.log"]
        )
        words = Page(text).all_text()
        assert f"from Prometheus at http://127.0.0.1:{port}" in words
        assert "P2 StackprobeProbesStale on db: Runs are late." in words
    finally:
        await client.close()
        await app.stop()
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)
        log.close()


async def test_watchdog_is_not_news_and_a_json_that_is_no_alert_list_is_no_all_clear(
    alertmanager: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    watchdog = alert("Watchdog", "none")
    async with httpx.AsyncClient() as http:
        (await http.post(f"{alertmanager}/api/v2/alerts", json=[watchdog])).raise_for_status()

    # a login proxy in front of the Alertmanager: JSON, but not the alerts API's
    async def login(_: web.Request) -> web.Response:
        return web.json_response({"login": "required"})

    proxy = web.Application()
    proxy.router.add_get("/api/v2/alerts", login)
    runner = web.AppRunner(proxy)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    SAYS.clear()
    try:
        for url, says in (
            (alertmanager, f"None firing at Alertmanager at {alertmanager}."),
            (
                f"http://127.0.0.1:{port}",
                f"Alertmanager at http://127.0.0.1:{port}: could not read the firing alerts: "
                "its answer is not the alerts API's JSON",
            ),
        ):
            app = await start(config({"alertmanager_url": url}), tmp_path)
            client = WebClient(make_web_app(app, Surface(WebOptions())))
            await client.start_server()
            try:

                async def said(client: WebClient = client, says: str = says) -> str:
                    words = Page(await (await client.get("/")).text()).all_text()
                    return words if says in words else ""

                words = await wait_until_async(said, 20, what=says)
                assert "Watchdog" not in words
            finally:
                await client.close()
                await app.stop()
    finally:
        await runner.cleanup()


async def test_a_broken_or_trickling_alert_source_costs_a_page_its_timeout_and_no_thread() -> None:
    """Not HTTP (an SSH banner), a body cut short, and headers trickled a line at a time
    for ever: each is a sentence on the page within the timeout, and the thread that read
    it is gone by then (the socket is shut down at the deadline)."""

    async def banner(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        writer.close()

    async def short(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[{")
        await writer.drain()
        writer.close()

    async def trickle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(30):  # 9 s of headers, far past the timeout, unless hung up on
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.3)
                if writer.is_closing():
                    break
        writer.close()

    threads = threading.active_count()
    handlers: set[asyncio.Task[Any]] = set()

    def tracked(peer: Any) -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            handlers.add(asyncio.current_task())  # type: ignore[arg-type]
            try:
                await peer(reader, writer)
            finally:
                writer.transport.abort()

        return handle

    for peer, said in ((banner, "not HTTP"), (short, "cut short"), (trickle, "no answer within")):
        server = await asyncio.start_server(tracked(peer), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        feed = await alert_feed.fetch(f"http://127.0.0.1:{port}", None)
        took = time.monotonic() - started

        async def ended() -> bool:
            return threading.active_count() == threads

        await wait_until_async(ended, 1, what="the reading thread to end, its peer still there")
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        assert said in feed.problem and not feed.alerts, (peer.__name__, feed)
        assert took < alert_feed.TIMEOUT_SECONDS + 0.5, (peer.__name__, took)
