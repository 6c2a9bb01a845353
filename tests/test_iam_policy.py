"""docs/iam-policy.json grants exactly the IAM actions the AWS kinds call, as counted by
stackprobe's own call accounting while every kind probes a whole inventory in moto."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from stackprobe.probes._aws_api import AwsClients, AwsMetrics, AwsSettings, iam_action
from tests.support.aws import REGION, Inventory, api_calls
from tests.support.probing import ProbeRunner, make_target

POLICY = Path(__file__).parent.parent / "docs" / "iam-policy.json"
CANARIES = POLICY.with_name("iam-policy-canaries.json")


def granted(path: Path = POLICY) -> set[str]:
    policy = json.loads(path.read_text())
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        actions.update(statement["Action"])
    return actions


def test_the_policy_is_read_only() -> None:
    verbs = {action.split(":")[1] for action in granted()}

    # logs:FilterLogEvents reads events (IAM's access level "Read"), whatever its verb
    assert all(v.startswith(("Describe", "List", "Get", "FilterLogEvents")) for v in verbs), verbs


async def test_the_policy_covers_exactly_what_the_probes_call(moto: None) -> None:
    inventory = Inventory(clusters=1, services=3, target_groups=2, queues=2, buckets=1)
    metrics = AwsMetrics(CollectorRegistry())
    clients = AwsClients(AwsSettings(region=REGION), metrics)
    try:
        for raw in inventory.targets(percentiles=True, security_groups=True):
            result = await ProbeRunner.once(make_target(raw), aws=clients)
            if raw["kind"] != "http":  # the discovered task itself refuses: that is fine
                assert result.success, f"{raw['name']}: {result.detail}"
            if raw["kind"] == "ecs_service":  # every path measured, so every call made
                opened = [
                    s.value
                    for s in result.samples
                    if s.spec.name == "aws_ecs_service_security_group_path_open"
                ]
                assert len(opened) == 1 + 2 * len(inventory.services) and all(opened), opened
    finally:
        clients.shutdown()

    called = {iam_action(service, op) for service, op, _ in api_calls(metrics.registry)}
    assert called == granted()


async def test_the_canary_policy_adds_exactly_what_the_write_canaries_call(moto: None) -> None:
    """Apart from the read-only policy, so only a config with `canary:` needs write rights."""
    inventory = Inventory(clusters=1, services=1, target_groups=1, queues=1, buckets=1)
    import boto3

    boto3.client("sqs", region_name=REGION).create_queue(QueueName="stackprobe-canary")
    metrics = AwsMetrics(CollectorRegistry())
    clients = AwsClients(AwsSettings(region=REGION), metrics)
    targets = [
        {"name": "b", "kind": "s3", "buckets": inventory.buckets, "canary": {}},
        {
            "name": "q",
            "kind": "sqs",
            "queues": inventory.queues,
            "canary": {"queue": "stackprobe-canary"},
        },
    ]
    try:
        for raw in targets:
            result = await ProbeRunner.once(make_target(raw), aws=clients)
            worked = [s.value for s in result.samples if s.spec.name.endswith("canary_success")]
            assert result.success and worked and all(worked), result.health()
    finally:
        clients.shutdown()

    called = {iam_action(service, op) for service, op, _ in api_calls(metrics.registry)}
    assert called - granted() == granted(CANARIES) - CHECKED_BESIDE
    assert not granted(CANARIES) & granted()


# What AWS checks beside a call's own action: DeleteObject of a version written to a
# versioned bucket (s3:DeleteObjectVersion), and the KMS key of an encrypted bucket or queue.
CHECKED_BESIDE = {"s3:DeleteObjectVersion", "kms:GenerateDataKey", "kms:Decrypt"}
