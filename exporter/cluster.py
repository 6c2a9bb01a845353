"""Which replica probes which target, when several stackprobe processes share one config.

Ownership is a pure function of the member list and the target, computed by every replica on
its own: rendezvous (highest-random-weight) hashing of the target's shard key over the
members, as Elastic Synthetics and Grafana Alloy's clustering do. No leader, no messages
between replicas: two replicas with the same view agree, and a member that leaves moves only
the targets it owned (each of which goes to its next-ranked member). Each target has R
owners: its `replicas`, or its kind's default (`ProbeKind.replicas`), at most the cluster's
size. Series from several owners are merged by the rules (`max without (instance)`) and by
the TSDB's deduplication, never here.

The member list comes from a `Membership`: a static index and count (one ECS service or
StatefulSet pod per index, as vmagent's `-promscrape.cluster.memberNum`), or a dynamic one
handed in by the composition root (`exporter/cli.py`: ECS, from `probes/_ecs_members.py`),
which the app asks again every `refresh`. A dynamic view that cannot be refreshed stays as it
was, and always holds this replica itself: a replica never owns nothing because an API
call failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from stackprobe.contract import MetricSpec, ProbeKind
from stackprobe.durations import Duration
from stackprobe.target import TargetConfig

# The environment variables a replica's identity may come from (a flag wins over them, and
# they over the config file), so every replica can share one config file.
INDEX_ENV = "STACKPROBE_CLUSTER_INDEX"
COUNT_ENV = "STACKPROBE_CLUSTER_COUNT"

TARGET_OWNED = MetricSpec(
    "stackprobe_target_owned",
    "1 if this replica owns (probes) the configured target, 0 if other replicas do; summed "
    "over replicas, the target's owners.",
    ("kind",),
)
TARGET_REPLICAS = MetricSpec(
    "stackprobe_target_replicas",
    "How many replicas should own the target: its replicas (or its kind's default), at most "
    "the cluster's size.",
    ("kind",),
)
OWNERSHIP_METRICS = (TARGET_OWNED, TARGET_REPLICAS)


class EcsMembershipSettings(BaseModel):
    """`cluster.ecs`: the members are the RUNNING tasks of stackprobe's own ECS service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Default: the task's own cluster and service, from the task metadata endpoint (v4).
    cluster: str | None = None
    service: str | None = None
    region: str | None = None
    # A moto server or LocalStack; botocore's AWS_ENDPOINT_URL_ECS works too.
    endpoint_url: str | None = None


class ClusterSettings(BaseModel):
    """The `cluster:` section. Without it, one process owns every target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A static membership: this replica's place among `count` (also --cluster.index and
    # STACKPROBE_CLUSTER_INDEX, which win over the file).
    index: int | None = Field(None, ge=0)
    count: int = Field(1, ge=1, le=1000)
    # Or a dynamic one, from ECS.
    ecs: EcsMembershipSettings | None = None
    # How often a dynamic membership is asked again.
    refresh: Duration = 10.0
    # After the members change, how long a replica keeps probing a target it no longer
    # owns, beyond the new owner's first run: its discovery and first scrape by Prometheus
    # (a new ECS task: service discovery's refresh, 30s, and a scrape interval).
    handover: Duration = 60.0
    # `group`: targets that name a group (an AWS kind's role and region: one throttle bucket)
    # are placed by it, so a group stays on one replica; the others by their name.
    shard_key: Literal["target", "group"] = "target"

    @model_validator(mode="after")
    def _one_membership(self) -> ClusterSettings:
        if self.ecs is not None and (self.index is not None or self.count != 1):
            raise PydanticCustomError(
                "cluster_membership",
                "set either index and count (a static membership) or ecs (the tasks of "
                "stackprobe's ECS service), not both",
                {},
            )
        if self.index is not None and self.index >= self.count:
            raise PydanticCustomError(
                "cluster_index",
                "index {index} is not below count {count}: replicas are numbered 0 to count - 1",
                {"index": self.index, "count": self.count},
            )
        if self.refresh < 1:
            raise PydanticCustomError(
                "cluster_refresh", "refresh must be at least 1s (each one calls the API)", {}
            )
        return self


def with_overrides(
    settings: ClusterSettings, index: int | None, count: int | None
) -> ClusterSettings:
    """The settings with a replica's own index and count (flags or environment) over the
    file's; raises ValueError, saying what to set, when they do not fit together."""
    if index is None and count is None:
        merged = settings
    else:
        data = settings.model_dump(exclude_none=True)
        data.update({k: v for k, v in (("index", index), ("count", count)) if v is not None})
        try:
            merged = ClusterSettings.model_validate(data)
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"] for e in exc.errors())) from None
    if merged.count > 1 and merged.index is None:
        raise ValueError(
            f"cluster.count is {merged.count} but this replica's index is unknown: set "
            f"cluster.index, --cluster.index or {INDEX_ENV} (0 to {merged.count - 1})"
        )
    return merged


@dataclass(frozen=True)
class View:
    """One replica's view of the cluster: itself and every member, itself included."""

    identity: str
    members: tuple[str, ...]
    # How many replicas the cluster should have: the static count, or as many as seen.
    size: int


