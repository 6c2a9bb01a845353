"""The probe contract: what every probe kind receives and what it returns.

After blackbox_exporter's `ProbeFn`: a probe is a plain async function
`probe(target, ctx) -> ProbeResult`. It measures, it never touches a registry, never sleeps,
never retries without bound and never lets an exception escape. The scheduler owns the
deadline, the timing and `probe_success`; the core knows no kind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, Protocol, TypeVar, cast

from stackprobe.resource import Resource, Shared

if TYPE_CHECKING:
    from stackprobe.target import TargetConfig

MetricType = Literal["gauge", "counter"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family a probe may emit.

    The core prepends the `target` label, so `labels` lists only the kind's own labels.
    Specs are declared once per module, which is what the docs test and the exposition read.
    """

    name: str
    help: str
    labels: tuple[str, ...] = ()
    type: MetricType = "gauge"

    def __call__(self, value: float, *label_values: str) -> Sample:
        if len(label_values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {label_values}")
        return Sample(self, label_values, float(value))


class Sample(NamedTuple):
    spec: MetricSpec
    label_values: tuple[str, ...]
    value: float


class Health(StrEnum):
    """How the measured thing is, as the console shows it: worst last, so they order."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The health of what a target measures, not of the measurement: an ECS service whose
    DescribeServices call worked but runs 0 of 2 tasks is `failing`. The kind computes it
    beside its samples with the thresholds its alert rules use by default (docs/console.md
    says where they differ), so the console and the pager agree.
    """

    health: Health
    why: str = ""  # what was seen, in words: "running 0 of 2 desired"; no secrets
    alert: str = ""  # the alert that pages on this condition: the console links its runbook


class Area(StrEnum):
    """Where a target's row goes on the console, in the order an on-call engineer reads."""

    SITE = "site health"
    LOAD_BALANCER = "load balancer"
    ECS = "ECS"
    QUEUES_STORAGE = "queues and storage"
    DATABASES = "databases"
    METRICS = "CloudWatch metrics"


# What the console's detail view shows of one run, label and value: the status line, headers,
# a capped body excerpt, the AWS calls made. Kept per target until the next run replaces it, so
# a kind keeps it short; every value is redacted again before display.
Evidence = tuple[tuple[str, str], ...]
EVIDENCE_VALUE_MAX = 512  # characters of one value the console shows; longer ones are cut


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one run measured. `reason` is a value of the kind's `Reason` enum, never free text.

    `detail` is one human sentence for logs and the landing page (for example "expected
    status 200, got 503"); it must not carry secrets and is redacted again before display.
    `verdict` is left None when the kind has no more to say than the run's outcome: the core
    then takes a successful run as ok and a failed one as failing, with `detail` as the why.
    """

    success: bool
    samples: tuple[Sample, ...] = ()
    reason: str | None = None
    detail: str = ""
    verdict: Verdict | None = None
    evidence: Evidence = ()

    @classmethod
    def ok(
        cls,
        samples: tuple[Sample, ...] = (),
        detail: str = "",
        *,
        verdict: Verdict | None = None,
        evidence: Evidence = (),
    ) -> ProbeResult:
        return cls(True, samples, None, detail, verdict, evidence)

    @classmethod
    def failed(
        cls,
        reason: StrEnum,
        detail: str,
        samples: tuple[Sample, ...] = (),
        *,
        verdict: Verdict | None = None,
        evidence: Evidence = (),
    ) -> ProbeResult:
        return cls(False, samples, str(reason), detail, verdict, evidence)

    def health(self) -> Verdict:
        """The kind's verdict, or the one the run's outcome implies."""
        if self.verdict is not None:
            return self.verdict
        if self.success:
            return _OK
        return Verdict(Health.FAILING, self.detail or str(self.reason))


_OK = Verdict(Health.OK)


class CoreReason(StrEnum):
    """Failure reasons the core itself assigns, whatever the kind."""

    TIMEOUT = "timeout"  # the probe ignored its deadline and was cancelled
    INTERNAL_ERROR = "internal_error"  # the probe raised, or its samples did not render


class TargetState(Protocol):
    """What a kind keeps for one target between runs: a kept connection, counters, caches.

    The scheduler creates it when the target's task starts and closes it when the task ends
    (reload, removal, shutdown), so a kind never needs a module-level registry of its own.
    """

    async def aclose(self) -> None: ...


R = TypeVar("R", bound=Resource)


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What one run may use, handed in so tests can swap it: its deadline, the target's
    state, and the shared resources its kind declared."""

    deadline: float  # event-loop time at which the run is cancelled
    state: Any = None  # the kind's TargetState for this target, when the kind keeps one
    resources: Mapping[Shared[Any, Any], Any] = field(default_factory=dict)

    def remaining(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def use(self, shared: Shared[Any, R]) -> R:
        """The open resource; a kind gets only those its `ProbeKind.resources` declares."""
        try:
            return cast(R, self.resources[shared])
        except KeyError:
            raise LookupError(
                f"the kind did not declare the {shared.section} resource it uses"
            ) from None


T = TypeVar("T", bound="TargetConfig")
ProbeFn = Callable[[T, ProbeContext], Awaitable[ProbeResult]]


@dataclass(frozen=True)
class ProbeKind(Generic[T]):
    """What the core knows of a kind: each kind module ends with its own `KIND`, and the
    table in `stackprobe.probes` lists them."""

    name: str
    config: type[T]
    probe: ProbeFn[T]
    metrics: tuple[MetricSpec, ...]
    reasons: type[StrEnum]
    summary: str
    # Where its targets' rows go on the console.
    area: Area = field(kw_only=True)
    # Builds the per-target state (`ctx.state`) for kinds that keep one between runs.
    state: Callable[[T], TargetState] | None = None
    # The shared resources its probe uses (`ctx.use(...)`): opened once by the core.
    resources: tuple[Shared[Any, Any], ...] = ()
    # What this target needs from the other targets (all of the config's, given second) for
    # its alerts to fire, one sentence each: naming the alert and what to add. Some rules join
    # two kinds' series, and only the kind knows which; `check-config` and `run` warn.
    advice: Callable[[T, Sequence[TargetConfig]], list[str]] | None = None
    # How many replicas of a cluster probe each target unless it sets `replicas`
    # (exporter/cluster.py): 2 for cheap checks that drive P0 pages, so one replica's death
    # or broken network path neither blinds nor pages; 1 where every run costs API calls or
    # holds a connection.
    replicas: int = 1
