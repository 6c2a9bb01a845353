"""Every kind in the table honours the contract: a model, reasons, metrics, a test, docs."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

from stackprobe.probes import KINDS
from stackprobe.target import TargetConfig

ROOT = Path(__file__).parent.parent
METRIC_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@pytest.mark.parametrize("name", list(KINDS))
def test_kind_contract(name: str) -> None:
    kind = KINDS[name]

    assert kind.name == name
    assert issubclass(kind.config, TargetConfig)
    assert kind.config.model_config.get("extra") == "forbid"
    assert kind.config.model_config.get("frozen") is True
    assert typing.get_args(kind.config.model_fields["kind"].annotation) == (name,)
    assert inspect.iscoroutinefunction(kind.probe)
    assert list(inspect.signature(kind.probe).parameters) == ["target", "ctx"]
    assert all(re.match(r"^[a-z][a-z_]*$", reason.value) for reason in kind.reasons)
    assert kind.reasons.__doc__, "say what the reasons are for"
    for spec in kind.metrics:
        assert METRIC_NAME.match(spec.name) and spec.help.endswith(".")
        # blackbox, postgres and redis exporters' names, YACE's aws_, or our own
        assert spec.name.startswith(("probe_", "pg_", "redis_", "aws_", "stackprobe_")), spec.name
        assert "target" not in spec.labels, "the core adds the target label"
        if spec.type == "counter":
            assert not spec.name.endswith("_total"), "the exposition adds _total to counters"
    module = inspect.getmodule(kind.probe)
    assert module is not None and module.__doc__, "a probe module opens with why"


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_has_a_test_file_and_docs(name: str) -> None:
    # test_<kind>_kind.py where test_<kind>.py would read as a core test's twin (tests/test_logs.py)
    tests = ROOT / "tests" / "probes"
    assert (tests / f"test_{name}.py").is_file() or (tests / f"test_{name}_kind.py").is_file()
    assert f"## `kind: {name}`" in (ROOT / "docs" / "configuration.md").read_text()
    assert f"## `kind: {name}`" in (ROOT / "docs" / "metrics.md").read_text()


def test_metric_families_are_declared_once_across_kinds() -> None:
    """A family two kinds both export is one spec they share, never two of one name."""
    names = [spec.name for spec in {spec for kind in KINDS.values() for spec in kind.metrics}]

    assert len(names) == len(set(names))
