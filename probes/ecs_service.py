"""ECS services: desired against running, deployments, why tasks stopped, and env drift.

What a runbook asks of ECS: was there a deployment in the last 30 minutes (roll back?), why
tasks do not start (image pull, secrets, OOM; desired count 0, every task stopped), and
whether a task definition's environment drifted from what the config expects.

One target is one cluster. Per run, with the API's batch limits: ListServices (when no
services are named, 100 a page), DescribeServices (10 a call), one cluster-wide ListTasks for
stopped tasks (100 a page: its cost grows with the cluster's stopped tasks, not the services
named) and DescribeTasks (100 a call) only for stopped tasks not seen before, and
DescribeTaskDefinition only for a task definition not seen before (they never change).
Stopped tasks are attributed to services by their `group` (`service:NAME`), which is also
right when a filter is not applied (moto ignores ListTasks' serviceName).

Task definition env is read from the plain `environment` entries only: `secrets` and
`valueFrom` are never resolved, and no value is exported, only whether it matches.

Rollbacks come from the deployments DescribeServices already returns, no other call. ECS
rolls a failed rollout back by creating a new PRIMARY deployment of the last completed task
definition, whose rolloutStateReason reads "ECS deployment circuit breaker: rolling back to
deploymentId ecs-svc/...", and keeping the failed one ACTIVE with rolloutState FAILED until
it drains. Either shape counts: that reason on the PRIMARY, or a PRIMARY of an older revision
of the same family created after a FAILED deployment (a rollback by hand after the breaker
stopped a rollout). Each rollback deployment is counted once, by its id. The revision a
service replaced is the newest other deployment's while one is listed, else the one this
target last saw as PRIMARY before it changed (gone after a restart until the next deploy).

Two options add calls of their own, each in a module: each task's CPU and memory
(`task_resources`, probes/_ecs_task_resources.py) and the security-group paths
(`security_groups`, `reaches`, probes/_ecs_paths.py). A call of theirs that fails fails the
run with its reason and keeps the services' own samples; a group no listing returns (a wrong
id in `reaches`) leaves its path unexported and fails the run `not_found`.

The verdict mirrors alert_rules/ecs.rules.yml with its thresholds. What a rule reads from
Prometheus' history the state keeps: when each service last wanted tasks (a day, for
EcsServiceScaledToZero), when its tasks stopped (15 minutes, for EcsServiceCrashLooping) and
when its rollbacks were seen (30 minutes, for EcsDeploymentRolledBack).
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from stackprobe.contract import (
    Area,
    Evidence,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
    Verdict,
)
from stackprobe.probes._aws import (
    CANNOT_MEASURE_ALERT,
    DENIED_ALERT,
    AwsState,
    Finding,
    Reason,
    batches,
    gather_all,
    judged,
    measured,
    measured_result,
)
from stackprobe.probes._aws_api import AWS, AwsCallError, AwsProblem, AwsTarget
from stackprobe.probes._ecs_paths import PATH_OPEN, Reach, paths
from stackprobe.probes._ecs_task_resources import METRICS as TASK_RESOURCE_METRICS
from stackprobe.probes._ecs_task_resources import TaskResources, task_resources
from stackprobe.probes._ecs_tasks import describe_tasks, task_arns
from stackprobe.target import UniqueNames

DESCRIBE_SERVICES_MAX = 10
LIST_MAX = 100

SCALED_DOWN_WITHIN = 86400.0  # EcsServiceScaledToZero: wanted tasks in the last day ([1d])
CRASH_WINDOW = 900.0  # EcsServiceCrashLooping: stops counted over 15 minutes ([15m])
CRASH_STOPS = 3  # EcsServiceCrashLooping: this many stops (not scaling, not a user's) or more
ROLLOUT_REASON_SHOWN = 120  # characters of ECS's rolloutStateReason a why shows
ROLLBACK_WITHIN = 1800.0  # EcsDeploymentRolledBack: increase(rollbacks_total[30m]) > 0


class StopClass(StrEnum):
    """Why a task stopped, from its stoppedReason, stopCode and containers' reasons."""

    OOM = "oom"
    IMAGE_PULL = "image_pull"
    SECRETS = "secrets"
    HEALTH_CHECK = "health_check"
    ESSENTIAL_CONTAINER_EXITED = "essential_container_exited"
    SCALING = "scaling"
    USER_INITIATED = "user_initiated"
    OTHER = "other"


