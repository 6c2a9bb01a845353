"""Log levels: `--log-level` is stackprobe's own; libraries only ever say what went wrong."""

from __future__ import annotations

import io
import logging

import structlog

from stackprobe.logs import configure_logging
from stackprobe.secrets import Redactor


def test_debug_shows_stackprobe_but_never_a_librarys_debug_or_info_lines() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("stackprobe").level)
    try:
        configure_logging("logfmt", "debug", Redactor(), stream)
        structlog.get_logger("stackprobe.scheduler").debug("probe ok")
        # botocore's debug lines carry signed request headers; aiohttp logs every scrape
        logging.getLogger("botocore.endpoint").debug("Authorization: AWS4-HMAC-SHA256 ...")
        logging.getLogger("aiohttp.access").info("GET /metrics 200")
        logging.getLogger("asyncio").error("Task exception was never retrieved")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("stackprobe").setLevel(saved[2])
    lines = stream.getvalue().splitlines()

    assert [line.split("event=")[1] for line in lines] == [
        '"probe ok"',
        '"Task exception was never retrieved"',
    ]
