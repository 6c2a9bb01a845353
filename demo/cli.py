"""`stackprobe demo`: the demo stack and stackprobe probing it, or switching a running demo's
faults. Registered as a command by its entry point; moto is imported only when it starts."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

import httpx

from stackprobe.cli import logging_options, parse_listen, run_loop, serve
from stackprobe.config import ConfigError
from stackprobe.durations import parse_duration
from stackprobe.logs import configure_logging
from stackprobe.secrets import Redactor

# Where PostgreSQL and Redis usually run on a developer's machine.
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[logging_options()],
        help="run stackprobe against a demo ECS stack on this machine (no AWS account)",
        description=(
            "Start a demo ECS Fargate stack (AWS in moto, a web app, DNS) and stackprobe "
            "probing it, plus PostgreSQL and Redis at their usual local addresses. With "
            "--fault or --clear while a demo runs, switch its faults and exit. With "
            "--with-alerts, also Prometheus with the shipped alert rules and Alertmanager "
            "with the example routing, so each fault becomes a page."
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
    demo.add_argument(
        "--interval", help="how often each target is probed (default: 5s; 1s with --with-alerts)"
    )
    demo.add_argument(
        "--postgres-dsn",
        help="PostgreSQL to probe; a password goes in PGPASSWORD, never in the DSN (default: "
        "the local one on 5432, or one the demo starts when that one refuses it)",
    )
    demo.add_argument(
        "--redis-url",
        help="Redis to probe (default: the local one on 6379, or one the demo starts when "
        "that one refuses it)",
    )
    demo.add_argument(
        "--fault", action="append", default=[], metavar="NAME", help="switch a fault on"
    )
    demo.add_argument(
        "--clear", action="append", default=[], metavar="NAME", help="switch a fault off (or all)"
    )
    demo.add_argument(
        "--with-alerts",
        action="store_true",
        help="also run Debian's prometheus with the shipped alert rules (on a faster clock) and "
        "prometheus-alertmanager with the example routing; the demo logs each page they send",
    )
    demo.add_argument(
        "--print-config",
        action="store_true",
        help="print the config the running demo's stackprobe uses (or a new demo's), and exit",
    )
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    try:
        listen, app_listen = parse_listen(args.listen), parse_listen(args.app_listen)
    except ValueError as exc:
        print(f"stackprobe demo: {exc}", file=sys.stderr)
        return 2
    own_postgres, own_redis = args.postgres_dsn is None, args.redis_url is None
    postgres_dsn = args.postgres_dsn or DEFAULT_POSTGRES_DSN
    redis_url = args.redis_url or DEFAULT_REDIS_URL
    if urlsplit(postgres_dsn).password:
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
            f"stackprobe demo needs moto's server, aiohttp and redis-py ({exc.name} is missing): "
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
    default = demo.DEFAULT_ALERTS_INTERVAL if args.with_alerts else demo.DEFAULT_INTERVAL
    try:
        interval = parse_duration(args.interval) if args.interval else default
    except ValueError as exc:
        print(f"stackprobe demo: --interval: {exc}", file=sys.stderr)
        return 2
    tools = None
    if args.with_alerts:
        from stackprobe.demo.alerting import find_tools

        found = find_tools()
        if isinstance(found, str):
            print(f"stackprobe demo: {found}", file=sys.stderr)
            return 2
        tools = found
    demo.demo_environment()
    options = demo.Options(
        listen=listen,
        app_listen=app_listen,
        interval=interval,
        postgres_dsn=postgres_dsn,
        redis_url=redis_url,
        faults=args.fault,
        own_postgres=own_postgres,
        own_redis=own_redis,
        alerting=tools,
    )
    redactor = Redactor()
    configure_logging(args.log_format, args.log_level, redactor)

    async def run() -> int:
        # SIGTERM while it starts: stop what has started (serve() handles it from then on)
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        try:
            async with demo.demo_stack(options) as running:
                if args.print_config:
                    print(running.config_text, end="")
                    return 0
                return await serve(
                    running.config, running.config_path, *listen, redactor, running.banner
                )
        except (OSError, ConfigError, demo.FaultError, demo.AlertingError) as exc:
            print(f"stackprobe demo: cannot start: {exc}", file=sys.stderr)
            return 1
        except asyncio.CancelledError:
            return 0

    return run_loop(run())  # on the loop `stackprobe run` uses: what production runs


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
