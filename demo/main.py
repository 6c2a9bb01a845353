"""`stackprobe demo`: the demo stack, its fault switch, and stackprobe probing all of it in
one process, with no AWS account and no config; with --with-alerts, Prometheus and
Alertmanager beside it (demo/alerting.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web

from stackprobe.config import Config, load_config
from stackprobe.demo import world as stack
from stackprobe.demo.alerting import (
    PRODUCTION,
    Alerting,
    Pace,
    Tools,
    Yesterday,
    about,
    demo_clock,
    group_waits,
    read_alerts,
    routing,
    shipped_rules,
    timing,
)
from stackprobe.demo.alerting import AlertingError as AlertingError
from stackprobe.demo.cli import DEFAULT_POSTGRES_DSN, DEFAULT_REDIS_URL
from stackprobe.demo.config import CLOUDWATCH_PERIOD, DEMO_INGESTION_LAG, Addresses, demo_config
from stackprobe.demo.datastores import OwnPostgres, OwnRedis, postgres_refuses, redis_refuses
from stackprobe.demo.faults import FAULTS as FAULTS
from stackprobe.demo.faults import POOL_MAX_OVERFLOW, POOL_SIZE, Faults
from stackprobe.demo.faults import FaultError as FaultError
from stackprobe.demo.site import SiteState, health_app, self_signed, serve_dns
from stackprobe.probes import KINDS

DEFAULT_APP_LISTEN = "127.0.0.1:8787"
DEFAULT_INTERVAL = 5.0
# With --with-alerts a probe runs each second, as in tests/e2e: the rules' minutes are seconds.
DEFAULT_ALERTS_INTERVAL = 1.0


@dataclass
class Options:
    listen: tuple[str | None, int]
    app_listen: tuple[str | None, int]
    interval: float = 5.0
    postgres_dsn: str = DEFAULT_POSTGRES_DSN
    redis_url: str = DEFAULT_REDIS_URL
    faults: list[str] = field(default_factory=list)
    # Start a PostgreSQL (Redis) of the demo's own when the one at postgres_dsn (redis_url)
    # refuses: set when the user named none, so a server they chose is never replaced.
    own_postgres: bool = False
    own_redis: bool = False
    # Prometheus, Alertmanager and the rules to run beside the demo (--with-alerts), or None.
    alerting: Tools | None = None


def control_routes(app: web.Application, faults: Faults, config: dict[str, str]) -> None:
    """The fault switch: GET /faults, POST /faults/NAME (on), DELETE /faults/NAME (off);
    and GET /config, the config stackprobe runs (`config["text"]` once it is made)."""

    async def config_text(_: web.Request) -> web.Response:
        return web.Response(text=config.get("text", ""), content_type="application/yaml")

    async def index(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        lines = ["stackprobe demo: the AEP-like stack's web app and its fault switch", ""]
        width = max(map(len, FAULTS))
        for fault in faults.state():
            mark = "ON " if fault["on"] else "off"
            lines.append(
                f"  [{mark}] {fault['name']:<{width}} {fault['incident']}: {fault['what']}"
            )
            lines.append(f"        {'':<{width}} pages: {', '.join(fault['alerts'])}")
        lines += [
            "",
            f"switch on:  curl -X POST {base}/faults/NAME   (or: stackprobe demo --fault NAME)",
            f"switch off: curl -X DELETE {base}/faults/NAME (or: stackprobe demo --clear NAME)",
        ]
        return web.Response(text="\n".join(lines) + "\n")

    async def listing(_: web.Request) -> web.Response:
        return web.json_response(faults.state())

    async def switch(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if "Origin" in request.headers:  # a web page's script, not curl or the CLI
            error = "the fault switch takes no requests from web pages"
            return web.json_response({"name": name, "error": error}, status=403)
        try:
            on = await faults.switch(name, request.method in ("POST", "PUT"))
        except FaultError as exc:
            status = 404 if name not in FAULTS else 409  # 409: the stack cannot do it now
            return web.json_response({"name": name, "error": str(exc)}, status=status)
        return web.json_response({"name": name, "on": on})

    app.router.add_get("/", index)
    app.router.add_get("/faults", listing)
    app.router.add_get("/config", config_text)
    for method in ("POST", "PUT", "DELETE"):
        app.router.add_route(method, "/faults/{name}", switch)


def demo_environment() -> None:
    """For the demo's process only (the CLI calls it first): the demo's own AWS credentials,
    so a real key in the environment never signs a request to the demo's AWS, and loopback
    kept away from any HTTP proxy."""
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo")
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN"):
        os.environ.pop(name, None)
    for name in ("NO_PROXY", "no_proxy"):
        kept = [h for h in os.environ.get(name, "").split(",") if h]
        os.environ[name] = ",".join([*kept, "127.0.0.1", "localhost"])


def _password_env() -> str | None:
    """libpq's own variable: asyncpg reads it too, so the DSN never needs a password."""
    return "PGPASSWORD" if os.environ.get("PGPASSWORD") else None


