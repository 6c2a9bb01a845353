"""The lines docs/architecture.md draws, checked: the core imports no kind, no client library,
no tooling and no demo; every kind module ends in its KIND and the table lists exactly those;
the page names every module it maps."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from stackprobe.probes import KINDS

ROOT = Path(__file__).parent.parent
CORE = sorted((ROOT / "exporter").glob("*.py"))
# The composition root: it hands the kind table to the loader and the app.
ROOT_MODULE = "cli.py"
# The web server parses its own requests with h11 (docs/architecture.md).
ALLOWED = {ROOT_MODULE: {"stackprobe.probes"}, "http_server.py": {"h11"}}
CLIENT_LIBRARIES = {"boto3", "botocore", "httpx", "httpcore", "aiohttp_client", "asyncpg"}
CLIENT_LIBRARIES |= {"redis", "dns", "cryptography", "h11", "jmespath", "moto"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_core_imports_no_kind_client_tooling_or_demo() -> None:
    found = {}
    for path in CORE:
        allowed = ALLOWED.get(path.name, set())
        bad = {
            name
            for name in imported(path)
            if name.split(".")[0] in CLIENT_LIBRARIES
            or (name.startswith(("stackprobe.probes", "stackprobe.tools", "stackprobe.demo")))
        } - allowed
        if bad:
            found[path.name] = sorted(bad)
    assert found == {}


def test_every_kind_module_ends_in_its_kind_and_the_table_lists_exactly_those() -> None:
    modules = sorted(p.stem for p in (ROOT / "probes").glob("*.py") if not p.stem.startswith("_"))
    kinds = {}
    for name in modules:
        module = importlib.import_module(f"stackprobe.probes.{name}")
        kinds[module.KIND.name] = module.KIND
        assert module.KIND.name == name, f"probes/{name}.py's KIND is named {module.KIND.name}"
    assert dict(KINDS) == kinds


def test_the_architecture_page_maps_every_module() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    table = page[page.index("## The packages") :]
    core = {p.name for p in CORE if not p.stem.startswith("_")} - {"__init__.py"}
    shared = {p.name for p in (ROOT / "probes").glob("_*.py")} - {"__init__.py"}
    named = set(re.findall(r"`([\w]+\.py)`", table))
    assert sorted(core - named) == [], "core modules missing from docs/architecture.md"
    assert sorted(shared - named) == [], "probes/ shared modules missing from the page"
    assert sorted(named - core - shared - {"__init__.py"}) == [], "the page names a module gone"
