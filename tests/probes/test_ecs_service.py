"""kind: ecs_service against moto, with AWS's batch and page limits enforced
(tests/support/aws.py)."""

from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto.core.utils import utcnow

from stackprobe.contract import Health, Verdict
from stackprobe.probes import ecs_service
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from stackprobe.probes.ecs_service import StopClass, stop_class
from tests.support.aws import (
    CANARY_KEY_ID,
    CANARY_SECRET,
    REGION,
    EcsStack,
    api_calls,
    by_operation,
    inject,
)
from tests.support.probing import (
    ProbeRunner,
    aws_calls,
    findings,
    make_target,
    samples_by_name,
    value,
)


@pytest.fixture
def stack(moto: None) -> EcsStack:
    return EcsStack(boto3.Session(region_name=REGION))


def ecs_target(**extra: Any) -> Any:
    return make_target({"name": "aep-ecs", "kind": "ecs_service", "cluster": "aep", **extra})


async def test_counts_per_service_from_the_whole_cluster(
    stack: EcsStack, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    stack.service("aep-api", desired=2, running=2)
    stack.service("aep-worker", desired=1, running=0)
    stack.service("aep-frontend", desired=0, running=0)

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    assert result.success, result.detail
    assert value(result, "aws_ecs_service_desired_tasks", "aep", "aep-api") == 2
    assert value(result, "aws_ecs_service_running_tasks", "aep", "aep-api") == 2
    assert value(result, "aws_ecs_service_running_tasks", "aep", "aep-worker") == 0
    assert value(result, "aws_ecs_service_pending_tasks", "aep", "aep-worker") == 1
    assert value(result, "aws_ecs_service_desired_tasks", "aep", "aep-frontend") == 0
    assert value(result, "aws_ecs_service_active", "aep", "aep-frontend") == 1
    revision = samples_by_name(result)["aws_ecs_service_task_definition_revision"]
    assert revision == {
        ("aep", "aep-api", "aep-api"): 1.0,
        ("aep", "aep-worker", "aep-worker"): 1.0,
        ("aep", "aep-frontend", "aep-frontend"): 1.0,
    }
    deployed = value(result, "aws_ecs_service_last_deployment_timestamp_seconds", "aep", "aep-api")
    assert time.time() - 120 < deployed <= time.time() + 1
    found = samples_by_name(result)
    assert set(found["aws_ecs_service_rollbacks"].values()) == {0}
    assert set(found["aws_ecs_service_primary_failed_tasks"].values()) == {0}
    # nothing replaced yet: one deployment each, and no earlier run to remember one from
    assert "aws_ecs_service_previous_task_definition_revision" not in found


@pytest.mark.parametrize(("services", "describe_calls", "list_pages"), [(25, 3, 1), (105, 11, 2)])
async def test_batches_describe_services_by_ten_and_pages_the_listing(
    stack: EcsStack,
    aws: AwsClients,
    aws_metrics: AwsMetrics,
    services: int,
    describe_calls: int,
    list_pages: int,
) -> None:
    family = stack.task_definition("shared")
    for i in range(services):
        stack.service(f"svc-{i:03d}", desired=1, task_definition=family)

    result = await ProbeRunner.once(ecs_target(stopped_tasks=False), aws=aws)

    assert result.success, result.detail
    assert len(samples_by_name(result)["aws_ecs_service_desired_tasks"]) == services
    calls = by_operation(api_calls(aws_metrics.registry))
    # moto itself would take one call of 105 names; tests/support/aws.py rejects it as AWS does
    assert calls == {"ListServices": list_pages, "DescribeServices": describe_calls}


async def test_a_rollout_in_progress_shows_both_deployments(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=2, running=2)
    new = stack.task_definition("aep-api", {"BUDGET_ENFORCEMENT_MODE": "strict"})
    stack.deploy("aep-api", new, running_new=1)

    result = await ProbeRunner.once(ecs_target(services=["aep-api"]), aws=aws)

    found = samples_by_name(result)["aws_ecs_service_deployments"]
    assert found[("aep", "aep-api", "PRIMARY", "IN_PROGRESS")] == 1
    assert found[("aep", "aep-api", "ACTIVE", "COMPLETED")] == 1
    assert (
        value(result, "aws_ecs_service_task_definition_revision", "aep", "aep-api", "aep-api") == 2
    )


async def test_stopped_tasks_are_classed_and_only_new_ones_are_described(
    stack: EcsStack, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    stack.service("aep-api", desired=2, running=1)
    stack.service("aep-worker", desired=1, running=1)
    oom, pull, _running = stack.run_tasks("aep-api", 3)
    stack.stop(oom, "Essential container in task exited", "OutOfMemoryError: Container killed")
    stack.stop(pull, "CannotPullContainerError: pull image manifest has been retried 5 times")
    async with ProbeRunner(ecs_target(), aws=aws) as runner:
        first = await runner.run()
        assert first.success, first.detail
        stopped = samples_by_name(first)["aws_ecs_service_stopped_tasks"]
        assert stopped[("aep", "aep-api", "oom")] == 1
        assert stopped[("aep", "aep-api", "image_pull")] == 1
        assert sum(stopped.values()) == 2  # the running task is not listed as stopped
        assert stopped[("aep", "aep-worker", "oom")] == 0
        # the first run's stops are the baseline, so a restart is not a burst
        assert set(samples_by_name(first)["aws_ecs_service_tasks_stopped"].values()) == {0}

        (late,) = stack.run_tasks("aep-api", 1)
        stack.stop(late, "Task failed ELB health checks in (target-group arn:aws:...)")
        second = await runner.run()

    assert value(second, "aws_ecs_service_tasks_stopped", "aep", "aep-api", "health_check") == 1
    assert value(second, "aws_ecs_service_stopped_tasks", "aep", "aep-api", "health_check") == 1
    calls = by_operation(api_calls(aws_metrics.registry))
    assert calls["DescribeTasks"] == 2  # once for the first two, once for the new one
    assert calls["ListTasks"] == 2


async def test_env_drift_compares_plain_environment_only(
    stack: EcsStack, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    strict = stack.task_definition("aep-api", {"BUDGET_ENFORCEMENT_MODE": "strict"})
    drifted = stack.task_definition("aep-worker", {"BUDGET_ENFORCEMENT_MODE": "warn"})
    stack.service("aep-api", desired=1, task_definition=strict)
    stack.service("aep-worker", desired=1, task_definition=drifted)
    target = ecs_target(
        stopped_tasks=False,
        expect_env={"BUDGET_ENFORCEMENT_MODE": "strict", "DATABASE_URL": "anything"},
    )
    async with ProbeRunner(target, aws=aws) as runner:
        result = await runner.run()
        await runner.run()

    match = samples_by_name(result)["aws_ecs_service_expected_env_match"]
    assert match[("aep", "aep-api", "BUDGET_ENFORCEMENT_MODE")] == 1
    assert match[("aep", "aep-worker", "BUDGET_ENFORCEMENT_MODE")] == 0
    # DATABASE_URL is a secret (valueFrom): never read, so never a match
    assert match[("aep", "aep-api", "DATABASE_URL")] == 0
    # task definitions never change: each is described once, not once per run
    assert by_operation(api_calls(aws_metrics.registry))["DescribeTaskDefinition"] == 2


@pytest.mark.parametrize("code", ["ThrottlingException", "RequestLimitExceeded"])
async def test_throttling_skips_a_cycle_and_the_next_recovers(
    stack: EcsStack, aws: AwsClients, aws_metrics: AwsMetrics, code: str
) -> None:
    stack.service("aep-api", desired=2, running=2)
    target = ecs_target(services=["aep-api"], stopped_tasks=False)
    async with ProbeRunner(target, aws=aws) as runner:
        good = await runner.run()
        client = aws.client(target, "ecs")
        injected = inject(client, "DescribeServices", code, times=2)
        throttled = await runner.run()
        recovered = await runner.run()

    assert injected.answered == 2  # the first attempt and botocore's one retry
    assert not throttled.success and throttled.reason == "throttled"
    assert code in throttled.detail
    # the last good values are repeated, so nothing that alerts on them flaps
    assert samples_by_name(throttled) == samples_by_name(good)
    assert recovered.success
    calls = api_calls(aws_metrics.registry)
    assert calls[("ecs", "DescribeServices", "throttled")] == 2
    assert calls[("ecs", "DescribeServices", "ok")] == 2


async def test_access_denied_names_the_missing_action(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=1)
    target = ecs_target()
    inject(aws.client(target, "ecs"), "ListTasks", "AccessDeniedException", times=5)

    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "access_denied"
    assert "ecs:ListTasks" in result.detail
    assert result.samples == ()


async def test_missing_cluster_and_missing_service(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=1)

    no_cluster = await ProbeRunner.once(
        make_target({"name": "x", "kind": "ecs_service", "cluster": "nope"}), aws=aws
    )
    no_service = await ProbeRunner.once(ecs_target(services=["aep-api", "aep-gone"]), aws=aws)

    assert no_cluster.reason == "not_found"
    assert "nope" in no_cluster.detail
    assert no_service.reason == "not_found"
    assert "aep-gone" in no_service.detail
    assert value(no_service, "aws_ecs_service_active", "aep", "aep-gone") == 0
    assert value(no_service, "aws_ecs_service_running_tasks", "aep", "aep-api") == 1


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            {
                "stoppedReason": "Essential container in task exited",
                "stopCode": "EssentialContainerExited",
                "containers": [
                    {"reason": "OutOfMemoryError: Container killed due to memory usage"}
                ],
            },
            StopClass.OOM,
        ),
        (
            {
                "stoppedReason": "CannotPullContainerError: pull image manifest has been retried",
                "stopCode": "TaskFailedToStart",
            },
            StopClass.IMAGE_PULL,
        ),
        (
            {
                "stoppedReason": "ResourceInitializationError: unable to pull secrets or registry "
                "auth: execution resource retrieval failed: unable to retrieve secret from asm",
                "stopCode": "TaskFailedToStart",
            },
            StopClass.SECRETS,
        ),
        ({"stoppedReason": "Task failed container health checks"}, StopClass.HEALTH_CHECK),
        (
            {
                "stoppedReason": "Scaling activity initiated by (deployment ecs-svc/123)",
                "stopCode": "ServiceSchedulerInitiated",
            },
            StopClass.SCALING,
        ),
        (
            {"stoppedReason": "Task stopped by user", "stopCode": "UserInitiated"},
            StopClass.USER_INITIATED,
        ),
        (
            {
                "stoppedReason": "Essential container in task exited",
                "stopCode": "EssentialContainerExited",
                "containers": [{"exitCode": 1}],
            },
            StopClass.ESSENTIAL_CONTAINER_EXITED,
        ),
        ({"stoppedReason": "Host EC2 (instance i-1) terminated."}, StopClass.OTHER),
        # resource names that hold the words the classes look for
        (
            {
                "stoppedReason": "Task failed ELB health checks in (target-group "
                "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/classroom-api/6d0e)"
            },
            StopClass.HEALTH_CHECK,
        ),
        (
            {
                "stoppedReason": "Task failed ELB health checks in (target-group "
                "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/image-api/6d0e)"
            },
            StopClass.HEALTH_CHECK,
        ),
        (
            {
                "stoppedReason": "CannotPullContainerError: pull image manifest has been retried 5 "
                "time(s): 1.dkr.ecr.eu-west-1.amazonaws.com/classmate-api:v3 not found"
            },
            StopClass.IMAGE_PULL,
        ),
        (
            {
                "stoppedReason": "Essential container in task exited",
                "containers": [{"reason": "CannotPullContainerError: ref zoom-worker:latest"}],
            },
            StopClass.IMAGE_PULL,
        ),
        (
            {
                "stoppedReason": "ResourceInitializationError: unable to pull secrets or registry "
                "auth: execution resource retrieval failed: unable to retrieve ecr registry auth: "
                "service call has been retried 3 time(s)"
            },
            StopClass.IMAGE_PULL,
        ),
        (
            {"stoppedReason": "Scaling activity initiated by (deployment ecs-svc/oom-kms-ssm)"},
            StopClass.SCALING,
        ),
    ],
)
def test_stop_classes(task: dict[str, Any], expected: StopClass) -> None:
    assert stop_class(task) is expected