# ECS's messages open with their error type; only that opening is matched, never the rest,
# which names repositories, target groups and ARNs ("classroom-api" holds no OOM).
_PULL = re.compile(r"(CannotPullContainerError|CannotPullImageManifestError)\b")
_INIT = re.compile(r"ResourceInitializationError\b")
_SECRET = re.compile(r"retrieve secrets?\b|secret from asm\b|secrets from ssm\b", re.I)
_REASONS: tuple[tuple[StopClass, re.Pattern[str]], ...] = (
    (StopClass.OOM, re.compile(r"OutOfMemoryError\b")),
    (StopClass.IMAGE_PULL, _PULL),
    (StopClass.HEALTH_CHECK, re.compile(r"Task failed (ELB|container) health checks\b")),
    (StopClass.SCALING, re.compile(r"Scaling activity initiated by\b")),
    (StopClass.USER_INITIATED, re.compile(r"Task stopped by user\b")),
    (StopClass.ESSENTIAL_CONTAINER_EXITED, re.compile(r"Essential container in task exited\b")),
)


def stop_class(task: Mapping[str, Any]) -> StopClass:
    """The class of one stopped task (DescribeTasks' shape). The cause beats the symptom: an
    essential container killed for memory stops its task with "Essential container in task
    exited", and its own reason says OutOfMemoryError."""
    for container in task.get("containers", ()):
        reason = str(container.get("reason", ""))
        if re.match(r"OutOfMemoryError\b", reason):
            return StopClass.OOM
        if _PULL.match(reason):
            return StopClass.IMAGE_PULL
    stopped = str(task.get("stoppedReason", ""))
    if _INIT.match(stopped):  # secrets, or the registry's credentials, could not be fetched
        if _SECRET.search(stopped):
            return StopClass.SECRETS
        return StopClass.IMAGE_PULL if "registry auth" in stopped else StopClass.OTHER
    for cls, pattern in _REASONS:
        if pattern.match(stopped):
            return cls
    code = task.get("stopCode")
    if code == "UserInitiated":
        return StopClass.USER_INITIATED
    if code == "EssentialContainerExited":
        return StopClass.ESSENTIAL_CONTAINER_EXITED
    return StopClass.OTHER


class EcsServiceTarget(AwsTarget):
    kind: Literal["ecs_service"] = "ecs_service"
    cluster: str = Field(min_length=1)
    # Named services, or every service of the cluster when empty (listed each run).
    services: UniqueNames = ()
    # Counts the stopped tasks ECS still lists (about an hour) by reason class.
    stopped_tasks: bool = True
    # Plain `environment` values every running task definition must carry.
    expect_env: dict[str, str] = Field(default_factory=dict)
    # Each task's CPU and memory from Container Insights (enhanced observability); off
    # unless set (`task_resources: {}`), as CloudWatch charges for every metric read.
    task_resources: TaskResources | None = None
    # Whether the ALB's security groups admit the tasks' on each load balancer's container port.
    security_groups: bool = False
    # What the tasks must reach through their security groups (databases, caches).
    reaches: tuple[Reach, ...] = ()

    @model_validator(mode="after")
    def _reaches_unique(self) -> EcsServiceTarget:
        names = [r.name for r in self.reaches]
        if len(names) != len(set(names)):
            raise ValueError("reaches: each entry needs a name of its own")
        return self

    def describe(self) -> str:
        named = ", ".join(self.services) if self.services else "all services"
        return f"ecs cluster {self.cluster}: {named}"


