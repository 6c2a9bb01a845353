"""kind: sqs against moto: depth, redrive posture, the dead-letter queue found from it."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from tests.support.aws import REGION, api_calls, by_operation, inject
from tests.support.probing import ProbeRunner, make_target, samples_by_name, value


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
