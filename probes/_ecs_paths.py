"""Security-group paths for the ecs_service kind: whether the ALB's groups admit the service's
tasks on the container port, and the tasks' groups reach a database or cache (AEP Incidents 2
and 6: "security group blocking ALB -> task", "accidentally removed ALB ingress").

Opt-in (`security_groups: true` for ALB -> tasks, `reaches:` for tasks -> a database or
cache), because they need ec2:DescribeSecurityGroups and ec2:DescribeSubnets, and for the ALB
side elbv2's DescribeTargetGroups and DescribeLoadBalancers (400 a page, the account's, as the
alb kind lists them: a deleted group is then absent instead of failing the call). The groups
and subnets of every path come from one listing each, filtered by id (200 ids a filter, 1,000
a page); probes/_sg_paths.py judges them. A group no listing returns (a wrong id in
`reaches`) leaves its path unexported; the kind then fails the run `not_found`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stackprobe.contract import Health, MetricSpec, ProbeContext, Sample
from stackprobe.probes._aws import Finding, batches, gather_all
from stackprobe.probes._aws_api import AWS, AwsTarget
from stackprobe.probes._sg_paths import Group, Side, group, path
from stackprobe.target import UniqueNames


class Reach(BaseModel):
    """A database or cache the services' tasks must reach through security groups."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The `path` label, e.g. postgres or redis ("alb" is the ALB -> tasks path's).
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    port: int = Field(ge=1, le=65535)
    # The destination's security groups: the RDS instance's or cache cluster's.
    security_groups: UniqueNames = Field(min_length=1)
    # The destination's subnets, so an egress rule to an IPv4 range can count.
    subnets: UniqueNames = ()
    # The services whose tasks must reach it; none: every service of the target.
    services: UniqueNames = ()

    @model_validator(mode="after")
    def _not_alb(self) -> Reach:
        if self.name == ALB_PATH:
            raise ValueError(f"the path name {ALB_PATH!r} is the ALB -> tasks path's")
        return self


ALB_PATH = "alb"


PATH_OPEN = MetricSpec(
    "aws_ecs_service_security_group_path_open",
    "1 if security groups let TCP on the port from the ALB to the service's tasks (path alb) "
    "or from the tasks to a `reaches` entry, else 0; only where security groups are checked.",
    ("cluster", "service", "path", "port"),
)


LB_PAGE_SIZE = 400  # DescribeLoadBalancers' and DescribeTargetGroups' PageSize: 1 to 400
EC2_PAGE_SIZE = 1000  # DescribeSecurityGroups' and DescribeSubnets' MaxResults: 5 to 1000
EC2_FILTER_VALUES = 200  # values one EC2 filter takes


class _Path(NamedTuple):
    """One path a run judges: of a service, named as its `path` label, on a TCP port,
    from each source (several when a target group has several balancers) to a destination."""

    service: str
    name: str
    port: int
    sources: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]  # label, groups, subnets
    destination: tuple[str, tuple[str, ...], tuple[str, ...]]


async def paths(
    target: AwsTarget,
    ctx: ProbeContext,
    cluster: str,
    security_groups: bool,
    reaches: Sequence[Reach],
    services: Sequence[Mapping[str, Any]],
) -> tuple[list[Sample], list[Finding], list[str]]:
    """The security-group paths of the services: their samples, findings, and what could not
    be judged because a group is not there."""
    findings: list[Finding] = []
    planned: list[_Path] = []
    balanced = (
        {str(s["serviceName"]) for s in services if _target_groups(s)} if security_groups else set()
    )
    balancers = await _balancers(target, ctx) if balanced else {}
    for service in services:
        name = str(service["serviceName"])
        vpc = service.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
        tasks = (
            "the tasks",
            tuple(vpc.get("securityGroups", ())),
            tuple(vpc.get("subnets", ())),
        )
        if not tasks[1]:  # not awsvpc: its tasks use their instance's groups
            continue
        for port, arns in sorted(_target_groups(service).items()) if name in balanced else ():
            sources = [b for arn in arns for b in balancers.get(arn, ())]
            why = (
                "a target group on no load balancer here"
                if any(not balancers.get(arn) for arn in arns)
                # a Network Load Balancer without groups passes its clients' addresses on
                else "a load balancer without security groups"
                if any(not groups for _, groups, _ in sources)
                else ""
            )
            if why:
                seen = f"{name}: {why} on port {port}; ALB path not checked"
                findings.append(Finding(Health.DEGRADED, seen))
                continue
            planned.append(_Path(name, ALB_PATH, port, tuple(sources), tasks))
        for reach in reaches:
            if not reach.services or name in reach.services:
                to = (reach.name, reach.security_groups, reach.subnets)
                planned.append(_Path(name, reach.name, reach.port, (tasks,), to))
    group_ids = sorted(
        {g for p in planned for _, groups, _ in (*p.sources, p.destination) for g in groups}
    )
    subnet_ids = sorted(
        {n for p in planned for _, _, subnets in (*p.sources, p.destination) for n in subnets}
    )
    groups, cidrs = await gather_all(
        [
            _ec2_listed(target, ctx, "describe_security_groups", "group-id", group_ids),
            _ec2_listed(target, ctx, "describe_subnets", "subnet-id", subnet_ids),
        ]
    )
    found = {str(g["GroupId"]): group(g) for page in groups for g in page["SecurityGroups"]}
    subnets = {
        str(n["SubnetId"]): ip_network(str(n["CidrBlock"]))
        for page in cidrs
        for n in page["Subnets"]
        if n.get("CidrBlock")
    }
    samples: list[Sample] = []
    unknown: list[str] = []
    for planned_path in planned:
        opened = _judge_path(planned_path, found, subnets)
        what = f"{planned_path.service}: {_path_said(planned_path)}"
        if opened is None:
            gone = [
                g
                for _, ids, _ in (*planned_path.sources, planned_path.destination)
                for g in ids
                if g not in found
            ]
            said = f"{what}: no security group {', '.join(gone[:3])}"
            unknown.append(said)
            findings.append(Finding(Health.DEGRADED, f"{said}; path unknown"))
            continue
        label_values = (planned_path.service, planned_path.name, str(planned_path.port))
        samples.append(PATH_OPEN(1 if opened[0] else 0, cluster, *label_values))
        if not opened[0]:
            # EcsSecurityGroupPathClosed: security_group_path_open == 0
            seen = f"{planned_path.service}: {_path_said(planned_path, False)} closed: {opened[1]}"
            findings.append(Finding(Health.FAILING, seen, "EcsSecurityGroupPathClosed"))
    return samples, findings, unknown


