"""probes/_sg_paths.py: security-group paths judged from DescribeSecurityGroups' shape."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from stackprobe.probes._sg_paths import Group, Side, group, path

ALL_OUT = {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}  # AWS's default egress


def sg(
    ident: str, ingress: list[dict[str, Any]] = (), egress: list[dict[str, Any]] | None = None
) -> Group:  # type: ignore[assignment]
    return group(
        {
            "GroupId": ident,
            "GroupName": f"{ident}-name",
            "IpPermissions": list(ingress),
            "IpPermissionsEgress": [ALL_OUT] if egress is None else egress,
        }
    )


def tcp(
    low: int, high: int | None = None, *, groups: tuple[str, ...] = (), cidrs: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "IpProtocol": "tcp",
        "FromPort": low,
        "ToPort": low if high is None else high,
        "UserIdGroupPairs": [{"GroupId": g, "UserId": "123456789012"} for g in groups],
        "IpRanges": [{"CidrIp": c} for c in cidrs],
        "Ipv6Ranges": [],
        "PrefixListIds": [],
    }


ALB = Side("the ALB", ("sg-alb",), (ip_network("10.0.0.0/24"), ip_network("10.0.1.0/24")))
TASKS = Side("the tasks", ("sg-tasks",), (ip_network("10.0.10.0/24"),))


def judge(
    tasks_ingress: list[dict[str, Any]], alb_egress: list[dict[str, Any]] | None = None
) -> Any:
    groups = {"sg-alb": sg("sg-alb", egress=alb_egress), "sg-tasks": sg("sg-tasks", tasks_ingress)}
    return path(ALB, TASKS, 8787, groups)


@pytest.mark.parametrize(
    "rule",
    [
        tcp(8787, groups=("sg-alb",)),
        tcp(8000, 9000, groups=("sg-alb",)),  # a range holding the port
        {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": "sg-alb"}]},  # every protocol
        tcp(8787, cidrs=("0.0.0.0/0",)),
        tcp(8787, cidrs=("10.0.0.0/16",)),  # holds both of the ALB's subnets
        tcp(8787, cidrs=("10.0.0.0/23",)),  # exactly them
        {
            "IpProtocol": "6",
            "FromPort": 8787,
            "ToPort": 8787,
            "UserIdGroupPairs": [{"GroupId": "sg-alb"}],
        },
    ],
)
def test_ingress_that_admits_the_source_on_the_port_opens_the_path(rule: dict[str, Any]) -> None:
    assert judge([rule]) == (True, "")


@pytest.mark.parametrize(
    "rule",
    [
        tcp(8000, groups=("sg-alb",)),  # another port
        tcp(8788, 9000, groups=("sg-alb",)),  # a range just above it
        tcp(8787, groups=("sg-other",)),  # another group
        tcp(8787, cidrs=("10.0.0.0/24",)),  # one of the ALB's two subnets only
        tcp(8787, cidrs=("192.168.0.0/16",)),
        {**tcp(8787), "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},  # IPv6 carries no IPv4 traffic
        {**tcp(8787), "PrefixListIds": [{"PrefixListId": "pl-1"}]},  # not resolved
        {
            "IpProtocol": "udp",
            "FromPort": 8787,
            "ToPort": 8787,
            "UserIdGroupPairs": [{"GroupId": "sg-alb"}],
        },
        {
            "IpProtocol": "icmp",
            "FromPort": -1,
            "ToPort": -1,
            "UserIdGroupPairs": [{"GroupId": "sg-alb"}],
        },
    ],
)
def test_ingress_that_does_not_admit_it_closes_the_path_and_says_so(rule: dict[str, Any]) -> None:
    opened, why = judge([rule])

    assert not opened
    assert why == (
        "sg-tasks (sg-tasks-name) of the tasks allows no ingress on tcp/8787 from the ALB (sg-alb)"
    )


def test_no_ingress_at_all_is_closed() -> None:
    assert not judge([]).open


def test_egress_narrowed_away_from_the_destination_closes_it() -> None:
    opened, why = judge(
        [tcp(8787, groups=("sg-alb",))], alb_egress=[tcp(443, cidrs=("0.0.0.0/0",))]
    )

    assert not opened
    assert (
        why
        == "sg-alb (sg-alb-name) of the ALB allows no egress on tcp/8787 to the tasks (sg-tasks)"
    )


@pytest.mark.parametrize(
    "egress",
    [
        [tcp(8787, groups=("sg-tasks",))],
        [tcp(8787, cidrs=("10.0.10.0/24",))],  # the tasks' one subnet
        [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}],
    ],
)
def test_egress_to_the_destination_by_group_or_range_opens_it(egress: list[dict[str, Any]]) -> None:
    assert judge([tcp(8787, groups=("sg-alb",))], alb_egress=egress).open


def test_a_range_counts_for_a_side_of_unknown_subnets_only_when_it_is_everywhere() -> None:
    groups = {"sg-tasks": sg("sg-tasks"), "sg-db": sg("sg-db", [tcp(5432, cidrs=("10.0.0.0/8",))])}
    tasks = Side("the tasks", ("sg-tasks",))  # subnets unknown
    db = Side("postgres", ("sg-db",))

    assert not path(tasks, db, 5432, groups).open
    groups["sg-db"] = sg("sg-db", [tcp(5432, cidrs=("0.0.0.0/0",))])
    assert path(tasks, db, 5432, groups).open


def test_any_of_several_groups_on_either_side_is_enough() -> None:
    groups = {
        "sg-a": sg("sg-a", egress=[]),
        "sg-b": sg("sg-b"),
        "sg-x": sg("sg-x"),
        "sg-y": sg("sg-y", [tcp(6379, groups=("sg-b",))]),
    }
    source = Side("the tasks", ("sg-a", "sg-b"))
    destination = Side("redis", ("sg-x", "sg-y"))

    assert path(source, destination, 6379, groups).open


def test_a_missing_group_or_an_empty_side_cannot_tell() -> None:
    groups = {"sg-alb": sg("sg-alb")}

    assert path(ALB, TASKS, 8787, groups) is None
    assert path(ALB, Side("the tasks", ()), 8787, groups) is None


def test_a_reason_names_at_most_three_groups_of_the_other_side() -> None:
    source = Side("the ALB", ("sg-1", "sg-2", "sg-3", "sg-4"))
    groups = {g: sg(g) for g in ("sg-1", "sg-2", "sg-3", "sg-4", "sg-tasks")}

    opened, why = path(source, Side("the tasks", ("sg-tasks",)), 80, groups)

    assert not opened
    assert why.endswith("from the ALB (sg-1, sg-2, sg-3 and 1 more)")
