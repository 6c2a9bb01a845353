"""kind: sqs against moto: depth, redrive posture, the dead-letter queue found from it."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from stackprobe.config import ConfigError
from stackprobe.contract import Health, Verdict
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from tests.support.aws import CANARY_KEY_ID, CANARY_SECRET, REGION, api_calls, by_operation, inject
from tests.support.probing import (
    ProbeRunner,
    aws_calls,
    findings,
    make_target,
    samples_by_name,
    value,
    verdict,
)


@pytest.fixture
def sqs(moto: None) -> Any:
    return boto3.client("sqs", region_name=REGION)


def queues_target(*queues: str) -> Any:
    return make_target({"name": "jobs", "kind": "sqs", "queues": list(queues)})


async def test_depth_redrive_and_dead_letter_queue(
    sqs: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"})
    jobs = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    sqs.create_queue(QueueName="no-dlq")
    for i in range(7):
        sqs.send_message(QueueUrl=jobs, MessageBody=f"job {i}")
    sqs.send_message(QueueUrl=jobs, MessageBody="later", DelaySeconds=60)
    sqs.receive_message(QueueUrl=jobs, MaxNumberOfMessages=2, VisibilityTimeout=300)
    for i in range(3):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"failed {i}")
    async with ProbeRunner(queues_target("jobs", "no-dlq"), aws=aws) as runner:
        result = await runner.run()
        await runner.run()

    assert result.success, result.detail
    assert value(result, "aws_sqs_messages_visible", "jobs") == 5
    assert value(result, "aws_sqs_messages_in_flight", "jobs") == 2
    assert value(result, "aws_sqs_messages_delayed", "jobs") == 1
    assert value(result, "aws_sqs_redrive_policy", "jobs") == 1
    assert value(result, "aws_sqs_redrive_policy", "no-dlq") == 0
    assert value(result, "aws_sqs_max_receive_count", "jobs") == 5
    assert samples_by_name(result)["aws_sqs_dead_letter_messages_visible"] == {
        ("jobs", "jobs-dlq"): 3
    }
    # URLs are resolved once; attributes are read every run
    assert by_operation(api_calls(aws_metrics.registry)) == {
        "GetQueueUrl": 3,
        "GetQueueAttributes": 6,
    }


async def test_a_missing_queue(sqs: Any, aws: AwsClients) -> None:
    result = await ProbeRunner.once(queues_target("nope"), aws=aws)

    assert result.reason == "not_found"
    assert "nope" in result.detail or "NonExistentQueue" in result.detail


async def test_access_denied_names_the_sqs_action(sqs: Any, aws: AwsClients) -> None:
    sqs.create_queue(QueueName="jobs")
    target = queues_target("jobs")
    inject(aws.client(target, "sqs"), "GetQueueAttributes", "AccessDenied", status=403, times=3)
    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "access_denied"
    assert "sqs:GetQueueAttributes" in result.detail


async def test_a_deleted_dead_letter_queue_keeps_the_depth(sqs: Any, aws: AwsClients) -> None:
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
    jobs = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    sqs.send_message(QueueUrl=jobs, MessageBody="job")
    sqs.delete_queue(QueueUrl=dlq)
    result = await ProbeRunner.once(queues_target("jobs"), aws=aws)

    assert result.reason == "not_found" and "jobs -> jobs-dlq" in result.detail
    assert value(result, "aws_sqs_messages_visible", "jobs") == 1  # the page-worthy signal stays
    assert value(result, "aws_sqs_dead_letter_queue_exists", "jobs", "jobs-dlq") == 0
    assert "aws_sqs_dead_letter_messages_visible" not in samples_by_name(result)


def test_a_queue_listed_by_name_and_by_url_is_a_config_error() -> None:
    from stackprobe.config import ConfigError

    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
    with pytest.raises(ConfigError, match="are both queue jobs"):
        queues_target("jobs", url)


# The verdict: the queues' health, as the sqs alert rules see it.


def with_dead_letter_queue(sqs: Any, name: str) -> tuple[str, str]:
    """(queue URL, dead-letter queue URL)."""
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})["QueueUrl"]
    return url, dlq


async def test_a_queue_with_an_empty_dead_letter_queue_is_ok(sqs: Any, aws: AwsClients) -> None:
    jobs, _ = with_dead_letter_queue(sqs, "jobs")
    sqs.send_message(QueueUrl=jobs, MessageBody="job")

    result = await ProbeRunner.once(queues_target("jobs"), aws=aws)

    assert result.health() == Verdict(Health.OK, "queues: 1; messages waiting 1, in flight 0")
    assert aws_calls(result, timed=False) == [
        "sqs:GetQueueUrl ok, 2 calls",
        "sqs:GetQueueAttributes ok, 2 calls",
    ]
    shown = " ".join(v for _, v in result.evidence) + result.health().why + result.detail
    assert CANARY_KEY_ID not in shown and CANARY_SECRET not in shown
    assert "https://" not in shown  # no queue URL: names only


async def test_dead_letter_messages_and_no_redrive_policy_are_degraded(
    sqs: Any, aws: AwsClients
) -> None:
    _, dlq = with_dead_letter_queue(sqs, "jobs")
    sqs.create_queue(QueueName="no-dlq")
    for i in range(3):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"failed {i}")

    result = await ProbeRunner.once(queues_target("jobs", "no-dlq"), aws=aws)

    assert result.health() == Verdict(
        Health.DEGRADED,
        "jobs-dlq: 3 messages that failed in jobs (+1 more)",
        "SqsDeadLetterMessages",
    )
    assert findings(result) == [
        ("degraded", "jobs-dlq: 3 messages that failed in jobs (SqsDeadLetterMessages)"),
        ("degraded", "no-dlq: no dead-letter queue (no redrive policy) (SqsNoRedrivePolicy)"),
    ]


async def test_a_deleted_dead_letter_queue_is_degraded(sqs: Any, aws: AwsClients) -> None:
    _, dlq = with_dead_letter_queue(sqs, "jobs")
    sqs.delete_queue(QueueUrl=dlq)

    result = await ProbeRunner.once(queues_target("jobs"), aws=aws)

    assert result.reason == "not_found"
    assert result.health() == Verdict(
        Health.DEGRADED,
        "jobs: its dead-letter queue jobs-dlq does not exist",
        "SqsDeadLetterQueueMissing",
    )
    assert "sqs:GetQueueUrl error (AWS.SimpleQueueService.NonExistentQueue)" in aws_calls(
        result, timed=False
    )


async def test_a_growing_queue_nobody_takes_from_is_stuck(sqs: Any, aws: AwsClients) -> None:
    jobs, _ = with_dead_letter_queue(sqs, "jobs")
    sqs.send_message(QueueUrl=jobs, MessageBody="job 0")
    async with ProbeRunner(queues_target("jobs"), aws=aws) as runner:
        first = await runner.run()  # nothing to compare with yet
        for i in (1, 2):
            sqs.send_message(QueueUrl=jobs, MessageBody=f"job {i}")
        stuck = await runner.run()
        held = sqs.receive_message(QueueUrl=jobs, MaxNumberOfMessages=1, VisibilityTimeout=300)
        sqs.send_message(QueueUrl=jobs, MessageBody="job 3")
        taken = await runner.run()  # growing, but a worker holds a message: not stuck
        # the worker finishes that job and takes no other
        sqs.delete_message(QueueUrl=jobs, ReceiptHandle=held["Messages"][0]["ReceiptHandle"])
        sqs.send_message(QueueUrl=jobs, MessageBody="job 4")
        once = await runner.run()  # one run with nothing in flight: not yet said
        sqs.send_message(QueueUrl=jobs, MessageBody="job 5")
        stopped = await runner.run()

    assert first.health().health is Health.OK
    assert stuck.success
    assert stuck.health() == Verdict(
        Health.FAILING,
        "jobs: queue growing (1 to 3 waiting) and nothing in flight: no worker is taking jobs",
        "SqsJobsStuck",
    )
    assert taken.health() == Verdict(Health.OK, "queues: 1; messages waiting 3, in flight 1")
    assert once.health().health is Health.OK
    verdict = stopped.health()
    assert verdict.health is Health.DEGRADED and verdict.alert == "SqsJobsStuck", verdict
    assert verdict.why.startswith("jobs: queue growing (1 to 5 waiting) and nothing in flight for ")
    assert verdict.why.endswith(
        "s: workers may have stopped (SqsJobsStuck pages after 15 minutes of it)"
    )


async def test_a_missing_queue_cannot_be_measured(sqs: Any, aws: AwsClients) -> None:
    result = await ProbeRunner.once(queues_target("nope"), aws=aws)

    verdict = result.health()
    assert verdict.health is Health.FAILING and verdict.alert == "StackprobeCannotMeasure"
    assert aws_calls(result, timed=False) == [
        "sqs:GetQueueUrl error (AWS.SimpleQueueService.NonExistentQueue)"
    ]


async def test_access_denied_is_stackprobe_aws_access_denied(sqs: Any, aws: AwsClients) -> None:
    sqs.create_queue(QueueName="jobs")
    target = queues_target("jobs")
    inject(aws.client(target, "sqs"), "GetQueueAttributes", "AccessDenied", status=403, times=3)

    result = await ProbeRunner.once(target, aws=aws)

    assert result.health().alert == "StackprobeAwsAccessDenied"
    assert "sqs:GetQueueAttributes" in result.health().why
    assert aws_calls(result, timed=False) == ["sqs:GetQueueUrl ok", "sqs:GetQueueAttributes denied"]


async def test_a_throttled_run_keeps_the_last_health(sqs: Any, aws: AwsClients) -> None:
    sqs.create_queue(QueueName="no-dlq")
    target = queues_target("no-dlq")
    async with ProbeRunner(target, aws=aws) as runner:
        good = await runner.run()
        inject(aws.client(target, "sqs"), "GetQueueAttributes", "RequestThrottled", times=2)
        throttled = await runner.run()

    assert throttled.reason == "throttled"
    assert samples_by_name(throttled) == samples_by_name(good)
    assert throttled.health() == Verdict(
        Health.DEGRADED,
        "AWS throttled this run; the last good values: no-dlq: no dead-letter queue (no "
        "redrive policy)",
        "SqsNoRedrivePolicy",
    )
    assert aws_calls(throttled, timed=False) == ["sqs:GetQueueAttributes throttled"]


def canary_target(canary: str) -> Any:
    raw = {
        "name": "jobs",
        "kind": "sqs",
        "queues": ["jobs"],
        "canary": {"queue": canary},
        "interval": "1m",
        "timeout": "10s",
    }
    return make_target(raw)


@pytest.mark.parametrize("canary", ["stackprobe-canary", "stackprobe-canary.fifo"])
async def test_the_write_canary_sends_receives_and_deletes_its_message(
    sqs: Any, aws: AwsClients, aws_metrics: AwsMetrics, canary: str
) -> None:
    sqs.create_queue(QueueName="jobs")
    attributes = {"FifoQueue": "true"} if canary.endswith(".fifo") else {}
    url = sqs.create_queue(QueueName=canary, Attributes=attributes)["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody="not the canary's",
        **({"MessageGroupId": "g", "MessageDeduplicationId": "d"} if attributes else {}),
    )

    result = await ProbeRunner.once(canary_target(canary), aws=aws)

    assert result.success, result.detail
    assert value(result, "stackprobe_sqs_canary_success", canary) == 1
    assert set(samples_by_name(result)["stackprobe_sqs_canary_step_seconds"]) == {
        (canary, step) for step in ("send", "receive", "delete")
    }
    assert next(v for label, v in result.evidence if label == "canary").startswith(
        f"{canary}: send "
    )
    calls = by_operation(api_calls(aws_metrics.registry))
    assert calls["SendMessage"] == 1 and calls["DeleteMessage"] == 1
    # the other message stays; the canary's is gone
    left = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert (
        int(left["ApproximateNumberOfMessages"])
        + int(left["ApproximateNumberOfMessagesNotVisible"])
        == 1
    )


async def test_a_missing_canary_queue_fails_the_canary_only(sqs: Any, aws: AwsClients) -> None:
    sqs.create_queue(QueueName="jobs")

    result = await ProbeRunner.once(canary_target("gone-canary"), aws=aws)

    assert result.success, result.detail
    assert value(result, "stackprobe_sqs_canary_failure", "gone-canary", "send", "not_found") == 1
    health, why, alert = verdict(result)
    assert (health, alert) == (Health.FAILING, "SqsWriteCanaryFailing")
    assert why.startswith("gone-canary: write canary's send failed (not_found)")


async def test_a_denied_send_names_the_action(sqs: Any, aws: AwsClients) -> None:
    sqs.create_queue(QueueName="jobs")
    sqs.create_queue(QueueName="stackprobe-canary")
    target = canary_target("stackprobe-canary")
    inject(aws.client(target, "sqs"), "SendMessage", "AccessDenied", status=403, times=3)

    result = await ProbeRunner.once(target, aws=aws)

    failed = samples_by_name(result)["stackprobe_sqs_canary_failure"]
    assert failed == {("stackprobe-canary", "send", "access_denied"): 1}
    assert "sqs:SendMessage" in verdict(result)[1]


async def test_a_message_that_never_comes_back_is_not_received(sqs: Any, aws: AwsClients) -> None:
    """A queue that delays every message 15 minutes: SQS takes it and gives nothing back
    within the run."""
    sqs.create_queue(QueueName="jobs")
    sqs.create_queue(QueueName="delayed-canary", Attributes={"DelaySeconds": "900"})
    target = make_target(
        {
            "name": "jobs",
            "kind": "sqs",
            "queues": ["jobs"],
            "canary": {"queue": "delayed-canary"},
            "timeout": "4s",
        }
    )

    result = await ProbeRunner.once(target, aws=aws)

    failed = samples_by_name(result)["stackprobe_sqs_canary_failure"]
    assert failed == {("delayed-canary", "receive", "not_received"): 1}
    assert set(samples_by_name(result)["stackprobe_sqs_canary_step_seconds"]) == {
        ("delayed-canary", "send")
    }


def test_the_canary_queue_may_not_be_a_workers_queue() -> None:
    with pytest.raises(ConfigError, match="canary needs a queue of its own"):
        make_target(
            {"name": "jobs", "kind": "sqs", "queues": ["jobs"], "canary": {"queue": "jobs"}}
        )
