"""The shipped alert rules and Alertmanager example, as the rule, dashboard and end-to-end
tests read them: which series the rules may use, and the routing with webhooks for receivers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parent.parent.parent
RULES = ROOT / "alert_rules"
RULE_FILES = sorted(RULES.glob("*.rules.yml"))
ALERTMANAGER = RULES / "alertmanager.yml"


def exported_names() -> set[str]:
    """Every series name stackprobe exports (counters with _total), and what rules record."""
    from stackprobe.cluster import OWNERSHIP_METRICS, Cluster, ClusterSettings, StaticMembership
    from stackprobe.exposition import CORE_METRICS
    from stackprobe.probes import KINDS
    from stackprobe.probes._aws_api import AwsMetrics
    from stackprobe.selfmetrics import SelfMetrics

    names = set()
    kinds = (s for kind in KINDS.values() for s in kind.metrics)
    for spec in (*CORE_METRICS, *OWNERSHIP_METRICS, *kinds):
        names.add(spec.name + ("_total" if spec.type == "counter" else ""))
    own = SelfMetrics()
    AwsMetrics(own.registry)  # the AWS resource's own, which it registers when it opens
    Cluster(ClusterSettings(), StaticMembership(0, 1), own.registry)  # the app's, as it does
    for family in own.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def alert_rules(files: list[Path] = RULE_FILES) -> dict[str, dict[str, Any]]:
    """Every alerting rule of the rule files, as written, by alert name."""
    return {
        rule["alert"]: rule
        for path in files
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def example_config(hooks: str) -> dict[str, Any]:
    """The example routing as shipped, each receiver a webhook at `hooks`/<receiver name>."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", ()):
            hook["url"] = f"{hooks}/{receiver['name']}"
    config["templates"] = [str(ALERTMANAGER.parent / "templates" / "*.tmpl")]
    return config