_L = ("cluster", "service")
DESIRED = MetricSpec("aws_ecs_service_desired_tasks", "The service's desired count.", _L)
RUNNING = MetricSpec("aws_ecs_service_running_tasks", "Tasks in the RUNNING state.", _L)
PENDING = MetricSpec("aws_ecs_service_pending_tasks", "Tasks in the PENDING state.", _L)
ACTIVE = MetricSpec(
    "aws_ecs_service_active", "1 if the service exists and is ACTIVE (not DRAINING), else 0.", _L
)
DEPLOYMENTS = MetricSpec(
    "aws_ecs_service_deployments",
    "Deployments of the service by status (PRIMARY, ACTIVE) and rollout state.",
    (*_L, "status", "rollout_state"),
)
FAILED_TASKS = MetricSpec(
    "aws_ecs_service_deployment_failed_tasks",
    "Tasks that failed to start in the service's current deployments.",
    _L,
)
LAST_DEPLOYMENT = MetricSpec(
    "aws_ecs_service_last_deployment_timestamp_seconds",
    "Unix time the service's newest deployment was created: a deploy marker.",
    _L,
)
REVISION = MetricSpec(
    "aws_ecs_service_task_definition_revision",
    "Revision of the task definition of the service's PRIMARY deployment.",
    (*_L, "family"),
)
STOPPED = MetricSpec(
    "aws_ecs_service_stopped_tasks",
    "Stopped tasks ECS still lists for the service (about the last hour), by reason class.",
    (*_L, "reason"),
)
STOPS = MetricSpec(
    "aws_ecs_service_tasks_stopped",
    "Tasks seen stopping since stackprobe started, by reason class; the first run's are not "
    "counted, so a restart does not look like a burst.",
    (*_L, "reason"),
    type="counter",
)
ENV_MATCH = MetricSpec(
    "aws_ecs_service_expected_env_match",
    "1 if every task definition with running tasks sets the expected plain environment "
    "value, else 0; one series per expect_env name.",
    (*_L, "name"),
)

PREVIOUS_REVISION = MetricSpec(
    "aws_ecs_service_previous_task_definition_revision",
    "Revision of the task definition the PRIMARY deployment replaced: the newest other "
    "deployment's, else the PRIMARY this target saw before it changed.",
    (*_L, "family"),
)
ROLLBACKS = MetricSpec(
    "aws_ecs_service_rollbacks",
    "Rollbacks seen since stackprobe started: a PRIMARY deployment ECS marks as rolling back "
    "(circuit breaker or alarms), or an older revision deployed over a FAILED one; each "
    "counted once.",
    _L,
    type="counter",
)
PRIMARY_FAILED_TASKS = MetricSpec(
    "aws_ecs_service_primary_failed_tasks",
    "Tasks of the PRIMARY deployment that failed to start in a row (failedTasks); ECS resets "
    "it to 0 once one of its tasks runs.",
    _L,
)

TARGET_GROUP = MetricSpec(
    "aws_ecs_service_target_group_info",
    "Always 1: the service registers its tasks in this ALB target group. The alert rules join "
    "target-group health to the service with it.",
    (*_L, "target_group"),
)

METRICS = (
    DESIRED,
    RUNNING,
    PENDING,
    ACTIVE,
    DEPLOYMENTS,
    FAILED_TASKS,
    LAST_DEPLOYMENT,
    REVISION,
    PREVIOUS_REVISION,
    ROLLBACKS,
    PRIMARY_FAILED_TASKS,
    STOPPED,
    STOPS,
    ENV_MATCH,
    TARGET_GROUP,
    *TASK_RESOURCE_METRICS,
    PATH_OPEN,
)


# How ECS words a rollback on the deployment it creates for it: "ECS deployment circuit
# breaker: rolling back to deploymentId ecs-svc/1234567890123456789."
_ROLLING_BACK = re.compile(r"\brolling back to\b", re.I)


@dataclass(slots=True)
class _Rollback:
    """One rollback a target saw, kept for the verdict for ROLLBACK_WITHIN."""

    seen: float  # monotonic time first seen; on a target's first run, when it began
    began: float  # unix time ECS created the rollback deployment
    to: str  # the revision rolled back to: "rev 42"
    replaced: str  # the revision rolled back from, "" when no longer known
    cause: str  # "circuit breaker", "alarm", "after a failed rollout"


def _name(arn_or_name: str) -> str:
    return arn_or_name.rsplit("/", 1)[-1]


def _revision(task_definition_arn: str) -> tuple[str, int] | None:
    family, _, revision = _name(task_definition_arn).rpartition(":")
    return (family, int(revision)) if family and revision.isdigit() else None


