"""The base every kind's target model extends: name, kind, interval, timeout and labels.

The loader fills `interval` and `timeout` from `defaults` before validation and checks that the
timeout is below the interval, so a kind's model only adds what is its own.

`labels` are static labels on every series of the target, as Prometheus' `static_configs`
labels are: the alert rules key on them (`service`, a `priority` override) instead of on
target names, and Alertmanager's inhibitions match on them. The loader also refuses a label
that clashes with one of the kind's own labels, which only it knows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)
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


def unique(values: tuple[str, ...]) -> tuple[str, ...]:
    """The values, refused when one is listed twice (for an AfterValidator)."""
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
UniqueNames = Annotated[tuple[str, ...], AfterValidator(unique)]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_VALUE = re.compile(r"^[\x20-\x7e]{1,128}$")
MAX_LABELS = 10
PRIORITIES = ("P0", "P1", "P2", "P3")
# Labels stackprobe or Prometheus set themselves: a target's own would be overwritten or
# would make two series of one. A kind's own (an http target's `role`) are its model's
# `OWN_LABELS`.
RESERVED_LABELS = {
    "target": "it is the target's name",
    "job": "Prometheus sets it from the scrape config",
    "instance": "Prometheus sets it from the scrape config",
    "kind": "stackprobe_target_info carries the kind",
    "reason": "failure reasons carry it",
    "alertname": "alerts carry the rule's name",
    "severity": "the rules derive it from `priority`; set `priority` instead",
    "area": "the rules set it to their rule file",
    "runbook_url": "the rules set it; point it elsewhere with `stackprobe rules --runbook-map`",
}


def _labels(value: dict[str, str], reserved: Mapping[str, str]) -> dict[str, str]:
    if len(value) > MAX_LABELS:
        raise PydanticCustomError(
            "labels_count",
            "{count} labels; at most {most} (each is on every series of the target)",
            {"count": len(value), "most": MAX_LABELS},
        )
    for name, text in value.items():
        if not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise PydanticCustomError(
                "label_name",
                "{found} is not a Prometheus label name: use letters, digits and _, not "
                "starting with a digit or __",
                {"found": repr(name)[:80], "entry": name},
            )
        if name in reserved:
            raise PydanticCustomError(
                "label_reserved",
                "label {name} is reserved: {why}",
                {"name": name, "why": reserved[name], "entry": name},
            )
        if not isinstance(text, str) or not _LABEL_VALUE.fullmatch(text):
            raise PydanticCustomError(
                "label_value",
                "the value of label {name} must be 1-128 printable ASCII characters",
                {"name": name, "entry": name},
            )
        if name == "priority" and text not in PRIORITIES:
            raise PydanticCustomError(
                "label_priority",
                "priority {found} is not one of P0, P1, P2, P3 (the runbooks' levels, which "
                "Alertmanager routes on)",
                {"found": repr(text)[:20], "entry": name},
            )
    return value


class TargetConfig(BaseModel):
    """Strict and frozen: unknown keys are errors and a loaded target never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    interval: Duration
    timeout: Duration
    # How many replicas of a cluster probe it (exporter/cluster.py); default: its kind's.
    replicas: int | None = Field(None, ge=1, le=10)
    # Static labels on every series of the target; strings only, so a YAML number is an error.
    labels: dict[str, str] = Field(default_factory=dict)

    # Labels the kind sets from its own keys (see `own_labels`), each with why `labels:`
    # must not: the rules key on them, so there is one place to set each.
    OWN_LABELS: ClassVar[Mapping[str, str]] = {}

    @field_validator("name")
    @classmethod
    def _label_safe_name(cls, value: str) -> str:
        # fullmatch: `$` would let a trailing newline through
        if not _NAME.fullmatch(value):
            raise PydanticCustomError(
                "target_name",
                "{found} is not a usable target name: it becomes the `target` label, so use "
                "1-128 letters, digits and _ . : / - (starting with a letter or digit)",
                {"found": repr(value)[:80]},
            )
        return value

    @field_validator("labels")
    @classmethod
    def _usable_labels(cls, value: dict[str, str]) -> dict[str, str]:
        """The kind's own labels are reserved as stackprobe's are."""
        return _labels(value, {**RESERVED_LABELS, **cls.OWN_LABELS})

    def describe(self) -> str:
        """What the target probes, in one line safe to show on the landing page."""
        return ""

    def shard_group(self) -> str | None:
        """What ties this target to others that should share a replica (`cluster.shard_key:
        group`): an AWS kind's role and region, one throttle bucket. None: its name alone."""
        return None

    def own_labels(self) -> dict[str, str]:
        """Labels a kind adds from its own keys (an http target's `role`); none by default."""
        return {}

    @cached_property
    def series_labels(self) -> tuple[tuple[str, str], ...]:
        """The constant labels of every series of this target, by name: computed once, as
        every run renders them."""
        return tuple(sorted({**self.own_labels(), **self.labels}.items()))