# The verdict: the services' health, as the ecs alert rules see it.


def assert_no_secret(result: Any) -> None:
    shown = " ".join([result.detail, result.health().why, *(v for _, v in result.evidence)])
    for canary in (CANARY_KEY_ID, CANARY_SECRET):
        assert canary not in shown


async def test_services_at_their_desired_count_are_ok(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=2, running=2)
    stack.service("aep-frontend", desired=0, running=0)  # kept at 0: never wanted tasks

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    assert result.health() == Verdict(Health.OK, "services: 2; 2 of 2 desired tasks running")
    made = aws_calls(result)
    assert made[0].startswith("ecs:ListServices ok in ") and made[0].endswith(" ms, 1 page")
    assert made[1].startswith("ecs:DescribeServices ok in ")
    assert made[2].startswith("ecs:ListTasks ok in ") and made[2].endswith(" ms, 1 page")
    assert findings(result) == []
    assert_no_secret(result)


async def test_no_running_task_is_failing(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=2, running=2)
    stack.service("aep-worker", desired=2, running=0)

    result = await ProbeRunner.once(ecs_target(), aws=aws)

    assert result.success
    assert result.health() == Verdict(
        Health.FAILING, "aep-worker: running 0 of 2 desired", "EcsServiceNoRunningTasks"
    )


