"""What the AWS kinds share: the state kept between runs, batching, how a failed call
becomes a result, and how a run's findings and calls become its verdict and evidence.

A throttled run is a skipped cycle, not an outage: the run fails with reason `throttled` (the
metric that pages is `stackprobe_aws_api_calls_total{outcome="throttled"}`) and repeats the
last good samples and the health they showed, so no gauge vanishes, no alert on it flaps and
no console row changes colour for it. Any other failure shows no samples, because the state
they would describe could not be read.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Annotated, Any, NamedTuple, TypeVar

from pydantic import AfterValidator

from stackprobe.contract import (
    EVIDENCE_VALUE_MAX,
    Evidence,
    Health,
    ProbeContext,
    ProbeResult,
    Sample,
    Verdict,
)
from stackprobe.probes._aws_api import (
    AWS,
    RUN_CALLS,
    AwsCall,
    AwsCallError,
    AwsProblem,
    AwsTarget,
)

T = TypeVar("T")
R = TypeVar("R")


# Identifiers AWS keeps in lowercase whatever case they were created in (RDS instances,
# ElastiCache clusters), so a config's are compared as AWS returns them.
LowercaseIds = Annotated[
    tuple[str, ...], AfterValidator(lambda names: tuple(name.lower() for name in names))
]


class AwsState:
    """Kept by the scheduler for one AWS target: the last good samples, the verdict and
    evidence they came with, and what the kind caches (immutable facts such as task
    definitions, resolved queue URLs) or needs of earlier runs (the previous queue depth)."""

    def __init__(self, _target: AwsTarget | None = None) -> None:
        self.last: tuple[Sample, ...] = ()
        # what a throttled run shows again, beside `last`
        self.verdict: Verdict | None = None
        self.seen: Evidence = ()
        self.cache: dict[str, Any] = {}

    async def aclose(self) -> None:
        self.cache.clear()


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """The API's batch limit, honoured here because moto does not enforce it (tests/ make
    moto enforce it)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


async def gather_all(calls: Iterable[Awaitable[R]]) -> list[R]:
    """Run calls side by side (the thread pool bounds them); the first failure wins."""
    return list(await asyncio.gather(*calls))


# Every AWS kind fails for the same reasons; the detail says which call or resource.
Reason = AwsProblem

# The alerts of alert_rules/stackprobe.rules.yml that page on a run that cannot measure.
THROTTLED_ALERT = "StackprobeAwsThrottled"
DENIED_ALERT = "StackprobeAwsAccessDenied"
CANNOT_MEASURE_ALERT = "StackprobeCannotMeasure"

# What a run's evidence holds at most, so a target's stays near 1 KB (exporter/contract.py:
# it is kept per target): AWS call lines, the last one "+N more"; finding lines, the rest
# counted; and characters of one finding.
AWS_CALL_LINES = 10
FINDING_LINES = 4
FINDING_MAX = 160


class Finding(NamedTuple):
    """One unhealthy thing a run saw, with the alert that pages on it ("" when none does)."""

    health: Health
    why: str
    alert: str = ""


def judged(findings: Sequence[Finding], healthy: str) -> tuple[Verdict, Evidence]:
    """The verdict on a run's findings, and one evidence line for each: the worst finding
    (the first of equals, so a kind lists them most urgent first). `healthy` is the why of
    a run that found nothing wrong."""
    if not findings:
        return Verdict(Health.OK, healthy), ()
    order = tuple(Health)
    worst = max(findings, key=lambda f: order.index(f.health))
    more = len(findings) - 1
    why = f"{worst.why} (+{more} more)" if more else worst.why
    lines = [
        (str(f.health), (f"{f.why} ({f.alert})" if f.alert else f.why)[:FINDING_MAX])
        for f in findings[:FINDING_LINES]
    ]
    if len(findings) > FINDING_LINES:
        lines.append(("finding", f"+{len(findings) - FINDING_LINES} more"))
    return Verdict(worst.health, why, worst.alert), tuple(lines)


def call_evidence(calls: Sequence[AwsCall]) -> Evidence:
    """One line per kind of call (action, outcome, error code), in the order first made:
    "ecs:DescribeServices ok in 12 ms", "ecs:ListTasks ok, 3 calls in 8-14 ms, 4 pages".
    At most AWS_CALL_LINES; when they run out, failed calls are kept before ok ones."""
    groups: dict[tuple[str, str, str], list[AwsCall]] = {}
    for call in calls:
        groups.setdefault((call.action, call.outcome, call.code), []).append(call)
    kept = list(groups.items())
    if len(kept) > AWS_CALL_LINES:
        by_urgency = sorted(range(len(kept)), key=lambda i: kept[i][0][1] == "ok")
        kept = [kept[i] for i in sorted(by_urgency[: AWS_CALL_LINES - 1])]
    lines = [("aws call", _call_line(*key, made)) for key, made in kept]
    left = len(calls) - sum(len(made) for _, made in kept)
    if left:
        lines.append(("aws call", f"+{left} more"))
    return tuple(lines)


