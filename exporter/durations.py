"""Prometheus duration strings (`500ms`, `15s`, `1m30s`, `1h`), the form users already write."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer
from pydantic_core import PydanticCustomError

# The grammar of Prometheus' model.ParseDuration: units in descending order, each at most once.
_DURATION = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?"
    r"(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)
_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration string; ValueError says what a valid one looks like."""
    if text == "0":
        return 0.0
    match = _DURATION.match(text)
    if not text or match is None:
        raise ValueError(
            f"{text!r} is not a Prometheus duration; write it like 500ms, 5s, 1m30s or 1h"
        )
    return float(sum(int(v) * _UNITS[unit] for unit, v in match.groupdict().items() if v))


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration string for `seconds` (milliseconds precision)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _validate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError(
            "duration_type", "expected a duration such as 5s, found {found}", {"found": repr(value)}
        )
    if not isinstance(value, str):
        raise PydanticCustomError(
            "duration_unit",
            "durations need a unit: write '{suggested}' for {value} seconds",
            {"value": value, "suggested": format_duration(float(value))},
        )
    try:
        return parse_duration(value.strip())
    except ValueError as exc:
        raise PydanticCustomError("duration_format", str(exc)) from None


Duration = Annotated[float, BeforeValidator(_validate), PlainSerializer(format_duration)]