async def test_scaled_to_zero_after_wanting_tasks_is_failing(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=2, running=2)
    async with ProbeRunner(ecs_target(), aws=aws) as runner:
        before = await runner.run()
        stack.set_counts("aep-api", running=0, desired=0)
        after = await runner.run()

    assert before.health().health is Health.OK
    assert after.health() == Verdict(
        Health.FAILING, "aep-api: desired count 0", "EcsServiceScaledToZero"
    )


async def test_a_missing_and_a_draining_service_are_failing(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=1)
    stack.service("aep-old", desired=1)
    stack.backend_service("aep-old").status = "DRAINING"

    result = await ProbeRunner.once(
        ecs_target(services=["aep-api", "aep-gone", "aep-old"]), aws=aws
    )

    assert result.reason == "not_found"
    assert result.health() == Verdict(
        Health.FAILING, "aep-gone: not in the cluster (+1 more)", "EcsServiceMissing"
    )
    assert findings(result) == [
        ("failing", "aep-gone: not in the cluster (EcsServiceMissing)"),
        ("failing", "aep-old: DRAINING (EcsServiceMissing)"),
    ]
    assert aws_calls(result)


async def test_a_missing_cluster_is_failing_with_no_alert(stack: EcsStack, aws: AwsClients) -> None:
    """No rule pages on it: EcsServiceMissing needs the series a missing cluster has none of,
    and StackprobeCannotMeasure leaves not_found to the kind's own alerts."""
    result = await ProbeRunner.once(
        make_target({"name": "x", "kind": "ecs_service", "cluster": "nope"}), aws=aws
    )

    assert result.health() == Verdict(Health.FAILING, "ECS has no cluster nope in this region")
    assert [c.split(" in ")[0] for c in aws_calls(result)] == [
        "ecs:ListServices error (ClusterNotFoundException)"
    ]


