"""kind: cloudwatch: moto for what it computes, botocore's Stubber for percentiles (moto 5.2
fails on them, DESIGN.md), asserting the exact queries sent."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from stackprobe.contract import Health, Verdict
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from stackprobe.probes.cloudwatch import LOOKBACK_PERIODS, window
from tests.support.aws import (
    CANARY_KEY_ID,
    CANARY_SECRET,
    REGION,
    api_calls,
    by_operation,
    inject,
    put_metrics,
)
from tests.support.probing import ProbeRunner, make_target, samples_by_name, value


@pytest.fixture
def cloudwatch(moto: None) -> Any:
    return boto3.client("cloudwatch", region_name=REGION)


def put(cloudwatch: Any, namespace: str, metric: str, dims: dict[str, str], at: float, v: float):
    put_metrics(cloudwatch, namespace, dims, {metric: v}, at)


def test_the_window_holds_closed_periods_only() -> None:
    start, end = window(60, 120, now=1_000_000_030.0)

    assert end == 999_999_900  # a period boundary at least 120 s before now
    assert end % 60 == 0 and 1_000_000_030 - end >= 120
    assert start == end - LOOKBACK_PERIODS * 60


async def test_a_filling_period_is_never_exported(
    cloudwatch: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    now = time.time()
    _, end = window(60, 120, now)
    service = {"ClusterName": "aep", "ServiceName": "aep-api"}
    put(cloudwatch, "AWS/ECS", "CPUUtilization", service, end - 60, 42.0)  # newest closed
    put(cloudwatch, "AWS/ECS", "CPUUtilization", service, end - 120, 10.0)
    put(cloudwatch, "AWS/ECS", "CPUUtilization", service, now - 5, 0.5)  # still filling
    put(
        cloudwatch,
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        {"QueueName": "jobs"},
        end - 60,
        930.0,
    )
    target = make_target(
        {
            "name": "cw",
            "kind": "cloudwatch",
            "ecs_services": [{"cluster": "aep", "service": "aep-api"}],
            "sqs_queues": ["jobs"],
        }
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    assert value(result, "aws_ecs_cpuutilization_average", "aep", "aep-api") == 42.0
    assert value(result, "aws_sqs_approximate_age_of_oldest_message_maximum", "jobs") == 930.0
    stamps = samples_by_name(result)["stackprobe_cloudwatch_datapoint_timestamp_seconds"]
    key = ("AWS/ECS", "CPUUtilization", "Average", "ClusterName=aep,ServiceName=aep-api")
    assert stamps[key] == end - 60
    # nothing was published for memory: no series rather than a zero
    assert "aws_ecs_memory_utilization_average" not in samples_by_name(result)
    assert by_operation(api_calls(aws_metrics.registry)) == {"GetMetricData": 1}


async def test_six_hundred_queries_take_two_calls(
    cloudwatch: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    _, end = window(60, 120, time.time())
    put(cloudwatch, "App", "Jobs", {"Worker": "w599"}, end - 60, 7.0)
    metrics = [
        {
            "namespace": "App",
            "metric": "Jobs",
            "dimensions": {"Worker": f"w{i}"},
            "statistics": ["Sum"],
        }
        for i in range(600)
    ]
    target = make_target({"name": "cw", "kind": "cloudwatch", "metrics": metrics})

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    assert value(result, "aws_cloudwatch_value", "App", "Jobs", "Sum", "Worker=w599") == 7.0
    # moto would take all 600 in one call; AWS's limit is 500
    assert by_operation(api_calls(aws_metrics.registry)) == {"GetMetricData": 2}


async def test_alb_percentiles_send_the_exact_queries(
    aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_800_000_030.0
    monkeypatch.setattr("stackprobe.probes.cloudwatch.time.time", lambda: now)
    end = 1_799_999_880.0  # the last minute boundary at least 120 s before now
    target = make_target(
        {
            "name": "cw",
            "kind": "cloudwatch",
            "albs": [
                {
                    "load_balancer": "app/aep-alb/50dc6c49",
                    "target_groups": ["targetgroup/aep-api/6d0ecf83"],
                }
            ],
        }
    )
    lb = {"Name": "LoadBalancer", "Value": "app/aep-alb/50dc6c49"}
    tg = {"Name": "TargetGroup", "Value": "targetgroup/aep-api/6d0ecf83"}

    def query(i: int, metric: str, stat: str, dims: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "Id": f"q{i}",
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/ApplicationELB",
                    "MetricName": metric,
                    "Dimensions": dims,
                },
                "Period": 60,
                "Stat": stat,
            },
            "ReturnData": True,
        }

    expected = [query(0, "HTTPCode_ELB_5XX_Count", "Sum", [lb])]
    for dims in ([lb], [lb, tg]):
        base = len(expected)
        for j, (metric, stat) in enumerate(
            [
                ("RequestCount", "Sum"),
                ("HTTPCode_Target_5XX_Count", "Sum"),
                ("TargetResponseTime", "Average"),
                ("TargetResponseTime", "p95"),
                ("TargetResponseTime", "p99"),
            ]
        ):
            expected.append(query(base + j, metric, stat, dims))
    at = datetime.fromtimestamp(end - 60, UTC)
    answers = {"q4": 0.84, "q5": 2.5, "q0": 3.0, "q1": 1000.0, "q2": 70.0}
    client = aws.client(target, "cloudwatch")
    with Stubber(client) as stub:
        stub.add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {"Id": qid, "Timestamps": [at], "Values": [v], "StatusCode": "Complete"}
                    for qid, v in answers.items()
                ]
            },
            {
                "MetricDataQueries": expected,
                "StartTime": end - LOOKBACK_PERIODS * 60,
                "EndTime": end,
                "ScanBy": "TimestampDescending",
            },
        )
        result = await ProbeRunner.once(target, aws=aws)
        stub.assert_no_pending_responses()

    assert result.success, result.detail
    lb_only = ("app/aep-alb/50dc6c49", "")
    assert value(result, "aws_applicationelb_target_response_time_p95", *lb_only) == 0.84
    assert value(result, "aws_applicationelb_target_response_time_p99", *lb_only) == 2.5
    assert value(result, "aws_applicationelb_httpcode_elb_5xx_count_sum", *lb_only) == 3.0
    assert value(result, "aws_applicationelb_request_count_sum", *lb_only) == 1000.0
    assert value(result, "aws_applicationelb_httpcode_target_5xx_count_sum", *lb_only) == 70.0


def test_a_query_asked_twice_is_a_config_error() -> None:
    from stackprobe.config import ConfigError

    with pytest.raises(ConfigError, match="asked for twice"):
        make_target({"name": "cw", "kind": "cloudwatch", "sqs_queues": ["jobs", "jobs"]})


def test_a_statistic_typo_is_a_config_error() -> None:
    from stackprobe.config import ConfigError

    bad = {"namespace": "A", "metric": "B", "statistics": ["Avg"]}
    with pytest.raises(ConfigError, match="not a CloudWatch statistic"):
        make_target({"name": "cw", "kind": "cloudwatch", "metrics": [bad]})


async def test_alb_latency_percentiles_from_moto(
    cloudwatch: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    _, end = window(60, 120, time.time())
    lb = {"LoadBalancer": "app/aep-alb/50dc6c49"}
    cloudwatch.put_metric_data(
        Namespace="AWS/ApplicationELB",
        MetricData=[
            {
                "MetricName": "TargetResponseTime",
                "Dimensions": [{"Name": "LoadBalancer", "Value": lb["LoadBalancer"]}],
                "Timestamp": datetime.fromtimestamp(end - 30, UTC),
                "Value": i / 100,
            }
            for i in range(1, 101)
        ],
    )
    put(cloudwatch, "AWS/ApplicationELB", "RequestCount", lb, end - 30, 100.0)
    target = make_target(
        {"name": "cw", "kind": "cloudwatch", "albs": [{"load_balancer": lb["LoadBalancer"]}]}
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert result.success, result.detail
    lb_only = (lb["LoadBalancer"], "")
    assert value(result, "aws_applicationelb_target_response_time_p95", *lb_only) == 0.95
    assert value(result, "aws_applicationelb_target_response_time_p99", *lb_only) == 0.99
    assert value(result, "aws_applicationelb_target_response_time_average", *lb_only) == 0.505
    assert value(result, "aws_applicationelb_request_count_sum", *lb_only) == 100.0


async def test_event_counts_read_the_last_closed_period_alone(
    cloudwatch: Any, aws: AwsClients
) -> None:
    """A 5xx burst four minutes ago must not stand beside this minute's requests."""
    _, end = window(60, 120, time.time())
    lb = {"LoadBalancer": "app/aep-alb/50dc6c49"}
    put(cloudwatch, "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", lb, end - 240, 200.0)
    put(cloudwatch, "AWS/ApplicationELB", "RequestCount", lb, end - 240, 400.0)
    put(cloudwatch, "AWS/ApplicationELB", "RequestCount", lb, end - 30, 1000.0)
    put(cloudwatch, "AWS/ApplicationELB", "TargetResponseTime", lb, end - 240, 0.2)
    target = make_target(
        {"name": "cw", "kind": "cloudwatch", "albs": [{"load_balancer": lb["LoadBalancer"]}]}
    )

    result = await ProbeRunner.once(target, aws=aws)

    lb_only = (lb["LoadBalancer"], "")
    assert value(result, "aws_applicationelb_request_count_sum", *lb_only) == 1000.0
    assert value(result, "aws_applicationelb_httpcode_target_5xx_count_sum", *lb_only) == 0.0
    assert value(result, "aws_applicationelb_httpcode_elb_5xx_count_sum", *lb_only) == 0.0
    stamps = samples_by_name(result)["stackprobe_cloudwatch_datapoint_timestamp_seconds"]
    key = ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "Sum", "LoadBalancer=" + lb_only[0])
    assert stamps[key] == end - 60
    # a statistic that is not an event count keeps its newest datapoint, with its age
    assert value(result, "aws_applicationelb_target_response_time_average", *lb_only) == 0.2


