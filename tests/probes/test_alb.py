"""kind: alb against moto, with an unhealthy target patched into moto's backend."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from stackprobe.contract import Health, Verdict
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from tests.support.aws import (
    CANARY_KEY_ID,
    CANARY_SECRET,
    REGION,
    api_calls,
    by_operation,
    inject,
    set_target_health,
)
from tests.support.probing import ProbeRunner, aws_calls, make_target, samples_by_name, value


class AlbStack:
    def __init__(self) -> None:
        ec2 = boto3.client("ec2", region_name=REGION)
        self.elb = boto3.client("elbv2", region_name=REGION)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}"
            )["Subnet"]["SubnetId"]
            for i, z in ((1, "a"), (2, "b"))
        ]
        self.vpc, self.subnets = vpc, subnets
        self.groups: dict[str, str] = {}

    def balancer(self, name: str, groups: dict[str, str]) -> str:
        lb = self.elb.create_load_balancer(Name=name, Subnets=self.subnets, Type="application")
        arn: str = lb["LoadBalancers"][0]["LoadBalancerArn"]
        for group, path in groups.items():
            tg = self.elb.create_target_group(
                Name=group,
                Protocol="HTTP",
                Port=8787,
                VpcId=self.vpc,
                TargetType="ip",
                HealthCheckPath=path,
            )["TargetGroups"][0]["TargetGroupArn"]
            self.groups[group] = tg
            self.elb.register_targets(
                TargetGroupArn=tg, Targets=[{"Id": "10.0.1.10"}, {"Id": "10.0.1.11"}]
            )
            listener_port = 80 + len(self.groups)
            self.elb.create_listener(
                LoadBalancerArn=arn,
                Protocol="HTTP",
                Port=listener_port,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
            )
        return arn


@pytest.fixture
def albs(moto: None) -> AlbStack:
    return AlbStack()


def alb_target(**extra: Any) -> Any:
    return make_target({"name": "aep-alb", "kind": "alb", "load_balancers": ["aep-alb"], **extra})


async def test_target_health_state_and_posture(
    albs: AlbStack, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    lb = albs.balancer("aep-alb", {"aep-api": "/health/live", "aep-web": "/health"})
    albs.balancer("other-alb", {"other": "/"})
    set_target_health(albs.groups["aep-api"], "10.0.1.11", "unhealthy", "Target.Timeout")
    albs.elb.modify_load_balancer_attributes(
        LoadBalancerArn=lb,
        Attributes=[{"Key": "access_logs.s3.enabled", "Value": "true"}],
    )

    target = alb_target(
        expect_health_check_path="/health/live",
        expect_health_check_paths={"aep-web": "/health"},  # per group, over the one above
    )
    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    assert value(result, "aws_alb_load_balancer_state", "aep-alb", "active") == 1
    assert value(result, "aws_alb_load_balancer_state", "aep-alb", "failed") == 0
    assert value(result, "aws_alb_access_logs_enabled", "aep-alb") == 1
    targets = samples_by_name(result)["aws_alb_target_group_targets"]
    assert targets == {
        ("aep-alb", "aep-api", "healthy", "none"): 1,
        ("aep-alb", "aep-api", "unhealthy", "Target.Timeout"): 1,
        ("aep-alb", "aep-web", "healthy", "none"): 2,
    }
    assert value(result, "aws_alb_target_group_healthy_targets", "aep-alb", "aep-api") == 1
    assert value(result, "aws_alb_target_group_registered_targets", "aep-alb", "aep-api") == 2
    match = samples_by_name(result)["aws_alb_target_group_health_check_path_match"]
    assert match == {("aep-alb", "aep-api"): 1, ("aep-alb", "aep-web"): 1}
    info = samples_by_name(result)["aws_alb_target_group_health_check_info"]
    assert ("aep-alb", "aep-web", "/health", "traffic-port", "HTTP") in info
    # one listing of each kind for the account, then one call per group and per balancer
    assert by_operation(api_calls(aws_metrics.registry)) == {
        "DescribeLoadBalancers": 1,
        "DescribeTargetGroups": 1,
        "DescribeTargetHealth": 2,
        "DescribeLoadBalancerAttributes": 1,
    }


async def test_access_logs_absent_means_off(albs: AlbStack, aws: AwsClients) -> None:
    albs.balancer("aep-alb", {"aep-api": "/health/live"})

    result = await ProbeRunner.once(alb_target(), aws=aws)

    assert value(result, "aws_alb_access_logs_enabled", "aep-alb") == 0
    assert "aws_alb_target_group_health_check_path_match" not in samples_by_name(result)


async def test_zero_healthy_targets_and_a_missing_balancer(albs: AlbStack, aws: AwsClients) -> None:
    albs.balancer("aep-alb", {"aep-api": "/health/live"})
    for ip in ("10.0.1.10", "10.0.1.11"):
        set_target_health(albs.groups["aep-api"], ip, "unhealthy", "Target.FailedHealthChecks")

    result = await ProbeRunner.once(alb_target(load_balancers=["aep-alb", "gone-alb"]), aws=aws)

    assert result.reason == "not_found" and "gone-alb" in result.detail
    assert value(result, "aws_alb_target_group_healthy_targets", "aep-alb", "aep-api") == 0
    assert value(result, "aws_alb_load_balancer_state", "gone-alb", "missing") == 1
    assert value(result, "aws_alb_load_balancer_state", "gone-alb", "active") == 0


async def test_request_limit_exceeded_is_throttling(
    albs: AlbStack, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    albs.balancer("aep-alb", {"aep-api": "/health/live"})
    target = alb_target()
    async with ProbeRunner(target, aws=aws) as runner:
        good = await runner.run()
        inject(aws.client(target, "elbv2"), "DescribeTargetHealth", "Throttling", times=2)
        throttled = await runner.run()
        recovered = await runner.run()

    assert throttled.reason == "throttled"
    assert samples_by_name(throttled) == samples_by_name(good)
    assert recovered.success
    calls = api_calls(aws_metrics.registry)
    assert calls[("elbv2", "DescribeTargetHealth", "throttled")] == 2


@pytest.mark.parametrize(
    "raw",
    [
        {"name": "a", "kind": "alb", "load_balancers": ["x", "x"]},
        {"name": "e", "kind": "ecs_service", "cluster": "c", "services": ["s", "s"]},
        {"name": "b", "kind": "s3", "buckets": ["b", "b"]},
        {"name": "b", "kind": "s3", "buckets": ["b"], "storage_types": ["S", "S"]},
        {
            "name": "cw",
            "kind": "cloudwatch",
            "sqs_queues": ["jobs"],
            "metrics": [
                {
                    "namespace": "AWS/SQS",
                    "metric": "ApproximateAgeOfOldestMessage",
                    "dimensions": {"QueueName": "jobs"},
                    "statistics": ["Maximum"],
                }
            ],
        },
    ],
    ids=["alb", "ecs_service", "s3-buckets", "s3-storage-types", "cloudwatch-overlap"],
)
def test_a_repeat_that_would_emit_a_series_twice_is_a_config_error(raw: dict[str, Any]) -> None:
    from stackprobe.config import ConfigError

    with pytest.raises(ConfigError, match="twice"):
        make_target(raw)


# The verdict: the health of the balancers and their targets, as the alb alert rules see it.


def assert_no_secret(result: Any) -> None:
    shown = " ".join([result.detail, result.health().why, *(v for _, v in result.evidence)])
    for canary in (CANARY_KEY_ID, CANARY_SECRET):
        assert canary not in shown


def logs_on(albs: AlbStack, lb: str) -> None:
    albs.elb.modify_load_balancer_attributes(
        LoadBalancerArn=lb, Attributes=[{"Key": "access_logs.s3.enabled", "Value": "true"}]
    )


async def test_a_healthy_balancer_is_ok_and_shows_its_calls(
    albs: AlbStack, aws: AwsClients
) -> None:
    logs_on(albs, albs.balancer("aep-alb", {"aep-api": "/health/live", "aep-web": "/health"}))

    result = await ProbeRunner.once(alb_target(expect_health_check_path=None), aws=aws)

    assert result.success, result.detail
    verdict = result.health()
    assert verdict.health is Health.OK and verdict.alert == ""
    assert verdict.why == "load balancers active: 1; 4 of 4 targets healthy in 2 target groups"
    made = aws_calls(result)
    assert made[0].startswith("elasticloadbalancing:DescribeLoadBalancers ok in ")
    assert made[0].endswith(" ms, 1 page")
    assert made[1].startswith("elasticloadbalancing:DescribeTargetGroups ok in ")
    # one line for the two DescribeTargetHealth calls, with their count
    assert any(
        c.startswith("elasticloadbalancing:DescribeTargetHealth ok, 2 calls in ") for c in made
    )
    assert any(
        c.startswith("elasticloadbalancing:DescribeLoadBalancerAttributes ok in ") for c in made
    )
    assert len(made) == 4
    assert_no_secret(result)


async def test_no_healthy_target_is_failing_with_the_reason(
    albs: AlbStack, aws: AwsClients
) -> None:
    logs_on(albs, albs.balancer("aep-alb", {"aep-api": "/health/live"}))
    for ip in ("10.0.1.10", "10.0.1.11"):
        set_target_health(albs.groups["aep-api"], ip, "unhealthy", "Target.ResponseCodeMismatch")

    result = await ProbeRunner.once(alb_target(), aws=aws)

    assert result.success  # the measurement worked; the thing it measured does not
    verdict = result.health()
    assert verdict == Verdict(
        Health.FAILING,
        "aep-api: 2 of 2 targets unhealthy: Target.ResponseCodeMismatch",
        "AlbNoHealthyTargets",
    )
    assert ("failing", f"{verdict.why} (AlbNoHealthyTargets)") in result.evidence
    assert_no_secret(result)


async def test_some_unhealthy_targets_are_degraded(albs: AlbStack, aws: AwsClients) -> None:
    logs_on(albs, albs.balancer("aep-alb", {"aep-api": "/health/live"}))
    set_target_health(albs.groups["aep-api"], "10.0.1.11", "unhealthy", "Target.Timeout")

    verdict = (await ProbeRunner.once(alb_target(), aws=aws)).health()

    assert verdict == Verdict(
        Health.DEGRADED, "aep-api: 1 of 2 targets unhealthy: Target.Timeout", "AlbUnhealthyTargets"
    )


async def test_targets_still_registering_are_degraded_without_an_alert(
    albs: AlbStack, aws: AwsClients
) -> None:
    """AlbNoHealthyTargets leaves a group alone while its targets are `initial`."""
    logs_on(albs, albs.balancer("aep-alb", {"aep-api": "/health/live"}))
    for ip in ("10.0.1.10", "10.0.1.11"):
        set_target_health(albs.groups["aep-api"], ip, "initial", "Elb.RegistrationInProgress")

    verdict = (await ProbeRunner.once(alb_target(), aws=aws)).health()

    assert verdict == Verdict(Health.DEGRADED, "aep-api: no healthy target of 2; 2 initial", "")


async def test_health_check_path_drift_and_access_logs_off_are_degraded(
    albs: AlbStack, aws: AwsClients
) -> None:
    albs.balancer("aep-alb", {"aep-api": "/"})

    result = await ProbeRunner.once(alb_target(expect_health_check_path="/health/ready"), aws=aws)

    verdict = result.health()
    assert verdict.health is Health.DEGRADED
    # the findings in the order the kind lists them; the first is the verdict's
    assert verdict.alert == "AlbAccessLogsDisabled"
    assert verdict.why == "aep-alb: access logs off (+1 more)"
    findings = [(label, v) for label, v in result.evidence if label != "aws call"]
    assert findings == [
        ("degraded", "aep-alb: access logs off (AlbAccessLogsDisabled)"),
        ("degraded", "aep-api checks /, expected /health/ready (AlbHealthCheckPathDrift)"),
    ]


async def test_a_failed_balancer_is_failing(albs: AlbStack, aws: AwsClients) -> None:
    from moto.elbv2.models import elbv2_backends

    from stackprobe.demo.moto_stack import ACCOUNT

    lb = albs.balancer("aep-alb", {"aep-api": "/health/live"})
    logs_on(albs, lb)
    elbv2_backends[ACCOUNT][REGION].load_balancers[lb].state = "failed"

    verdict = (await ProbeRunner.once(alb_target(), aws=aws)).health()

    assert verdict == Verdict(Health.FAILING, "aep-alb is failed", "AlbNotActive")


async def test_a_missing_balancer_is_failing_as_alb_not_active(
    albs: AlbStack, aws: AwsClients
) -> None:
    logs_on(albs, albs.balancer("aep-alb", {"aep-api": "/health/live"}))

    result = await ProbeRunner.once(alb_target(load_balancers=["aep-alb", "gone-alb"]), aws=aws)

    assert result.reason == "not_found"
    assert result.health() == Verdict(
        Health.FAILING, "no load balancer named gone-alb", "AlbNotActive"
    )
    assert aws_calls(result)  # a failed run shows its calls too


async def test_a_throttled_run_keeps_the_last_health_and_shows_the_throttled_call(
    albs: AlbStack, aws: AwsClients
) -> None:
    albs.balancer("aep-alb", {"aep-api": "/health/live"})
    target = alb_target()
    async with ProbeRunner(target, aws=aws) as runner:
        good = await runner.run()
        inject(aws.client(target, "elbv2"), "DescribeTargetHealth", "Throttling", times=2)
        throttled = await runner.run()

    assert good.health() == Verdict(
        Health.DEGRADED, "aep-alb: access logs off", "AlbAccessLogsDisabled"
    )
    assert throttled.reason == "throttled"
    assert throttled.health() == Verdict(
        Health.DEGRADED,
        "AWS throttled this run; the last good values: aep-alb: access logs off",
        "AlbAccessLogsDisabled",
    )
    # the last good run's findings, then this run's calls: the throttled one among them
    assert ("degraded", "aep-alb: access logs off (AlbAccessLogsDisabled)") in throttled.evidence
    assert any(
        c.startswith("elasticloadbalancing:DescribeTargetHealth throttled in ")
        for c in aws_calls(throttled)
    )
