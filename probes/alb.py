"""Application Load Balancers: state, access-log posture, and target health per target group.

What on-call checks by hand when targets turn unhealthy (`aws elbv2 describe-target-health`
and its Reason; a wrong health-check path), when the whole site is down (the balancer's
state) and when an audit asks whether access logs are on. docs/alerts.md lists the alerts.

Per run: DescribeLoadBalancers and DescribeTargetGroups for the whole account (400 a page, one
page for most accounts, instead of one call per balancer), then one DescribeTargetHealth per
target group and one DescribeLoadBalancerAttributes per balancer, which have no batch form.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

from pydantic import Field

from stackprobe.contract import (
    Area,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
)
from stackprobe.probes._aws import (
    AwsState,
    Finding,
    Reason,
    gather_all,
    judged,
    measured,
    measured_result,
)
from stackprobe.probes._aws_api import AWS, AwsTarget
from stackprobe.probes.cloudwatch import CloudWatchTarget
from stackprobe.target import TargetConfig, UniqueNames

PAGE_SIZE = 400
STATES = ("active", "provisioning", "active_impaired", "failed", "missing")
# The state of a target still registering, which AlbNoHealthyTargets leaves alone.
REGISTERING = "initial"
PATH_SHOWN = 100  # characters of a health-check path a why shows


class AlbTarget(AwsTarget):
    kind: Literal["alb"] = "alb"
    load_balancers: UniqueNames = Field(min_length=1)
    # The health-check path every target group of these balancers should use...
    expect_health_check_path: str | None = None
    # ...or, per target group name, the path it should use (overrides the one above).
    expect_health_check_paths: dict[str, str] = Field(default_factory=dict)

    def describe(self) -> str:
        return f"alb {', '.join(self.load_balancers)}"


def advice(target: AlbTarget, targets: Sequence[TargetConfig]) -> list[str]:
    """The 5xx rate and latency are CloudWatch's, not the ALB API's: those alerts need a
    cloudwatch target watching the balancer, whose dimension `app/NAME/ID` carries the name."""
    watched = {
        alb.load_balancer.split("/")[1]
        for t in targets
        if isinstance(t, CloudWatchTarget)
        for alb in t.albs
    }
    return [
        f"AlbMostRequests5xx, AlbHigh5xxRate and AlbHighLatency cannot fire for load balancer "
        f"{name}: no cloudwatch target lists it under albs; add it there as load_balancer: "
        f"app/{name}/ID (the tail of its ARN)"
        for name in target.load_balancers
        if name not in watched
    ]


_LB = ("load_balancer",)
_TG = ("load_balancer", "target_group")
LB_STATE = MetricSpec(
    "aws_alb_load_balancer_state",
    "1 for the load balancer's current state (active, provisioning, active_impaired, failed, "
    "missing), 0 for the others.",
    (*_LB, "state"),
)
ACCESS_LOGS = MetricSpec(
    "aws_alb_access_logs_enabled", "1 if access logs are written to S3, else 0.", _LB
)
TARGETS = MetricSpec(
    "aws_alb_target_group_targets",
    "Registered targets by health state and reason code (none while healthy).",
    (*_TG, "state", "reason"),
)
HEALTHY = MetricSpec(
    "aws_alb_target_group_healthy_targets", "Targets passing the health check.", _TG
)
REGISTERED = MetricSpec(
    "aws_alb_target_group_registered_targets", "Targets registered in the target group.", _TG
)
HEALTH_CHECK = MetricSpec(
    "aws_alb_target_group_health_check_info",
    "Always 1; labels carry the configured health check.",
    (*_TG, "path", "port", "protocol"),
)
PATH_MATCH = MetricSpec(
    "aws_alb_target_group_health_check_path_match",
    "1 if the health-check path is the expected one, else 0 (only where one is expected).",
    _TG,
)

METRICS = (LB_STATE, ACCESS_LOGS, TARGETS, HEALTHY, REGISTERED, HEALTH_CHECK, PATH_MATCH)


async def probe(target: AlbTarget, ctx: ProbeContext) -> ProbeResult:
    # a missing balancer is AlbNotActive's (its state series says `missing`), and
    # StackprobeCannotMeasure leaves not_found out for this kind: no alert for a group
    # deleted between two calls of a run, which the next run no longer asks about
    return await measured(ctx, lambda: _measure(target, ctx), not_found_alert="")


async def _measure(target: AlbTarget, ctx: ProbeContext) -> ProbeResult:
    aws, deadline = ctx.use(AWS), ctx.deadline
    lb_pages = await aws.pages(
        target,
        "elbv2",
        "describe_load_balancers",
        deadline,
        PaginationConfig={"PageSize": PAGE_SIZE},
    )
    balancers = {
        lb["LoadBalancerName"]: lb
        for page in lb_pages
        for lb in page.get("LoadBalancers", ())
        if lb["LoadBalancerName"] in target.load_balancers
    }
    names = {lb["LoadBalancerArn"]: name for name, lb in balancers.items()}
    groups: list[tuple[str, Mapping[str, Any]]] = []
    if balancers:
        tg_pages = await aws.pages(
            target,
            "elbv2",
            "describe_target_groups",
            deadline,
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        for page in tg_pages:
            for group in page.get("TargetGroups", ()):
                for arn in group.get("LoadBalancerArns", ()):
                    if arn in names:
                        groups.append((names[arn], group))
    health, attributes = await gather_all(
        [
            gather_all(
                aws.call(
                    target,
                    "elbv2",
                    "describe_target_health",
                    deadline,
                    TargetGroupArn=group["TargetGroupArn"],
                )
                for _, group in groups
            ),
            gather_all(
                aws.call(
                    target,
                    "elbv2",
                    "describe_load_balancer_attributes",
                    deadline,
                    LoadBalancerArn=lb["LoadBalancerArn"],
                )
                for lb in balancers.values()
            ),
        ]
    )
    samples: list[Sample] = []
    failing: list[Finding] = []
    degraded: list[Finding] = []
    for name in target.load_balancers:
        lb = balancers.get(name)
        current = str(lb["State"]["Code"]) if lb else "missing"
        samples.extend(LB_STATE(1 if state == current else 0, name, state) for state in STATES)
        if current != "active":  # AlbNotActive: aws_alb_load_balancer_state{state="active"} == 0
            seen = f"no load balancer named {name}" if lb is None else f"{name} is {current}"
            failing.append(Finding(Health.FAILING, seen, "AlbNotActive"))
    for lb, answer in zip(balancers, attributes, strict=True):
        found = {a["Key"]: a["Value"] for a in answer.get("Attributes", ())}
        # absent until someone sets it, which means off (moto and AWS alike)
        enabled = found.get("access_logs.s3.enabled", "false") == "true"
        samples.append(ACCESS_LOGS(1 if enabled else 0, lb))
        if not enabled:  # AlbAccessLogsDisabled: aws_alb_access_logs_enabled == 0
            degraded.append(
                Finding(Health.DEGRADED, f"{lb}: access logs off", "AlbAccessLogsDisabled")
            )
    healthy = registered = 0
    for (lb, group), answer in zip(groups, health, strict=True):
        found_samples, counts = _group_samples(target, lb, group, answer)
        samples.extend(found_samples)
        healthy += counts.healthy
        registered += counts.registered
        _group_findings(target, group, counts, failing, degraded)
    verdict, evidence = judged(
        failing + degraded,
        f"load balancers active: {len(balancers)}; {healthy} of {registered} targets healthy "
        f"in {len(groups)} target groups",
    )
    missing = [n for n in target.load_balancers if n not in balancers]
    said = f"no load balancer named {', '.join(missing)} in this region and account"
    return measured_result(samples, verdict, evidence, said if missing else "")


class _Counts(NamedTuple):
    """What one target group's health answer said, for its findings."""

    states: Counter[tuple[str, str]]  # (state, reason) -> targets
    healthy: int
    registered: int
    path: str


