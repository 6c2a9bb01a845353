"""`stackprobe demo --with-alerts`: Debian's Prometheus with the shipped alert rules and its
Alertmanager with the example routing, beside the demo, and the webhook receiver their pages
reach (it logs each one). Also the time shortening tests/support/e2e_stack.py plays the
runbooks' incidents with.

The rules run on a faster clock, so a fault becomes a page within a minute or two: every `for`,
range and offset is divided by `speed` (60 for a demo probing each second: 15m becomes 15s, 1d
24m) and each `for` gets `slack` seconds more, and `slack` again for each cause above it in the
routing's inhibitions; each `keep_firing_for` likewise, with `slack` again for each level of
alerts it mutes. The expressions are otherwise as shipped. A rule that compares with
yesterday compares with 24 minutes ago, which Prometheus learns from a block backfilled by
promtool (`backfill`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
import yaml
from aiohttp import web

from stackprobe.demo.datastores import free_port, stop_process
from stackprobe.durations import format_duration, parse_duration

DAY = 86400.0
PRIORITIES = ("P0", "P1", "P2", "P3")
# Where Debian puts the binaries, for a PATH without /usr/sbin (root's PATH in a container).
BINARY_DIRS = ("/usr/sbin", "/usr/bin")
INSTALL = "apt-get install prometheus prometheus-alertmanager"
START_SECONDS = 60.0  # Prometheus replays its write-ahead log before it is ready
# Prometheus scrapes stackprobe and evaluates the rules this often (as tests/e2e does).
EVALUATION = "1s"
# The rules' ranges are seconds long on the demo clock; three hours keep yesterday (24 minutes
# ago) and bound the disk a demo left running for days uses.
RETENTION = "3h"
# What a notification's line keeps of each value it logs (they come from the network).
LOGGED_MAX = 200
# What Prometheus and Alertmanager get of the demo's environment: none of its secrets
# (PGPASSWORD, POSTGRES_DSN, REDIS_URL, AWS_*), only what a process needs to run.
_CHILD_ENVIRONMENT = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"})
_DURATION = r"\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*"


# -- the faster clock -------------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """How fast the rules' time runs: `speed` times faster, each `for` `slack` seconds longer."""

    speed: float = 1.0
    slack: float = 0.0

    def wait(self, for_seconds: float, causes: int = 0) -> float:
        """A rule's `for`, in seconds on this clock, for an alert with `causes` inhibitions
        above it (`muting_depths`): each adds `slack`, so a cause still fires before the
        symptom it mutes when one minute of margin there is one second here, less than a
        probe run, a scrape and an evaluation can put between two alerts."""
        return self.slack * (1 + causes) + for_seconds / self.speed if for_seconds else 0.0

    def keep(self, keep_seconds: float, mutes: int = 0) -> float:
        """A rule's `keep_firing_for`, in seconds on this clock, for an alert that mutes
        chains `mutes` long (`muted_heights`): each adds `slack`, as in `wait`, so what a cause
        mutes still clears before it on the way back."""
        return self.slack * (1 + mutes) + keep_seconds / self.speed if keep_seconds else 0.0

    def range(self, seconds: float) -> float:
        return seconds / self.speed

    def label(self) -> str:
        return (
            f"demo clock: 1 minute of the rules' time is {format_duration(60 / self.speed)}, "
            f"and every `for:` and `keep_firing_for:` waits {format_duration(self.slack)} "
            "more (and as much again for each level of alerts that mute it, or it mutes)"
        )


PRODUCTION = Clock()


def demo_clock(interval: float) -> Clock:
    """A minute of the rules' time per probe run (never under a second: Prometheus's step
    here), and five runs more on every `for`, so one slow run on a busy machine pages no more
    here than one slow minute would there. Added, not a floor: a floor would give 2m and 5m
    the same wait, and a cause (AlbMostRequests5xx, 2m) must still fire before the symptom it
    mutes (AlbHigh5xxRate, 5m), as it does there."""
    step = max(interval, 1.0)
    return Clock(speed=60.0 / step, slack=5.0 * step)


