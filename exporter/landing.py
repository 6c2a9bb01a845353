"""The console: the one page stackprobe shows a person. One look says what is broken, why,
since when, and which runbook section to open.

Each row's health is the kind's verdict on what it measured (an ECS service answering
DescribeServices but running 0 of 2 tasks is failing), grouped by area with the worst first.
A row links to the runbook section and dashboard panel of the alert that pages on the same
condition, as the team's deployed rules carry them (exporter/console.py), and to the target's
detail view: the last run's evidence and series, like blackbox_exporter's `?debug=true`.

Everything shown is escaped; every free-text field passes the redactor first, and what a
target probes is shown through its own `describe()`, which never includes a secret. With
`--web.landing-page=names` only names, kinds and healths are shown.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from stackprobe._version import __version__
from stackprobe.alert_feed import Feed
from stackprobe.contract import EVIDENCE_VALUE_MAX, Area, Health, Verdict
from stackprobe.durations import format_duration
from stackprobe.results import HISTORY_RUNS, TargetResult, Trail
from stackprobe.target import TargetConfig

if TYPE_CHECKING:
    from stackprobe.app import App

PENDING = "pending"
STACKPROBE_AREA = "stackprobe itself"
# Worst first: the order rows and areas are read in.
_ORDER = {Health.FAILING.value: 0, Health.DEGRADED.value: 1, PENDING: 2, Health.OK.value: 3}
_AREAS = [a.value for a in Area]
_SERIES_MAX_BYTES = 64 * 1024

_STYLE = """
:root{--ok:#1a7f37;--degraded:#9a6700;--failing:#cf222e;--pending:#6e7781;--line:#d0d7de}
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:.7em 1.5em}
header a{color:#9ecbff}header h1{display:inline;font-size:1.2em;margin-right:1em}
header code{background:#32383f;color:#fff}
main{padding:1em 1.5em}
.summary{font-size:1.15em;margin:.3em 0 1em}
section{background:#fff;border:1px solid var(--line);border-radius:6px;margin-bottom:1em}
section h2{font-size:1em;margin:0;padding:.5em .8em;border-bottom:1px solid var(--line)}
table{border-collapse:collapse;width:100%}
td,th{padding:.35em .8em;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
th{font-weight:600;color:#57606a;font-size:.9em}
.badge{display:inline-block;min-width:5.5em;text-align:center;border-radius:1em;
 padding:0 .6em;color:#fff;font-weight:600;font-size:.9em}
.badge.ok{background:var(--ok)}.badge.degraded{background:var(--degraded)}
.badge.failing{background:var(--failing)}.badge.pending{background:var(--pending)}
tr.failing td{background:#fff5f5}tr.degraded td{background:#fff8e6}
.why{max-width:40em}.sub{color:#57606a;font-size:.85em}
.strip{white-space:nowrap;line-height:1}.strip i{display:inline-block;width:4px;height:14px;
 margin-right:1px;background:var(--pending)}
.strip i.ok{background:var(--ok)}.strip i.degraded{background:var(--degraded)}
.strip i.failing{background:var(--failing)}
.alerts li{margin:.3em 0}.P0,.P1{color:var(--failing);font-weight:700}.P2{color:var(--degraded)}
.problem{color:var(--failing);font-weight:600}
code,pre{background:#f6f8fa;padding:0 .3em;font-size:.92em}pre{padding:.6em;overflow-x:auto}
"""

# Swaps <main> for a fresh one every `refresh` seconds without a full reload; without
# JavaScript the <noscript> meta refresh reloads the page instead.
_SCRIPT = """
(function(){
  var every = %d * 1000;
  function tick(){
    fetch(location.href, {headers: {'Accept': 'text/html'}, credentials: 'same-origin'})
      .then(function(r){ if (!r.ok) throw r.status; return r.text(); })
      .then(function(text){
        var doc = new DOMParser().parseFromString(text, 'text/html');
        var fresh = doc.querySelector('main');
        if (fresh) { document.querySelector('main').replaceWith(fresh); }
        if (doc.title) { document.title = doc.title; }
      })
      .catch(function(){})
      .then(function(){ setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
"""


@dataclass(frozen=True)
class Row:
    target: TargetConfig
    record: TargetResult | None
    trail: Trail | None
    area: str

    @property
    def verdict(self) -> Verdict | None:
        return None if self.record is None else self.record.result.health()

    @property
    def state(self) -> str:
        verdict = self.verdict
        return PENDING if verdict is None else verdict.health.value


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def safe_href(url: str) -> str:
    """An http(s) link, escaped; anything else (javascript:, data:) becomes no link."""
    return esc(url) if urlsplit(url).scheme in ("http", "https") else ""


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(round(seconds))


def rows(app: App) -> list[Row]:
    found = []
    for target in app.scheduler.targets:
        kind = app.kinds.get(target.kind)
        area = kind.area.value if kind is not None else STACKPROBE_AREA
        found.append(Row(target, app.store.get(target.name), app.store.trail(target.name), area))
    return sorted(found, key=lambda r: (_ORDER[r.state], r.target.name))


def counts(found: Iterable[Row]) -> dict[str, int]:
    tally = dict.fromkeys(_ORDER, 0)
    for row in found:
        tally[row.state] += 1
    return tally


def _summary(tally: dict[str, int]) -> str:
    parts = [f"{tally[s]} {s}" for s in _ORDER if tally[s]]
    return " · ".join(parts) if parts else "no targets"


def _title(tally: dict[str, int]) -> str:
    bad = [f"{tally[s]} {s}" for s in (Health.FAILING.value, Health.DEGRADED.value) if tally[s]]
    return f"stackprobe: {', '.join(bad)}" if bad else "stackprobe: all ok"


def _strip(trail: Trail | None) -> str:
    healths = trail.healths() if trail is not None else []
    cells = "".join(f'<i class="{h.value}"></i>' for h in healths)
    return f'<span class="strip" title="the last {len(healths)} runs, oldest first">{cells}</span>'


def _links(app: App, verdict: Verdict | None) -> str:
    if verdict is None or verdict.health is Health.OK or not verdict.alert:
        return ""
    links = app.config.console.links
    parts = []
    runbook = safe_href(links.runbook(verdict.alert))
    if runbook:
        parts.append(f'<a class="runbook" href="{runbook}">runbook: {esc(verdict.alert)}</a>')
    dashboard = safe_href(links.dashboard(verdict.alert))
    if dashboard:
        parts.append(f'<a class="dashboard" href="{dashboard}">dashboard</a>')
    return "<br>".join(parts)


def _link(href: str, text: str) -> str:
    """A runbook link, or its text alone when the URL was no http(s) one."""
    return f'<a class="runbook" href="{href}">{esc(text)}</a>' if href else esc(text)


def _detail_href(name: str) -> str:
    return esc(f"/target?name={quote(name, safe='')}")


def _row(app: App, row: Row, now: float, full: bool) -> str:
    target, verdict = row.target, row.verdict
    state = row.state
    if verdict is None:
        why = "no run has finished yet"
    else:
        why = app.redactor(verdict.why) if full else ""
    since = ""
    if row.trail is not None and row.trail.runs:
        since = f"{state} for {_ago(now - row.trail.since)}"
    labels = ", ".join(f"{k}={v}" for k, v in target.series_labels)
    described = app.redactor(target.describe()) if full else ""
    described = described.removeprefix(f"{target.kind} ")  # some say their kind first
    sub = " · ".join(esc(part) for part in (target.kind, described, labels) if part)
    reason = ""
    if full and row.record is not None and row.record.result.reason:
        reason = f'<div class="sub">run failed: {esc(row.record.result.reason)}</div>'

    name = esc(target.name)
    if full:
        name = f'<a href="{_detail_href(target.name)}">{name}</a>'
    last = ""
    if row.record is not None:
        last = f"{_ago(now - row.record.started)} ago, took {row.record.duration * 1000:.0f} ms"
    return (
        f'<tr class="{state}"><td><span class="badge {state}">{state}</span></td>'
        f'<td>{name}<div class="sub">{sub}</div></td>'
        f'<td class="why">{esc(why)}{reason}</td><td>{esc(since)}</td><td>{_strip(row.trail)}</td>'
        f"<td>{_links(app, verdict)}</td>"
        f'<td class="sub">{esc(last)}</td></tr>'
    )


def _areas(app: App, found: Sequence[Row], now: float, full: bool) -> str:
    by_area: dict[str, list[Row]] = {}
    for row in found:
        by_area.setdefault(row.area, []).append(row)

    def rank(area: str) -> tuple[int, int]:
        worst = min(_ORDER[r.state] for r in by_area[area])
        return worst, _AREAS.index(area) if area in _AREAS else len(_AREAS)

    sections = []
    for area in sorted(by_area, key=rank):
        members = by_area[area]
        tally = counts(members)
        body = "".join(_row(app, r, now, full) for r in members)
        sections.append(
            f'<section class="area"><h2>{esc(area)} <span class="sub">{esc(_summary(tally))}'
            "</span></h2><table><tr><th>health</th><th>target</th><th>why</th><th>since</th>"
            f"<th>last {HISTORY_RUNS} runs</th><th>runbook</th><th>last run</th></tr>"
            f"{body}</table></section>"
        )
    return "".join(sections)


def _itself(app: App, found: Sequence[Row], full: bool) -> str:
    """stackprobe's own state: a failed reload runs the old config; pending targets."""
    lines = []
    runbook = safe_href(app.config.console.links.runbook("StackprobeConfigReloadFailed"))
    if app.last_reload_error:
        error = esc(app.redactor(app.last_reload_error)) if full else ""
        lines.append(
            '<tr class="failing"><td><span class="badge failing">failing</span></td>'
            "<td>config reload</td><td>The last config reload failed; the previous config is still "
            f"running<pre>{error}</pre></td><td></td><td></td>"
            f"<td>{_link(runbook, 'runbook: StackprobeConfigReloadFailed')}</td><td></td></tr>"
        )
    pending = sum(1 for r in found if r.record is None)
    state = "pending" if pending else "ok"
    lines.append(
        f'<tr class="{state}"><td><span class="badge {state}">{state}</span></td>'
        f"<td>probes</td><td>{len(found) - pending} of {len(found)} targets have a result; "
        f"up {esc(_ago(time.time() - app.started))}</td><td></td><td></td><td></td><td></td></tr>"
    )
    view = app.cluster.view
    if len(view.members) > 1:  # a replica's page shows its own share of the targets
        me = view.identity.rsplit("/", 1)[-1]  # an ECS task's id, not its whole ARN
        configured = len(app.config.targets)
        lines.append(
            '<tr class="ok"><td><span class="badge ok">ok</span></td><td>cluster</td>'
            f"<td>replica {esc(me)}, one of {len(view.members)}: it probes {len(found)} of the "
            f"config's {configured} targets; the other replicas' pages show the rest</td>"
            "<td></td><td></td><td></td><td></td></tr>"
        )
    return (
        f'<section class="area itself"><h2>{STACKPROBE_AREA}</h2><table>{"".join(lines)}'
        "</table></section>"
    )


def _alerts(feed: Feed | None, now: float) -> str:
    if feed is None:
        return ""
    if feed.problem:
        return (
            f'<section class="alerts"><h2>Firing alerts</h2><p class="problem">{esc(feed.source)}'
            f": {esc(feed.problem)}</p></section>"
        )
    if not feed.alerts:
        return (
            f'<section class="alerts"><h2>Firing alerts</h2><p>None firing at '
            f"{esc(feed.source)}.</p></section>"
        )
    items = []
    for alert in feed.alerts:
        runbook = safe_href(alert.runbook)
        link = f' <a class="runbook" href="{runbook}">runbook</a>' if runbook else ""
        since = f" · for {_ago(now - alert.since)}" if alert.since else ""
        on = f" on <b>{esc(alert.target)}</b>" if alert.target else ""
        items.append(
            f'<li><span class="{esc(alert.priority)}">{esc(alert.priority or "-")}</span> '
            f"<b>{esc(alert.name)}</b>{on}: {esc(alert.summary)}{link}"
            f'<span class="sub">{esc(since)}</span></li>'
        )
    more = f"<p>and {feed.more} more</p>" if feed.more else ""
    return (
        f'<section class="alerts"><h2>Firing alerts <span class="sub">from {esc(feed.source)}'
        f'</span></h2><ul class="alerts">{"".join(items)}</ul>{more}</section>'
    )


def _source(app: App, full: bool) -> str:
    if not full:
        return "not shown"
    return esc(app.config_path) if app.config_path else "built-in default"


def _page(app: App, title: str, main: str, full: bool) -> str:
    refresh = round(app.config.console.refresh)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>
<style>{_STYLE}</style></head>
<body><header><h1><a href="/" style="color:#fff;text-decoration:none">stackprobe</a></h1>
{esc(__version__)} · config <code>{_source(app, full)}</code> ·
<a href="/metrics">metrics</a> · <a href="/-/ready">readiness</a></header>
{main}
<script>{_SCRIPT % refresh}</script>
</body></html>
"""


def render_landing(app: App, *, urls: bool = True, feed: Feed | None = None) -> str:
    """The console. `urls=False` (`--web.landing-page=names`) leaves out what each target
    probes, why it is unhealthy, the detail view and the config's path and problems."""
    now = time.time()
    found = rows(app)
    tally = counts(found)
    main = (
        f'<main><p class="summary">{len(found)} targets: {esc(_summary(tally))}</p>'
        f"{_alerts(feed, now)}{_areas(app, found, now, urls)}{_itself(app, found, urls)}</main>"
    )
    return _page(app, _title(tally), main, urls)


def render_target(app: App, name: str) -> str | None:
    """One target's detail view: its verdict, the last run's evidence and every series it
    exports; None when no target has that name."""
    target = next((t for t in app.scheduler.targets if t.name == name), None)
    if target is None:
        return None
    now = time.time()
    record = app.store.get(name)
    trail = app.store.trail(name)
    kind = app.kinds.get(target.kind)
    row = Row(target, record, trail, kind.area.value if kind else STACKPROBE_AREA)
    redact = app.redactor
    facts = [
        ("kind", target.kind),
        ("probes", redact(target.describe())),
        ("labels", ", ".join(f"{k}={v}" for k, v in target.series_labels)),
        (
            "interval",
            f"{format_duration(target.interval)}, timeout {format_duration(target.timeout)}",
        ),
    ]
    verdict = row.verdict
    if record is not None and verdict is not None:
        facts += [
            ("health", f"{verdict.health.value}: {redact(verdict.why) or 'nothing wrong seen'}"),
            ("alert", verdict.alert or "none"),
            ("last run", f"{_ago(now - record.started)} ago, took {record.duration * 1000:.1f} ms"),
            ("outcome", "measured" if record.result.success else f"failed: {record.result.reason}"),
            ("detail", redact(record.result.detail)),
        ]
    if trail is not None and trail.runs:
        facts.append(("since", f"{row.state} for {_ago(now - trail.since)}"))
    fact_rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts if v)
    evidence = ""
    if record is not None and record.result.evidence:
        lines = "".join(
            f"<tr><th>{esc(k)}</th><td><code>{esc(_cut(redact(v)))}</code></td></tr>"
            for k, v in record.result.evidence
        )
        evidence = f"<section><h2>What the last run saw</h2><table>{lines}</table></section>"
    series = ""
    if record is not None:
        text = b"".join(record.chunks.values())[:_SERIES_MAX_BYTES].decode("utf-8", "replace")
        series = (
            "<section><h2>Its series, as /metrics shows them</h2>"
            f"<pre>{esc(redact(text))}</pre></section>"
        )
    main = (
        f'<main><p class="summary"><a href="/">← all targets</a></p>'
        f'<section><h2><span class="badge {row.state}">{row.state}</span> {esc(name)} '
        f"{_strip(trail)}</h2><table>{fact_rows}</table><p>{_links(app, verdict)}</p></section>"
        f"{evidence}{series}</main>"
    )
    return _page(app, f"stackprobe: {name} {row.state}", main, True)


def _cut(value: str) -> str:
    return value if len(value) <= EVIDENCE_VALUE_MAX else value[:EVIDENCE_VALUE_MAX] + " …"