def _group_findings(
    target: AlbTarget,
    group: Mapping[str, Any],
    counts: _Counts,
    failing: list[Finding],
    degraded: list[Finding],
) -> None:
    name = str(group["TargetGroupName"])
    states = counts.states
    registering = sum(n for (s, _), n in states.items() if s == REGISTERING)
    unhealthy = sum(n for (s, _), n in states.items() if s == "unhealthy")
    if counts.healthy == 0 and not registering:
        # AlbNoHealthyTargets: healthy_targets == 0 unless targets{state="initial"} > 0
        failing.append(Finding(Health.FAILING, _not_healthy(name, counts), "AlbNoHealthyTargets"))
    elif unhealthy:  # AlbUnhealthyTargets: targets{state="unhealthy"} > 0
        degraded.append(Finding(Health.DEGRADED, _not_healthy(name, counts), "AlbUnhealthyTargets"))
    elif counts.healthy == 0:  # every target still registering: coming back, no alert
        degraded.append(Finding(Health.DEGRADED, _not_healthy(name, counts)))
    expected = target.expect_health_check_paths.get(name, target.expect_health_check_path)
    if expected is not None and counts.path != expected:
        # AlbHealthCheckPathDrift: aws_alb_target_group_health_check_path_match == 0
        seen = f"{name} checks {counts.path[:PATH_SHOWN]}, expected {expected[:PATH_SHOWN]}"
        degraded.append(Finding(Health.DEGRADED, seen, "AlbHealthCheckPathDrift"))