def _call_line(action: str, outcome: str, code: str, made: Sequence[AwsCall]) -> str:
    said = f"{action} {outcome}"
    if outcome == "error" and code:
        said = f"{said} ({code[:64]})"
    low, high = min(c.ms for c in made), max(c.ms for c in made)
    if len(made) == 1:
        said = f"{said} in {low:.0f} ms"
    else:
        said = f"{said}, {len(made)} calls in {low:.0f}-{high:.0f} ms"
    pages = [c.pages for c in made if c.pages is not None]
    if pages:
        total = sum(pages)
        said = f"{said}, {total} page{'' if total == 1 else 's'}"
    return said


def failure(
    exc: AwsCallError, state: AwsState | None, not_found_alert: str = CANNOT_MEASURE_ALERT
) -> ProbeResult:
    """The result of a run in which a call failed. A throttled one repeats the last good
    samples and keeps the health they showed; any other names the alert that pages on it:
    StackprobeAwsAccessDenied for a missing IAM action, the kind's `not_found_alert` for a
    missing resource (StackprobeCannotMeasure leaves not_found out for the kinds whose own
    alerts page on a missing thing), StackprobeCannotMeasure for the rest."""
    if exc.problem is AwsProblem.THROTTLED:
        if state is not None and state.verdict is not None:
            last = state.verdict
            why = f"AWS throttled this run; the last good values: {last.why}"
            return ProbeResult.failed(
                exc.problem,
                f"{exc} (showing the last good values)",
                state.last,
                verdict=Verdict(last.health, why, last.alert or THROTTLED_ALERT),
                evidence=state.seen,
            )
        why = "AWS throttled this run, and no run has measured yet"
        return ProbeResult.failed(
            exc.problem, str(exc), verdict=Verdict(Health.DEGRADED, why, THROTTLED_ALERT)
        )
    if exc.problem is AwsProblem.ACCESS_DENIED:
        alert = DENIED_ALERT
    elif exc.problem is AwsProblem.NOT_FOUND:
        alert = not_found_alert
    else:
        alert = CANNOT_MEASURE_ALERT
    verdict = Verdict(Health.FAILING, str(exc)[:EVIDENCE_VALUE_MAX], alert)
    return ProbeResult.failed(exc.problem, str(exc), verdict=verdict)


async def measured(
    ctx: ProbeContext,
    measure: Callable[[], Awaitable[ProbeResult]],
    not_found_alert: str = CANNOT_MEASURE_ALERT,
) -> ProbeResult:
    """Run one AWS kind's measurement; keep its samples and verdict when it measured,
    classify it when a call fails. Either way its evidence ends with the AWS calls it made,
    which `AwsClients` records in RUN_CALLS for this run's task and the tasks it starts."""
    state: AwsState | None = ctx.state
    calls: list[AwsCall] = []
    token = RUN_CALLS.set(calls)
    try:
        result = await measure()
    except AwsCallError as exc:  # the scheduler logs the failure when the state changes
        result = failure(exc, state, not_found_alert)
    else:
        if state is not None and (result.success or result.samples):
            state.last = result.samples
            state.verdict = result.verdict
            state.seen = result.evidence
    finally:
        RUN_CALLS.reset(token)
    return dataclasses.replace(result, evidence=result.evidence + call_evidence(calls))


def measured_result(
    samples: Sequence[Sample], verdict: Verdict, evidence: Evidence, missing: str = ""
) -> ProbeResult:
    """A run that measured what it found. `missing` (what the config names that AWS does
    not have) fails it as `not_found`, keeping the samples of the rest, so one deleted
    queue or instance darkens only itself."""
    if missing:
        return ProbeResult.failed(
            AwsProblem.NOT_FOUND, missing, tuple(samples), verdict=verdict, evidence=evidence
        )
    return ProbeResult.ok(tuple(samples), verdict=verdict, evidence=evidence)


GET_METRIC_DATA_MAX = 500  # queries per GetMetricData call; moto accepts more, AWS does not


async def metric_data(
    ctx: ProbeContext,
    target: AwsTarget,
    queries: Sequence[dict[str, Any]],
    start: float,
    end: float,
) -> dict[str, list[tuple[float, float]]]:
    """GetMetricData for many queries: query id -> [(unix time, value)], newest first.

    500 queries a call, every page of each (NextToken) in botocore's paginator."""
    found: dict[str, list[tuple[float, float]]] = {q["Id"]: [] for q in queries}
    pages = await gather_all(
        ctx.use(AWS).pages(
            target,
            "cloudwatch",
            "get_metric_data",
            ctx.deadline,
            MetricDataQueries=list(batch),
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampDescending",
        )
        for batch in batches(queries, GET_METRIC_DATA_MAX)
    )
    for page in (p for call in pages for p in call):
        for result in page.get("MetricDataResults", ()):
            points = zip(result.get("Timestamps", ()), result.get("Values", ()), strict=False)
            found[result["Id"]].extend((t.timestamp(), float(v)) for t, v in points)
    for newest_first in found.values():
        newest_first.sort(reverse=True)
    return found
