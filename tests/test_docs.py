"""docs/configuration.md and docs/metrics.md must say what the code does, table by table."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from stackprobe.cluster import (
    OWNERSHIP_METRICS,
    Cluster,
    ClusterSettings,
    EcsMembershipSettings,
    StaticMembership,
)
from stackprobe.config import Defaults
from stackprobe.console import ConsoleSettings
from stackprobe.contract import CoreReason
from stackprobe.durations import format_duration
from stackprobe.exposition import CORE_METRICS
from stackprobe.probes import KINDS
from stackprobe.probes._aws_api import AWS, AwsAccess, AwsSettings, AwsTarget
from stackprobe.probes._ecs_members import EcsMembership
from stackprobe.probes._ecs_paths import Reach
from stackprobe.probes._ecs_task_resources import TaskResources
from stackprobe.probes._ecs_tasks import EcsDiscovery
from stackprobe.probes._http_clients import HttpClientSettings
from stackprobe.probes._tls import TLSConfig
from stackprobe.probes.cloudwatch import AlbSelection, CustomMetric, EcsSelection
from stackprobe.probes.dns import RecordChecks
from stackprobe.probes.http import BasicAuth, HeaderMatch, JsonExpectation
from stackprobe.probes.postgres import AppPool, StatStatements
from stackprobe.probes.s3 import S3Canary
from stackprobe.probes.sqs import SqsCanary
from stackprobe.resource import ResourceEnv
from stackprobe.selfmetrics import SelfMetrics
from stackprobe.target import TargetConfig

DOCS = Path(__file__).parent.parent / "docs"


def tables(path: Path) -> dict[str, list[list[str]]]:
    """Heading -> rows of the first table under it, cells stripped of surrounding backticks."""
    found: dict[str, list[list[str]]] = {}
    heading = ""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and not re.match(r"^\|\s*-", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows = found.setdefault(heading, [])
            rows.append([c[1:-1] if c.startswith("`") and c.endswith("`") else c for c in cells])
    return {h: rows[1:] for h, rows in found.items()}  # drop header rows


CONFIG = tables(DOCS / "configuration.md")
METRICS = tables(DOCS / "metrics.md")


def doc_default(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and "format_duration" in repr(field.metadata):
        return format_duration(default)
    if isinstance(default, tuple | frozenset | list):
        return "[" + ", ".join(map(str, default)) + "]"
    if isinstance(default, dict | BaseModel):
        return "{}"
    return str(default)


MODEL_SECTIONS: list[tuple[str, type[BaseModel], set[str]]] = [
    ("`defaults`", Defaults, set()),
    ("`console`", ConsoleSettings, set()),
    ("`cluster`", ClusterSettings, set()),
    ("`cluster.ecs`", EcsMembershipSettings, set()),
    ("`http_client`", HttpClientSettings, set()),
    ("`tls`", TLSConfig, set()),
    ("`basic_auth`", BasicAuth, set()),
    ("`expect_json` entries", JsonExpectation, set()),
    ("`fail_if_header_matches` entries", HeaderMatch, set()),
    ("`validate_answer_rrs`", RecordChecks, set()),
    ("`app_pools` entries", AppPool, set()),
    ("`pg_stat_statements`", StatStatements, set()),
    ("`canary` of an s3 target", S3Canary, set()),
    ("`canary` of an sqs target", SqsCanary, set()),
    ("`task_resources` of an ecs_service target", TaskResources, set()),
    ("`aws`", AwsSettings, set()),
    ("Every AWS target", AwsAccess, set()),
    ("`discover.ecs`", EcsDiscovery, set()),
    ("`albs` entries", AlbSelection, set()),
    ("`ecs_services` entries", EcsSelection, set()),
    ("`reaches` entries", Reach, set()),
    ("`metrics` entries", CustomMetric, set()),
    *(
        (
            f"`kind: {name}`",
            kind.config,
            set(TargetConfig.model_fields)
            | (set(AwsAccess.model_fields) if issubclass(kind.config, AwsTarget) else set()),
        )
        for name, kind in KINDS.items()
    ),
]


# ids from the heading alone: a set's order differs between processes (pytest-xdist's
# workers must collect the same ids)
@pytest.mark.parametrize(
    ("heading", "model", "skip"), MODEL_SECTIONS, ids=[h for h, _, _ in MODEL_SECTIONS]
)
def test_configuration_tables_match_models(
    heading: str, model: type[BaseModel], skip: set[str]
) -> None:
    rows = CONFIG[heading]
    documented = {row[0]: row[2] for row in rows}
    fields = [name for name in model.model_fields if name not in skip]

    assert list(documented) == fields, f"{heading}: keys differ from {model.__name__}"
    for name in fields:
        assert documented[name] == doc_default(model, name), f"{heading}.{name} default"


def test_every_target_table_lists_the_base_keys() -> None:
    rows = {row[0]: row[2] for row in CONFIG["Every target"]}

    assert rows == {
        "name": "required",
        "kind": "required",
        "interval": "defaults.interval",
        "timeout": "defaults.timeout",
        "replicas": "none",
        "labels": "{}",
    }
    kind_cell = next(row[3] for row in CONFIG["Every target"] if row[0] == "kind")
    assert all(f"`{kind}`" in kind_cell for kind in KINDS)


def metric_rows(heading: str) -> dict[str, tuple[str, str]]:
    return {row[0]: (row[1], row[2].replace("`", "")) for row in METRICS[heading]}


def spec_rows(specs: Any) -> dict[str, tuple[str, str]]:
    """As exposed: a counter's samples carry `_total`."""
    return {
        s.name + ("_total" if s.type == "counter" else ""): (
            s.type,
            ", ".join(("target", *s.labels)),
        )
        for s in specs
    }