@pytest.mark.parametrize("period", ["90s", "2s", "45s"])
def test_a_custom_period_cloudwatch_refuses_is_a_config_error(period: str) -> None:
    from stackprobe.config import ConfigError

    metric = {"namespace": "A", "metric": "B", "period": period}
    with pytest.raises(ConfigError, match="whole number of minutes"):
        make_target({"name": "cw", "kind": "cloudwatch", "metrics": [metric]})
    with pytest.raises(ConfigError, match=r"targets\[0\]\.period: CloudWatch takes periods"):
        make_target({"name": "cw", "kind": "cloudwatch", "sqs_queues": ["q"], "period": period})


@pytest.mark.parametrize("period", ["10s", "1m", "5m"])
def test_a_target_takes_high_resolution_and_whole_minute_periods(period: str) -> None:
    target = make_target(
        {"name": "cw", "kind": "cloudwatch", "sqs_queues": ["q"], "period": period}
    )

    assert target.period in (10.0, 60.0, 300.0)  # type: ignore[attr-defined]


# The verdict: what the series the alert rules read say, from the newest closed period.

LB = "app/aep-alb/50dc6c49"


def calls(result: Any) -> list[str]:
    """The "aws call" lines of a run's evidence, without their durations."""
    return [v.split(" in ")[0] for label, v in result.evidence if label == "aws call"]


