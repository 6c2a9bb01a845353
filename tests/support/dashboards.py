"""The committed Grafana dashboards and the PromQL in them, for the dashboard tests and for the
end-to-end test that checks every query has data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).parent.parent.parent / "grafana" / "dashboards"


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p.get("type") != "row"]


def named_queries(board: dict[str, Any]) -> dict[str, str]:
    """Every PromQL of the dashboard by where it is: panels' targets, variables (the selector
    inside label_values) and annotations; Grafana's variables replaced by what `All` sends."""
    found = {
        f"{p['id']} {p['title']} {t['refId']}": t["expr"]
        for p in panels(board)
        for t in p.get("targets", ())
    }
    for variable in board.get("templating", {}).get("list", ()):
        inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable.get("query", "") or "")
        if inner:
            found[f"variable {variable['name']}"] = inner.group(1)
    for annotation in board.get("annotations", {}).get("list", ()):
        if "expr" in annotation:
            found[f"annotation {annotation['name']}"] = annotation["expr"]
    return {name: re.sub(r"\$\{?\w+\}?", ".*", expr) for name, expr in found.items()}


def dashboard_queries() -> dict[str, str]:
    """Each query of every panel, variable and annotation of every dashboard, by where."""
    return {
        f"{path.stem} {name}": expr
        for path in sorted(DASHBOARDS.glob("*.json"))
        for name, expr in named_queries(load(path)).items()
    }
