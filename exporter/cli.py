"""Command line: `stackprobe run`, `demo`, `check-config`, `rules`, `runbook check`, `--version`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import structlog
import yaml
from aiohttp import web

from stackprobe import runbooks
from stackprobe._version import __version__
from stackprobe.app import App
from stackprobe.config import Config, ConfigError, Problem, load_config, parse_config
from stackprobe.durations import parse_duration
from stackprobe.logs import LEVELS, configure_logging
from stackprobe.probes import KINDS
from stackprobe.secrets import Redactor
from stackprobe.server import make_web_app

DEFAULT_LISTEN = ":9877"
# ECS sends SIGKILL 30 s after SIGTERM by default; finish well before.
SHUTDOWN_SECONDS = 10

# With no --config, stackprobe watches itself, so `stackprobe run` shows a working exporter
# on any machine; a real deployment always passes --config.
_BUILTIN_CONFIG = """
targets:
  - name: stackprobe-self
    kind: http
    url: http://127.0.0.1:{port}/-/healthy
    expect_body_regex: ["Healthy"]
"""


def build_parser() -> argparse.ArgumentParser:
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument(
        "--log-format", choices=("logfmt", "json"), default="logfmt", help="log line format"
    )
    logging_options.add_argument("--log-level", choices=LEVELS, default="info")

    parser = argparse.ArgumentParser(
        prog="stackprobe",
        description="Prometheus exporter and synthetic prober for web stacks on AWS ECS Fargate.",
    )
    parser.add_argument("--version", action="version", version=f"stackprobe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        parents=[logging_options],
        help="run the exporter",
        description="Probe the configured targets and serve /metrics.",
    )
    run.add_argument(
        "--config", type=Path, help="YAML config file (default: a built-in self-check)"
    )
    run.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN})"
    )
    demo = commands.add_parser(
        "demo",
        parents=[logging_options],
        help="run stackprobe against a demo ECS stack on this machine (no AWS account)",
        description=(
            "Start a demo ECS Fargate stack (AWS in moto, a web app, DNS) and stackprobe "
            "probing it, plus PostgreSQL and Redis at their usual local addresses. With "
            "--fault or --clear while a demo runs, switch its faults and exit."
        ),
    )
    demo.add_argument(
        "--listen",
        default="127.0.0.1:9877",
        help="HOST:PORT for /metrics (default: 127.0.0.1:9877)",
    )
    demo.add_argument(
        "--app-listen",
        default="127.0.0.1:8787",
        help="HOST:PORT of the demo app and its fault switch (default: 127.0.0.1:8787)",
    )
    demo.add_argument("--interval", default="5s", help="how often each target is probed")
    demo.add_argument(
        "--postgres-dsn",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL to probe; a password goes in PGPASSWORD, never in the DSN",
    )
    demo.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis to probe")
    demo.add_argument(
        "--fault", action="append", default=[], metavar="NAME", help="switch a fault on"
    )
    demo.add_argument(
        "--clear", action="append", default=[], metavar="NAME", help="switch a fault off (or all)"
    )
    demo.add_argument(
        "--print-config",
        action="store_true",
        help="print the config the running demo's stackprobe uses (or a new demo's), and exit",
    )
    check = commands.add_parser(
        "check-config",
        help="validate a config file and exit",
        description="Exit 0 if the config is valid, else list every problem and exit 1. "
        "Secrets that cannot be read (an unset variable, an unreadable file) are warnings, "
        "so a config checks where its secrets are not, as in CI; so are alerts that cannot "
        "fire for lack of a companion target.",
    )
    check.add_argument("config", type=Path)
    check.add_argument(
        "--require-secrets",
        action="store_true",
        help="a secret that cannot be read is an error, as for `run` (a deploy's last check)",
    )
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
    runbook = commands.add_parser("runbook", help="check runbook links")
    runbook_commands = runbook.add_subparsers(dest="runbook_command", required=True)
    runbook_check = runbook_commands.add_parser(
        "check",
        help="fail when an alert's runbook_url anchor is not a heading of the runbook",
        description="Exit 0 when every alert's runbook_url anchor is a heading of the "
        "Markdown runbook (GitHub's anchors), else name each alert and missing anchor, exit 1.",
    )
    runbook_check.add_argument("--rules", type=Path, default=Path("alert_rules"), help=RULES_HELP)
    runbook_check.add_argument("--runbook", type=Path, required=True, help="the Markdown file")
    runbook_check.add_argument(
        "--url-prefix", help="the URL the runbook is published at (default: match its name)"
    )
    return parser


RULES_HELP = "folder of *.rules.yml files (default: ./alert_rules)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.config, args.require_secrets)
    if args.command == "rules":
        return _rules(args.rules, args.runbook_map, args.out, args.grafana_url)
    if args.command == "runbook":
        return _runbook_check(args.rules, args.runbook, args.url_prefix)
    if args.command == "demo":
        return _demo(args)
    return _run(args)


def _rules(rules_dir: Path, map_path: Path | None, out: Path, grafana_url: str | None) -> int:
    try:
        mapping = runbooks.load_map(map_path) if map_path else {}
        written = runbooks.render(rules_dir, mapping, out, grafana_url)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"stackprobe rules: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} rule files to {out}")
    return 0


def _runbook_check(rules_dir: Path, runbook: Path, url_prefix: str | None) -> int:
    try:
        result = runbooks.check(rules_dir, runbook, url_prefix)
    except (OSError, yaml.YAMLError) as exc:
        print(f"stackprobe runbook check: {exc}", file=sys.stderr)
        return 1
    for problem in result.problems:
        print(problem, file=sys.stderr)
    if result.problems:
        return 1
    total = len(runbooks.alerts(rules_dir))
    print(f"{result.checked} of {total} alerts link into {runbook}; every anchor is a heading")
    return 0


def _check_config(path: Path, require_secrets: bool = False) -> int:
    try:
        config = load_config(path, KINDS, defer_secrets=not require_secrets)
    except ConfigError as exc:
        _print_warnings(exc.warnings)
        count = len(exc.problems)
        print(f"{path}: {count} problem{'s' if count != 1 else ''}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    _print_warnings(config.warnings)
    kinds = Counter([*(target.kind for target in config.targets), *config.partial])
    summary = ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items())) or "none"
    count = len(config.warnings)
    warned = f", {count} warning{'s' if count != 1 else ''}" if count else ""
    print(f"{path}: OK, {kinds.total()} targets ({summary}){warned}")
    return 0


def _print_warnings(warnings: Sequence[Problem]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def parse_listen(text: str) -> tuple[str | None, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {text!r} must be HOST:PORT or :PORT, e.g. :9877")
    return (host.strip("[]") or None), int(port)


def _run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"stackprobe: {exc}", file=sys.stderr)
        return 2
    redactor = Redactor()
    configure_logging(args.log_format, args.log_level, redactor)
    try:
        if args.config is None:
            config = parse_config(_BUILTIN_CONFIG.format(port=port), "<built-in>", KINDS)
        else:
            config = load_config(args.config, KINDS)
    except ConfigError as exc:
        print(f"stackprobe: the config is invalid, not starting:\n{exc}", file=sys.stderr)
        return 2
    log = structlog.get_logger("stackprobe")
    for warning in config.warnings:  # at start only: a reload does not repeat them
        log.warning(warning.message, config=warning.source, path=warning.path)
    try:
        return asyncio.run(serve(config, args.config, host, port, redactor))
    except KeyboardInterrupt:
        return 0


async def serve(
    config: Config,
    path: Path | None,
    host: str | None,
    port: int,
    redactor: Redactor,
    banner: Callable[[], str] | None = None,
) -> int:
    """Serve /metrics until SIGTERM or SIGINT; SIGHUP reloads the config file."""
    log = structlog.get_logger("stackprobe")
    app = App(config, kinds=KINDS, redactor=redactor, config_path=path)
    runner = web.AppRunner(make_web_app(app), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        print(
            f"stackprobe: cannot listen on {host or '*'}:{port}: {exc.strerror}; "
            "pick another address with --listen",
            file=sys.stderr,
        )
        return 1
    app.start()
    if banner is not None:
        print(banner(), flush=True)
    elif path is None:
        log.info("no --config given: probing stackprobe itself; see docs/configuration.md")
    log.info(
        "stackprobe started",
        version=__version__,
        listen=f"{host or '*'}:{port}",
        targets=len(config.targets),
        config=str(path) if path else config.source.strip("<>"),
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task[object]] = set()

    def on_hup() -> None:
        task = asyncio.create_task(app.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        log.info("stackprobe stopping")
        try:
            async with asyncio.timeout(SHUTDOWN_SECONDS):
                await runner.cleanup()
                await app.stop()
        except TimeoutError:
            log.warning("shutdown took too long; exiting anyway", limit_seconds=SHUTDOWN_SECONDS)
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        listen, app_listen = parse_listen(args.listen), parse_listen(args.app_listen)
    except ValueError as exc:
        print(f"stackprobe demo: {exc}", file=sys.stderr)
        return 2
    if urlsplit(args.postgres_dsn).password:
        print(
            "stackprobe demo: --postgres-dsn carries a password; drop it from the DSN and "
            "set PGPASSWORD instead",
            file=sys.stderr,
        )
        return 2
    if args.print_config:
        running = _running_demo_config(app_listen)
        if running is not None:
            print(running, end="")
            return 0
    if args.fault or args.clear:
        switched = _switch_running_demo(app_listen, args.fault, args.clear)
        if switched is not None:
            return switched
        if args.clear:
            print(f"stackprobe demo: no demo answers at {args.app_listen}", file=sys.stderr)
            return 1
    try:
        from stackprobe.demo import main as demo
    except ImportError as exc:
        print(
            f"stackprobe demo needs moto's server ({exc.name} is missing): "
            "pip install 'stackprobe[demo]', or run `make demo`",
            file=sys.stderr,
        )
        return 2
    unknown = [name for name in args.fault if name not in demo.FAULTS]
    if unknown:
        print(
            f"stackprobe demo: no fault {', '.join(unknown)}; the faults are: "
            f"{', '.join(demo.FAULTS)}",
            file=sys.stderr,
        )
        return 2
    try:
        interval = parse_duration(args.interval)
    except ValueError as exc:
        print(f"stackprobe demo: --interval: {exc}", file=sys.stderr)
        return 2
    demo.demo_environment()
    options = demo.Options(
        listen=listen,
        app_listen=app_listen,
        interval=interval,
        postgres_dsn=args.postgres_dsn,
        redis_url=args.redis_url,
        faults=args.fault,
    )
    redactor = Redactor()
    configure_logging(args.log_format, args.log_level, redactor)

    async def run() -> int:
        try:
            async with demo.demo_stack(options) as running:
                if args.print_config:
                    print(running.config_text, end="")
                    return 0
                return await serve(running.config, None, *listen, redactor, running.banner)
        except (OSError, ConfigError, demo.FaultError) as exc:
            print(f"stackprobe demo: cannot start: {exc}", file=sys.stderr)
            return 1

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 0


def _running_demo_config(app_listen: tuple[str | None, int]) -> str | None:
    host, port = app_listen
    try:
        answer = httpx.get(f"http://{host or '127.0.0.1'}:{port}/config", timeout=5)
    except httpx.HTTPError:
        return None
    return answer.text if answer.status_code == 200 and "targets:" in answer.text else None


def _switch_running_demo(
    app_listen: tuple[str | None, int], on: list[str], off: list[str]
) -> int | None:
    """Switch the faults of a demo already running at app_listen; None when none answers."""
    host, port = app_listen
    with httpx.Client(base_url=f"http://{host or '127.0.0.1'}:{port}", timeout=60) as client:
        try:
            names = [f["name"] for f in client.get("/faults", timeout=5).json()]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None  # nothing there, or not a demo
        status = 0
        wanted = [("POST", n) for n in on]
        wanted += [("DELETE", n) for n in (names if "all" in off else off)]
        for method, name in wanted:
            try:
                answer = client.request(method, f"/faults/{name}")
                state = answer.json()
            except (httpx.HTTPError, ValueError) as exc:
                print(f"{name}: the demo did not answer: {exc}", file=sys.stderr)
                status = max(status, 1)
                continue
            if "error" in state:
                print(f"{name}: {state['error']}", file=sys.stderr)
                status = max(status, 2 if answer.status_code == 404 else 1)
            else:
                print(f"{name}: {'on' if state['on'] else 'off'}")
        return status
