"""Log levels: `--log-level` is stackprobe's own; libraries only ever say what went wrong."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import pytest
import structlog

from stackprobe.config import parse_config
from stackprobe.logs import LogFormat, configure_logging
from stackprobe.probes import KINDS
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


def log_lines(fmt: LogFormat, redactor: Redactor, write: Callable[[], None]) -> list[str]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("stackprobe").level)
    try:
        configure_logging(fmt, "info", redactor, stream)
        write()
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("stackprobe").setLevel(saved[2])
        structlog.reset_defaults()
    return stream.getvalue().splitlines()


SHORT_SECRETS = """
targets:
  - {name: db, kind: postgres, dsn: "postgresql://probe@db:5432/app",
     password: {from_env: PG_PASSWORD}}
  - {name: web, kind: http, url: "http://web:8080/health",
     headers: {Authorization: {from_env: TOKEN}}}
"""


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_short_secret_leaves_log_lines_readable_and_still_leaves_them(fmt: LogFormat) -> None:
    """PG_PASSWORD=postgres and a one-character token, known to the redactor as `run` makes
    it know them: the lines keep `postgres` and `postgresql://` (before: `kind=<redacted>`,
    `<redacted>ql://`), and lose the password in a URL and the token in a header."""
    config = parse_config(SHORT_SECRETS, "<test>", KINDS, {"PG_PASSWORD": "postgres", "TOKEN": "x"})
    redactor = Redactor(config.secrets())

    def write() -> None:
        log = structlog.get_logger("stackprobe.scheduler")
        log.warning(
            "probe failing",
            target="db",
            kind="postgres",
            detail="connect to postgresql://app:postgres@db:5432/app failed",
        )
        log.info("probe ok", target="web", kind="http", url="http://web:8080/health")
        logging.getLogger("httpx").warning("sent {'Authorization': 'x', 'Accept': 'x/y'}")

    db, web, library = log_lines(fmt, redactor, write)

    if fmt == "logfmt":
        assert "target=db kind=postgres" in db
        assert 'detail="connect to postgresql://app:<redacted>@db:5432/app failed"' in db
        assert "kind=http url=http://web:8080/health" in web
        assert "\"sent {'Authorization': '<redacted>', 'Accept': 'x/y'}\"" in library
    else:
        assert json.loads(db)["kind"] == "postgres"
        assert (
            json.loads(db)["detail"] == "connect to postgresql://app:<redacted>@db:5432/app failed"
        )
        assert json.loads(web)["url"] == "http://web:8080/health"
        assert (
            json.loads(library)["event"] == "sent {'Authorization': '<redacted>', 'Accept': 'x/y'}"
        )
    assert ":postgres@" not in db and "'x'" not in library


def test_a_long_secret_goes_from_every_field_and_traceback() -> None:
    """The canary case: a secret of ordinary length, in a field, a message and a traceback."""
    canary = "CANARY-logs-3c9d"
    redactor = Redactor([canary, f"https://probe:{canary}@api.example.com/"])

    def write() -> None:
        try:
            raise ValueError(f"bad token {canary}")
        except ValueError:
            structlog.get_logger("stackprobe.app").exception("failed", token=canary)
        logging.getLogger("botocore").error("url %s", f"https://probe:{canary}@api.example.com/")

    lines = log_lines("json", redactor, write)

    assert len(lines) == 2 and all(canary not in line for line in lines)
    assert json.loads(lines[0])["token"] == "<redacted>"
    assert "ValueError: bad token <redacted>" in json.loads(lines[0])["exception"]
