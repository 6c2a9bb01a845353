"""The landing page: every target, its kind, last result, reason and age, and nothing secret.

What a target probes is shown through the target's own `describe()`, which never includes a
secret, and every free-text field passes the redactor before it is escaped.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from stackprobe._version import __version__
from stackprobe.durations import format_duration

if TYPE_CHECKING:
    from stackprobe.app import App

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
.ok{color:#1a7f37}.failed{color:#cf222e;font-weight:bold}.pending{color:#9a6700}
code{background:#f6f8fa;padding:0 .3em}
"""


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{format_duration(round(seconds))} ago"


def render_landing(app: App, *, urls: bool = True) -> str:
    """`urls=False` (`--web.landing-page=names`) leaves out what each target probes, failure
    details and the config's path and problems: names, kinds and states only."""
    now = time.time()
    esc = html.escape
    rows = []
    for target in sorted(app.scheduler.targets, key=lambda t: t.name):
        record = app.store.get(target.name)
        if record is None:
            state, reason, detail, age, took = "pending", "", "", "", ""
        else:
            state = "ok" if record.result.success else "failed"
            reason = record.result.reason or ""
            detail = app.redactor(record.result.detail) if urls else ""
            age = _age(now - record.started)
            took = f"{record.duration * 1000:.1f} ms"
        rows.append(
            "<tr>"
            f"<td>{esc(target.name)}</td><td>{esc(target.kind)}</td>"
            f"<td><code>{esc(app.redactor(target.describe())) if urls else ''}</code></td>"
            f'<td class="{state}">{state}</td><td>{esc(reason)}</td><td>{esc(detail)}</td>'
            f"<td>{esc(age)}</td><td>{esc(took)}</td>"
            f"<td>{esc(format_duration(target.interval))}</td>"
            "</tr>"
        )
    reload_note = (
        f'<p class="failed">The last config reload failed; the previous config is still '
        f"running:</p><pre>{esc(app.redactor(app.last_reload_error)) if urls else ''}</pre>"
        if app.last_reload_error
        else ""
    )
    source = esc(str(app.config_path)) if app.config_path else "built-in default"
    if not urls:
        source = "not shown"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>stackprobe</title><style>{_STYLE}</style></head>
<body><h1>stackprobe {esc(__version__)}</h1>
<p><a href="/metrics">Metrics</a> · <a href="/-/ready">Readiness</a> ·
config: <code>{source}</code> · {len(rows)} targets</p>
{reload_note}
<table><tr><th>target</th><th>kind</th><th>probes</th><th>last result</th><th>reason</th>
<th>detail</th><th>age</th><th>took</th><th>interval</th></tr>
{"".join(rows)}
</table></body></html>
"""