async def probe(target: EcsServiceTarget, ctx: ProbeContext) -> ProbeResult:
    # a missing service is EcsServiceMissing's; StackprobeCannotMeasure leaves not_found out
    return await measured(ctx, lambda: _measure(target, ctx), not_found_alert="")


async def _measure(target: EcsServiceTarget, ctx: ProbeContext) -> ProbeResult:
    state: AwsState = ctx.state if ctx.state is not None else AwsState()
    try:
        names = list(target.services) or await _list_services(target, ctx)
        described = await gather_all(
            ctx.use(AWS).call(
                target,
                "ecs",
                "describe_services",
                ctx.deadline,
                cluster=target.cluster,
                services=list(batch),
            )
            for batch in batches(names, DESCRIBE_SERVICES_MAX)
        )
    except AwsCallError as exc:
        if exc.code == "ClusterNotFoundException":
            seen = f"ECS has no cluster {target.cluster} in this region"
            # no series, so nothing pages: EcsServiceMissing needs aws_ecs_service_active
            return ProbeResult.failed(
                AwsProblem.NOT_FOUND, seen, verdict=Verdict(Health.FAILING, seen)
            )
        raise
    services = {s["serviceName"]: s for page in described for s in page.get("services", ())}
    samples: list[Sample] = []
    missing = [n for n in names if services.get(n, {}).get("status", "INACTIVE") == "INACTIVE"]
    for name in names:
        service = services.get(name)
        active = service is not None and service.get("status") == "ACTIVE"
        samples.append(ACTIVE(1 if active else 0, target.cluster, name))
        if service is not None and service.get("status") != "INACTIVE":
            samples.extend(_service_samples(target.cluster, name, service))
    present = [n for n in names if n not in missing]
    rollouts, findings = _rollouts(target.cluster, [services[n] for n in present], state)
    samples.extend(rollouts)
    stops: dict[str, Counter[StopClass]] | None = None
    if target.stopped_tasks:
        stopped, stops = await _stopped(target, ctx, state, present)
        samples.extend(stopped)
    drift: dict[str, list[str]] = {}
    if target.expect_env:
        matches = await _env_matches(target, ctx, state, [services[n] for n in present])
        samples.extend(matches)
        for sample in matches:
            if not sample.value:
                drift.setdefault(sample.label_values[1], []).append(sample.label_values[2])
    # what the options add: each task's resources, the security-group paths
    extra: list[Finding] = []
    tasks_read = ""
    unknown: list[str] = []
    failed: AwsCallError | None = None
    if target.task_resources is not None:
        try:
            read, hot, tasks_read = await task_resources(
                target,
                ctx,
                state,
                target.cluster,
                target.task_resources,
                [services[n] for n in present],
            )
        except AwsCallError as exc:
            failed = _unmeasured(exc, "per-task CPU and memory", extra)
        else:
            samples.extend(read)
            extra.extend(hot)
    if target.security_groups or target.reaches:
        try:
            opened, judged_paths, unknown = await paths(
                target,
                ctx,
                target.cluster,
                target.security_groups,
                target.reaches,
                [services[n] for n in present],
            )
        except AwsCallError as exc:
            failed = failed or _unmeasured(exc, "security group paths", extra)
        else:
            samples.extend(opened)
            extra.extend(judged_paths)
    verdict, evidence = _judge(names, services, state, stops, drift, findings, extra, tasks_read)
    if failed is not None:  # the services' own samples stay; what failed is unknown
        return ProbeResult.failed(
            failed.problem, str(failed), tuple(samples), verdict=verdict, evidence=evidence
        )
    said = [f"cluster {target.cluster} has no active service {', '.join(missing[:5])}"][
        : 1 if missing else 0
    ]
    return measured_result(samples, verdict, evidence, "; ".join(said + unknown))


def _unmeasured(exc: AwsCallError, what: str, findings: list[Finding]) -> AwsCallError:
    """An option's calls failed: its finding, and the failure the run ends with; the
    services' own samples stay. Throttling is re-raised: the run is a skipped cycle, whose
    last good samples (the option's included) stand."""
    if exc.problem is AwsProblem.THROTTLED:
        raise exc
    alert = DENIED_ALERT if exc.problem is AwsProblem.ACCESS_DENIED else CANNOT_MEASURE_ALERT
    findings.append(Finding(Health.FAILING, f"{what} unknown: {exc}", alert))
    return exc


