"""The Grafana dashboards: generated, not hand-edited; valid for Grafana 11.6; every query
parses (promtool) and asks only for series stackprobe exports; every panel explains itself and
links to a runbook heading; every alert's dashboard_url opens a panel that exists."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urldefrag, urlparse

import jsonschema
import pytest
import yaml

from stackprobe.tools.runbooks import alerts, anchors
from tests.support.alerting import exported_names
from tests.support.dashboards import DASHBOARDS, load, named_queries, panels
from tests.support.processes import require_binary, run

ROOT = Path(__file__).parent.parent
SCHEMA = Path(__file__).parent / "fixtures" / "grafana" / "dashboard-v11.6.jsonschema.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
FILES = sorted(DASHBOARDS.glob("*.json"))


def generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "grafana" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["generate"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def queries(board: dict[str, Any]) -> list[str]:
    return list(named_queries(board).values())


def test_an_overview_and_a_drill_down_per_crowded_area() -> None:
    assert [f.name for f in FILES] == [
        "stackprobe-datastores.json",
        "stackprobe-ecs.json",
        "stackprobe-overview.json",
    ]
    assert sorted(generator().DASHBOARDS) == [f.name for f in FILES]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_regenerating_gives_the_committed_json(path: Path) -> None:
    assert generator().render(path.name) == path.read_text(), "run grafana/generate.py"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dashboards_validate_against_grafana_11_6(path: Path) -> None:
    """The schema the SDK was generated with lacks the Prometheus annotation fields Grafana
    reads (titleFormat, textFormat, tagKeys, useValueForTime): those, and only those, are
    set outside it."""
    board = load(path)
    formats = generator().ANNOTATION_FORMAT
    extras = set().union(*(set(f) for f in formats.values()))
    for annotation in board["annotations"]["list"]:
        added = set(annotation) & extras
        assert added == set(formats[annotation["name"]])
        for key in added:
            del annotation[key]

    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(board)
    assert board["schemaVersion"] == 41


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_query_parses(path: Path, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    rules = [
        {"record": f"dashboard:query:{i}", "expr": q} for i, q in enumerate(queries(load(path)))
    ]
    file = tmp_path / "queries.rules.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    done = run(promtool, "check", "rules", file)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


PROMETHEUS_OWN = {"ALERTS", "ALERTS_FOR_STATE", "up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "on", "without"}


def metric_names(expr: str) -> set[str]:
    """The series an expression selects: every name that is not a function, a keyword, a
    label (in braces or a grouping clause) or a string."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", bare)
    return {n for n in names if n not in KEYWORDS}


def test_metric_names_finds_every_series_and_nothing_else() -> None:
    expr = (
        'sum by (target, state) (rate(pg_up{target=~".*"}[5m])) / on (target) group_left '
        '(x) (pg:connections:used_ratio or up) * 1000 and ALERTS{alertname!="Watchdog"}'
    )

    assert metric_names(expr) == {"pg_up", "pg:connections:used_ratio", "up", "ALERTS"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_query_asks_for_series_stackprobe_exports(path: Path) -> None:
    """Any name at all, not only stackprobe's prefixes: a dashboard showing node_load1
    would be empty against stackprobe."""
    known = exported_names() | PROMETHEUS_OWN
    used = {name for expr in queries(load(path)) for name in metric_names(expr)}

    assert used
    assert not used - known, f"{path.name} queries series stackprobe does not export"


def label_sets() -> dict[str, set[str]]:
    from stackprobe.exposition import CORE_METRICS
    from stackprobe.probes import KINDS

    found: dict[str, set[str]] = {"up": {"job", "instance"}}
    for spec in (*CORE_METRICS, *(s for kind in KINDS.values() for s in kind.metrics)):
        name = spec.name + ("_total" if spec.type == "counter" else "")
        found[name] = {"target", *spec.labels}
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_variable_filters_a_label_its_series_has(path: Path) -> None:
    """`label=~".*"` also matches series without the label, so a filter on the wrong label
    returns data and filters nothing: checked here against the series' own labels."""
    labels = label_sets()
    board = load(path)
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", ())]
    exprs += [a["expr"] for a in board["annotations"]["list"]]
    checked = 0
    for expr in exprs:
        for metric, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}", expr):
            for label in re.findall(r'(\w+)=~"\$\w+"', matchers):
                if metric in labels:
                    assert label in labels[metric], f"{metric} has no label {label}"
                    checked += 1

    assert checked


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_panel_explains_itself_and_links_to_its_runbook_section(path: Path) -> None:
    known = set(anchors(RUNBOOK.read_text()))
    for panel in panels(load(path)):
        assert panel.get("description", "").endswith("."), panel["title"]
        links = [link["url"] for link in panel.get("links", ())]
        assert links, f"{panel['title']} has no runbook link"
        for url in links:
            address, anchor = urldefrag(url)
            assert address.endswith("docs/runbook.md") and anchor in known, url


def recorded() -> dict[str, str]:
    return {
        rule["record"]: rule["expr"]
        for path in sorted((ROOT / "alert_rules").glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def series_of(expr: str, rules: dict[str, str]) -> set[str]:
    """The series an expression reads, recording rules replaced by what they read."""
    found: set[str] = set()
    for name in metric_names(expr):
        found |= series_of(rules[name], rules) if name in rules else {name}
    return found


@pytest.mark.parametrize("alert", alerts(ROOT / "alert_rules"), ids=lambda a: a.name)
def test_every_alerts_dashboard_url_opens_the_panel_that_shows_its_signal(alert: Any) -> None:
    uid, panel_id = generator().ALERT_PANELS[alert.name]
    url = urlparse(alert.rule["annotations"]["dashboard_url"])
    board = load(DASHBOARDS / f"{uid}.json")
    panel = next(p for p in panels(board) if p["id"] == panel_id)
    rules = recorded()
    shown = set().union(*(series_of(t["expr"], rules) for t in panel["targets"]))
    signal = series_of(alert.rule["expr"], rules) or {"up"}  # the watchdog's: vector(1)

    assert (url.netloc, url.path) == ("grafana.example.com", f"/d/{uid}/{uid}")
    assert parse_qs(url.query)["viewPanel"] == [str(panel_id)]
    assert board["uid"] == uid
    assert shown & signal, f"panel {panel_id} shows none of {sorted(signal)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_panel_ids_are_unique(path: Path) -> None:
    ids = [panel["id"] for panel in load(path)["panels"]]

    assert len(ids) == len(set(ids))


def test_overview_has_the_variables_and_deploy_markers() -> None:
    board = load(DASHBOARDS / "stackprobe-overview.json")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    markers = [a for a in board["annotations"]["list"] if a["name"] == "Deployments"]

    assert list(variables) == ["datasource", "cluster", "service", "target"]
    assert variables["datasource"]["query"] == "prometheus"
    assert all(variables[v]["includeAll"] for v in ("cluster", "service", "target"))
    assert len(markers) == 1
    assert "aws_ecs_service_last_deployment_timestamp_seconds" in markers[0]["expr"]
