"""The kind table: every probe kind stackprobe knows, in one explicit place.

Adding a kind is one module here (a target model, a `Reason` enum, `METRICS` and an async
`probe`), one row below, one test file and one section in each reference in docs/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stackprobe.probe import ProbeKind
from stackprobe.probes import dns, http, postgres, redis

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
    )
}

__all__ = ["KINDS"]