def _judge(
    names: Sequence[str],
    services: Mapping[str, Mapping[str, Any]],
    state: AwsState,
    stops: Mapping[str, Counter[StopClass]] | None,
    drift: Mapping[str, list[str]],
    rollouts: Mapping[str, Sequence[Finding]],
    extra: Sequence[Finding] = (),
    extra_read: str = "",
) -> tuple[Verdict, Evidence]:
    """The services' findings, most urgent first, then what the options found (`extra`, and
    `extra_read` what they read), and the verdict on them."""
    now = time.monotonic()
    # service -> when it last wanted tasks, for EcsServiceScaledToZero's max_over_time [1d]
    wanted: dict[str, float] = state.cache.setdefault("wanted", {})
    failing: list[Finding] = []
    degraded: list[Finding] = []
    running_total = desired_total = 0
    for name in names:
        service = services.get(name)
        if service is None or service.get("status") != "ACTIVE":
            # EcsServiceMissing: aws_ecs_service_active == 0
            status = "not in the cluster" if service is None else str(service.get("status"))
            seen = "deleted (INACTIVE)" if status == "INACTIVE" else status
            failing.append(Finding(Health.FAILING, f"{name}: {seen}", "EcsServiceMissing"))
            continue
        desired, running = int(service.get("desiredCount", 0)), int(service.get("runningCount", 0))
        running_total, desired_total = running_total + running, desired_total + desired
        if desired > 0:
            wanted[name] = now
        elif now - wanted.get(name, -SCALED_DOWN_WITHIN) <= SCALED_DOWN_WITHIN:
            # EcsServiceScaledToZero: desired == 0 and max_over_time(desired[1d]) > 0
            seen = f"{name}: desired count 0"
            failing.append(Finding(Health.FAILING, seen, "EcsServiceScaledToZero"))
        if desired > 0 and running == 0:
            # EcsServiceNoRunningTasks: running == 0 and desired > 0
            seen = f"{name}: running 0 of {desired} desired"
            failing.append(Finding(Health.FAILING, seen, "EcsServiceNoRunningTasks"))
        recent = stops.get(name, Counter()) if stops is not None else Counter()
        below: list[Finding] = []  # what no rule pages on goes after what one does
        if 0 < running < desired:
            if recent.total() >= CRASH_STOPS:
                # EcsServiceCrashLooping: 3+ stops in 15m and running < desired
                classes = ", ".join(f"{cls} {n}" for cls, n in recent.most_common())
                seen = (
                    f"{name}: {recent.total()} tasks stopped in 15 min ({classes}), "
                    f"running {running} of {desired} desired"
                )
                degraded.append(Finding(Health.DEGRADED, seen, "EcsServiceCrashLooping"))
            else:  # no rule pages on this alone: a rollout or a scale-out under way
                seen = f"{name}: running {running} of {desired} desired"
                below.append(Finding(Health.DEGRADED, seen))
        # EcsDeploymentRolledBack first: it names the FAILED deployment's outcome
        paged = [f for f in rollouts.get(name, ()) if f.alert]
        degraded.extend(paged)
        for deployment in service.get("deployments", ()):
            if deployment.get("rolloutState") == "FAILED":
                # EcsDeploymentFailed: deployments{rollout_state="FAILED"} > 0
                why = str(deployment.get("rolloutStateReason", ""))[:ROLLOUT_REASON_SHOWN]
                seen = f"{name}: {deployment.get('status', '')} deployment rollout FAILED"
                seen = f"{seen}: {why}" if why else seen
                degraded.append(Finding(Health.DEGRADED, seen, "EcsDeploymentFailed"))
        if name in drift:  # EcsTaskDefinitionEnvDrift: expected_env_match == 0
            seen = f"{name}: {', '.join(drift[name])} not the expected value"
            degraded.append(Finding(Health.DEGRADED, seen, "EcsTaskDefinitionEnvDrift"))
        degraded.extend(f for f in rollouts.get(name, ()) if not f.alert)
        degraded.extend(below)
    for gone in set(wanted) - set(names):
        del wanted[gone]
    healthy = f"services: {len(names)}; {running_total} of {desired_total} desired tasks running"
    # what the options found: EcsSecurityGroupPathClosed (failing) beside
    # EcsServiceNoRunningTasks, both a site down; the tasks' resources, degraded
    failing.extend(f for f in extra if f.health is Health.FAILING)
    degraded.extend(f for f in extra if f.health is not Health.FAILING)
    return judged([*failing, *degraded], f"{healthy}; {extra_read}" if extra_read else healthy)


