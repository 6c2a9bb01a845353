"""Probe runs as the scheduler makes them, and the targets and samples the tests build and read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Self

import yaml
from prometheus_client import CollectorRegistry

from stackprobe.config import parse_config
from stackprobe.contract import EVIDENCE_VALUE_MAX, Health, ProbeContext, ProbeResult
from stackprobe.probes import KINDS
from stackprobe.probes._aws_api import AWS, AwsClients, AwsMetrics, AwsSettings
from stackprobe.probes._http_clients import HTTP_CLIENTS, HttpClients
from stackprobe.target import TargetConfig

# What the `run_probe` fixture gives: one run of a target, as its first.
RunProbe = Callable[[TargetConfig], Awaitable[ProbeResult]]

# For the kinds that call no AWS API: a factory that is never asked for a client.
UNUSED_AWS = AwsClients(AwsSettings(), AwsMetrics(CollectorRegistry()))


def make_target(raw: dict[str, Any], environ: dict[str, str] | None = None) -> TargetConfig:
    """A target validated the way the config loader does it, defaults included."""
    config = parse_config(yaml.safe_dump({"targets": [raw]}), "<test>", KINDS, environ or {})
    return config.targets[0]


class ProbeRunner:
    """Runs one target the way the scheduler does: its kind's state kept across runs, a fresh
    deadline each run, and the shared resources its kind declares (`aws` and `http` when
    given; HTTP clients of its own with one connection, and an AWS factory that is never
    asked, when not). As an async context manager it closes the state and what it opened."""

    def __init__(
        self,
        target: TargetConfig,
        *,
        aws: AwsClients | None = None,
        http: HttpClients | None = None,
    ) -> None:
        self.target = target
        self.kind = KINDS[target.kind]
        self._own_http = HttpClients(1) if http is None else None
        offered = {HTTP_CLIENTS: http or self._own_http, AWS: aws or UNUSED_AWS}
        self.resources = {shared: offered[shared] for shared in self.kind.resources}
        self.state: Any = self.kind.state(target) if self.kind.state is not None else None

    @classmethod
    async def once(
        cls,
        target: TargetConfig,
        *,
        aws: AwsClients | None = None,
        http: HttpClients | None = None,
    ) -> ProbeResult:
        """One run with a state of its own, closed after: a newly started target's first run."""
        async with cls(target, aws=aws, http=http) as runner:
            return await runner.run()

    async def run(self) -> ProbeResult:
        deadline = asyncio.get_running_loop().time() + self.target.timeout
        ctx = ProbeContext(deadline, self.state, self.resources)
        result: ProbeResult = await self.kind.probe(self.target, ctx)
        return result

    async def aclose(self) -> None:
        if self.state is not None:
            await self.state.aclose()
        if self._own_http is not None:
            await self._own_http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def samples_by_name(result: ProbeResult) -> dict[str, dict[tuple[str, ...], float]]:
    """Every sample of a run as {metric name: {label values: value}}."""
    found: dict[str, dict[tuple[str, ...], float]] = {}
    for sample in result.samples:
        found.setdefault(sample.spec.name, {})[sample.label_values] = sample.value
    return found


def value(result: ProbeResult, name: str, *labels: str) -> float:
    """One sample's value, by metric name and label values."""
    return samples_by_name(result)[name][labels]


def verdict(result: ProbeResult) -> tuple[Health, str, str]:
    """The run's verdict as (health, why, alert), for one comparison."""
    found = result.health()
    return found.health, found.why, found.alert


def checked_evidence(result: ProbeResult) -> dict[str, str]:
    """The run's evidence by label, after checking what any of it may hold: no canary
    password, no value past the console's cap, about a kilobyte in all."""
    for label, text in result.evidence:
        assert "CANARY" not in text and len(text) <= EVIDENCE_VALUE_MAX, (label, text)
    assert sum(len(k) + len(v) for k, v in result.evidence) < 1024, result.evidence
    assert "CANARY" not in result.health().why and "CANARY" not in result.detail
    return dict(result.evidence)


def aws_calls(result: ProbeResult, *, timed: bool = True) -> list[str]:
    """The "aws call" lines of a run's evidence; `timed=False` drops their durations."""
    lines = [v for label, v in result.evidence if label == "aws call"]
    return lines if timed else [line.split(" in ")[0] for line in lines]


def findings(result: ProbeResult) -> list[tuple[str, str]]:
    """The run's evidence but its AWS calls: what an AWS kind found, line by line."""
    return [(label, v) for label, v in result.evidence if label != "aws call"]