def resend_delay(speed: float) -> str:
    """Prometheus's `--rules.alert.resend-delay` (1m) on the faster clock. Alertmanager
    forgets a resolved alert it had to mute when it resolved (its cause still firing), and
    hears of it again at Prometheus's next resend: on the demo clock that is a second, as the
    minute is in production, not a minute of a faster incident."""
    return faster("1m", speed)


def faster(duration: str, speed: float, floor: float = 1.0) -> str:
    """A rule's duration on the faster clock, never under `floor` (a second: Prometheus's
    step)."""
    seconds = parse_duration(duration)
    return format_duration(max(floor, seconds / speed)) if seconds else duration


def faster_expr(expr: str, speed: float) -> str:
    # predict_linear's horizon is in seconds, not a duration: `4 * 3600` becomes 4 minutes
    expr = re.sub(r"(\d+) \* 3600\)", rf"\1 * 3600 / {speed:g})", expr)
    expr = re.sub(
        rf"\[({_DURATION})(?::({_DURATION})?)?\]",
        lambda m: f"[{faster(m[1], speed)}" + (f":{faster(m[2], speed)}" if m[2] else "") + "]",
        expr,
    )
    return re.sub(rf"\boffset ({_DURATION})", lambda m: f"offset {faster(m[1], speed)}", expr)


# What StackprobeDown mutes are the series it stops exporting, which go stale rather than
# fire: it is no cause to wait for.
STALE_CAUSES = frozenset({"StackprobeDown"})