def _path_said(planned: _Path, port: bool = True) -> str:
    said = "ALB -> tasks" if planned.name == ALB_PATH else f"tasks -> {planned.name}"
    return f"{said} on tcp/{planned.port}" if port else said


def _judge_path(
    planned: _Path, groups: Mapping[str, Group], cidrs: Mapping[str, IPv4Network | IPv6Network]
) -> tuple[bool, str] | None:
    """Open when it is from every source; None when a group is not there."""

    def side(label: str, ids: tuple[str, ...], subnets: tuple[str, ...]) -> Side:
        known = [cidrs.get(n) for n in subnets]
        v4 = tuple(c for c in known if isinstance(c, IPv4Network))
        # a range covers a side only when every one of its subnets is known
        return Side(label, ids, v4 if len(v4) == len(subnets) else ())

    destination = side(*planned.destination)
    for source in planned.sources:
        verdict = path(side(*source), destination, planned.port, groups)
        if verdict is None:
            return None
        if not verdict.open:
            return False, verdict.why
    return True, ""


def _target_groups(service: Mapping[str, Any]) -> dict[int, list[str]]:
    """Container port -> the ARNs of the target groups the service registers it in."""
    found: dict[int, list[str]] = {}
    for lb in service.get("loadBalancers", ()):
        if lb.get("targetGroupArn") and lb.get("containerPort"):
            found.setdefault(int(lb["containerPort"]), []).append(str(lb["targetGroupArn"]))
    return found


async def _balancers(
    target: AwsTarget, ctx: ProbeContext
) -> dict[str, list[tuple[str, tuple[str, ...], tuple[str, ...]]]]:
    """Target group ARN -> its load balancers: name, security groups and subnets."""
    aws = ctx.use(AWS)
    tg_pages, lb_pages = await gather_all(
        aws.pages(
            target,
            "elbv2",
            operation,
            ctx.deadline,
            PaginationConfig={"PageSize": LB_PAGE_SIZE},
        )
        for operation in ("describe_target_groups", "describe_load_balancers")
    )
    balancers = {
        lb["LoadBalancerArn"]: (
            str(lb["LoadBalancerName"]),
            tuple(lb.get("SecurityGroups", ())),
            tuple(z["SubnetId"] for z in lb.get("AvailabilityZones", ()) if z.get("SubnetId")),
        )
        for page in lb_pages
        for lb in page.get("LoadBalancers", ())
    }
    return {
        tg["TargetGroupArn"]: [
            (f"the ALB {balancers[arn][0]}", *balancers[arn][1:])
            for arn in tg.get("LoadBalancerArns", ())
            if arn in balancers
        ]
        for page in tg_pages
        for tg in page.get("TargetGroups", ())
    }


async def _ec2_listed(
    target: AwsTarget, ctx: ProbeContext, operation: str, by: str, ids: Sequence[str]
) -> list[Any]:
    """Every page of an EC2 listing of these ids, by a filter: an id that is not there is
    left out of the answer, where naming it (GroupIds, SubnetIds) fails the whole call."""
    calls = await gather_all(
        ctx.use(AWS).pages(
            target,
            "ec2",
            operation,
            ctx.deadline,
            Filters=[{"Name": by, "Values": list(batch)}],
            PaginationConfig={"PageSize": EC2_PAGE_SIZE},
        )
        for batch in batches(ids, EC2_FILTER_VALUES)
    )
    return [page for pages in calls for page in pages]
