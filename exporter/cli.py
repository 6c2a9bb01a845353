"""Command line: `stackprobe run`, `check-config`, `--version`, and the commands that ship
beside the exporter (`rules`, `runbook check`, `demo`), found by their entry points."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog
import uvloop

from stackprobe._version import __version__
from stackprobe.app import LOAD_LIMIT_SECONDS, App
from stackprobe.cluster import COUNT_ENV, INDEX_ENV, with_overrides
from stackprobe.config import Config, ConfigError, Problem, load_config, parse_config
from stackprobe.daemon_thread import run_in_daemon_thread
from stackprobe.logs import LEVELS, configure_logging
from stackprobe.probes import KINDS, MEMBERSHIPS
from stackprobe.secrets import Redactor
from stackprobe.server import LANDING_MODES, Listener, Surface, WebOptions, make_web_app
from stackprobe.webconfig import WebConfigError

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


# Commands that ship beside the exporter (the runbook tooling, the demo) register under this
# entry-point group, each a function that adds its subcommand; one whose module cannot be
# imported (a broken install) is left out of `--help` rather than breaking `run`.
COMMANDS_GROUP = "stackprobe.commands"


def logging_options() -> argparse.ArgumentParser:
    """The flags every long-running command takes, as an argparse parent."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--log-format", choices=("logfmt", "json"), default="logfmt", help="log line format"
    )
    options.add_argument("--log-level", choices=LEVELS, default="info")
    return options


# The commands build_parser defines itself; any other is looked for among the plugins.
CORE_COMMANDS = ("run", "check-config")
Commands = Any  # argparse's private _SubParsersAction: what add_subparsers() returns


def build_parser(plugins: bool = True) -> argparse.ArgumentParser:
    """The command line; `plugins=False` leaves out the commands registered by entry point,
    whose modules (and importlib.metadata's) a `run` need not hold in memory."""
    parser = argparse.ArgumentParser(
        prog="stackprobe",
        description="Prometheus exporter and synthetic prober for web stacks on AWS ECS Fargate.",
    )
    parser.add_argument("--version", action="version", version=f"stackprobe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        parents=[logging_options()],
        help="run the exporter",
        description="Probe the configured targets and serve /metrics.",
    )
    run.add_argument(
        "--config", type=Path, help="YAML config file (default: a built-in self-check)"
    )
    run.add_argument(
        "--listen",
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN}; 127.0.0.1:PORT keeps it local)",
    )
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        help="TLS, basic auth and response headers for the web surface, in the Prometheus "
        "exporter-toolkit format (docs/security.md); reloaded with the config",
    )
    run.add_argument(
        "--web.enable-lifecycle",
        dest="lifecycle",
        action="store_true",
        help="allow POST /-/reload (SIGHUP always reloads)",
    )
    run.add_argument(
        "--web.landing-page",
        dest="landing",
        choices=LANDING_MODES,
        default="full",
        help="what / shows: everything (full), target names without what they probe or "
        "failure details (names), or nothing (off)",
    )
    run.add_argument(
        "--cluster.index",
        dest="cluster_index",
        type=int,
        default=os.environ.get(INDEX_ENV) or None,  # set but empty: unset
        help=f"this replica's place, 0 to count - 1, among replicas sharing the config "
        f"(default: ${INDEX_ENV}, else the config's cluster.index)",
    )
    run.add_argument(
        "--cluster.count",
        dest="cluster_count",
        type=int,
        default=os.environ.get(COUNT_ENV) or None,
        help=f"how many replicas share the config's targets (default: ${COUNT_ENV}, else the "
        "config's cluster.count)",
    )
    run.set_defaults(handler=_run)
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
    check.set_defaults(handler=lambda args: _check_config(args.config, args.require_secrets))
    if not plugins:
        return parser
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            register: Callable[[Commands], None] = entry.load()
        except ImportError:
            continue  # a broken install: `run` and `check-config` still work
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(plugins=command not in CORE_COMMANDS).parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


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


