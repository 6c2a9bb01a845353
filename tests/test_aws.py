"""The AWS client factory: assumed roles, missing credentials, deadlines, and the exporter as
a whole over moto with canary credentials that must never show."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry

from stackprobe.app import App
from stackprobe.config import parse_config
from stackprobe.probes import KINDS
from stackprobe.probes._aws import AWS_CALL_LINES, call_evidence
from stackprobe.probes._aws_api import (
    AWS,
    RUN_CALLS,
    AwsCall,
    AwsCallError,
    AwsClients,
    AwsMetrics,
    AwsProblem,
    AwsSettings,
    ambient_secrets,
    iam_action,
)
from stackprobe.secrets import Redactor
from tests.support.aws import CANARY_KEY_ID, CANARY_SECRET, REGION, EcsStack, api_calls, inject
from tests.support.in_process import serving
from tests.support.probing import ProbeRunner, make_target


@pytest.mark.parametrize(
    ("service", "operation", "action"),
    [
        ("ecs", "DescribeServices", "ecs:DescribeServices"),
        (
            "elbv2",
            "DescribeTargetHealth",
            "elasticloadbalancing:DescribeTargetHealth",
        ),
        ("cloudwatch", "GetMetricData", "cloudwatch:GetMetricData"),
        ("s3", "ListObjectsV2", "s3:ListBucket"),
        ("s3", "GetBucketLifecycleConfiguration", "s3:GetLifecycleConfiguration"),
        ("sts", "AssumeRole", "sts:AssumeRole"),
    ],
)
def test_iam_actions_as_policies_name_them(service: str, operation: str, action: str) -> None:
    assert iam_action(service, operation) == action


async def test_an_assumed_role_is_fetched_once_and_kept(moto: None) -> None:
    stack = EcsStack(boto3.Session(region_name=REGION))
    stack.service("aep-api", desired=1)
    metrics = AwsMetrics(CollectorRegistry())
    clients = AwsClients(AwsSettings(region=REGION), metrics)
    target = make_target(
        {
            "name": "x",
            "kind": "ecs_service",
            "cluster": "aep",
            "role_arn": "arn:aws:iam::123456789012:role/stackprobe-read",
            "external_id": {"from_env": "EXTERNAL_ID"},
        },
        environ={"EXTERNAL_ID": "ext-CANARY-77"},
    )
    try:
        async with ProbeRunner(target, aws=clients) as runner:
            first = await runner.run()
            second = await runner.run()
    finally:
        clients.shutdown()

    assert first.success and second.success, first.detail
    calls = api_calls(metrics.registry)
    assert calls[("sts", "AssumeRole", "ok")] == 1  # refreshed only near expiry
    assert calls[("ecs", "DescribeServices", "ok")] == 2


async def test_no_credentials_says_where_they_come_from(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    clients = AwsClients(AwsSettings(region=REGION), AwsMetrics(CollectorRegistry()))
    target = make_target({"name": "q", "kind": "sqs", "queues": ["jobs"]})
    try:
        result = await ProbeRunner.once(target, aws=clients)
    finally:
        clients.shutdown()

    assert result.reason == "credentials"
    assert "AWS_PROFILE" in result.detail and "role" in result.detail


async def test_a_call_that_fails_before_its_client_exists_names_the_api_operation(
    aws_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No region: botocore cannot make the client, so the API's name (DescribeDBInstances,
    not boto3's describe_db_instances in CamelCase) comes from the service's model."""
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    clients = AwsClients(AwsSettings(), AwsMetrics(CollectorRegistry()))
    target = make_target({"name": "dbs", "kind": "rds"})
    try:
        result = await ProbeRunner.once(target, aws=clients)
    finally:
        clients.shutdown()

    assert result.reason == "api_error"
    assert result.detail.startswith("no AWS region for rds DescribeDBInstances: set region:")
    (line,) = [v for k, v in result.evidence if k == "aws call"]
    assert line.startswith("rds:DescribeDBInstances error")


async def test_a_hanging_call_ends_at_the_run_deadline(moto: None) -> None:
    boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")
    clients = AwsClients(AwsSettings(region=REGION), AwsMetrics(CollectorRegistry()))
    target = make_target({"name": "q", "kind": "sqs", "queues": ["jobs"], "timeout": "500ms"})

    def hang(**_: Any) -> None:
        time.sleep(1.5)

    clients.client(target, "sqs").meta.events.register_first("before-send.sqs.*", hang)
    started = time.monotonic()
    try:
        result = await ProbeRunner.once(target, aws=clients)
    finally:
        clients.shutdown()

    assert result.reason == "timeout"
    assert time.monotonic() - started < 1.0  # the thread finishes on its own; the run does not wait


