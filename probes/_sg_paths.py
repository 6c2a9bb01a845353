"""Whether security groups let TCP traffic from one side to another on a port.

AEP's runbook (Incidents 2 and 6) has a human check that the tasks' group admits the ALB's
group on the container port, after someone removed that ingress. Here the same question is
answered from DescribeSecurityGroups alone, with no AWS call: a path is open when some
destination group admits the port from the source (ingress) and some source group lets it
out to the destination (egress).

A rule names the other side by group (a UserIdGroupPair naming one of its groups) or by an
IPv4 range. A range covers a side when it holds every subnet the side's network interfaces
live in (0.0.0.0/0 holds anything, even a side whose subnets are unknown). IPv6 ranges never
count: the ALB reaches ip targets and tasks reach their databases over IPv4. Prefix lists
are not resolved, so a rule that names only one does not count. Network ACLs and routes are
not looked at: an open path here can still be closed by them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, ip_network
from typing import Any, NamedTuple

ANYWHERE = ip_network("0.0.0.0/0")


class Rule(NamedTuple):
    """One IpPermissions entry: its protocol, port range, and whom it names."""

    protocol: str  # "tcp", "udp", "icmp", "-1" (all) or a protocol number
    from_port: int | None
    to_port: int | None
    groups: frozenset[str]
    ranges: tuple[IPv4Network, ...]

    def allows_tcp(self, port: int) -> bool:
        if self.protocol == "-1":
            return True
        if self.protocol not in ("tcp", "6"):
            return False
        low = -1 if self.from_port is None else self.from_port
        high = -1 if self.to_port is None else self.to_port
        # tcp with -1 ports is AWS's "all ports" for a protocol that has them
        return (low == -1 and high == -1) or low <= port <= high


@dataclass(frozen=True, slots=True)
class Group:
    """What a path needs of one DescribeSecurityGroups entry."""

    id: str
    name: str
    ingress: tuple[Rule, ...]
    egress: tuple[Rule, ...]

    @property
    def said(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


@dataclass(frozen=True, slots=True)
class Side:
    """One end of a path: its groups, the subnets its interfaces are in, and what to call
    it in a reason ("the ALB", "the tasks")."""

    label: str
    groups: tuple[str, ...]
    subnets: tuple[IPv4Network, ...] = ()


class Verdict(NamedTuple):
    open: bool
    why: str  # what closes it, or "" when open


def _rule(found: Mapping[str, Any]) -> Rule:
    ranges: list[IPv4Network] = []
    for entry in found.get("IpRanges", ()):
        network = ip_network(str(entry.get("CidrIp", "")), strict=False)
        if isinstance(network, IPv4Network):
            ranges.append(network)
    return Rule(
        protocol=str(found.get("IpProtocol", "")),
        from_port=found.get("FromPort"),
        to_port=found.get("ToPort"),
        groups=frozenset(
            str(pair["GroupId"]) for pair in found.get("UserIdGroupPairs", ()) if "GroupId" in pair
        ),
        ranges=tuple(ranges),
    )


def group(found: Mapping[str, Any]) -> Group:
    """A DescribeSecurityGroups entry as a path reads it."""
    return Group(
        id=str(found["GroupId"]),
        name=str(found.get("GroupName", "")),
        ingress=tuple(_rule(r) for r in found.get("IpPermissions", ())),
        egress=tuple(_rule(r) for r in found.get("IpPermissionsEgress", ())),
    )


def _covers(ranges: Iterable[IPv4Network], side: Side) -> bool:
    for network in ranges:
        if network == ANYWHERE:
            return True
        if side.subnets and all(s.subnet_of(network) for s in side.subnets):
            return True
    return False


def _admits(rules: Iterable[Rule], port: int, other: Side) -> bool:
    """Whether any rule lets tcp/port to or from the other side."""
    return any(
        rule.allows_tcp(port)
        and (bool(rule.groups.intersection(other.groups)) or _covers(rule.ranges, other))
        for rule in rules
    )


def _named(groups: Sequence[str]) -> str:
    return ", ".join(groups[:3]) + (f" and {len(groups) - 3} more" if len(groups) > 3 else "")


def path(source: Side, destination: Side, port: int, groups: Mapping[str, Group]) -> Verdict | None:
    """Whether tcp/port flows from source to destination, and if not the side that stops
    it. None when a group of either side is not in `groups` (deleted, or a wrong id): the
    groups that are left cannot tell."""
    missing = [g for g in (*source.groups, *destination.groups) if g not in groups]
    if missing or not source.groups or not destination.groups:
        return None
    into = [groups[g] for g in destination.groups]
    if not any(_admits(g.ingress, port, source) for g in into):
        return Verdict(
            False,
            f"{_said(into)} of {destination.label} allows no ingress on tcp/{port} from "
            f"{source.label} ({_named(source.groups)})",
        )
    out = [groups[g] for g in source.groups]
    if not any(_admits(g.egress, port, destination) for g in out):
        return Verdict(
            False,
            f"{_said(out)} of {source.label} allows no egress on tcp/{port} to "
            f"{destination.label} ({_named(destination.groups)})",
        )
    return Verdict(True, "")


def _said(groups: Sequence[Group]) -> str:
    shown = ", ".join(g.said for g in groups[:2])
    return shown + (f" (+{len(groups) - 2})" if len(groups) > 2 else "")