def findings(result: Any) -> list[tuple[str, str]]:
    return [(label, v) for label, v in result.evidence if label != "aws call"]


def alb_minute(cloudwatch: Any, requests: float, target_5xx: float, elb_5xx: float) -> None:
    _, end = window(60, 120, time.time())
    dims = {"LoadBalancer": LB}
    put(cloudwatch, "AWS/ApplicationELB", "RequestCount", dims, end - 30, requests)
    if target_5xx:
        put(
            cloudwatch,
            "AWS/ApplicationELB",
            "HTTPCode_Target_5XX_Count",
            dims,
            end - 30,
            target_5xx,
        )
    if elb_5xx:
        put(cloudwatch, "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", dims, end - 30, elb_5xx)


def alb_target() -> Any:
    return make_target({"name": "cw", "kind": "cloudwatch", "albs": [{"load_balancer": LB}]})


@pytest.mark.parametrize(
    ("requests", "target_5xx", "elb_5xx", "expected"),
    [
        (
            100.0,
            40.0,
            20.0,
            Verdict(
                Health.FAILING,
                f"{LB}: 60 % of 100 requests 5xx in the newest period",
                "AlbMostRequests5xx",
            ),
        ),
        (
            100.0,
            6.0,
            0.0,
            Verdict(
                Health.DEGRADED,
                f"{LB}: 6 % of 100 requests 5xx in the newest period",
                "AlbHigh5xxRate",
            ),
        ),
        # 5 % is the rule's limit, not over it; 19 requests are too few to page on
        (100.0, 5.0, 0.0, Verdict(Health.OK, "3 of 6 queries had a datapoint")),
        (19.0, 19.0, 0.0, Verdict(Health.OK, "3 of 6 queries had a datapoint")),
    ],
    ids=["most-5xx", "high-5xx", "at-the-limit", "too-few-requests"],
)
async def test_the_balancer_5xx_share(
    cloudwatch: Any,
    aws: AwsClients,
    requests: float,
    target_5xx: float,
    elb_5xx: float,
    expected: Verdict,
) -> None:
    alb_minute(cloudwatch, requests, target_5xx, elb_5xx)

    result = await ProbeRunner.once(alb_target(), aws=aws)

    assert result.success, result.detail
    assert result.health() == expected
    assert calls(result) == ["cloudwatch:GetMetricData ok"]