async def test_a_listing_is_whole_or_a_timeout_and_its_thread_stops(moto: None) -> None:
    """A discovery (rds, elasticache, ECS services and tasks, ListMetrics, GetMetricData)
    missing its last pages would miss resources and say nothing: without `max_pages` a listing
    that cannot finish by the run's deadline fails as a timeout, and its thread stops asking
    for more pages. (Callers that take part of a listing, S3 and logs, name `max_pages`.)"""
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="rasters", CreateBucketConfiguration={"LocationConstraint": REGION})
    for n in range(20):
        s3.put_object(Bucket="rasters", Key=f"k{n}", Body=b"x")
    clients = AwsClients(AwsSettings(region=REGION), AwsMetrics(CollectorRegistry()))
    target = make_target({"name": "b", "kind": "s3", "buckets": ["rasters"]})
    asked: list[float] = []

    def slow(**_: Any) -> None:
        asked.append(time.monotonic())
        time.sleep(0.1)

    clients.client(target, "s3").meta.events.register_first("before-send.s3.ListObjectsV2", slow)
    try:
        with pytest.raises(AwsCallError) as failed:
            await clients.pages(
                target,
                "s3",
                "list_objects_v2",
                asyncio.get_running_loop().time() + 1.0,
                Bucket="rasters",
                PaginationConfig={"PageSize": 1},
            )
        await asyncio.sleep(1.5)  # time for the thread to have read all 20 pages, had it gone on
    finally:
        clients.shutdown()

    assert failed.value.problem is AwsProblem.TIMEOUT
    assert 1 <= len(asked) < 20, asked


def test_ambient_credentials_are_known_secrets() -> None:
    environ = {"AWS_ACCESS_KEY_ID": CANARY_KEY_ID, "AWS_SECRET_ACCESS_KEY": CANARY_SECRET}

    assert ambient_secrets(environ) == {CANARY_KEY_ID, CANARY_SECRET}


class BlindRedactor(Redactor):
    """Knows no secret: what it lets through shows what stackprobe writes before scrubbing."""

    def update(self, secrets: Any) -> None:
        return None


@pytest.mark.parametrize("redactor_class", [Redactor, BlindRedactor], ids=["scrubbed", "raw"])
async def test_the_exporter_over_moto_never_shows_credentials(
    moto: None, redactor_class: type[Redactor]
) -> None:
    """Every AWS kind, failing and succeeding, through /metrics, the landing page and the logs:
    no canary credential, external ID or assumed-role credential anywhere, whether or not
    the redactor knows them (it never learns the assumed role's)."""
    stack = EcsStack(boto3.Session(region_name=REGION))
    stack.service("aep-api", desired=1)
    boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")
    config = parse_config(
        f"""
aws: {{region: {REGION}}}
targets:
  - {{name: ecs, kind: ecs_service, cluster: aep, interval: 1m, timeout: 10s,
      role_arn: "arn:aws:iam::123456789012:role/read", external_id: {{from_env: EXTERNAL_ID}}}}
  - {{name: jobs, kind: sqs, queues: [jobs, missing-queue], interval: 1m, timeout: 10s}}
  - {{name: tasks, kind: http, interval: 1m, timeout: 5s,
      discover: {{ecs: {{cluster: aep, service: aep-api, port: 8787}}}}}}
""",
        "<test>",
        KINDS,
        {"EXTERNAL_ID": "ext-id-CANARY-31"},
    )
    redactor = redactor_class()

    def deny_list_tasks(app: App) -> None:
        inject(
            app.resources[AWS].client(config.targets[0], "ecs"),
            "ListTasks",
            "AccessDeniedException",
            times=10,
        )

    async with serving(config, redactor, deny_list_tasks) as (app, client, log):
        metrics = await (await client.get("/metrics")).text()
        landing = await (await client.get("/")).text()
        # the detail views: each run's verdict and evidence, its AWS calls among them
        ecs_detail = await (await client.get("/target", params={"name": "ecs"})).text()
        jobs_detail = await (await client.get("/target", params={"name": "jobs"})).text()
        signer = app.resources[AWS].client(config.targets[0], "ecs")._request_signer
        assumed = signer._credentials.get_frozen_credentials()  # what moto's STS issued

    assert (
        'stackprobe_aws_api_calls_total{operation="ListTasks",outcome="denied",service="ecs"}'
        in metrics
    )
    assert 'stackprobe_probe_failure_reason{reason="not_found",target="jobs"} 1.0' in metrics
    assert "ecs:ListTasks" in landing
    assert "ecs:ListTasks denied in " in ecs_detail
    assert "ecs:DescribeServices ok in " in ecs_detail
    assert "runbook: StackprobeAwsAccessDenied" in ecs_detail
    assert "sqs:GetQueueUrl error (AWS.SimpleQueueService.NonExistentQueue) in " in jobs_detail
    outputs = {
        "metrics": metrics,
        "landing": landing,
        "ecs detail": ecs_detail,
        "jobs detail": jobs_detail,
        "log": log.getvalue(),
    }
    assert "AssumeRole" in metrics  # the role path ran
    for name, text in outputs.items():
        for canary in (
            CANARY_KEY_ID,
            CANARY_SECRET,
            "ext-id-CANARY-31",
            assumed.access_key,
            assumed.secret_key,
            assumed.token,
        ):
            assert canary not in text, f"{canary} in {name}"