def _created(deployment: Mapping[str, Any]) -> float:
    created = deployment.get("createdAt")
    return created.timestamp() if isinstance(created, datetime) else 0.0


def _rolled_back(
    deployments: Sequence[Mapping[str, Any]],
) -> tuple[Mapping[str, Any], Mapping[str, Any] | None, str] | None:
    """When the PRIMARY deployment is a rollback: it, the deployment it replaced (while ECS
    still lists it) and the cause."""
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None:
        return None
    others = sorted((d for d in deployments if d is not primary), key=_created, reverse=True)
    failed = [d for d in others if d.get("rolloutState") == "FAILED"]
    reason = str(primary.get("rolloutStateReason", ""))
    if _ROLLING_BACK.search(reason):
        said = reason.lower()
        cause = (
            "circuit breaker"
            if "circuit breaker" in said
            else "alarm"
            if "alarm" in said
            else "ECS"
        )
        return primary, (failed or others)[0] if failed or others else None, cause
    if failed and _created(failed[0]) <= _created(primary):
        now = _revision(str(primary.get("taskDefinition", "")))
        was = _revision(str(failed[0].get("taskDefinition", "")))
        if now is not None and was is not None and now[0] == was[0] and now[1] < was[1]:
            return primary, failed[0], "after a failed rollout"
    return None


def _rev(task_definition: str) -> str:
    found = _revision(task_definition)
    return f"rev {found[1]}" if found is not None else ""


def _ago(seconds: float) -> str:
    return f"{int(seconds)}s ago" if seconds < 60 else f"{int(seconds // 60)}m ago"


