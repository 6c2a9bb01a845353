"""The kind table: every probe kind stackprobe knows, in one explicit place.

Adding a kind is one module here ending in its `KIND` (a target model, a `Reason` enum,
`METRICS` and an async `probe`; see docs/architecture.md), one line below, one test file and
its sections in docs/. Nothing in the core changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stackprobe.contract import ProbeKind
from stackprobe.probes import (
    alb,
    cloudwatch,
    dns,
    ecs_service,
    http,
    logs,
    postgres,
    redis,
    s3,
    sqs,
)

KINDS: Mapping[str, ProbeKind[Any]] = {
    kind.name: kind
    for kind in (
        http.KIND,
        dns.KIND,
        postgres.KIND,
        redis.KIND,
        ecs_service.KIND,
        alb.KIND,
        sqs.KIND,
        s3.KIND,
        cloudwatch.KIND,
        logs.KIND,
    )
}

__all__ = ["KINDS"]