async def test_a_role_with_no_base_credentials_fails_and_recovers(
    moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credentials blip at start (the container endpoint not up yet) is a `credentials`
    failure, not a crash, and the next run assumes the role once credentials are there."""
    boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    metrics = AwsMetrics(CollectorRegistry())
    clients = AwsClients(AwsSettings(region=REGION), metrics)
    target = make_target(
        {
            "name": "q",
            "kind": "sqs",
            "queues": ["jobs"],
            "role_arn": "arn:aws:iam::123456789012:role/stackprobe-read",
        }
    )
    try:
        async with ProbeRunner(target, aws=clients) as runner:
            blip = await runner.run()
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", CANARY_KEY_ID)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY_SECRET)
            recovered = await runner.run()
    finally:
        clients.shutdown()

    assert blip.reason == "credentials", blip.detail
    assert recovered.success, recovered.detail
    assert api_calls(metrics.registry)[("sts", "AssumeRole", "ok")] == 1


async def test_a_reload_that_changes_aws_settings_replaces_the_clients(
    moto: None, tmp_path: Any
) -> None:
    boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")
    path = tmp_path / "stackprobe.yml"
    body = "targets: [{name: q, kind: sqs, queues: [jobs], interval: 1m, timeout: 5s}]\n"
    path.write_text(f"aws: {{region: {REGION}, max_workers: 2}}\n" + body)
    from stackprobe.config import load_config

    app = App(load_config(path, KINDS), kinds=KINDS, redactor=Redactor(), config_path=path)
    app.start()
    try:
        first = app.resources[AWS]
        same = await app.reload()
        kept = app.resources[AWS]
        path.write_text(f"aws: {{region: {REGION}, max_workers: 4}}\n" + body)
        changed = await app.reload()
        replaced = app.resources[AWS]
    finally:
        await app.stop()

    assert same.ok and changed.ok
    assert kept is first  # an unchanged aws: keeps its clients and their credentials
    assert replaced is not first and replaced.settings.max_workers == 4
    assert first._pool._shutdown  # retired: shut after its runs' timeout, or at stop at the latest


def test_call_evidence_groups_alike_calls_and_keeps_failures_when_lines_run_out() -> None:
    made = [
        AwsCall("ecs:ListTasks", "ok", 12.4, pages=2),
        AwsCall("ecs:DescribeTasks", "ok", 8.0),
        AwsCall("ecs:DescribeTasks", "ok", 14.2),
        AwsCall("ecs:DescribeServices", "throttled", 230.0, code="throttled"),
        AwsCall("s3:GetLifecycleConfiguration", "error", 3.0, code="NoSuchLifecycleConfiguration"),
    ]

    assert call_evidence(made) == (
        ("aws call", "ecs:ListTasks ok in 12 ms, 2 pages"),
        ("aws call", "ecs:DescribeTasks ok, 2 calls in 8-14 ms"),
        ("aws call", "ecs:DescribeServices throttled in 230 ms"),
        ("aws call", "s3:GetLifecycleConfiguration error (NoSuchLifecycleConfiguration) in 3 ms"),
    )

    many = [AwsCall(f"cloudwatch:Op{i}", "ok", 1.0) for i in range(20)]
    many.append(AwsCall("cloudwatch:GetMetricData", "denied", 5.0, code="access_denied"))
    shown = call_evidence(many)
    assert len(shown) == AWS_CALL_LINES
    assert shown[0] == ("aws call", "cloudwatch:Op0 ok in 1 ms")
    # the failure is kept though it came last; what is left out is counted
    assert ("aws call", "cloudwatch:GetMetricData denied in 5 ms") in shown
    assert shown[-1] == ("aws call", "+12 more")
    assert sum(len(v) for _, v in shown) < 400


async def test_calls_are_recorded_only_inside_an_aws_run(moto: None) -> None:
    """A run's calls go to its own list and no further: none is left set after the run,
    and a call made outside one (the http kind's ECS discovery) is not recorded anywhere."""
    boto3.client("sqs", region_name=REGION).create_queue(QueueName="jobs")
    clients = AwsClients(AwsSettings(region=REGION), AwsMetrics(CollectorRegistry()))
    target = make_target({"name": "q", "kind": "sqs", "queues": ["jobs"]})
    try:
        async with ProbeRunner(target, aws=clients) as runner:
            first = await runner.run()
            assert RUN_CALLS.get() is None
            deadline = asyncio.get_running_loop().time() + 10
            await clients.call(target, "sqs", "list_queues", deadline)
            second = await runner.run()
    finally:
        clients.shutdown()

    lines = [v.split(" in ")[0] for label, v in first.evidence if label == "aws call"]
    assert lines == ["sqs:GetQueueUrl ok", "sqs:GetQueueAttributes ok"]
    # the URL was kept: the second run asked for attributes alone, and nothing else
    lines = [v.split(" in ")[0] for label, v in second.evidence if label == "aws call"]
    assert lines == ["sqs:GetQueueAttributes ok"]
