"""The kind table: every probe kind stackprobe knows, in one explicit place.

Adding a kind is one module here (a target model, a `Reason` enum, `METRICS` and an async
`probe`), one row below, one test file and one section in each reference in docs/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stackprobe.probe import ProbeKind
from stackprobe.probes import (
    _aws,
    alb,
    cloudwatch,
    dns,
    ecs_service,
    http,
    postgres,
    redis,
    s3,
    sqs,
)

KINDS: Mapping[str, ProbeKind[Any]] = {
    kind.name: kind
    for kind in (
        ProbeKind(
            name="http",
            config=http.HttpTarget,
            probe=http.probe,
            metrics=http.METRICS,
            reasons=http.Reason,
            summary="HTTP(S) request: status, phases, TLS, capped body, health components",
        ),
        ProbeKind(
            name="dns",
            config=dns.DnsTarget,
            probe=dns.probe,
            metrics=dns.METRICS,
            reasons=dns.Reason,
            summary="One DNS query to a name server: response code, answers, lookup time",
        ),
        ProbeKind(
            name="postgres",
            config=postgres.PostgresTarget,
            probe=postgres.probe,
            metrics=postgres.METRICS,
            reasons=postgres.Reason,
            summary="PostgreSQL connections by database and state against the limits",
            state=postgres.session,
            advice=postgres.advice,
        ),
        ProbeKind(
            name="redis",
            config=redis.RedisTarget,
            probe=redis.probe,
            metrics=redis.METRICS,
            reasons=redis.Reason,
            summary="Redis up, PING latency, clients, memory and connection errors",
            state=redis.session,
        ),
        ProbeKind(
            name="ecs_service",
            config=ecs_service.EcsServiceTarget,
            probe=ecs_service.probe,
            metrics=ecs_service.METRICS,
            reasons=_aws.Reason,
            summary="ECS services: desired vs running, deployments, stopped tasks, env drift",
            state=_aws.session,
        ),
        ProbeKind(
            name="alb",
            config=alb.AlbTarget,
            probe=alb.probe,
            metrics=alb.METRICS,
            reasons=_aws.Reason,
            summary="ALB state, access-log posture, target health per target group",
            state=_aws.session,
            advice=alb.advice,
        ),
        ProbeKind(
            name="sqs",
            config=sqs.SqsTarget,
            probe=sqs.probe,
            metrics=sqs.METRICS,
            reasons=_aws.Reason,
            summary="SQS depth, redrive posture and dead-letter queue depth",
            state=_aws.session,
            advice=sqs.advice,
        ),
        ProbeKind(
            name="s3",
            config=s3.S3Target,
            probe=s3.probe,
            metrics=s3.METRICS,
            reasons=_aws.Reason,
            summary="S3 bucket size and objects (CloudWatch daily or a capped listing), lifecycle",
            state=_aws.session,
        ),
        ProbeKind(
            name="cloudwatch",
            config=cloudwatch.CloudWatchTarget,
            probe=cloudwatch.probe,
            metrics=cloudwatch.METRICS,
            reasons=_aws.Reason,
            summary="CloudWatch GetMetricData: ALB 5xx and latency, ECS CPU/memory, SQS age",
            state=_aws.session,
        ),
    )
}

__all__ = ["KINDS"]