def test_core_metrics_are_documented() -> None:
    assert metric_rows("Every target") == spec_rows(CORE_METRICS)


def test_ownership_metrics_are_documented() -> None:
    assert metric_rows("Cluster") == spec_rows(OWNERSHIP_METRICS)


@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_metrics_are_documented(kind: str) -> None:
    assert metric_rows(f"`kind: {kind}`") == spec_rows(KINDS[kind].metrics)


@pytest.mark.parametrize("kind", list(KINDS))
def test_kind_reasons_are_documented(kind: str) -> None:
    documented = [row[0] for row in METRICS[f"Failure reasons of `kind: {kind}`"]]

    assert documented == [reason.value for reason in KINDS[kind].reasons]


def test_core_reasons_are_documented() -> None:
    documented = [row[0] for row in METRICS["Failure reasons of every kind"]]

    assert documented == [reason.value for reason in CoreReason]


def test_own_metrics_are_documented() -> None:
    own = SelfMetrics()
    own.set_kinds(dict.fromkeys(KINDS, 1), KINDS)  # the labelled children, so labels show
    # and the shared resources' own, registered when they open
    aws = AWS.open(AwsSettings(), ResourceEnv(own.registry), None)
    aws.metrics.calls.labels("ecs", "DescribeServices", "ok")
    aws.metrics.call_duration.labels("ecs", "DescribeServices")
    aws.shutdown()
    # and the cluster's, a dynamic membership's calls included
    Cluster(ClusterSettings(), StaticMembership(0, 1), own.registry)
    ecs = EcsMembership(EcsMembershipSettings(), own.registry)
    ecs.calls.labels("ListTasks", "success")
    expected = {}
    for family in own.registry.collect():
        if family.name.startswith(("process_", "python_")):
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        expected[name] = (family.type, labels)

    documented = {
        name: (kind, sorted(filter(None, labels.split(", "))))
        for name, (kind, labels) in metric_rows("stackprobe itself").items()
    }
    assert documented == expected


def _readme_commands() -> dict[str, str]:
    """The README's command-line block: each command's lines, by command."""
    text = (DOCS.parent / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    commands: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        if line.startswith("stackprobe "):
            words = [w for w in line.split()[1:3] if not w.startswith(("-", "["))]
            if not words:  # stackprobe --version
                current = "--version"
            else:
                current = " ".join(words) if words[0] == "runbook" else words[0]
        commands[current] = commands.get(current, "") + line + "\n"
    return commands


def _help(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "stackprobe", *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_the_readme_command_line_names_every_command_and_option() -> None:
    """Every command `stackprobe --help` lists, and every option of each (one of its
    spellings), is in the README's command-line block."""
    readme = _readme_commands()
    listed = re.findall(r"^    (\S+)", _help().split("positional arguments:", 1)[1], re.M)
    commands = ["runbook check" if c == "runbook" else c for c in listed]

    assert sorted(c for c in readme if c != "--version") == sorted(commands)
    for command in commands:
        options = _help(*command.split()).split("options:", 1)[1]
        for line in options.splitlines():
            spellings = re.findall(r"(?:^  |, )(--[\w.-]+)", line)
            if spellings and spellings != ["--help"]:
                assert any(s in readme[command] for s in spellings), (command, spellings)


def rule_alerts() -> set[str]:
    names = set()
    for path in (Path(__file__).parent.parent / "alert_rules").glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return names


def test_the_console_page_names_every_alert_a_verdict_links_and_no_other() -> None:
    """docs/console.md's verdict table against the kinds: each alert a kind's verdict can
    name (a string literal in probes/ that is an alert's name) has a row, and each alert the
    table names is a rule."""
    alerts = rule_alerts()
    named = set()
    for path in (Path(__file__).parent.parent / "probes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in alerts:
                named.add(node.value)
    table = "\n".join(
        " | ".join(row) for row in tables(DOCS / "console.md")["Verdicts and the alert rules"]
    )
    words = re.findall(r"\b[A-Z][A-Za-z0-9]+\b", table)
    in_table = {
        w for w in words if sum(c.isupper() for c in w) > 1 and not w.isupper() and len(w) > 4
    }
    assert named, "no kind names an alert"
    assert sorted(named - in_table) == []
    assert sorted(in_table - alerts) == []


def test_the_readme_quick_start_config_passes_check_config_as_written(tmp_path: Path) -> None:
    """Without its secrets set: check-config warns about them and passes, as the README says
    to run it before exporting them."""
    text = (DOCS.parent / "README.md").read_text()
    block = text.split("```yaml\n# stackprobe.yml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "stackprobe.yml"
    path.write_text(block)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_PASSWORD"))}
    done = subprocess.run(
        [sys.executable, "-m", "stackprobe", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HEALTH_TOKEN" in done.stdout + done.stderr  # said to be unset, not silently passed


def test_the_readme_counts_the_alerts_it_ships() -> None:
    shipped = sum(
        1
        for path in (DOCS.parent / "alert_rules").glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    )
    said = re.search(r"holds (\d+) Prometheus alerts", (DOCS.parent / "README.md").read_text())

    assert said is not None and int(said.group(1)) == shipped
