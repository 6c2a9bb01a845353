"""What the AWS kinds share: the state kept between runs, batching, and how a failed call
becomes a result.

A throttled run is a skipped cycle, not an outage: the run fails with reason `throttled` (the
metric that pages is `stackprobe_aws_api_calls_total{outcome="throttled"}`) and repeats the
last good samples, so no gauge vanishes and no alert on it flaps. Any other failure shows no
samples, because the state they would describe could not be read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from stackprobe.contract import ProbeContext, ProbeResult, Sample
from stackprobe.probes._aws_api import AWS, AwsCallError, AwsProblem, AwsTarget

T = TypeVar("T")
R = TypeVar("R")


class AwsState:
    """Kept by the scheduler for one AWS target: the last good samples and what the kind
    caches (immutable facts such as task definitions, resolved queue URLs)."""

    def __init__(self, _target: AwsTarget | None = None) -> None:
        self.last: tuple[Sample, ...] = ()
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


def failure(exc: AwsCallError, state: AwsState | None) -> ProbeResult:
    if exc.problem is AwsProblem.THROTTLED and state is not None:
        detail = f"{exc} (showing the last good values)"
        return ProbeResult.failed(exc.problem, detail, state.last)
    return ProbeResult.failed(exc.problem, str(exc))


async def measured(ctx: ProbeContext, measure: Callable[[], Awaitable[ProbeResult]]) -> ProbeResult:
    """Run one AWS kind's measurement; keep its samples when it succeeds, classify it when a
    call fails."""
    state: AwsState | None = ctx.state
    try:
        result = await measure()
    except AwsCallError as exc:  # the scheduler logs the failure when the state changes
        return failure(exc, state)
    if state is not None and (result.success or result.samples):
        state.last = result.samples
    return result


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