class Membership(Protocol):
    """Where the member list comes from. `view()` may raise; the app then keeps the last."""

    dynamic: bool

    async def view(self) -> View: ...

    async def aclose(self) -> None: ...


class StaticMembership:
    """Members 0 to count - 1, this replica at `index`: fixed for the life of the process."""

    dynamic = False

    def __init__(self, index: int, count: int) -> None:
        members = tuple(str(i) for i in range(count))
        self.current = View(str(index), members, count)

    async def view(self) -> View:
        return self.current

    async def aclose(self) -> None:
        pass


# What builds a dynamic membership from its settings (`cluster.ecs`): handed in by the
# composition root, so the core names no client library.
MembershipFactory = Callable[[ClusterSettings, CollectorRegistry], Membership]


def membership(
    settings: ClusterSettings,
    registry: CollectorRegistry,
    dynamic: Mapping[str, MembershipFactory] | None = None,
) -> Membership:
    """The membership the settings describe; raises ValueError when it is not available."""
    if settings.ecs is not None:
        factory = (dynamic or {}).get("ecs")
        if factory is None:
            raise ValueError("cluster.ecs: this build of stackprobe has no ECS membership")
        return factory(settings, registry)
    return StaticMembership(settings.index or 0, settings.count)


def weight(member: str, key: str) -> int:
    """The member's weight for a key: the highest weights own it. A stable hash (not
    Python's, which changes per process), the same on every replica."""
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owners(key: str, members: Sequence[str], replicas: int) -> list[str]:
    """The `replicas` members that own `key`, best first."""
    if replicas >= len(members):
        return sorted(members, key=lambda m: weight(m, key), reverse=True)
    return heapq.nlargest(replicas, members, key=lambda m: weight(m, key))


class Cluster:
    """This replica's view and what it owns; the app refreshes the view and re-applies."""

    def __init__(
        self, settings: ClusterSettings, source: Membership, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.source = source
        # Until a dynamic membership answers: itself alone, so it never owns nothing.
        self.view = View("self", ("self",), 1)
        self.known = False  # whether a view has been had at all
        r = registry
        self._members = Gauge(
            "stackprobe_cluster_members",
            "Replicas in this replica's view of the cluster, itself included.",
            registry=r,
        )
        self._member_info = Gauge(
            "stackprobe_cluster_member_info",
            "Always 1 for each member in this replica's view; `self` is true for its own.",
            ["member", "self"],
            registry=r,
        )
        self._refreshes = Counter(
            "stackprobe_cluster_membership_refreshes",
            "Times the member list was asked for, by result (success or failure); on a "
            "failure the last list stays.",
            ["result"],
            registry=r,
        )
        self._changes = Counter(
            "stackprobe_cluster_membership_changes",
            "Times this replica's view of the members changed (it then re-applies ownership).",
            registry=r,
        )
        for result in ("success", "failure"):
            self._refreshes.labels(result)
        if isinstance(source, StaticMembership):
            self.adopt(source.current)

    @property
    def dynamic(self) -> bool:
        return self.source.dynamic

    def adopt(self, view: View) -> bool:
        """Take a view (itself always among the members); whether it changed."""
        members = tuple(sorted({*view.members, view.identity}))
        view = View(view.identity, members, max(view.size, 1))
        changed = view != self.view or not self.known
        if changed and self.known:
            self._changes.inc()
        self.view, self.known = view, True
        self._members.set(len(members))
        self._member_info.clear()
        for member in members:
            self._member_info.labels(member, str(member == view.identity).lower()).set(1)
        return changed

    async def refresh(self, limit: float) -> tuple[bool, str]:
        """Ask the membership again, for at most `limit` seconds: (whether the view changed,
        the error if it failed or took too long)."""
        try:
            async with asyncio.timeout(limit):
                view = await self.source.view()
        except TimeoutError:
            self._refreshes.labels("failure").inc()
            return False, f"no answer within {limit:g}s"
        except Exception as exc:  # the API, the network, a metadata endpoint: keep the last
            self._refreshes.labels("failure").inc()
            return False, f"{type(exc).__name__}: {exc}"
        self._refreshes.labels("success").inc()
        return self.adopt(view), ""

    def wanted(self, target: TargetConfig, kind: ProbeKind[Any]) -> int:
        """The target's number of owners: its own `replicas`, or its kind's, at most the
        cluster's size."""
        asked = target.replicas if target.replicas is not None else kind.replicas
        return max(1, min(asked, self.view.size, len(self.view.members)))

    def shard_key(self, target: TargetConfig) -> str:
        if self.settings.shard_key == "group":
            return target.shard_group() or target.name
        return target.name

    def ownership(
        self, targets: Sequence[TargetConfig], kinds: Mapping[str, ProbeKind[Any]]
    ) -> list[Owned]:
        """Every target with its wanted owners and whether this replica is one of them."""
        members, me = self.view.members, self.view.identity
        found: list[Owned] = []
        for target in targets:
            wanted = self.wanted(target, kinds[target.kind])
            mine = len(members) == 1 or me in owners(self.shard_key(target), members, wanted)
            found.append(Owned(target, mine, wanted))
        return found


@dataclass(frozen=True, slots=True)
class Owned:
    target: TargetConfig
    mine: bool
    wanted: int
