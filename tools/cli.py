"""`stackprobe rules` and `stackprobe runbook check`: the runbook links of the shipped rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

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


def add_migrate_blackbox(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate-blackbox",
        help="turn a blackbox_exporter module file and its targets into a stackprobe config",
        description="Write a stackprobe config with one target per (module, target) pair, "
        "each with its module's checks. What has no stackprobe equivalent is said as a "
        "comment at the top and on stderr; an inline credential becomes {from_env: NAME}. "
        "Exit 0 when every target was translated, 1 when some were left out (the rest is "
        "still written), 2 when the input is unusable. docs/blackbox.md has the table.",
    )
    migrate.add_argument("config", type=Path, help="blackbox_exporter's config (modules:)")
    migrate.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="MODULE=TARGET",
        help="a target and the module it was probed with, as Prometheus's ?module=&target= "
        "(repeat it)",
    )
    migrate.add_argument(
        "--targets", type=Path, help="YAML: module name -> list of targets probed with it"
    )
    migrate.add_argument("--interval", help="defaults.interval, your scrape interval (15s)")
    migrate.add_argument("--out", type=Path, help="write the config here (default: stdout)")
    migrate.set_defaults(handler=_migrate_blackbox)


def _migrate_blackbox(args: argparse.Namespace) -> int:
    from stackprobe.tools.blackbox import migrate

    def refuse(message: str) -> int:
        print(f"stackprobe migrate-blackbox: {message}", file=sys.stderr)
        return 2

    try:
        document = yaml.safe_load(args.config.read_text())
    except OSError as exc:
        return refuse(f"cannot read {args.config}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        return refuse(f"{args.config} is not YAML: {str(exc).splitlines()[0]}")
    modules = document.get("modules") if isinstance(document, dict) else None
    if not isinstance(modules, dict) or not modules:
        return refuse(f"{args.config} has no `modules:` mapping; is it blackbox_exporter's?")
    probes: list[tuple[str, str]] = []
    for pair in args.target:
        module, sep, target = pair.partition("=")
        if not sep or not module or not target:
            return refuse(f"--target {pair!r} must be MODULE=TARGET, like http_2xx=https://a.b")
        probes.append((module, target))
    if args.targets:
        try:
            listed = yaml.safe_load(args.targets.read_text())
        except (OSError, yaml.YAMLError) as exc:
            return refuse(f"cannot read --targets {args.targets}: {exc}")
        if not isinstance(listed, dict):
            return refuse(f"--targets {args.targets} must map module names to lists of targets")
        for module, targets in listed.items():
            for target in targets if isinstance(targets, list) else [targets]:
                probes.append((str(module), str(target)))
    if not probes:
        return refuse("no target: give --target MODULE=TARGET or --targets FILE")
    migration = migrate(modules, probes)
    text = migration.config(args.interval)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    for line in [*migration.notes, *migration.skipped]:
        print(f"stackprobe migrate-blackbox: {line}", file=sys.stderr)
    if migration.variables:
        print(
            f"stackprobe migrate-blackbox: set {', '.join(migration.variables)} before "
            "starting stackprobe",
            file=sys.stderr,
        )
    return 1 if migration.skipped else 0


def _rules(args: argparse.Namespace) -> int:
    # here, not at the top: every command line builds the parser, and `run` should not
    # load markdown-it and ruamel.yaml (2.6 MiB of RSS) for commands it never runs
    from stackprobe.tools import runbooks

    try:
        mapping = runbooks.load_map(args.runbook_map) if args.runbook_map else {}
        written = runbooks.render(args.rules, mapping, args.out, args.grafana_url)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"stackprobe rules: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} rule files to {args.out}")
    return 0


def _runbook_check(args: argparse.Namespace) -> int:
    from stackprobe.tools import runbooks  # as in _rules

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