def _not_healthy(name: str, counts: _Counts) -> str:
    """What is wrong with a group's targets, by state and the commonest reasons, e.g.
    "api-tg: 2 of 2 targets unhealthy: Target.ResponseCodeMismatch; 1 draining"."""
    if counts.registered == 0:
        return f"{name}: no target registered"
    unhealthy = Counter({r: n for (s, r), n in counts.states.items() if s == "unhealthy"})
    others: Counter[str] = Counter()
    for (state, _), n in counts.states.items():
        if state not in ("healthy", "unhealthy"):
            others[state] += n
    parts = []
    if unhealthy:
        said = f"{unhealthy.total()} of {counts.registered} targets unhealthy"
        reasons = [r for r, _ in unhealthy.most_common(3) if r != "none"]
        parts.append(f"{said}: {', '.join(reasons)}" if reasons else said)
    elif counts.healthy == 0:
        parts.append(f"no healthy target of {counts.registered}")
    parts.extend(f"{n} {s}" for s, n in sorted(others.items()))
    return f"{name}: {'; '.join(parts)}"


def _group_samples(
    target: AlbTarget, lb: str, group: Mapping[str, Any], answer: Mapping[str, Any]
) -> tuple[list[Sample], _Counts]:
    name = str(group["TargetGroupName"])
    descriptions = answer.get("TargetHealthDescriptions", ())
    states = Counter(
        (str(d["TargetHealth"].get("State", "")), str(d["TargetHealth"].get("Reason", "none")))
        for d in descriptions
    )
    samples = [TARGETS(n, lb, name, s, r) for (s, r), n in sorted(states.items())]
    healthy = sum(n for (s, _), n in states.items() if s == "healthy")
    samples.append(HEALTHY(healthy, lb, name))
    samples.append(REGISTERED(len(descriptions), lb, name))
    path = str(group.get("HealthCheckPath", ""))
    samples.append(
        HEALTH_CHECK(
            1,
            lb,
            name,
            path,
            str(group.get("HealthCheckPort", "")),
            str(group.get("HealthCheckProtocol", "")),
        )
    )
    expected = target.expect_health_check_paths.get(name, target.expect_health_check_path)
    if expected is not None:
        samples.append(PATH_MATCH(1 if path == expected else 0, lb, name))
    return samples, _Counts(states, healthy, len(descriptions), path)


KIND = ProbeKind(
    "alb",
    AlbTarget,
    probe,
    METRICS,
    Reason,
    "ALB state, access-log posture, target health per target group",
    state=AwsState,
    advice=advice,
    resources=(AWS,),
    area=Area.LOAD_BALANCER,
)