@dataclass(frozen=True)
class Running:
    config: Config  # stackprobe's, probing all of the demo
    config_text: str  # the same, as YAML
    config_path: Path  # the same, as the file stackprobe loads (and reloads on SIGHUP)
    banner: Callable[[], str]


@contextlib.asynccontextmanager
async def demo_stack(options: Options) -> AsyncIterator[Running]:
    """Everything but stackprobe: AWS in moto, the web app, its DNS, the traffic."""
    log = structlog.get_logger("stackprobe.demo")
    site = SiteState()
    runners: list[web.AppRunner] = []
    traffic: asyncio.Task[None] | None = None
    dns_transport = None
    aws = stack.World(task_address="127.0.0.1")
    pools = (POOL_SIZE + POOL_MAX_OVERFLOW) * stack.SERVICES[stack.BACKEND]
    own: list[OwnPostgres | OwnRedis] = []
    faults: Faults | None = None
    alerts: Alerting | None = None
    with tempfile.TemporaryDirectory(prefix="stackprobe-demo-") as tmp:
        try:
            postgres_dsn, redis_url = options.postgres_dsn, options.redis_url
            if options.own_postgres:
                postgres_dsn = await _own_if_refused(
                    "PostgreSQL",
                    postgres_dsn,
                    await postgres_refuses(postgres_dsn),
                    OwnPostgres(),
                    own,
                    log,
                )
            if options.own_redis:
                redis_url = await _own_if_refused(
                    "Redis", redis_url, await redis_refuses(redis_url), OwnRedis(), own, log
                )
            options = dataclasses.replace(options, postgres_dsn=postgres_dsn, redis_url=redis_url)
            faults = Faults(aws, site, options.postgres_dsn, options.redis_url, pools)
            tls, ca_file = self_signed(Path(tmp))
            tasks_app = health_app(site)
            config_holder: dict[str, str] = {}
            control_routes(tasks_app, faults, config_holder)
            app_host, app_port = options.app_listen
            for app, host, port, context in (
                (tasks_app, app_host, app_port, None),
                (health_app(site), "127.0.0.1", 0, tls),  # its port: the kernel's choice
            ):
                runner = web.AppRunner(app, access_log=None, handle_signals=False)
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, host, port, ssl_context=context).start()
            https_port = runners[-1].addresses[0][1]
            dns_transport, dns_port = await serve_dns(site)
            await asyncio.to_thread(aws.start)
            traffic = asyncio.create_task(_traffic(aws, log, _tick(options.interval)))
            await faults.warm()
            for name in options.faults:
                await faults.switch(name, True)
            addresses = Addresses(
                aws_endpoint=aws.endpoint,
                https_port=https_port,
                tasks_port=app_port,
                dns_port=dns_port,
                ca_file=str(ca_file),
                load_balancer_dimension=aws.load_balancer_dimension,
                postgres_dsn=options.postgres_dsn,
                postgres_password_env=_password_env(),
                redis_url=options.redis_url,
                database_group=aws.ecs.database_group,
                cache_group=aws.ecs.cache_group,
            )
            console = None
            if options.alerting is not None:
                alerts = Alerting(
                    options.alerting,
                    Path(tmp) / "alerting",
                    _scrape_address(options.listen),
                    options.interval,
                    [YESTERDAY],
                )
                await alerts.start()
                console = {
                    # the rules on the demo clock: their runbook and dashboard links as shipped
                    "rules": str(alerts.rules),
                    "alertmanager_url": alerts.alertmanager_url,
                    "prometheus_url": alerts.prometheus_url,
                }
            text = config_holder["text"] = demo_config(addresses, options.interval, console)
            # a file, as a user's config is: the page names it, and SIGHUP reloads it
            path = Path(tmp) / "stackprobe.yml"
            path.touch(mode=0o600)
            path.write_text(text)
            config = load_config(path, KINDS)
            shown = alerts
            yield Running(config, text, path, lambda: _banner(options, aws.endpoint, path, shown))
        finally:
            if alerts is not None:  # first: Prometheus would page on what stops next
                await alerts.stop()
            if traffic is not None:
                traffic.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await traffic
            if faults is not None:
                await faults.close()
            for server in own:
                await asyncio.to_thread(server.stop)
            if dns_transport is not None:
                dns_transport.close()
            for runner in runners:
                await runner.cleanup()
            await asyncio.to_thread(aws.stop)


