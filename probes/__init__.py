"""The kind table: every probe kind stackprobe knows, in one explicit place.

Adding a kind is one module here ending in its `KIND` (a target model, a `Reason` enum,
`METRICS` and an async `probe`; see docs/architecture.md), one name below, one test file and
its sections in docs/. Nothing in the core changes.

A kind's module, and the client libraries it imports, load when a config first names the
kind (or a section only it declares): a config of PostgreSQL and Redis targets never
imports httpx, and the built-in one never imports asyncpg.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from stackprobe.cluster import ClusterSettings, Membership, MembershipFactory
from stackprobe.contract import ProbeKind

# In the order /metrics, the docs and the console list the kinds' families.
NAMES = (
    "http",
    "dns",
    "postgres",
    "redis",
    "ecs_service",
    "alb",
    "sqs",
    "s3",
    "cloudwatch",
    "rds",
    "elasticache",
    "logs",
)


class KindTable(Mapping[str, ProbeKind[Any]]):
    """The kinds by name, each module imported when its kind is first looked up. Iterating
    gives the names without importing; `values()` and `items()` import every kind."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        self._loaded: dict[str, ProbeKind[Any]] = {}

    def __getitem__(self, name: str) -> ProbeKind[Any]:
        kind = self._loaded.get(name)
        if kind is None:
            if name not in self._names:
                raise KeyError(name)
            kind = self._loaded[name] = importlib.import_module(f"{__name__}.{name}").KIND
        return kind

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def loaded(self) -> list[str]:
        """The kinds imported so far, in table order."""
        return [name for name in self._names if name in self._loaded]


KINDS = KindTable(NAMES)

__all__ = ["KINDS", "KindTable"]


def _ecs_membership(settings: ClusterSettings, registry: CollectorRegistry) -> Membership:
    """`cluster.ecs`, imported only for a config that asks for it (botocore is large)."""
    from stackprobe.probes._ecs_members import EcsMembership

    if settings.ecs is None:
        raise ValueError("cluster.ecs is not set")
    return EcsMembership(settings.ecs, registry)


# The dynamic member lists of a cluster (exporter/cluster.py), by their `cluster:` key.
MEMBERSHIPS: Mapping[str, MembershipFactory] = {"ecs": _ecs_membership}