def selected(matchers: Iterable[str], rules: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The alerts (rules by name) a list of Alertmanager matchers selects, by alertname and
    the labels the rules set."""
    found = set(rules)
    for matcher in matchers:
        parsed = re.fullmatch(r'(\w+)\s*(=~|!=|=)\s*"?([^"]*)"?', matcher)
        if parsed is None:
            raise ValueError(f"not an Alertmanager matcher: {matcher!r}")
        label, op, value = parsed.groups()

        def has(name: str, label: str = label) -> str:
            return (
                name if label == "alertname" else str(rules[name].get("labels", {}).get(label, ""))
            )

        if op == "=":
            found = {n for n in found if has(n) == value}
        elif op == "=~":
            found = {n for n in found if re.fullmatch(value, has(n))}
        else:
            found = {n for n in found if has(n) != value}
    return found


def muting_pairs(
    rules: Mapping[str, Mapping[str, Any]], inhibit_rules: Iterable[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """Every (cause, symptom) the inhibitions pair, sorted: the cause's alert mutes the
    symptom's. StackprobeDown is no cause (`STALE_CAUSES`)."""
    pairs: set[tuple[str, str]] = set()
    for inhibition in inhibit_rules:
        causes = selected(inhibition.get("source_matchers", ()), rules) - STALE_CAUSES
        for symptom in selected(inhibition.get("target_matchers", ()), rules):
            pairs.update((cause, symptom) for cause in causes - {symptom})
    return sorted(pairs)


def _muting(
    rules: Mapping[str, Mapping[str, Any]], inhibit_rules: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Each alert's causes (the alerts whose inhibitions mute it) and its symptoms."""
    above: dict[str, set[str]] = {name: set() for name in rules}
    below: dict[str, set[str]] = {name: set() for name in rules}
    for cause, symptom in muting_pairs(rules, inhibit_rules):
        above[symptom].add(cause)
        below[cause].add(symptom)
    return above, below


def _longest(links: Mapping[str, set[str]]) -> dict[str, int]:
    """For each alert, the longest chain of `links` from it; a cycle counts once."""
    lengths: dict[str, int] = {}

    def length(name: str, seen: frozenset[str]) -> int:
        if name not in lengths:
            lengths[name] = max(
                (length(n, seen | {name}) + 1 for n in links[name] - seen), default=0
            )
        return lengths[name]

    for name in links:
        length(name, frozenset())
    return lengths


def muting_depths(
    rules: Mapping[str, Mapping[str, Any]], inhibit_rules: Iterable[Mapping[str, Any]]
) -> dict[str, int]:
    """For each alert, the longest chain of causes whose inhibitions mute it: 0 for an alert
    nothing mutes, 1 for AlbNoHealthyTargets under EcsServiceNoRunningTasks, 2 for what that
    symptom mutes in turn."""
    return _longest(_muting(rules, inhibit_rules)[0])


def muted_heights(
    rules: Mapping[str, Mapping[str, Any]], inhibit_rules: Iterable[Mapping[str, Any]]
) -> dict[str, int]:
    """For each alert, the longest chain of symptoms it mutes: 0 for an alert that mutes
    nothing, 1 for EcsServiceNoRunningTasks over AlbNoHealthyTargets."""
    return _longest(_muting(rules, inhibit_rules)[1])


def faster_rules(
    rule_files: Iterable[Path],
    out: Path,
    speed: float,
    slack: float = 5.0,
    label: str = "",
    inhibit_rules: Iterable[Mapping[str, Any]] = (),
) -> list[Path]:
    """The rule files on the faster clock, written to `out` (a new folder): each `for` as
    `Clock.wait` has it, counting the causes above each alert in `inhibit_rules` (the
    routing's), and each `keep_firing_for` as `Clock.keep` has it, counting the symptoms
    below. With `label`, each
    file starts with it as a comment and its groups' names end in `-demo-clock`, so no one
    mistakes them for rules to deploy. Annotations (the runbook links) are kept."""
    out.mkdir()
    clock = Clock(speed, slack)
    paths = list(rule_files)
    documents = [yaml.safe_load(path.read_text()) for path in paths]
    alerts = {
        rule["alert"]: rule
        for document in documents
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    inhibit_rules = list(inhibit_rules)
    depths = muting_depths(alerts, inhibit_rules)
    heights = muted_heights(alerts, inhibit_rules)
    written = []
    for path, document in zip(paths, documents, strict=True):
        for group in document["groups"]:
            if label:
                group["name"] = f"{group['name']}-demo-clock"
            for rule in group["rules"]:
                rule["expr"] = faster_expr(rule["expr"], speed)
                if "for" in rule:
                    causes = depths.get(rule.get("alert", ""), 0)
                    rule["for"] = format_duration(clock.wait(parse_duration(rule["for"]), causes))
                if "keep_firing_for" in rule:
                    mutes = heights.get(rule.get("alert", ""), 0)
                    rule["keep_firing_for"] = format_duration(
                        clock.keep(parse_duration(rule["keep_firing_for"]), mutes)
                    )
        target = out / path.name
        header = "".join(f"# {line}\n" for line in label.splitlines()) if label else ""
        target.write_text(header + yaml.safe_dump(document, sort_keys=False))
        written.append(target)
    return written


def timing(config: dict[str, Any]) -> None:
    """The example routing's waits, shorter: a group waits 10 s, as the example's pager routes
    do (here a minute of `for` is a second, but a cause is still seen seconds after its
    symptom when their probes run apart: the wait lets it mute the symptom), and repeats
    changes every 2 s."""
    route = config["route"]
    for node in [route, *route.get("routes", ())]:
        if "group_wait" in node:
            node["group_wait"] = "10s"
        if "group_interval" in node:
            node["group_interval"] = "2s"
    route.setdefault("group_interval", "2s")


def backfill(
    promtool: str,
    data: Path,
    work: Path,
    name: str,
    labels: Mapping[str, str],
    value: float,
    speed: float,
) -> None:
    """What Prometheus scraped "yesterday" on the faster clock (24 minutes ago at 60 times):
    the series `name{labels}` at `value`, every 15 s from 1 7/8 to 1/2 of a day ago, written
    into `data` as a block before Prometheus starts."""
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    day = DAY / speed
    now = int(time.time())
    lines = [
        f"{name}{{{selector}}} {value} {t}"
        for t in range(now - round(day * 15 / 8), now - round(day / 2), 15)
    ]
    source = work / "yesterday.om"
    source.write_text(f"# TYPE {name} gauge\n" + "\n".join(lines) + "\n# EOF\n")
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )


# -- the shipped rules and routing, as the banner reads them ----------------------------------


@dataclass(frozen=True)
class AlertRule:
    name: str
    priority: str  # the default the rule's label gives ("P0"), or "" for none (Watchdog)
    for_seconds: float
    # fed by the cloudwatch kind: its figures arrive a CloudWatch period (and delay) late
    cloudwatch: bool
    # fed by the logs kind: a line is counted its `ingestion_lag` late
    logs: bool = False
    # an alert on nothing happening over a range (SqsJobsStuck: nothing deleted in 15m)
    # is true only once the range has passed
    fill_seconds: float = 0.0
    # the causes above it in the routing's inhibitions (`muting_depths`)
    causes: int = 0


def shipped_rules() -> Path | None:
    """The alert_rules/ folder: beside the package in a checkout (an editable install), else
    in the current folder; None when neither holds one."""
    here = Path(__file__).resolve().parent.parent / "alert_rules"
    for folder in (here, Path.cwd() / "alert_rules"):
        if (folder / "alertmanager.yml").is_file() and any(folder.glob("*.rules.yml")):
            return folder
    return None


def read_alerts(
    folder: Path, cloudwatch_series: Iterable[str] = (), logs_series: Iterable[str] = ()
) -> dict[str, AlertRule]:
    """Every alert rule in the folder's *.rules.yml; `cloudwatch_series` and `logs_series`
    are the names that make an alert CloudWatch-fed or logs-fed, through any recording rule
    it uses. The causes above each come from the folder's alertmanager.yml."""
    records: dict[str, str] = {}
    alerts: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    records[rule["record"]] = rule["expr"]
                else:
                    alerts.append(rule)
    watched, logged = set(cloudwatch_series), set(logs_series)

    def names(expr: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
        for record in found & records.keys() - seen:
            found |= names(records[record], seen | {record})
        return found

    routes = folder / "alertmanager.yml"
    inhibit_rules = (
        yaml.safe_load(routes.read_text()).get("inhibit_rules", ()) if routes.is_file() else ()
    )
    depths = muting_depths({rule["alert"]: rule for rule in alerts}, inhibit_rules)
    rules = {}
    for rule in alerts:
        priority = re.search(r'"(P\d)"', str(rule.get("labels", {}).get("priority", "")))
        quiet = re.findall(rf"max_over_time\([^()\[]+\[({_DURATION})\]\)[^=]*?== 0", rule["expr"])
        rules[rule["alert"]] = AlertRule(
            name=rule["alert"],
            priority=priority[1] if priority else "",
            for_seconds=parse_duration(rule["for"]) if "for" in rule else 0.0,
            cloudwatch=bool(names(rule["expr"]) & watched),
            logs=bool(names(rule["expr"]) & logged),
            fill_seconds=max((parse_duration(d) for d in quiet), default=0.0),
            causes=depths[rule["alert"]],
        )
    return rules


def routing(folder: Path, hooks: str) -> dict[str, Any]:
    """The example routing as shipped, each receiver a webhook at `hooks`/<receiver name>."""
    config: dict[str, Any] = yaml.safe_load((folder / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", ()):
            hook["url"] = f"{hooks}/{receiver['name']}"
    config["templates"] = [str(folder / "templates" / "*.tmpl")]
    return config


def group_waits(config: Mapping[str, Any]) -> dict[str, float]:
    """How long the routing holds each priority's first page (`group_wait`)."""
    route = config["route"]
    default = parse_duration(route.get("group_wait", "30s"))
    waits = {}
    for priority in PRIORITIES:
        routes = route.get("routes", ())
        node: Mapping[str, Any] = next(
            (n for n in routes if f'priority="{priority}"' in n.get("matchers", ())), {}
        )
        waits[priority] = parse_duration(node["group_wait"]) if "group_wait" in node else default
    return waits


@dataclass(frozen=True)
class Pace:
    """What a page waits for besides its rule's `for`: a probe run, CloudWatch's lag for
    CloudWatch-fed alerts and the logs' for logs-fed ones, a range to pass for an alert on
    nothing happening, and the routing's group_wait."""

    clock: Clock
    interval: float  # the probes'
    cloudwatch_lag: float  # a period's figure is read once it has closed (and its delay)
    group_wait: Mapping[str, float]
    logs_lag: float = 0.0  # a log line is counted once it is `ingestion_lag` old

    def page_after(self, rule: AlertRule) -> float:
        lag = self.cloudwatch_lag if rule.cloudwatch else self.logs_lag if rule.logs else 0.0
        wait = self.clock.range(rule.fill_seconds) + self.clock.wait(rule.for_seconds, rule.causes)
        return self.interval + lag + wait + self.group_wait.get(rule.priority, 0.0)


def about(seconds: float) -> str:
    """A wait as a person reads it: "~35 s", "~4 min", "~2 h"."""
    if seconds < 100:
        return f"~{max(5, round(seconds / 5) * 5)} s"
    if seconds < 100 * 60:
        return f"~{round(seconds / 60)} min"
    return f"~{round(seconds / 3600)} h"


# -- the binaries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    prometheus: str
    promtool: str
    alertmanager: str
    rules: Path  # the shipped alert_rules/ folder


def _binary(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next(
            (f"{d}/{name}" for d in BINARY_DIRS if os.access(f"{d}/{name}", os.X_OK)), None
        )
        if found:
            return found
    return None


def find_tools() -> Tools | str:
    """What --with-alerts runs, or one line saying what is missing and how to get it."""
    found = {
        "prometheus": _binary("prometheus"),
        "promtool": _binary("promtool"),
        "prometheus-alertmanager": _binary("prometheus-alertmanager", "alertmanager"),
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        return (
            f"--with-alerts runs Prometheus and Alertmanager, and {', '.join(missing)} {verb} "
            f"not installed: {INSTALL}"
        )
    rules = shipped_rules()
    if rules is None:
        return (
            "--with-alerts needs the shipped alert_rules/ folder: run it from a stackprobe "
            "checkout (make demo-alerts)"
        )
    prometheus, promtool, alertmanager = found.values()
    assert prometheus and promtool and alertmanager
    return Tools(prometheus, promtool, alertmanager, rules)


# -- running them -----------------------------------------------------------------------------


class AlertingError(Exception):
    """Prometheus or Alertmanager did not start; the message says why."""


def notification(receiver: str, payload: Any) -> dict[str, str]:
    """What the demo's log line says of one webhook notification from Alertmanager."""
    body = payload if isinstance(payload, dict) else {}
    alerts = [a for a in body.get("alerts") or () if isinstance(a, dict)]
    first: dict[str, Any] = alerts[0] if alerts else {}
    labels = _mapping(first.get("labels"))
    notes = _mapping(first.get("annotations"))
    fields = {
        "receiver": receiver,
        "status": body.get("status", ""),
        "alertname": labels.get("alertname", ""),
        "priority": labels.get("priority", ""),
        "target": labels.get("target", ""),
        "alerts": len(alerts),
        "runbook_url": notes.get("runbook_url") or labels.get("runbook_url", ""),
    }
    return {key: str(value)[:LOGGED_MAX] for key, value in fields.items()}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def receiver_app() -> web.Application:
    """The far end of every webhook receiver of the routing: one log line per notification."""
    log = structlog.get_logger("stackprobe.demo.alerts")

    async def receive(request: web.Request) -> web.Response:
        if "Origin" in request.headers:  # a web page's script, not Alertmanager
            return web.Response(status=403, text="no notifications from web pages")
        try:
            payload = await request.json()
        except ValueError:
            return web.Response(status=400, text="expected Alertmanager's webhook JSON")
        log.info("alert notification", **notification(request.match_info["receiver"], payload))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{receiver}", receive)
    return app


@dataclass(frozen=True)
class Yesterday:
    """A series Prometheus should have scraped a (shortened) day ago, at `value`."""

    name: str
    labels: Mapping[str, str]
    value: float


class Alerting:
    """Prometheus and Alertmanager as children of the demo, in `work` (a folder of the
    demo's temporary one), stopped by `stop`."""

    def __init__(
        self, tools: Tools, work: Path, scrape: str, interval: float, yesterday: Sequence[Yesterday]
    ) -> None:
        self.tools = tools
        self.work = work
        self.scrape = scrape  # stackprobe's /metrics, host:port
        self.clock = demo_clock(interval)
        self.yesterday = yesterday
        self.rules = work / "rules"
        self.prometheus_url = f"http://127.0.0.1:{free_port()}"
        self.alertmanager_url = f"http://127.0.0.1:{free_port()}"
        self.receiver_url = ""
        self.logs = {name: work / f"{name}.log" for name in ("prometheus", "alertmanager")}
        self._processes: list[subprocess.Popen[bytes]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.work.mkdir()
        self._runner = web.AppRunner(receiver_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.receiver_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        # not abandoned half-way when the demo is stopped meanwhile: the thread would start
        # processes after `stop` has run
        starting = asyncio.ensure_future(asyncio.to_thread(self._write_and_start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await starting
            raise
        except subprocess.CalledProcessError as exc:
            said = (exc.stderr or b"").decode(errors="replace").strip().splitlines() or [exc]
            raise AlertingError(f"promtool could not write yesterday's block: {said[-1]}") from None
        for name, process in zip(("alertmanager", "prometheus"), self._processes, strict=True):
            url = self.alertmanager_url if name == "alertmanager" else self.prometheus_url
            await self._ready(name, process, f"{url}/-/ready")

    def _write_and_start(self) -> None:
        """Blocking: the configs, yesterday's block, and the two processes."""
        label = (
            f"stackprobe demo: {self.clock.label()}.\n"
            f"These are the rules of {self.tools.rules} on that clock, for the demo only:\n"
            "deploy the shipped files, never these."
        )
        files = sorted(self.tools.rules.glob("*.rules.yml"))
        routes = routing(self.tools.rules, self.receiver_url)
        written = faster_rules(
            files,
            self.rules,
            self.clock.speed,
            self.clock.slack,
            label,
            routes.get("inhibit_rules", ()),
        )
        timing(routes)
        (self.work / "alertmanager.yml").write_text(yaml.safe_dump(routes, sort_keys=False))
        data = self.work / "prometheus-data"
        for series in self.yesterday:
            labels = {**series.labels, "instance": self.scrape, "job": "stackprobe"}
            backfill(
                self.tools.promtool,
                data,
                self.work,
                series.name,
                labels,
                series.value,
                self.clock.speed,
            )
        prometheus = {
            "global": {"scrape_interval": EVALUATION, "evaluation_interval": EVALUATION},
            "rule_files": [str(p) for p in written],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [_host_port(self.alertmanager_url)]}]}
                ]
            },
            "scrape_configs": [
                {"job_name": "stackprobe", "static_configs": [{"targets": [self.scrape]}]}
            ],
        }
        (self.work / "prometheus.yml").write_text(yaml.safe_dump(prometheus, sort_keys=False))
        self._spawn(
            "alertmanager",
            [
                self.tools.alertmanager,
                f"--config.file={self.work / 'alertmanager.yml'}",
                f"--storage.path={self.work / 'alertmanager-data'}",
                f"--web.listen-address={_host_port(self.alertmanager_url)}",
                "--cluster.listen-address=",  # one Alertmanager: no gossip port
            ],
        )
        self._spawn(
            "prometheus",
            [
                self.tools.prometheus,
                f"--config.file={self.work / 'prometheus.yml'}",
                f"--storage.tsdb.path={data}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--web.listen-address={_host_port(self.prometheus_url)}",
                f"--rules.alert.resend-delay={resend_delay(self.clock.speed)}",
            ],
        )

    def _spawn(self, name: str, args: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k in _CHILD_ENVIRONMENT}
        with self.logs[name].open("wb") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self._processes.append(process)

    async def _ready(self, name: str, process: subprocess.Popen[bytes], url: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_SECONDS
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if process.poll() is not None:
                    raise AlertingError(
                        f"{name} exited with {process.returncode}: {self._tail(name)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                if loop.time() > deadline:
                    raise AlertingError(
                        f"{name} is not ready after {START_SECONDS:g} s: {self._tail(name)}"
                    )
                await asyncio.sleep(0.2)

    def _tail(self, name: str) -> str:
        try:
            lines = self.logs[name].read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:]) or "(nothing logged)"

    async def stop(self) -> None:
        """Prometheus first (it sends to Alertmanager), then Alertmanager, then the receiver."""
        for process in reversed(self._processes):
            await asyncio.to_thread(stop_process, process)
        self._processes.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _host_port(url: str) -> str:
    return url.removeprefix("http://")