class _EarlyHup:
    """SIGHUP's default action ends the process: from here until the loop's own handler is in
    place (loading a big config takes seconds), a SIGHUP is remembered and served as a
    reload once running, so a deploy tool that reloads too early does not kill the exporter."""

    def __init__(self) -> None:
        self.arrived = False
        signal.signal(signal.SIGHUP, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.arrived = True


def _raise_open_file_limit() -> None:
    """Every probe holds a socket while it runs; the soft limit (often 1,024) is raised to the
    hard one, as Go programs do at start, so thousands of targets, or clients holding
    connections open, do not run stackprobe out of descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        print(f"stackprobe: {exc}", file=sys.stderr)
        return 2
    options = WebOptions(args.web_config_file, args.lifecycle, args.landing)
    try:
        surface = Surface(options)
    except WebConfigError as exc:
        print(f"stackprobe: {exc}; not starting", file=sys.stderr)
        return 2
    redactor = Redactor()
    configure_logging(args.log_format, args.log_level, redactor)
    early = _EarlyHup()
    _raise_open_file_limit()
    try:
        if args.config is None:
            config = parse_config(_BUILTIN_CONFIG.format(port=port), "<built-in>", KINDS)
        else:
            config = load_config(args.config, KINDS)
    except ConfigError as exc:
        print(f"stackprobe: the config is invalid, not starting:\n{exc}", file=sys.stderr)
        return 2
    overrides = (args.cluster_index, args.cluster_count)
    try:
        with_overrides(config.cluster, *overrides)
    except ValueError as exc:
        print(f"stackprobe: {exc}; not starting", file=sys.stderr)
        return 2
    log = structlog.get_logger("stackprobe")
    for warning in config.warnings:  # at start only: a reload does not repeat them
        log.warning(warning.message, config=warning.source, path=warning.path)
    return run_loop(
        serve(
            config,
            args.config,
            host,
            port,
            redactor,
            surface=surface,
            early_hup=early,
            cluster_overrides=overrides,
        )
    )


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """`main` on the loop every command that serves runs on (`run`, `demo`): uvloop, asyncio's
    loop and transports in C (libuv), an eighth less CPU per probe (bench/http_vs_blackbox.py);
    everything above the loop is asyncio's own API. Ctrl-C is a clean exit."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    except KeyboardInterrupt:
        return 0


async def serve(
    config: Config,
    path: Path | None,
    host: str | None,
    port: int,
    redactor: Redactor,
    banner: Callable[[], str] | None = None,
    surface: Surface | None = None,
    early_hup: _EarlyHup | None = None,
    cluster_overrides: tuple[int | None, int | None] = (None, None),
) -> int:
    """Serve /metrics until SIGTERM or SIGINT; SIGHUP reloads the config file."""
    log = structlog.get_logger("stackprobe")
    app = App(
        config,
        kinds=KINDS,
        redactor=redactor,
        config_path=path,
        cluster_overrides=cluster_overrides,
        memberships=MEMBERSHIPS,
    )
    surface = surface if surface is not None else Surface(WebOptions())
    listener: Listener

    async def reload() -> tuple[bool, str]:
        """The web config first (a new certificate is served to new connections at once),
        then the config; each keeps its previous version when the new one is bad."""
        web_problem = ""
        try:
            loading = run_in_daemon_thread(surface.load, "web config load")
            try:
                async with asyncio.timeout(LOAD_LIMIT_SECONDS):
                    loaded = await loading
            except TimeoutError:
                raise WebConfigError(
                    f"web config {surface.options.config_file}: it did not load within "
                    f"{LOAD_LIMIT_SECONDS:g} s and was abandoned (is it a FIFO, or on a mount "
                    "that does not answer?)"
                ) from None
            if surface.use(loaded):
                await listener.serve(surface.tls)
                log.info("web config reloaded: new connections get the new TLS settings")
        except WebConfigError as exc:
            web_problem = str(exc)
            log.error("web config reload failed; the previous one stays", problems=web_problem)
        outcome = await app.reload(failed_elsewhere=web_problem)
        message = app.redactor(outcome.message)
        if web_problem:
            return False, "\n".join(filter(None, [web_problem, message]))
        return outcome.ok, message

    listener = Listener(make_web_app(app, surface, reload), host, port)
    try:
        await listener.start(surface.tls)
    except OSError as exc:
        await listener.stop()
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
        listen=f"{'https' if surface.tls else 'http'}://{host or '*'}:{port}",
        basic_auth=surface.gate.needs_auth,
        targets=len(config.targets),
        config=str(path) if path else config.source.strip("<>"),
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_hup() -> None:
        app.request_reload(reload)  # coalesced: one runs, at most one waits

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if early_hup is not None and early_hup.arrived:
        log.info("a SIGHUP arrived during start-up; reloading the config now")
        on_hup()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        log.info("stackprobe stopping")
        app.abandon_reload()  # a load stuck on a FIFO answers now, not after the listener
        try:
            async with asyncio.timeout(SHUTDOWN_SECONDS):
                await listener.stop()
                await app.stop()
        except TimeoutError:
            log.warning("shutdown took too long; exiting anyway", limit_seconds=SHUTDOWN_SECONDS)
    return 0