async def test_tasks_that_keep_stopping_below_desired_are_crash_looping(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=2, running=1)
    async with ProbeRunner(ecs_target(), aws=aws) as runner:
        first = await runner.run()  # the baseline: stops before it are not counted
        for arn in stack.run_tasks("aep-api", 3):
            stack.stop(arn, "Essential container in task exited", "OutOfMemoryError: killed")
        (scaled,) = stack.run_tasks("aep-api", 1)
        stack.stop(scaled, "Scaling activity initiated by (deployment ecs-svc/1)")
        looping = await runner.run()

    assert first.health() == Verdict(Health.DEGRADED, "aep-api: running 1 of 2 desired")
    assert looping.health() == Verdict(
        Health.DEGRADED,
        "aep-api: 3 tasks stopped in 15 min (oom 3), running 1 of 2 desired",
        "EcsServiceCrashLooping",
    )


async def test_a_failed_rollout_is_degraded(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=2, running=2)
    deployment = stack.backend_service("aep-api").deployments[0]
    deployment["rolloutState"] = "FAILED"
    deployment["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."

    verdict = (await ProbeRunner.once(ecs_target(stopped_tasks=False), aws=aws)).health()

    assert verdict == Verdict(
        Health.DEGRADED,
        "aep-api: PRIMARY deployment rollout FAILED: ECS deployment circuit breaker: tasks "
        "failed to start.",
        "EcsDeploymentFailed",
    )


async def test_env_drift_is_degraded_and_never_shows_a_value(
    stack: EcsStack, aws: AwsClients
) -> None:
    strict = stack.task_definition("aep-api", {"BUDGET_ENFORCEMENT_MODE": "strict"})
    drifted = stack.task_definition("aep-worker", {"BUDGET_ENFORCEMENT_MODE": "warn-CANARY"})
    stack.service("aep-api", desired=1, task_definition=strict)
    stack.service("aep-worker", desired=1, task_definition=drifted)
    target = ecs_target(stopped_tasks=False, expect_env={"BUDGET_ENFORCEMENT_MODE": "strict"})

    result = await ProbeRunner.once(target, aws=aws)

    assert result.health() == Verdict(
        Health.DEGRADED,
        "aep-worker: BUDGET_ENFORCEMENT_MODE not the expected value",
        "EcsTaskDefinitionEnvDrift",
    )
    shown = " ".join(v for _, v in result.evidence) + result.health().why
    assert "warn-CANARY" not in shown and "strict" not in shown
    assert any(
        c.startswith("ecs:DescribeTaskDefinition ok, 2 calls in ") for c in aws_calls(result)
    )


async def test_a_throttled_run_keeps_the_last_health(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=2, running=0)
    target = ecs_target(services=["aep-api"], stopped_tasks=False)
    async with ProbeRunner(target, aws=aws) as runner:
        await runner.run()
        inject(aws.client(target, "ecs"), "DescribeServices", "ThrottlingException", times=2)
        throttled = await runner.run()

    assert throttled.reason == "throttled"
    assert throttled.health() == Verdict(
        Health.FAILING,
        "AWS throttled this run; the last good values: aep-api: running 0 of 2 desired",
        "EcsServiceNoRunningTasks",
    )
    assert [c.split(" in ")[0] for c in aws_calls(throttled)] == ["ecs:DescribeServices throttled"]


async def test_a_throttled_first_run_is_degraded(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=1)
    target = ecs_target(services=["aep-api"])
    inject(aws.client(target, "ecs"), "DescribeServices", "ThrottlingException", times=2)

    verdict = (await ProbeRunner.once(target, aws=aws)).health()

    assert verdict == Verdict(
        Health.DEGRADED,
        "AWS throttled this run, and no run has measured yet",
        "StackprobeAwsThrottled",
    )


async def test_access_denied_names_its_alert_and_keeps_the_calls(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=1)
    target = ecs_target()
    inject(aws.client(target, "ecs"), "ListTasks", "AccessDeniedException", times=5)

    result = await ProbeRunner.once(target, aws=aws)

    verdict = result.health()
    assert verdict.health is Health.FAILING and verdict.alert == "StackprobeAwsAccessDenied"
    assert "ecs:ListTasks" in verdict.why
    assert [c.split(" in ")[0] for c in aws_calls(result)] == [
        "ecs:ListServices ok",
        "ecs:DescribeServices ok",
        "ecs:ListTasks denied",
    ]
    assert_no_secret(result)


# Rollbacks: DescribeServices' deployments as ECS shows a circuit-breaker rollback
# (EcsStack.roll_back), the revisions, and the counter each is counted in once.


def revisions(result: Any, service: str = "aep-api") -> tuple[float | None, float | None]:
    """(current, previous) task definition revision of a service, None when not exported."""
    found = samples_by_name(result)
    current = found["aws_ecs_service_task_definition_revision"].get(("aep", service, service))
    previous = found.get("aws_ecs_service_previous_task_definition_revision", {})
    return current, previous.get(("aep", service, service))


def rollbacks(result: Any, service: str = "aep-api") -> float:
    return value(result, "aws_ecs_service_rollbacks", "aep", service)


class Clock:
    """The ecs_service module's clocks, moved on without sleeping (the loop keeps its own)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr(
        ecs_service, "time", SimpleNamespace(monotonic=moved.monotonic, time=moved.time)
    )
    return moved


async def test_a_circuit_breaker_rollback_is_counted_once_and_degraded_for_30_minutes(
    stack: EcsStack, aws: AwsClients, clock: Clock
) -> None:
    stack.service("aep-api", desired=2, running=2)  # aep-api:1, COMPLETED
    stack.deploy("aep-api", stack.task_definition("aep-api"))  # aep-api:2
    target = ecs_target(services=["aep-api"], stopped_tasks=False)
    async with ProbeRunner(target, aws=aws) as runner:
        rolling = await runner.run()
        stack.backend_service("aep-api").deployments[0]["failedTasks"] = 3
        failing = await runner.run()
        stack.roll_back("aep-api", failed_tasks=4)
        back = stack.backend_service("aep-api").deployments[0]
        back["createdAt"] = utcnow() - timedelta(minutes=4)
        rolled = await runner.run()
        again = await runner.run()
        stack.complete_deployment("aep-api")
        completed = await runner.run()
        clock.offset = 26 * 60.0  # 30 minutes after the rollback began; 26 after it was seen
        late = await runner.run()
        clock.offset = 30 * 60.0 + 1
        past = await runner.run()

    assert revisions(rolling) == (2, 1)
    assert rollbacks(rolling) == 0
    assert rolling.health().health is Health.OK

    assert value(failing, "aws_ecs_service_primary_failed_tasks", "aep", "aep-api") == 3
    assert failing.health() == Verdict(
        Health.DEGRADED, "aep-api: primary deployment rev 2: 3 tasks failed to start"
    )

    # ECS runs aep-api:1 again in a new PRIMARY; aep-api:2 is ACTIVE and FAILED until it drains
    assert revisions(rolled) == (1, 2)
    assert rollbacks(rolled) == 1
    assert value(rolled, "aws_ecs_service_primary_failed_tasks", "aep", "aep-api") == 0
    assert value(rolled, "aws_ecs_service_deployment_failed_tasks", "aep", "aep-api") == 4
    assert rolled.health() == Verdict(
        Health.DEGRADED,
        "aep-api: rolled back from rev 2 to rev 1 (circuit breaker) 4m ago (+1 more)",
        "EcsDeploymentRolledBack",
    )
    assert findings(rolled) == [
        (
            "degraded",
            "aep-api: rolled back from rev 2 to rev 1 (circuit breaker) 4m ago "
            "(EcsDeploymentRolledBack)",
        ),
        (
            "degraded",
            "aep-api: ACTIVE deployment rollout FAILED: ECS deployment circuit breaker: tasks "
            "failed to start. (EcsDeploymentFailed)",
        ),
    ]
    assert rollbacks(again) == 1  # the same rollback deployment: not counted twice

    # done rolling back: the failed deployment is gone, the revision it replaced remembered
    assert revisions(completed) == (1, 2)
    assert rollbacks(completed) == 1
    assert completed.health() == Verdict(
        Health.DEGRADED,
        "aep-api: rolled back from rev 2 to rev 1 (circuit breaker) 4m ago",
        "EcsDeploymentRolledBack",
    )
    assert late.health().why == "aep-api: rolled back from rev 2 to rev 1 (circuit breaker) 30m ago"
    assert past.health() == Verdict(Health.OK, "services: 1; 2 of 2 desired tasks running")
    assert rollbacks(past) == 1 and revisions(past) == (1, 2)
    assert_no_secret(rolled)


async def test_a_first_run_counts_a_rollback_only_within_the_alerts_window(
    stack: EcsStack, aws: AwsClients
) -> None:
    """A restart must not page again for an old rollback, nor forget a recent one."""
    for name, minutes in (("aep-api", 2), ("aep-worker", 90)):
        stack.service(name, desired=1)
        stack.deploy(name, stack.task_definition(name))
        stack.roll_back(name)
        stack.backend_service(name).deployments[0]["createdAt"] = utcnow() - timedelta(
            minutes=minutes
        )

    result = await ProbeRunner.once(ecs_target(stopped_tasks=False), aws=aws)

    assert rollbacks(result, "aep-api") == 1
    assert rollbacks(result, "aep-worker") == 0
    assert revisions(result, "aep-worker") == (1, 2)
    assert findings(result)[0] == (
        "degraded",
        "aep-api: rolled back from rev 2 to rev 1 (circuit breaker) 2m ago "
        "(EcsDeploymentRolledBack)",
    )
    assert not any("aep-worker: rolled back" in why for _, why in findings(result))


async def test_an_older_revision_deployed_over_a_failed_rollout_is_a_rollback(
    stack: EcsStack, aws: AwsClients
) -> None:
    """No circuit-breaker rollback (its rollback option off): the breaker fails the rollout,
    then someone deploys the previous revision again. A fix deployed over it is no rollback."""
    stack.service("aep-api", desired=2, running=2)
    stack.service("aep-worker", desired=1, running=1)
    for name in ("aep-api", "aep-worker"):
        stack.deploy(name, stack.task_definition(name))  # rev 2
        broken = stack.backend_service(name).deployments[0]
        broken.update(rolloutState="FAILED", rolloutStateReason="ECS deployment circuit breaker.")
    stack.deploy("aep-api", stack.backend_service("aep-api").deployments[1]["taskDefinition"])
    stack.deploy("aep-worker", stack.task_definition("aep-worker"))  # rev 3: a fix
    target = ecs_target(stopped_tasks=False)
    async with ProbeRunner(target, aws=aws) as runner:
        first = await runner.run()
        second = await runner.run()

    assert rollbacks(first, "aep-api") == 1 and rollbacks(second, "aep-api") == 1
    assert rollbacks(second, "aep-worker") == 0
    assert revisions(first, "aep-api") == (1, 2)
    assert revisions(first, "aep-worker") == (3, 2)
    assert first.health().alert == "EcsDeploymentRolledBack"
    assert first.health().why.startswith(
        "aep-api: rolled back from rev 2 to rev 1 (after a failed rollout) "
    )


# Security-group paths (AEP Incidents 2 and 6): EcsStack's groups let the ALB's group into the
# tasks' on 8787 and the tasks' into PostgreSQL's and Redis'.


def balanced(stack: EcsStack, name: str = "aep-api") -> tuple[Any, str]:
    """A service behind an ALB whose security group is the stack's, and that ALB's client."""
    ec2 = boto3.client("ec2", region_name=REGION)
    elb = boto3.client("elbv2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    lb = elb.create_load_balancer(
        Name="aep-alb", Subnets=subnets, SecurityGroups=[stack.balancer_group]
    )["LoadBalancers"][0]["LoadBalancerArn"]
    group = elb.create_target_group(
        Name="aep-api-tg", Protocol="HTTP", Port=8787, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.create_listener(
        LoadBalancerArn=lb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )
    stack.service(name, desired=1, target_group=group)
    return ec2, lb


def paths_target(stack: EcsStack, **extra: Any) -> Any:
    return ecs_target(
        stopped_tasks=False,
        security_groups=True,
        reaches=[
            {"name": "postgres", "port": 5432, "security_groups": [stack.database_group]},
            {"name": "redis", "port": 6379, "security_groups": [stack.cache_group]},
        ],
        **extra,
    )


def ingress(port: int, source: str) -> list[dict[str, Any]]:
    return [
        {
            "IpProtocol": "tcp",
            "FromPort": port,
            "ToPort": port,
            "UserIdGroupPairs": [{"GroupId": source}],
        }
    ]


async def test_open_paths_are_1_per_service_and_path(
    stack: EcsStack, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    balanced(stack)
    stack.service("aep-worker", desired=1)  # no load balancer: only its reaches

    result = await ProbeRunner.once(paths_target(stack), aws=aws)

    assert result.success, result.detail
    assert samples_by_name(result)["aws_ecs_service_security_group_path_open"] == {
        ("aep", "aep-api", "alb", "8787"): 1.0,
        ("aep", "aep-api", "postgres", "5432"): 1.0,
        ("aep", "aep-api", "redis", "6379"): 1.0,
        ("aep", "aep-worker", "postgres", "5432"): 1.0,
        ("aep", "aep-worker", "redis", "6379"): 1.0,
    }
    assert result.health().health is Health.OK
    # one listing each, whatever the number of services and paths
    calls = by_operation(api_calls(aws_metrics.registry))
    assert calls["DescribeSecurityGroups"] == calls["DescribeSubnets"] == 1
    assert calls["DescribeTargetGroups"] == calls["DescribeLoadBalancers"] == 1


async def test_a_removed_alb_ingress_closes_the_path_and_fails_naming_the_groups(
    stack: EcsStack, aws: AwsClients
) -> None:
    ec2, _ = balanced(stack)
    ec2.revoke_security_group_ingress(
        GroupId=stack.security_group, IpPermissions=ingress(8787, stack.balancer_group)
    )

    result = await ProbeRunner.once(paths_target(stack), aws=aws)

    assert result.success, result.detail  # measured: the path is closed, not unknown
    assert (
        value(result, "aws_ecs_service_security_group_path_open", "aep", "aep-api", "alb", "8787")
        == 0
    )
    assert (
        value(
            result, "aws_ecs_service_security_group_path_open", "aep", "aep-api", "postgres", "5432"
        )
        == 1
    )
    verdict = result.health()
    assert verdict.health is Health.FAILING and verdict.alert == "EcsSecurityGroupPathClosed"
    assert verdict.why == (
        f"aep-api: ALB -> tasks closed: {stack.security_group} (aep-tasks) of "
        f"the tasks allows no ingress on tcp/8787 from the ALB aep-alb "
        f"({stack.balancer_group})"
    )


def egress_only(group: str, port: int, cidr: str) -> None:
    """The tasks' group lets out tcp/port to `cidr` and nothing else (AWS's default egress,
    all traffic anywhere, revoked)."""
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.revoke_security_group_egress(
        GroupId=group,
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    ec2.authorize_security_group_egress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}
        ],
    )


async def test_tasks_cut_off_from_redis_by_their_egress(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-worker", desired=1)
    egress_only(stack.security_group, 5432, "127.0.0.0/16")

    result = await ProbeRunner.once(paths_target(stack, services=["aep-worker"]), aws=aws)

    found = samples_by_name(result)["aws_ecs_service_security_group_path_open"]
    # PostgreSQL's subnets are not configured, so 127.0.0.0/16 cannot be shown to hold it
    assert found == {
        ("aep", "aep-worker", "postgres", "5432"): 0.0,
        ("aep", "aep-worker", "redis", "6379"): 0.0,
    }
    said = (
        f"aep-worker: tasks -> redis closed: {stack.security_group} (aep-tasks) of the tasks "
        f"allows no egress on tcp/6379 to redis ({stack.cache_group})"
    )
    # the evidence line is cut at 160 characters, the alert's name with it
    assert ("failing", f"{said} (EcsSecurityGroupPathClosed)"[:160]) in findings(result)


async def test_an_egress_range_holding_the_destinations_subnets_counts(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-worker", desired=1)
    egress_only(stack.security_group, 5432, "127.0.0.0/16")
    target = ecs_target(
        stopped_tasks=False,
        reaches=[
            {
                "name": "postgres",
                "port": 5432,
                "security_groups": [stack.database_group],
                "subnets": [stack.subnet],  # 127.0.1.0/24, inside 127.0.0.0/16
            }
        ],
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert (
        value(
            result,
            "aws_ecs_service_security_group_path_open",
            "aep",
            "aep-worker",
            "postgres",
            "5432",
        )
        == 1
    )


async def test_a_balancer_without_groups_leaves_the_alb_path_unchecked(
    stack: EcsStack, aws: AwsClients
) -> None:
    """A Network Load Balancer without security groups passes its clients' addresses on, so
    no group rule can be judged for it."""
    ec2 = boto3.client("ec2", region_name=REGION)
    elb = boto3.client("elbv2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.0.0/24")["Subnet"]["SubnetId"]
    lb = elb.create_load_balancer(Name="aep-nlb", Subnets=[subnet], Type="network")
    group = elb.create_target_group(
        Name="aep-api-tcp", Protocol="TCP", Port=8787, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.create_listener(
        LoadBalancerArn=lb["LoadBalancers"][0]["LoadBalancerArn"],
        Protocol="TCP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )
    stack.service("aep-api", desired=1, target_group=group)

    result = await ProbeRunner.once(paths_target(stack), aws=aws)

    assert result.success, result.detail
    assert set(samples_by_name(result)["aws_ecs_service_security_group_path_open"]) == {
        ("aep", "aep-api", "postgres", "5432"),
        ("aep", "aep-api", "redis", "6379"),
    }
    assert findings(result) == [
        (
            "degraded",
            "aep-api: a load balancer without security groups on port 8787; ALB path not checked",
        )
    ]


async def test_a_target_group_on_no_balancer_leaves_the_alb_path_unchecked(
    stack: EcsStack, aws: AwsClients
) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    group = boto3.client("elbv2", region_name=REGION).create_target_group(
        Name="aep-api-spare", Protocol="HTTP", Port=8787, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    stack.service("aep-api", desired=1, target_group=group)

    result = await ProbeRunner.once(ecs_target(stopped_tasks=False, security_groups=True), aws=aws)

    assert result.success, result.detail
    assert "aws_ecs_service_security_group_path_open" not in samples_by_name(result)
    assert findings(result) == [
        (
            "degraded",
            "aep-api: a target group on no load balancer here on port 8787; ALB path not checked",
        )
    ]


async def test_a_reach_names_only_its_services(stack: EcsStack, aws: AwsClients) -> None:
    stack.service("aep-api", desired=1)
    stack.service("aep-frontend", desired=1)
    target = ecs_target(
        stopped_tasks=False,
        reaches=[
            {
                "name": "postgres",
                "port": 5432,
                "security_groups": [stack.database_group],
                "services": ["aep-api"],
            }
        ],
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert samples_by_name(result)["aws_ecs_service_security_group_path_open"] == {
        ("aep", "aep-api", "postgres", "5432"): 1.0
    }


async def test_a_group_that_is_not_there_leaves_its_path_unknown(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=1)
    target = ecs_target(
        stopped_tasks=False,
        reaches=[
            {"name": "postgres", "port": 5432, "security_groups": ["sg-0123456789abcdef0"]},
            {"name": "redis", "port": 6379, "security_groups": [stack.cache_group]},
        ],
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "not_found"
    assert (
        result.detail
        == "aep-api: tasks -> postgres on tcp/5432: no security group sg-0123456789abcdef0"
    )
    # the rest is measured, the unknown path not exported
    assert samples_by_name(result)["aws_ecs_service_security_group_path_open"] == {
        ("aep", "aep-api", "redis", "6379"): 1.0
    }
    assert value(result, "aws_ecs_service_running_tasks", "aep", "aep-api") == 1
    assert result.health().health is Health.DEGRADED


async def test_denied_security_groups_keep_the_services_samples(
    stack: EcsStack, aws: AwsClients
) -> None:
    stack.service("aep-api", desired=1)
    target = paths_target(stack)
    inject(aws.client(target, "ec2"), "DescribeSecurityGroups", "UnauthorizedOperation", times=5)

    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "access_denied"
    assert "ec2:DescribeSecurityGroups" in result.detail
    assert value(result, "aws_ecs_service_running_tasks", "aep", "aep-api") == 1
    assert "aws_ecs_service_security_group_path_open" not in samples_by_name(result)
    verdict = result.health()
    assert verdict.health is Health.FAILING and verdict.alert == "StackprobeAwsAccessDenied"
    assert verdict.why.startswith("security group paths unknown: ")
    assert_no_secret(result)


async def test_a_throttled_listing_repeats_the_last_paths(stack: EcsStack, aws: AwsClients) -> None:
    balanced(stack)
    target = paths_target(stack)
    async with ProbeRunner(target, aws=aws) as runner:
        good = await runner.run()
        inject(aws.client(target, "ec2"), "DescribeSubnets", "RequestLimitExceeded", times=2)
        throttled = await runner.run()

    assert throttled.reason == "throttled"
    assert samples_by_name(throttled) == samples_by_name(good)
    assert len(samples_by_name(good)["aws_ecs_service_security_group_path_open"]) == 3


@pytest.mark.parametrize("groups", [7, 450])
async def test_listings_filter_by_200_ids_and_page_by_1000(
    stack: EcsStack, aws: AwsClients, aws_metrics: AwsMetrics, groups: int
) -> None:
    """AWS's limits, which tests/support/aws.py gives moto: 200 filter values, 5-1,000 a page."""
    stack.service("aep-api", desired=1)
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    many = [
        ec2.create_security_group(GroupName=f"db-{i}", Description="db", VpcId=vpc)["GroupId"]
        for i in range(groups)
    ]
    ec2.authorize_security_group_ingress(
        GroupId=many[-1], IpPermissions=ingress(5432, stack.security_group)
    )
    target = ecs_target(
        stopped_tasks=False,
        reaches=[{"name": "postgres", "port": 5432, "security_groups": many}],
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    assert (
        value(
            result, "aws_ecs_service_security_group_path_open", "aep", "aep-api", "postgres", "5432"
        )
        == 1
    )
    calls = by_operation(api_calls(aws_metrics.registry))
    assert calls["DescribeSecurityGroups"] == -(-(groups + 1) // 200)


def test_reaches_are_named_apart_from_the_alb_path() -> None:
    from stackprobe.config import ConfigError

    reach = {"port": 5432, "security_groups": ["sg-1"]}
    with pytest.raises(ConfigError, match=r"reaches\[0\]: the path name 'alb' is the ALB"):
        ecs_target(reaches=[{"name": "alb", **reach}])
    with pytest.raises(ConfigError, match="reaches: each entry needs a name of its own"):
        ecs_target(reaches=[{"name": "db", **reach}, {"name": "db", **reach}])
    with pytest.raises(ConfigError, match=r"reaches\[0\]\.port"):
        ecs_target(reaches=[{"name": "db", "port": 0, "security_groups": ["sg-1"]}])