async def test_saturation_and_an_old_message_are_degraded(cloudwatch: Any, aws: AwsClients) -> None:
    _, end = window(60, 120, time.time())
    service = {"ClusterName": "aep", "ServiceName": "aep-api"}
    put(cloudwatch, "AWS/ECS", "CPUUtilization", service, end - 60, 95.0)
    put(cloudwatch, "AWS/ECS", "MemoryUtilization", service, end - 60, 40.0)
    age = {"QueueName": "jobs"}
    put(cloudwatch, "AWS/SQS", "ApproximateAgeOfOldestMessage", age, end - 60, 2400.0)
    target = make_target(
        {
            "name": "cw",
            "kind": "cloudwatch",
            "ecs_services": [{"cluster": "aep", "service": "aep-api"}],
            "sqs_queues": ["jobs"],
        }
    )

    result = await ProbeRunner.once(target, aws=aws)

    assert result.health() == Verdict(
        Health.DEGRADED,
        "aep/aep-api: CPU at 95 % (average) (+1 more)",
        "EcsServiceResourcesSaturated",
    )
    assert findings(result) == [
        ("degraded", "aep/aep-api: CPU at 95 % (average) (EcsServiceResourcesSaturated)"),
        ("degraded", "jobs: oldest message 40 min old (SqsOldestMessageTooOld)"),
    ]


async def test_a_slow_balancer_is_degraded(cloudwatch: Any, aws: AwsClients) -> None:
    _, end = window(60, 120, time.time())
    put(cloudwatch, "AWS/ApplicationELB", "TargetResponseTime", {"LoadBalancer": LB}, end - 30, 1.5)

    verdict = (await ProbeRunner.once(alb_target(), aws=aws)).health()

    assert verdict == Verdict(Health.DEGRADED, f"{LB}: p95 response time 1.50 s", "AlbHighLatency")


async def test_custom_metrics_have_no_thresholds_only_an_outcome(
    cloudwatch: Any, aws: AwsClients
) -> None:
    _, end = window(60, 120, time.time())
    put(cloudwatch, "App", "Errors", {"Worker": "w1"}, end - 60, 1e9)
    metric = {"namespace": "App", "metric": "Errors", "dimensions": {"Worker": "w1"}}
    target = make_target({"name": "cw", "kind": "cloudwatch", "metrics": [metric]})

    result = await ProbeRunner.once(target, aws=aws)

    assert result.health() == Verdict(Health.OK, "1 of 1 queries had a datapoint")
    shown = " ".join(v for _, v in result.evidence) + result.health().why
    assert CANARY_KEY_ID not in shown and CANARY_SECRET not in shown


async def test_a_throttled_run_keeps_the_last_health(cloudwatch: Any, aws: AwsClients) -> None:
    alb_minute(cloudwatch, 100.0, 60.0, 0.0)
    target = alb_target()
    async with ProbeRunner(target, aws=aws) as runner:
        good = await runner.run()
        inject(aws.client(target, "cloudwatch"), "GetMetricData", "Throttling", times=2)
        throttled = await runner.run()

    assert good.health().health is Health.FAILING
    assert throttled.reason == "throttled"
    assert throttled.health() == Verdict(
        Health.FAILING,
        f"AWS throttled this run; the last good values: {good.health().why}",
        "AlbMostRequests5xx",
    )
    assert calls(throttled) == ["cloudwatch:GetMetricData throttled"]