def _rollouts(
    cluster: str, services: Sequence[Mapping[str, Any]], state: AwsState
) -> tuple[list[Sample], dict[str, list[Finding]]]:
    """Per service: the revision its PRIMARY replaced, its rollbacks (counted once each, by
    the rollback deployment's id) and the PRIMARY's failed tasks; and what the verdict says
    of them."""
    now, wall = time.monotonic(), time.time()
    first_run = "rollouts_seen" not in state.cache
    # service -> rollback deployment id -> what was seen of it
    rollbacks: dict[str, dict[str, _Rollback]] = state.cache.setdefault("rollbacks", {})
    counted: Counter[str] = state.cache.setdefault("rollbacks_counted", Counter())
    # service -> task definition ARN of the PRIMARY last seen, and of the one it replaced
    primaries: dict[str, str] = state.cache.setdefault("primary_task_definition", {})
    previous: dict[str, str] = state.cache.setdefault("previous_task_definition", {})
    samples: list[Sample] = []
    findings: dict[str, list[Finding]] = {}
    names = set()
    for service in services:
        name = str(service["serviceName"])
        names.add(name)
        deployments: Sequence[Mapping[str, Any]] = service.get("deployments", ())
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
        current = str((primary or service).get("taskDefinition", ""))
        replaced = sorted(
            (d for d in deployments if d is not primary and d.get("taskDefinition") != current),
            key=_created,
            reverse=True,
        )
        if replaced:
            previous[name] = str(replaced[0]["taskDefinition"])
        elif primaries.get(name, current) != current:
            previous[name] = primaries[name]
        primaries[name] = current
        found = _revision(previous.get(name, ""))
        if found is not None:
            samples.append(PREVIOUS_REVISION(found[1], cluster, name, found[0]))

        known = rollbacks.setdefault(name, {})
        rolled = _rolled_back(deployments)
        if rolled is not None:
            back, before, cause = rolled
            ident = str(back.get("id", "")) or current
            if ident not in known:
                began = _created(back) or wall
                age = max(0.0, wall - began)
                # a target's first run counts only what began within the alert's window
                if not first_run or age <= ROLLBACK_WITHIN:
                    counted[name] += 1
                was = str(before.get("taskDefinition", "")) if before else previous.get(name, "")
                known[ident] = _Rollback(
                    now - age if first_run else now,
                    began,
                    _rev(str(back.get("taskDefinition", ""))),
                    _rev(was) if was != back.get("taskDefinition") else "",
                    cause,
                )
        listed = {str(d.get("id", "")) for d in deployments}
        for ident in [i for i in known if i not in listed]:  # drained, and past the window
            if now - known[ident].seen > ROLLBACK_WITHIN:
                del known[ident]
        samples.append(ROLLBACKS(counted[name], cluster, name))
        said: list[Finding] = []
        lately = [r for r in known.values() if now - r.seen <= ROLLBACK_WITHIN]
        if lately:  # EcsDeploymentRolledBack: increase(rollbacks_total[30m]) > 0
            last = max(lately, key=lambda r: r.seen)
            moved = f"from {last.replaced} to {last.to}" if last.replaced else f"to {last.to}"
            seen = f"{name}: rolled back {moved} ({last.cause}) {_ago(wall - last.began)}"
            said.append(Finding(Health.DEGRADED, seen, "EcsDeploymentRolledBack"))
        failed_tasks = int(primary.get("failedTasks", 0)) if primary is not None else 0
        samples.append(PRIMARY_FAILED_TASKS(failed_tasks, cluster, name))
        if failed_tasks > 0 and primary is not None and primary.get("rolloutState") != "FAILED":
            # no rule pages on this alone: the circuit breaker fails the rollout
            # (EcsDeploymentFailed) or rolls it back (EcsDeploymentRolledBack)
            tasks = "1 task" if failed_tasks == 1 else f"{failed_tasks} tasks"
            seen = f"{name}: primary deployment {_rev(current)}: {tasks} failed to start"
            said.append(Finding(Health.DEGRADED, seen))
        if said:
            findings[name] = said
    for table in (rollbacks, counted, primaries, previous):
        for gone in set(table) - names:
            del table[gone]
    state.cache["rollouts_seen"] = True
    return samples, findings


async def _list_services(target: EcsServiceTarget, ctx: ProbeContext) -> list[str]:
    pages = await ctx.use(AWS).pages(
        target,
        "ecs",
        "list_services",
        ctx.deadline,
        cluster=target.cluster,
        PaginationConfig={"PageSize": LIST_MAX},
    )
    return sorted(_name(arn) for page in pages for arn in page.get("serviceArns", ()))


def _service_samples(cluster: str, name: str, service: Mapping[str, Any]) -> list[Sample]:
    samples = [
        DESIRED(service.get("desiredCount", 0), cluster, name),
        RUNNING(service.get("runningCount", 0), cluster, name),
        PENDING(service.get("pendingCount", 0), cluster, name),
    ]
    deployments: Sequence[Mapping[str, Any]] = service.get("deployments", ())
    by_state = Counter(
        (str(d.get("status", "")), str(d.get("rolloutState", ""))) for d in deployments
    )
    samples.extend(DEPLOYMENTS(n, cluster, name, s, r) for (s, r), n in sorted(by_state.items()))
    samples.append(FAILED_TASKS(sum(d.get("failedTasks", 0) for d in deployments), cluster, name))
    created = [d["createdAt"].timestamp() for d in deployments if d.get("createdAt")]
    if created:
        samples.append(LAST_DEPLOYMENT(max(created), cluster, name))
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    found = _revision(str((primary or service).get("taskDefinition", "")))
    if found is not None:
        samples.append(REVISION(found[1], cluster, name, found[0]))
    groups = {
        _target_group_name(str(lb["targetGroupArn"]))
        for lb in service.get("loadBalancers", ())
        if lb.get("targetGroupArn")
    }
    samples.extend(TARGET_GROUP(1, cluster, name, group) for group in sorted(groups))
    return samples


