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

from stackprobe.runbooks import alerts, anchors
from tests.conftest import require_binary
from tests.test_alert_rules import OURS, SERIES, exported_names, run

ROOT = Path(__file__).parent.parent
DASHBOARDS = ROOT / "grafana" / "dashboards"
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


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p.get("type") != "row"]


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL of the dashboard: panels, variables (the selector inside label_values)
    and annotations; Grafana's variables replaced by what `All` sends."""
    found = [t["expr"] for p in panels(board) for t in p.get("targets", ())]
    for variable in board.get("templating", {}).get("list", ()):
        inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable.get("query", "") or "")
        if inner:
            found.append(inner.group(1))
    found.extend(a["expr"] for a in board.get("annotations", {}).get("list", ()) if "expr" in a)
    return [re.sub(r"\$\{?\w+\}?", ".*", expr) for expr in found]


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
    board = load(path)

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


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_query_asks_for_series_stackprobe_exports(path: Path) -> None:
    known = exported_names()
    used = {
        name
        for expr in queries(load(path))
        for name in SERIES.findall(expr)
        if name.startswith(OURS)
    }

    assert used
    assert not used - known, f"{path.name} queries series stackprobe does not export"


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


def test_every_alerts_dashboard_url_opens_a_panel_of_the_overview() -> None:
    board = load(DASHBOARDS / "stackprobe-overview.json")
    ids = {panel["id"] for panel in panels(board)}
    for alert in alerts(ROOT / "alert_rules"):
        url = urlparse(alert.rule["annotations"]["dashboard_url"])
        assert url.path.startswith(f"/d/{board['uid']}/"), alert.name
        assert int(parse_qs(url.query)["viewPanel"][0]) in ids, alert.name


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