async def _own_if_refused(
    kind: str,
    url: str,
    refuses: str | None,
    server: OwnPostgres | OwnRedis,
    own: list[OwnPostgres | OwnRedis],
    log: structlog.stdlib.BoundLogger,
) -> str:
    """The URL to use: `url` when it let the demo in, else one of the demo's own server's
    (kept in `own`, to stop at the end), else `url` with a line saying what to do."""
    if refuses is None:
        return url
    missing = server.missing()
    if missing is not None:
        log.warning(
            f"{kind} refused the demo; none can be started here", error=refuses, fix=missing
        )
        return url
    own.append(server)
    started = await asyncio.to_thread(server.start)
    log.info(f"{kind} refused the demo; it runs one of its own", error=refuses, at=started)
    return started


def _tick(interval: float) -> float:
    """The traffic ticks at most every 10 s, and twice an interval apart for a demo that
    checks faster (the tests' 1 s), so CloudWatch figures keep up with it."""
    return min(stack.TICK, max(1.0, 2 * interval))


async def _traffic(aws: stack.World, log: structlog.stdlib.BoundLogger, tick: float) -> None:
    while True:
        try:
            await asyncio.to_thread(aws.tick)
        except Exception as exc:  # the demo keeps running; the next tick tries again
            log.warning("demo traffic failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(tick)


# What Prometheus scraped of the bucket "yesterday", before s3-growth: S3BucketGrowingFast
# compares with it (demo/alerting.py backfills it).
YESTERDAY = Yesterday(
    "aws_s3_bucket_size_bytes",
    {"bucket": stack.BUCKET, "storage_type": "StandardStorage", "target": "aep-rasters"},
    stack.BUCKET_BYTES,
)


def _url(address: tuple[str | None, int]) -> str:
    host, port = address
    return f"http://{host or '127.0.0.1'}:{port}"


def _scrape_address(address: tuple[str | None, int]) -> str:
    """Where Prometheus finds stackprobe's /metrics: loopback when it listens on every
    address."""
    host, port = address
    if not host or host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _command() -> str:
    """How to run stackprobe again as this process was run, for the banner's commands:
    `.venv/bin/stackprobe` as typed, `stackprobe` when that is the one on PATH, or this
    Python with -m."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "stackprobe":
        on_path = shutil.which("stackprobe")
        if on_path and Path(on_path).resolve() == Path(argv0).resolve():
            return "stackprobe"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m stackprobe"


def _banner(options: Options, aws_endpoint: str, config_path: Path, alerts: Alerting | None) -> str:
    metrics = _url(options.listen)
    app = _url(options.app_listen)
    host, port = options.app_listen
    default = f"{host}:{port}" == DEFAULT_APP_LISTEN
    where = "" if default else f" --app-listen {host or ''}:{port}"
    run = _command()
    lines = [
        "",
        "stackprobe demo: an ECS Fargate stack like AEP's, on this machine, no AWS account needed.",
        "",
        f"  stackprobe      {metrics}/           (the console: what is broken, why, which runbook)",
        f"  /metrics        {metrics}/metrics",
        f"  the demo app    {app}/           (its faults, and how to switch them)",
        f"  AWS (moto)      {aws_endpoint}",
        f"  PostgreSQL      {options.postgres_dsn}",
        f"  Redis           {options.redis_url}",
        f"  its config      {config_path}   ({run} demo{where} --print-config)",
    ]
    if alerts is not None:
        lines += [
            f"  Prometheus      {alerts.prometheus_url}/alerts   (the shipped rules, on the "
            "demo clock)",
            f"  Alertmanager    {alerts.alertmanager_url}/   (the example routing; its pages "
            "are logged here)",
            f"  their logs      {alerts.work}/{{prometheus,alertmanager}}.log",
            "",
            *_wrap(
                f"Alerts run on the {alerts.clock.label()}: a rule that waits an hour in "
                "production pages here within about a minute. The rules it runs "
                f"({alerts.rules}) are for the demo only. Each notification Alertmanager "
                "sends is logged below as an `alert notification` line: receiver, status, "
                "alertname, priority, target, runbook_url."
            ),
        ]
    lines += [
        "",
        *_wrap(
            "PostgreSQL and Redis are probed where they usually run; when those refuse the "
            "demo and the servers are installed, it runs throwaway ones of its own (the log "
            "says which). A server named with --postgres-dsn or --redis-url is never replaced: "
            "if it refuses, aep-db or aep-redis shows down with the reason, as it would in "
            "production (auth_failed: give the password in PGPASSWORD)."
        ),
        "",
        "Play an incident from the runbooks, then look at the console again:",
        f"  {run} demo{where} --fault unhealthy-targets   (and --clear unhealthy-targets)",
        f"  curl -X POST {app}/faults/jobs-stuck",
        "",
        *_fault_table(options, alerts, run),
        "Ctrl-C stops the demo.",
        "",
    ]
    return "\n".join(lines)


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, 92, break_on_hyphens=False)


def _rows(items: list[str], width: int) -> list[str]:
    """The items, comma-separated, in lines of at most `width` (an item is never split)."""
    rows: list[str] = []
    for item in items:
        if rows and len(rows[-1]) + 2 + len(item) < width:  # room for its comma
            rows[-1] += f", {item}"
        else:
            if rows:
                rows[-1] += ","
            rows.append(item)
    return rows


def _fault_table(options: Options, alerts: Alerting | None, run: str) -> list[str]:
    """Each fault, the alerts it raises, and when the first pages: with the shipped rules in
    production, and on the demo clock (this demo's, or the one --with-alerts would run)."""
    folder = options.alerting.rules if options.alerting else shipped_rules()
    if folder is None:  # an installed wheel: no rules beside it
        return [f"The faults: {', '.join(FAULTS)}.", ""]
    cloudwatch, logs = KINDS["cloudwatch"], KINDS["logs"]
    fields = cloudwatch.config.model_fields
    rules = read_alerts(
        folder,
        [m.name for kind in ("cloudwatch", "rds", "elasticache") for m in KINDS[kind].metrics],
        [m.name + ("_total" if m.type == "counter" else "") for m in logs.metrics],
    )
    production = Pace(
        PRODUCTION,
        options.interval,
        float(fields["period"].default) + float(fields["delay"].default),
        group_waits(routing(folder, "")),
        logs_lag=float(logs.config.model_fields["ingestion_lag"].default),
    )
    interval = options.interval if alerts is not None else DEFAULT_ALERTS_INTERVAL
    demo_routes = routing(folder, "")
    timing(demo_routes)
    # a figure waits for its CloudWatch period to close, and the traffic's next tick
    lag = CLOUDWATCH_PERIOD + _tick(interval)
    # a line waits for the traffic's next tick, and the demo's 2 s ingestion lag
    here = Pace(
        demo_clock(interval),
        interval,
        lag,
        group_waits(demo_routes),
        logs_lag=DEMO_INGESTION_LAG + _tick(interval),
    )
    if alerts is not None:
        head, intro = "here", "and here, on the demo clock:"
    else:
        head = "--with-alerts"
        intro = f"and with --with-alerts (Ctrl-C, then: {run} demo --with-alerts):"
    lines = _wrap(
        "Each fault, the alerts it raises, and about when the first one pages: with the "
        "shipped rules in production (a probe run at this interval, CloudWatch's delay, the "
        f"rule's `for:`, the routing's wait), {intro}"
    )
    width = max(map(len, FAULTS))
    lines.append(f"  {'fault':<{width}} {'production':<11} {head:<14} alerts (priority)")
    pad = " " * (width + 30)  # under the alerts column
    for fault in FAULTS.values():
        named = sorted((rules[a] for a in fault.alerts if a in rules), key=here.page_after)
        when = [about(min(map(p.page_after, named))) if named else "-" for p in (production, here)]
        body = _rows([f"{r.name} {r.priority}" for r in named], 100 - len(pad)) or ["-"]
        lines.append(f"  {fault.name:<{width}} {when[0]:<11} {when[1]:<14} {body[0]}")
        lines += [pad + more for more in body[1:]]
    return [*lines, ""]
