"""Runbook links: GitHub's heading anchors, checking that every alert's link lands on a
heading, and rendering the rules with a team's own runbook URLs.

An alert that links to an anchor the runbook does not have opens the top of a long page at
3 a.m.; `stackprobe runbook check` fails on it before it ships. Anchors follow GitHub's own
algorithm (github-slugger): lower-case; drop every character that is not a letter, a mark, a
number, a connector (`_`), a space or `-`, Unicode-aware; each space becomes `-`; nothing is
collapsed or trimmed; a repeated slug gets `-1`, `-2`, ...
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import yaml

# Letters, marks, decimal and letter numbers, connector punctuation (`_`); github-slugger
# drops other numbers (`²`, `½`) like any symbol.
_KEPT = ("L", "M", "Nd", "Nl", "Pc")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
# A line a setext underline can turn into a heading: paragraph text, not a list item, a
# quote, a table row or indented code.
_PARAGRAPH = re.compile(r"^ {0,3}(?![-*+] |\d+[.)] |>|\|)\S")
_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])")
_AUTOLINK = re.compile(r"<((?:https?|mailto|ftp):[^>\s]*)>")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^>]*)?/?>")
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_EMPHASIS = re.compile(r"(?<![\w\\])(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1(?!\w)")


def slug(heading: str) -> str:
    """GitHub's anchor for one heading's text, before de-duplication."""
    kept = []
    for char in heading.lower():
        if char in (" ", "-") or unicodedata.category(char).startswith(_KEPT):
            kept.append("-" if char == " " else char)
    return "".join(kept)


def _plain(text: str) -> str:
    """The heading's text as GitHub renders it, which is what it slugs: code spans verbatim,
    the text of links, no emphasis markers or tags, escapes and entities resolved."""
    pieces = []
    position = 0
    for code in _CODE.finditer(text):
        pieces.append(_inline(text[position : code.start()]))
        pieces.append(code.group(2))
        position = code.end()
    pieces.append(_inline(text[position:]))
    return "".join(pieces).strip()


def _inline(text: str) -> str:
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _AUTOLINK.sub(lambda m: m.group(1), text)
    text = _TAG.sub("", text)
    previous = None
    while previous != text:  # nested emphasis, outermost first
        previous, text = text, _EMPHASIS.sub(lambda m: m.group(2), text)
    text = _ESCAPE.sub(lambda m: m.group(1), text)
    return html.unescape(text)


def headings(markdown: str) -> Iterator[str]:
    """Each heading's text (ATX and setext), outside fenced code blocks."""
    fence = ""
    previous = ""
    for line in markdown.splitlines():
        opened = _FENCE.match(line)
        if fence:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = ""
            previous = ""
            continue
        if opened:
            fence = opened.group(1)
            previous = ""
            continue
        atx = _ATX.match(line)
        if atx:
            yield _plain(atx.group(2) or "")
            previous = ""
        elif _SETEXT.match(line) and _PARAGRAPH.match(previous):
            yield _plain(previous)
            previous = ""
        else:
            previous = line


def anchors(markdown: str) -> list[str]:
    """Every anchor GitHub gives the document's headings, in order, duplicates numbered."""
    seen: dict[str, int] = {}
    found = []
    for text in headings(markdown):
        base = slug(text)
        anchor = base
        while anchor in seen:
            seen[base] += 1
            anchor = f"{base}-{seen[base]}"
        seen[anchor] = 0
        found.append(anchor)
    return found


@dataclass(frozen=True)
class Alert:
    file: Path
    name: str
    rule: Mapping[str, Any]


def alerts(rules_dir: Path) -> list[Alert]:
    """Every alerting rule of every rule file in the folder, in file order."""
    found = []
    for path in sorted(rules_dir.glob("*.rules.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in document.get("groups", ()):
            for rule in group.get("rules", ()):
                if "alert" in rule:
                    found.append(Alert(path, str(rule["alert"]), rule))
    return found


@dataclass
class CheckResult:
    checked: int  # alerts whose link points into the runbook
    problems: list[str]


def check(rules_dir: Path, runbook: Path, url_prefix: str | None = None) -> CheckResult:
    """Problems with the alerts' runbook links, one sentence each; none means all resolve.

    A link is checked when it points into `runbook`: it starts with `url_prefix` when one is
    given, else its path ends with the runbook's file name. Links elsewhere (alerts a team
    left on stackprobe's own runbook) are not this runbook's to check; an alert with no link
    at all is always a problem."""
    known = set(anchors(runbook.read_text(encoding="utf-8")))
    problems = []
    checked = 0
    for alert in alerts(rules_dir):
        url = str(alert.rule.get("annotations", {}).get("runbook_url", ""))
        where = f"{alert.file.name}: {alert.name}"
        if not url:
            problems.append(f"{where}: no runbook_url annotation")
            continue
        address, fragment = urldefrag(url)
        ours = address.startswith(url_prefix) if url_prefix else address.endswith(runbook.name)
        if not ours:
            continue
        checked += 1
        if not fragment:
            problems.append(f"{where}: runbook_url {url} has no #anchor for the section")
        elif unquote(fragment) not in known:
            near = [a for a in known if a.startswith(unquote(fragment)[:12])][:3]
            hint = f"; headings near it: {', '.join(sorted(near))}" if near else ""
            problems.append(f"{where}: #{unquote(fragment)} is not a heading of {runbook}{hint}")
    if not checked:
        problems.append(f"no alert's runbook_url points into {runbook} (check --url-prefix)")
    return CheckResult(checked, problems)


DEFAULT_GRAFANA = "https://grafana.example.com"


def render(
    rules_dir: Path,
    runbook_map: Mapping[str, str],
    out_dir: Path,
    grafana_url: str | None = None,
) -> list[Path]:
    """Copy the rule files to `out_dir` with each mapped alert's runbook_url replaced, and
    the dashboards' address when `grafana_url` is given.

    Only those lines change, so comments and layout survive; an alert in the map that no
    rule has is an error (a typo would silently keep the default link)."""
    names = {alert.name for alert in alerts(rules_dir)}
    unknown = sorted(set(runbook_map) - names)
    if unknown:
        raise ValueError(f"the runbook map names alerts no rule has: {', '.join(unknown)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(rules_dir.glob("*.rules.yml")):
        lines = []
        current = ""
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            found = re.match(r"^\s*- alert:\s*(\S+)", line)
            if found:
                current = found.group(1)
            url = re.match(r"^(\s*runbook_url:\s*)", line)
            if url and current in runbook_map:
                line = f"{url.group(1)}{yaml.safe_dump(runbook_map[current]).splitlines()[0]}\n"
            if grafana_url and re.match(r"^\s*dashboard_url:", line):
                line = line.replace(DEFAULT_GRAFANA, grafana_url.rstrip("/"), 1)
            lines.append(line)
        target = out_dir / path.name
        target.write_text("".join(lines), encoding="utf-8")
        written.append(target)
    return written


def load_map(path: Path) -> dict[str, str]:
    """A runbook map: YAML or JSON, alert name -> URL with the section's #anchor."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path}: expected a mapping of alert name to runbook URL")
    return dict(data)


def unmapped(rules_dir: Path, runbook_map: Iterable[str]) -> list[str]:
    """Alerts the map leaves on stackprobe's own runbook."""
    mapped = set(runbook_map)
    return [alert.name for alert in alerts(rules_dir) if alert.name not in mapped]
