"""Structured logs (logfmt or JSON) from structlog and the standard library alike, scrubbed.

Every line passes the `Redactor` as the last step, after rendering, so a secret cannot leak
through an exception message, a traceback or a third-party library's own log call.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

from stackprobe.secrets import Redactor

LogFormat = Literal["logfmt", "json"]
LEVELS = ("debug", "info", "warning", "error")


def configure_logging(
    fmt: LogFormat, level: str, redactor: Redactor, stream: TextIO | None = None
) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.processors.LogfmtRenderer(
            key_order=["ts", "level", "logger", "event"], drop_missing=True
        )
    )

    def redact_fields(_: Any, __: str, event: Any) -> Any:
        """Before rendering, while values are still plain text, not escaped for the format."""
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redactor(value)
        return event

    def redact(_: Any, __: str, line: Any) -> str:
        """After rendering too: the last word on anything a renderer or a library added."""
        return redactor(line if isinstance(line, str) else line.decode())

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_fields,
            renderer,
            redact,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries say only what went wrong, whatever the level: their debug and info lines
    # (every scrape in aiohttp's access log, signed request headers and raw responses in
    # botocore's) are noise at best and secrets at worst. `--log-level` is stackprobe's own.
    root.setLevel(max(numeric, logging.WARNING))
    logging.getLogger("stackprobe").setLevel(numeric)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
