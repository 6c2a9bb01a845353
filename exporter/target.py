"""The base every kind's target model extends: name, kind, interval and timeout.

The loader fills `interval` and `timeout` from `defaults` before validation and checks that the
timeout is below the interval, so a kind's model only adds what is its own.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, field_validator
from pydantic_core import PydanticCustomError

from stackprobe.durations import Duration


def _compile(value: Any) -> re.Pattern[str]:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "regex_type",
            "expected a regular expression string, found {found}",
            {"found": type(value).__name__},
        )
    try:
        return re.compile(value)
    except re.error as exc:
        raise PydanticCustomError(
            "regex_parsing",
            "{found} is not a valid regular expression: {error}",
            {"found": repr(value), "error": str(exc)},
        ) from None


# A Python regular expression, compiled at load so a typo is a config error, not a failing probe.
Regex = Annotated[re.Pattern[str], BeforeValidator(_compile)]


def _unique(values: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise PydanticCustomError(
                "duplicate_entry",
                "{found} is listed twice; list each once (each becomes one set of series)",
                {"found": repr(value)[:80]},
            )
        seen.add(value)
    return values


# A list of names that each become a label value: a repeat would emit every series twice.
UniqueNames = Annotated[tuple[str, ...], AfterValidator(_unique)]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")


class TargetConfig(BaseModel):
    """Strict and frozen: unknown keys are errors and a loaded target never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    interval: Duration
    timeout: Duration

    @field_validator("name")
    @classmethod
    def _label_safe_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise PydanticCustomError(
                "target_name",
                "{found} is not a usable target name: it becomes the `target` label, so use "
                "1-128 letters, digits and _ . : / - (starting with a letter or digit)",
                {"found": repr(value)[:80]},
            )
        return value

    def describe(self) -> str:
        """What the target probes, in one line safe to show on the landing page."""
        return ""
