"""The alert rules, their unit tests, their runbook links and the Alertmanager routing, checked
by the real promtool and amtool."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackprobe.demo.alerting import muting_pairs
from stackprobe.durations import parse_duration
from stackprobe.tools.runbooks import alerts, anchors, headings, slug
from tests.support.alerting import (
    ALERTMANAGER,
    ROOT,
    RULE_FILES,
    RULES,
    alert_rules,
    exported_names,
)
from tests.support.processes import require_binary, run

UNIT_TESTS = RULES / "tests"
RUNBOOK = ROOT / "docs" / "runbook.md"
SEVERITY = {"P0": "critical", "P1": "critical", "P2": "warning", "P3": "info"}
OWN_RUNBOOK = "https://github.com/stackprobe/stackprobe/blob/main/docs/runbook.md"

ALERTS = alerts(RULES)
# A target's `priority` label overrides the rule's; severity follows the priority.
PRIORITY = '{{{{ or $labels.priority "{}" }}}}'
SEVERITY_OF_PRIORITY = (
    '{{{{ $p := or $labels.priority "{}" }}}}{{{{ if le $p "P1" }}}}critical'
    '{{{{ else if eq $p "P2" }}}}warning{{{{ else }}}}info{{{{ end }}}}'
)


def default_priority(rule: dict[str, Any]) -> str:
    """The priority an alert has unless its series carry a `priority` label."""
    found = re.fullmatch(r'\{\{ or \$labels\.priority "(P[0-3])" \}\}', rule["labels"]["priority"])
    return found.group(1) if found else str(rule["labels"]["priority"])


def test_every_area_has_its_rule_file() -> None:
    names = {path.name.removesuffix(".rules.yml") for path in RULE_FILES}

    assert names == {
        "health",
        "ecs",
        "alb",
        "sqs",
        "s3",
        "postgres",
        "rds",
        "elasticache",
        "redis",
        "logs",
        "stackprobe",
    }


def test_promtool_checks_the_rules_clean() -> None:
    promtool = require_binary("promtool")

    done = run(promtool, "check", "rules", *RULE_FILES)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES)


@pytest.mark.parametrize("path", sorted(UNIT_TESTS.glob("*.test.yml")), ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    promtool = require_binary("promtool")

    done = run(promtool, "test", "rules", path)

    assert done.returncode == 0, done.stdout + done.stderr


def unit_test_cases() -> dict[str, list[list[Any]]]:
    """alertname -> the exp_alerts of every evaluation the unit tests make of it."""
    cases: dict[str, list[list[Any]]] = {}
    for path in UNIT_TESTS.glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", ()):
                cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    return cases


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
def test_every_alert_is_unit_tested_before_and_after_it_fires(alert: Any) -> None:
    cases = unit_test_cases().get(alert.name, [])

    assert cases, f"{alert.name} has no unit test in {UNIT_TESTS}"
    fired = [expected for expected in cases if expected]
    assert fired, f"{alert.name}: no evaluation where it fires"
    if alert.name != "Watchdog":  # always firing, by design
        assert any(not expected for expected in cases), f"{alert.name}: no evaluation before"
    for expected in fired:
        for one in expected:
            annotations = one.get("exp_annotations", {})
            assert set(annotations) >= {"summary", "description", "runbook_url", "dashboard_url"}
            assert one["exp_labels"]["priority"] in (*SEVERITY, "none")
    priorities = {one["exp_labels"]["priority"] for expected in fired for one in expected}
    assert default_priority(alert.rule) in priorities, f"{alert.name}: never at its priority"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda a: a.name)
def test_every_alert_carries_priority_severity_and_links(alert: Any) -> None:
    labels = alert.rule["labels"]
    annotations = alert.rule["annotations"]

    if alert.name != "Watchdog":
        priority = default_priority(alert.rule)
        assert priority in SEVERITY
        assert labels["priority"] == PRIORITY.format(priority)
        assert labels["severity"] == SEVERITY_OF_PRIORITY.format(priority)
    assert annotations["summary"].endswith(".") and "{{" not in annotations["summary"]
    # the affected target and the value, templated; absent() and the watchdog have neither
    assert "{{" in annotations["description"] or alert.name in ("Watchdog", "StackprobeAbsent")
    assert annotations["runbook_url"] == f"{OWN_RUNBOOK}#{slug(alert.name)}"
    assert labels["runbook_url"] == annotations["runbook_url"]  # ALERTS carries labels only
    assert annotations["dashboard_url"].startswith("https://")


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_alert_says_why_its_for_is_what_it_is(path: Path) -> None:
    blocks = re.split(r"\n(?=      - (?:alert|record):)", path.read_text())
    for block in blocks:
        name = re.search(r"- alert:\s*(\S+)", block)
        if name:
            # the comment right above `for:`, or above `labels:` for an alert without one
            anchor = "for:" if re.search(r"^\s+for:", block, re.M) else "labels:"
            why = re.search(rf"^\s+# [^\n]*\n\s+{anchor}", block, re.M)
            assert why, f"{name.group(1)}: no comment on its for:"


def test_the_runbook_has_a_section_per_alert_in_four_parts() -> None:
    found = list(headings(RUNBOOK.read_text()))
    for alert in ALERTS:
        assert alert.name in found, f"docs/runbook.md has no section {alert.name}"
        at = found.index(alert.name)
        assert found[at + 1 : at + 5] == ["Meaning", "Impact", "Diagnosis", "Mitigation"]
    assert len(found) == 1 + 5 * len(ALERTS), "a section without an alert, or one out of shape"


def stackprobe(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "stackprobe", *argv)


def test_the_own_runbook_resolves_every_link() -> None:
    done = stackprobe("runbook", "check", "--rules", RULES, "--runbook", RUNBOOK)

    assert done.returncode == 0, done.stderr
    assert f"{len(ALERTS)} of {len(ALERTS)} alerts link into" in done.stdout


def test_a_missing_anchor_fails_naming_the_alert_and_the_anchor(tmp_path: Path) -> None:
    runbook = tmp_path / "runbook.md"
    runbook.write_text(RUNBOOK.read_text().replace("## RedisDown\n", "## Redis is down\n"))

    done = stackprobe("runbook", "check", "--rules", RULES, "--runbook", runbook)

    assert done.returncode == 1
    assert "redis.rules.yml: RedisDown: #redisdown is not a heading of" in done.stderr
    assert done.stderr.count("\n") == 1  # only that one


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ('Incident 3: Redis "Transport Closed" Error', "incident-3-redis-transport-closed-error"),
        ("Incident 6: Complete Site Outage (P0)", "incident-6-complete-site-outage-p0"),
        ("Immediate Actions (< 5 min)", "immediate-actions--5-min"),
        (
            "Scenario 2: S3 Bucket Full / Quota Exceeded",
            "scenario-2-s3-bucket-full--quota-exceeded",
        ),
        ("🚨 Site down 🚨", "-site-down-"),
        ("Café crème & Ünïcödé", "café-crème--ünïcödé"),
        ("Runbook — Incident Response", "runbook--incident-response"),
        ("snake_case and kebab-case", "snake_case-and-kebab-case"),
        ("  spaced  out ", "--spaced--out-"),
        ("日本語の見出し", "日本語の見出し"),
    ],
)
def test_slugs_are_githubs(heading: str, expected: str) -> None:
    assert slug(heading) == expected


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("`__init__` hook", "__init__-hook"),
        ("Using _ as a name", "using-_-as-a-name"),
        ("snake_case_ trailing", "snake_case_-trailing"),
        ("\\_private", "_private"),
        ("Q&amp;A", "qa"),
        ("Docs <https://x.io>", "docs-httpsxio"),
        ("a < b > c", "a--b--c"),
        ("CO₂ and m²", "co-and-m"),
        ("**Bold** and _it_ and *em*", "bold-and-it-and-em"),
        ("[text][ref] and [link](https://x.io)", "text-and-link"),
    ],
)
def test_anchors_slug_the_rendered_text(heading: str, expected: str) -> None:
    assert anchors(f"## {heading}\n") == [expected]


def test_a_list_item_over_a_rule_is_no_heading() -> None:
    assert anchors("- item\n---\n\nText\n====\n") == ["text"]


def test_anchors_number_repeats_and_skip_code() -> None:
    markdown = "\n".join(
        [
            "# Runbook",
            "## Symptoms",
            "## Symptoms",
            "```sh",
            "# not a heading",
            "```",
            "Symptoms",
            "--------",
            "## [Linked](https://example.com) `code` heading",
            "## Symptoms-1",
        ]
    )

    assert anchors(markdown) == [
        "runbook",
        "symptoms",
        "symptoms-1",
        "symptoms-2",
        "linked-code-heading",
        "symptoms-1-1",
    ]


SEEDS = Path(os.environ.get("STACKPROBE_SEEDS", ROOT.parent / "shared" / "seeds"))
# The shipped maps of each team's alerts onto the section of its own runbook that says what
# to do, with the seed runbook each links into and the URL that runbook is served at.
SEED_MAPS = {
    "000_b9c89ee92470956a.txt": (
        "aep.yml",
        "https://github.com/navralabs/aep/blob/main/docs/INCIDENT_RUNBOOK.md",
    ),
    "004_37bdbe2dcf880ee0.txt": ("vivacampo.yml", "https://wiki.vivacampo.example/runbook"),
}
RUNBOOK_MAPS = ROOT / "examples" / "runbook-maps"


@pytest.mark.parametrize("seed", sorted(SEED_MAPS))
def test_alerts_map_onto_the_seed_runbooks(seed: str, tmp_path: Path) -> None:
    runbook = SEEDS / seed
    if not runbook.is_file():
        pytest.skip(f"the seed runbooks are not at {SEEDS} (set STACKPROBE_SEEDS)")
    name, prefix = SEED_MAPS[seed]
    mapping = RUNBOOK_MAPS / name
    links = yaml.safe_load(mapping.read_text())

    rendered = stackprobe("rules", "--rules", RULES, "--runbook-map", mapping, "--out", tmp_path)
    checked = stackprobe(
        "runbook", "check", "--rules", tmp_path, "--runbook", runbook, "--url-prefix", prefix
    )

    assert rendered.returncode == 0, rendered.stderr
    assert checked.returncode == 0, checked.stderr
    assert f"{len(links)} of {len(ALERTS)} alerts link into" in checked.stdout
    assert all(url.startswith(prefix + "#") for url in links.values())
    for alert in alerts(tmp_path):
        url = alert.rule["annotations"]["runbook_url"]
        assert url == links.get(alert.name, f"{OWN_RUNBOOK}#{slug(alert.name)}")
        assert alert.rule["labels"]["runbook_url"] == url


def test_a_map_naming_an_unknown_alert_is_refused(tmp_path: Path) -> None:
    mapping = tmp_path / "map.yml"
    mapping.write_text("RedisDwon: https://wiki.example/runbook#redis\n")

    done = stackprobe("rules", "--rules", RULES, "--runbook-map", mapping, "--out", tmp_path)

    assert done.returncode == 1
    assert "RedisDwon" in done.stderr


def test_amtool_checks_the_routing_config() -> None:
    amtool = require_binary("amtool")

    done = run(amtool, "check-config", ALERTMANAGER)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "11 inhibit rules" in done.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["priority=P0", "alertname=HealthLiveFailing"], "pager,incident-channel"),
        (["priority=P1", "alertname=RedisDown"], "pager"),
        (["priority=P2", "alertname=SqsDeadLetterMessages"], "chat"),
        (["priority=P3", "alertname=S3NoLifecycleRule"], "tickets"),
        (["priority=none", "alertname=Watchdog"], "blackhole"),
    ],
)
def test_amtool_routes_each_priority(labels: list[str], receivers: str) -> None:
    amtool = require_binary("amtool")

    done = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receivers}",
        *labels,
    )

    assert done.returncode == 0, done.stdout + done.stderr


def test_message_templates_show_priority_summary_and_runbook(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    alert = {
        "status": "firing",
        "labels": {"alertname": "RedisDown", "priority": "P1"},
        "annotations": {
            "summary": "stackprobe cannot PING Redis.",
            "description": "aep-redis is down (reason: connection_refused).",
            "runbook_url": f"{OWN_RUNBOOK}#redisdown",
            "dashboard_url": "https://grafana.example.com/d/stackprobe-overview/stackprobe",
        },
        "startsAt": "2026-11-23T22:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": "1",
    }
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {
                "receiver": "chat",
                "status": "firing",
                "alerts": [alert],
                "groupLabels": {"alertname": "RedisDown"},
                "commonLabels": alert["labels"],
                "commonAnnotations": {},
                "externalURL": "http://alertmanager",
            }
        )
    )
    text = '{{ template "stackprobe.title" . }}\n{{ template "stackprobe.text" . }}'

    done = run(
        amtool,
        "template",
        "render",
        f"--template.glob={RULES / 'templates' / '*.tmpl'}",
        f"--template.data={data}",
        f"--template.text={text}",
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[FIRING:1] P1 RedisDown",
        "*P1* stackprobe cannot PING Redis.",
        "aep-redis is down (reason: connection_refused).",
        f"Runbook: {OWN_RUNBOOK}#redisdown",
        "Dashboard: https://grafana.example.com/d/stackprobe-overview/stackprobe",
    ]


def test_rules_point_dashboards_at_your_grafana(tmp_path: Path) -> None:
    done = stackprobe(
        "rules", "--rules", RULES, "--grafana-url", "https://grafana.corp/", "--out", tmp_path
    )

    assert done.returncode == 0, done.stderr
    urls = [a.rule["annotations"]["dashboard_url"] for a in alerts(tmp_path)]
    assert len(urls) == len(ALERTS)
    assert all(url.startswith("https://grafana.corp/d/stackprobe-") for url in urls)
    # the copies keep their comments: a rendered file is still a documented file
    assert "# 5m: the runbook's own threshold" in (tmp_path / "alb.rules.yml").read_text()


def test_docs_alerts_lists_every_alert_as_its_rule_says() -> None:
    rows = {}
    for line in (ROOT / "docs" / "alerts.md").read_text().splitlines():
        found = re.match(
            r"^\| \[`(\w+)`\]\(runbook\.md#(\w+)\) \| (\S+) \| (\S+) \| (\w+) \|", line
        )
        if found:
            rows[found.group(1)] = found.groups()[1:]

    assert set(rows) == {alert.name for alert in ALERTS}
    for alert in ALERTS:
        anchor, priority, for_, area = rows[alert.name]
        assert anchor == slug(alert.name)
        assert priority == default_priority(alert.rule)
        assert for_ == alert.rule.get("for", "0m")
        assert area == alert.rule["labels"]["area"]


def proof_table() -> list[tuple[int, str, str, str, str]]:
    """docs/alerts.md's "Runbook rows, proven end to end": row, heading, alert, priority, proof."""
    text = (ROOT / "docs" / "alerts.md").read_text()
    section = text.split("## Runbook rows, proven end to end", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            rows.append((int(cells[0]), cells[1], cells[2], cells[3], cells[4]))
    return rows


def test_every_p0_and_p1_of_a_runbook_row_is_proven_by_an_e2e_incident() -> None:
    from tests.support.incidents import INCIDENTS

    incidents = {incident.name: incident for incident in INCIDENTS}
    rows = proof_table()
    by_name = {alert.name: alert for alert in ALERTS}
    # The runbook-signal table beside the seeds, where this checkout has it (as SEEDS);
    # a clone on its own checks the rows against docs/alerts.md and the rules alone.
    signals_path = SEEDS.parent / "RUNBOOK_SIGNALS.md"
    signals = signals_path.read_text() if signals_path.is_file() else None
    assert rows
    for row, heading, name, priority, proof in rows:
        assert name in by_name, f"row {row}: no alert {name}"
        assert priority == default_priority(by_name[name].rule), (row, name)
        assert heading[:4] in ("A · ", "V · "), heading
        seed = SEEDS / (
            "000_b9c89ee92470956a.txt" if heading[0] == "A" else "004_37bdbe2dcf880ee0.txt"
        )
        if seed.is_file():
            title = heading[4:].split(" (")[0] if '("' in heading else heading[4:]
            assert f" {title}" in seed.read_text(), (
                f"row {row}: no heading {title!r} in {seed.name}"
            )
        if signals is not None and f"\n| {row} |" not in signals:
            pytest.fail(f"row {row} is not a row of RUNBOOK_SIGNALS.md")
        named = re.findall(r"`([\w-]+)`", proof)
        if priority in ("P0", "P1"):
            assert proof.startswith("e2e"), f"row {row}: {name} is a {priority}, proven by {proof}"
        if proof.startswith("e2e"):
            assert named, proof
            for incident in named:
                assert incident in incidents, f"row {row}: no e2e incident {incident}"
                fired = incidents[incident].alerts
                assert name in fired, f"row {row}: incident {incident} does not fire {name}"
                assert fired[name]["priority"] == priority
        else:
            assert proof.startswith("promtool"), proof
    # every alert a row names in the reference table above is in this one
    rows_of = {}
    for line in (ROOT / "docs" / "alerts.md").read_text().splitlines():
        found = re.match(
            r"^\| \[`(\w+)`\]\(runbook\.md#\w+\) \| \S+ \| \S+ \| \w+ \| ([\d, ]+) \|", line
        )
        if found:
            rows_of[found.group(1)] = {int(r) for r in found.group(2).split(",")}
    proven = {(name, row) for row, _, name, _, _ in rows}
    for name, numbers in rows_of.items():
        for row in numbers - {31, 2, 10}:
            assert (name, row) in proven, f"{name} serves row {row}, which the proofs omit"


SERIES = re.compile(r"(?<![\w:.])([a-zA-Z_][a-zA-Z0-9_]*(?::[a-zA-Z0-9_]+)*)")
MATCHED_VALUE = re.compile(r'(?<=[=~])"[^"{}]*"')
TEMPLATE_ACTION = re.compile(r"\{\{.*?\}\}", re.S)
OURS = ("probe_", "pg_", "redis_", "aws_", "stackprobe_", "pg:", "aws_applicationelb:", "aws_sqs:")


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rules_query_only_series_stackprobe_exports(path: Path) -> None:
    """A typo in a metric name makes an alert that can never fire; promtool cannot see it."""
    known = exported_names()
    texts = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            texts.append(rule["expr"])
            # an annotation queries only inside its template actions; its prose may name a
            # SQL function (pg_drop_replication_slot)
            for text in rule.get("annotations", {}).values():
                texts.extend(TEMPLATE_ACTION.findall(text))
    # a label matcher's value is no series (pattern="redis_transport_closed")
    texts = [MATCHED_VALUE.sub("", text) for text in texts]
    used = {name for text in texts for name in SERIES.findall(text) if name.startswith(OURS)}

    assert used, "no stackprobe series in the file"
    assert not used - known, f"{path.name} queries series stackprobe does not export"


@pytest.mark.parametrize("alert", [a for a in ALERTS if a.name != "Watchdog"], ids=lambda a: a.name)
def test_every_alert_has_a_healthy_and_a_boundary_group(alert: Any) -> None:
    """`<Alert>: healthy` keeps the alert silent on healthy inputs past its for; `<Alert>:
    boundary` evaluates it at least twice, silent (past its for) and firing: the threshold
    itself and one step across it. Both in a test file that loads the alert's rule file, or
    the alert could not fire there at all."""
    from stackprobe.durations import parse_duration

    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for path in sorted(UNIT_TESTS.glob("*.test.yml")):
        document = yaml.safe_load(path.read_text())
        for group in document["tests"]:
            if "name" in group:
                assert group["name"] not in groups, f"two test groups named {group['name']!r}"
                groups[group["name"]] = (document["rule_files"], group)
    wait = parse_duration(alert.rule["for"])

    found = {}
    for kind in ("healthy", "boundary"):
        name = f"{alert.name}: {kind}"
        assert name in groups, f"no test group named {name!r}"
        rule_files, group = groups[name]
        assert alert.file.name in {Path(f).name for f in rule_files}, f"{name}: wrong rule file"
        found[kind] = [
            (parse_duration(str(case["eval_time"])), bool(case.get("exp_alerts")))
            for case in group.get("alert_rule_test", ())
            if case["alertname"] == alert.name
        ]

    healthy, boundary = found["healthy"], found["boundary"]
    assert any(at >= wait for at, _ in healthy), f"{alert.name}: healthy only before its for"
    assert not any(fires for _, fires in healthy), f"{alert.name}: fires on healthy inputs"
    assert len(boundary) >= 2, f"{alert.name}: the boundary group evaluates it once or never"
    assert any(fires for _, fires in boundary), f"{alert.name}: never fires at the boundary"
    assert any(at >= wait and not fires for at, fires in boundary), (
        f"{alert.name}: no silent evaluation past its for at the boundary"
    )


def test_a_cause_fires_before_the_symptoms_it_mutes() -> None:
    """An inhibition mutes a symptom only while its cause fires: a cause that waits as long
    as its symptom (or longer) lets the symptom page first, and one incident pages twice.
    StackprobeDown is left out: what it mutes are the series it stops exporting, which go
    stale rather than fire."""
    rules = alert_rules()
    wait = {name: parse_duration(rule.get("for", "0s")) for name, rule in rules.items()}
    inhibit_rules = yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]
    late = [
        f"{cause} ({rules[cause].get('for')}) mutes {symptom} ({rules[symptom].get('for')})"
        for cause, symptom in muting_pairs(rules, inhibit_rules)
        if wait[cause] >= wait[symptom]
    ]
    assert late == []


def test_target_alerts_bridge_a_handover_and_causes_clear_last() -> None:
    """Every alert on targets' series (all but stackprobe.rules.yml, which watches the
    replicas themselves) keeps firing at least a minute past recovery: a replica that dies
    leaves its targets without series until their new owner is scraped, and without it a
    firing alert would resolve and page again. A cause keeps firing at least a minute longer
    than each symptom it mutes, so the symptom clears first on the way back."""
    rules = alert_rules()
    own = {
        rule["alert"]
        for group in yaml.safe_load((RULES / "stackprobe.rules.yml").read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    keep = {n: parse_duration(r.get("keep_firing_for", "0s")) for n, r in rules.items()}
    assert [n for n in sorted(rules) if n not in own and keep[n] < 60] == []
    inhibit_rules = yaml.safe_load(ALERTMANAGER.read_text())["inhibit_rules"]
    early = [
        f"{cause} ({keep[cause]:g}s) mutes {symptom} ({keep[symptom]:g}s)"
        for cause, symptom in muting_pairs(rules, inhibit_rules)
        if keep[cause] < keep[symptom] + 60
    ]
    assert early == []