def _target_group_name(arn: str) -> str:
    """`arn:aws:elasticloadbalancing:...:targetgroup/NAME/ID` -> NAME, the alb kind's label."""
    parts = arn.split(":targetgroup/", 1)[-1].split("/")
    return parts[0]


async def _stopped(
    target: EcsServiceTarget, ctx: ProbeContext, state: AwsState, services: Iterable[str]
) -> tuple[list[Sample], dict[str, Counter[StopClass]]]:
    """The stopped-task samples, and per service the classes of the tasks seen stopping in
    the last CRASH_WINDOW that neither scaling nor a user stopped."""
    listed = await task_arns(ctx, target, target.cluster, desiredStatus="STOPPED")
    # task ARN -> (service, class); what ECS stops listing is forgotten
    known: dict[str, tuple[str, StopClass]] = state.cache.setdefault("stopped", {})
    stops: Counter[tuple[str, StopClass]] = state.cache.setdefault("stops", Counter())
    # service -> (when, class) of the stops counted in the last CRASH_WINDOW
    lately: dict[str, deque[tuple[float, StopClass]]] = state.cache.setdefault("lately", {})
    first_run = "stopped_seen" not in state.cache
    new = [arn for arn in listed if arn not in known]
    now = time.monotonic()
    for task in await describe_tasks(ctx, target, target.cluster, new):
        group = str(task.get("group", ""))
        service = group.removeprefix("service:") if group.startswith("service:") else ""
        cls = stop_class(task)
        known[task["taskArn"]] = (service, cls)
        if not first_run and service:
            stops[(service, cls)] += 1
            if cls not in (StopClass.SCALING, StopClass.USER_INITIATED):
                lately.setdefault(service, deque()).append((now, cls))
    for arn in set(known) - set(listed):
        del known[arn]
    state.cache["stopped_seen"] = True
    current = Counter(known.values())
    samples = []
    recent: dict[str, Counter[StopClass]] = {}
    for service in services:
        for cls in StopClass:
            samples.append(STOPPED(current[(service, cls)], target.cluster, service, cls))
            samples.append(STOPS(stops[(service, cls)], target.cluster, service, cls))
        times = lately.get(service)
        while times and now - times[0][0] > CRASH_WINDOW:
            times.popleft()
        if times:
            recent[service] = Counter(cls for _, cls in times)
    return samples, recent


async def _env_matches(
    target: EcsServiceTarget,
    ctx: ProbeContext,
    state: AwsState,
    services: Sequence[Mapping[str, Any]],
) -> list[Sample]:
    wanted: dict[str, set[str]] = {}
    for service in services:
        running = [
            str(d["taskDefinition"])
            for d in service.get("deployments", ())
            if d.get("runningCount", 0) > 0 or d.get("status") == "PRIMARY"
        ]
        wanted[service["serviceName"]] = set(running)
    # task definition ARN -> {name: value} of its plain environment; they never change
    envs: dict[str, dict[str, str]] = state.cache.setdefault("task_definition_env", {})
    unseen = sorted({arn for arns in wanted.values() for arn in arns} - envs.keys())
    answers = await gather_all(
        ctx.use(AWS).call(
            target, "ecs", "describe_task_definition", ctx.deadline, taskDefinition=arn
        )
        for arn in unseen
    )
    for arn, answer in zip(unseen, answers, strict=True):
        env: dict[str, str] = {}
        for container in answer.get("taskDefinition", {}).get("containerDefinitions", ()):
            for entry in container.get("environment", ()):
                if entry.get("name") in target.expect_env:
                    env[entry["name"]] = str(entry.get("value", ""))
        envs[arn] = env
    samples = []
    for service_name, arns in sorted(wanted.items()):
        for name, value in sorted(target.expect_env.items()):
            match = bool(arns) and all(envs[arn].get(name) == value for arn in arns)
            samples.append(ENV_MATCH(1 if match else 0, target.cluster, service_name, name))
    return samples


KIND = ProbeKind(
    "ecs_service",
    EcsServiceTarget,
    probe,
    METRICS,
    Reason,
    "ECS services: desired vs running, deployments, stopped tasks, env drift",
    state=AwsState,
    resources=(AWS,),
    area=Area.ECS,
)
