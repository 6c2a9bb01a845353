"""Runbook links: GitHub's heading anchors, checking that every alert's link lands on a
heading, and rendering the rules with a team's own runbook URLs.

An alert that links to an anchor the runbook does not have opens the top of a long page at
3 a.m.; `stackprobe runbook check` fails on it before it ships. Headings are found the way
GitHub renders Markdown (markdown-it-py: CommonMark, plus GFM tables), and slugged with
GitHub's own algorithm (`slug`). The rendered rule files are written back by ruamel.yaml's
round trip, so a team's copy keeps the comments that say why each threshold is what it is.
"""

from __future__ import annotations

import io
import itertools
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import ScalarString

# Letters, marks, decimal and letter numbers, connector punctuation (`_`); github-slugger
# drops other numbers (`²`, `½`) like any symbol.
_KEPT = ("L", "M", "Nd", "Nl", "Pc")
# GFM's tables and strikethrough too: on GitHub a `| a |` row over `---` is a table, not a
# setext heading.
_MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# What a heading's rendered text is made of; images count for nothing (an <img> has no text).
_TEXT = {"text", "text_special", "code_inline"}
_BREAKS = {"softbreak", "hardbreak"}


def slug(heading: str) -> str:
    """GitHub's anchor for one heading's rendered text, before de-duplication.

    github-slugger, which no library here implements: lower-case; drop every character that
    is not a letter, a mark, a number, a connector (`_`), a space or `-`, Unicode-aware; each
    space becomes `-`; nothing is collapsed or trimmed."""
    kept = []
    for char in heading.lower():
        if char in (" ", "-") or unicodedata.category(char).startswith(_KEPT):
            kept.append("-" if char == " " else char)
    return "".join(kept)


class _AnyReference(dict[str, Any]):
    """Link references where every label resolves, so `[text][ref]` slugs as `text` even when
    `ref` is defined elsewhere (a wiki include); GitHub shows an undefined one as it is."""

    def get(self, label: str, default: Any = None) -> Any:
        return super().get(label) or {"href": "", "title": ""}


def _text(inline: list[Token]) -> str:
    """The text content GitHub slugs: text, code spans verbatim, link text, line breaks; no
    markup, no raw HTML tags, no image alt text."""
    return "".join(
        token.content if token.type in _TEXT else "\n"
        for token in inline
        if token.type in _TEXT or token.type in _BREAKS
    )


def headings(markdown: str) -> Iterator[str]:
    """Each heading's rendered text, ATX and setext, wherever CommonMark sees one (not in
    code, not a list item over a `---`)."""
    tokens = _MARKDOWN.parse(markdown, {"references": _AnyReference()})
    for opening, inline in itertools.pairwise(tokens):
        if opening.type == "heading_open" and inline.type == "inline":
            yield _text(inline.children or [])


def anchors(markdown: str) -> list[str]:
    """Every anchor GitHub gives the document's headings, in order; a repeated slug gets
    `-1`, `-2`, ..."""
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
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        found += [Alert(path, str(r["alert"]), r) for r in _rules(document) if "alert" in r]
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
    """Copy the rule files to `out_dir` with each mapped alert's runbook_url (label and
    annotation) replaced, and the dashboards' address when `grafana_url` is given.

    Only those values change, so comments and layout survive; a file with nothing to change
    is copied as it is. An alert in the map that no rule has is an error (a typo would
    silently keep the default link)."""
    round_trip = _round_trip()
    files = {path: _load(round_trip, path) for path in sorted(rules_dir.glob("*.rules.yml"))}
    names = {
        str(rule["alert"]) for _, doc in files.values() for rule in _rules(doc) if "alert" in rule
    }
    unknown = sorted(set(runbook_map) - names)
    if unknown:
        raise ValueError(f"the runbook map names alerts no rule has: {', '.join(unknown)}")
    grafana = grafana_url.rstrip("/") if grafana_url else None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, (text, document) in files.items():
        changed = False
        for rule in _rules(document):
            url = runbook_map.get(str(rule["alert"])) if "alert" in rule else None
            for section in (rule.get("labels"), rule.get("annotations")):
                if not isinstance(section, dict):
                    continue
                if url is not None and "runbook_url" in section:
                    changed |= _replace(section, "runbook_url", url)
                dashboard = section.get("dashboard_url")
                if grafana and isinstance(dashboard, str):
                    new = dashboard.replace(DEFAULT_GRAFANA, grafana, 1)
                    changed |= _replace(section, "dashboard_url", new)
        if changed:
            dumped = io.StringIO()
            round_trip.dump(document, dumped)
            text = _preamble(text) + dumped.getvalue()
        target = out_dir / path.name
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def _rules(document: Any) -> Iterator[Mapping[str, Any]]:
    """The rules of a loaded rule file, in order; none when it is not one."""
    groups = document.get("groups") if isinstance(document, Mapping) else None
    for group in groups or ():
        rules = group.get("rules") if isinstance(group, Mapping) else None
        yield from (rule for rule in rules or () if isinstance(rule, Mapping))


def _round_trip() -> YAML:
    """ruamel set to write a rule file back as it was written: quotes as they were, the
    shipped files' indentation, and no line re-wrapped, so a folded `expr: >-` keeps its
    lines (at the default width of 80 over a thousand lines of the shipped rules move)."""
    round_trip = YAML(typ="rt")
    round_trip.preserve_quotes = True
    round_trip.width = sys.maxsize
    round_trip.indent(mapping=2, sequence=4, offset=2)
    return round_trip


def _load(round_trip: YAML, path: Path) -> tuple[str, Any]:
    """The file's text and document; a YAML error becomes a one-line ValueError naming
    where it is, for the command to print."""
    try:
        text = path.read_text(encoding="utf-8")
        return text, round_trip.load(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context).split())
        raise ValueError(f"{path}{where}: {problem}") from exc
    except YAMLError as exc:
        raise ValueError(f"{path}: {' '.join(str(exc).split())}") from exc


def _replace(section: dict[str, Any], key: str, value: str) -> bool:
    """Set one value, quoted as the old one was; whether it changed."""
    old = section[key]
    if old == value:
        return False
    section[key] = type(old)(value) if isinstance(old, ScalarString) else value
    return True


def _preamble(text: str) -> str:
    """A leading `---` line and the comments above it, which ruamel's dump drops."""
    lines = text.splitlines(keepends=True)
    for at, line in enumerate(lines):
        if line.rstrip() == "---":
            return "".join(lines[: at + 1])
        if line.strip() and not line.lstrip().startswith("#"):
            break
    return ""


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
