"""`stackprobe rules` and `stackprobe runbook check`: the runbook links of the shipped rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from stackprobe.tools import runbooks

RULES_HELP = "folder of *.rules.yml files (default: ./alert_rules)"


def add_rules(commands: Any) -> None:
    rules = commands.add_parser(
        "rules",
        help="write the alert rules with your team's runbook links",
        description="Copy the rule files to --out with each alert's runbook_url taken from "
        "--runbook-map (YAML: alert name -> URL#section; unmapped alerts keep stackprobe's "
        "own runbook) and dashboard_url pointing at --grafana-url.",
    )
    rules.add_argument("--runbook-map", type=Path, help="YAML: alert name -> URL#section")
    rules.add_argument(
        "--grafana-url", help="where your Grafana is, for dashboard_url (e.g. https://grafana.corp)"
    )
    rules.add_argument("--out", type=Path, required=True)
    rules.add_argument("--rules", type=Path, default=Path("alert_rules"), help=RULES_HELP)
    rules.set_defaults(handler=_rules)


def add_runbook(commands: Any) -> None:
    runbook = commands.add_parser("runbook", help="check runbook links")
    runbook_commands = runbook.add_subparsers(dest="runbook_command", required=True)
    check = runbook_commands.add_parser(
        "check",
        help="fail when an alert's runbook_url anchor is not a heading of the runbook",
        description="Exit 0 when every alert's runbook_url anchor is a heading of the "
        "Markdown runbook (GitHub's anchors), else name each alert and missing anchor, exit 1.",
    )
    check.add_argument("--rules", type=Path, default=Path("alert_rules"), help=RULES_HELP)
    check.add_argument("--runbook", type=Path, required=True, help="the Markdown file")
    check.add_argument(
        "--url-prefix", help="the URL the runbook is published at (default: match its name)"
    )
    check.set_defaults(handler=_runbook_check)


def _rules(args: argparse.Namespace) -> int:
    try:
        mapping = runbooks.load_map(args.runbook_map) if args.runbook_map else {}
        written = runbooks.render(args.rules, mapping, args.out, args.grafana_url)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"stackprobe rules: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} rule files to {args.out}")
    return 0


def _runbook_check(args: argparse.Namespace) -> int:
    try:
        result = runbooks.check(args.rules, args.runbook, args.url_prefix)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: a file not UTF-8
        print(f"stackprobe runbook check: {exc}", file=sys.stderr)
        return 1
    for problem in result.problems:
        print(problem, file=sys.stderr)
    if result.problems:
        return 1
    total = len(runbooks.alerts(args.rules))
    print(f"{result.checked} of {total} alerts link into {args.runbook}; every anchor is a heading")
    return 0
