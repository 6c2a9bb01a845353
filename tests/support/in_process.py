"""The whole exporter in the test's own process: its app, its web server behind a test
client, and its JSON log captured, for the tests that also reach inside it (moto, the
AWS resource)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from stackprobe.app import App
from stackprobe.config import Config
from stackprobe.logs import configure_logging
from stackprobe.probes import KINDS
from stackprobe.secrets import Redactor
from stackprobe.server import make_web_app
from tests.support.polling import wait_until_async
from tests.support.web_client import WebClient


@asynccontextmanager
async def serving(
    config: Config, redactor: Redactor, prepare: Callable[[App], None] | None = None
) -> AsyncIterator[tuple[App, WebClient, io.StringIO]]:
    """The app started and ready, its client, and its log (JSON, debug); the root logger
    and structlog are restored after. `prepare` runs once the app has started, before its
    first results are awaited (a fault injected into its AWS clients)."""
    log = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("json", "debug", redactor, log)
    app = App(config, kinds=KINDS, redactor=redactor, config_path=None)
    app.start()
    client = WebClient(make_web_app(app))
    await client.start_server()
    try:
        if prepare is not None:
            prepare(app)

        async def ready() -> bool:
            return (await client.get("/-/ready")).status == 200

        await wait_until_async(ready, 10, what="/-/ready to answer 200")
        yield app, client, log
    finally:
        await client.close()
        await app.stop()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        structlog.reset_defaults()
