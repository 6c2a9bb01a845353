"""kind: http with `discover: {ecs: ...}`: every running task probed at its own address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import boto3
import pytest
from aiohttp import web

from stackprobe.contract import Health, Verdict
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from tests.support.aws import REGION, EcsStack, api_calls, by_operation, inject
from tests.support.probing import ProbeRunner, make_target, samples_by_name, value
from tests.support.processes import free_port


@pytest.fixture
async def tasks_serving() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """Two 'tasks' on one port at 127.0.0.2 and 127.0.0.3; the second one's Redis is down."""
    port = free_port()
    statuses = {"127.0.0.2": 200, "127.0.0.3": 503}
    runners = []
    for address, status in statuses.items():

        async def ready(_: web.Request, status: int = status) -> web.Response:
            return web.json_response(
                {"status": "ok", "db": True, "redis": status == 200}, status=status
            )

        app = web.Application()
        app.router.add_get("/health/ready", ready)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, address, port).start()
        runners.append(runner)
    yield port, statuses
    for runner in runners:
        await runner.cleanup()


def discover_target(port: int, **extra: Any) -> Any:
    ecs = {"cluster": "aep", "service": "aep-api", "port": port, "path": "/health/ready", **extra}
    return make_target(
        {"name": "aep-api-tasks", "kind": "http", "timeout": "5s", "discover": {"ecs": ecs}}
    )


async def test_each_running_task_is_probed_at_its_address(
    moto: None,
    aws: AwsClients,
    aws_metrics: AwsMetrics,
    tasks_serving: tuple[int, dict[str, int]],
) -> None:
    port, _ = tasks_serving
    stack = EcsStack(boto3.Session(region_name=REGION))
    stack.service("aep-api", desired=2)
    stack.service("aep-worker", desired=1)
    healthy, broken, stopped = stack.run_tasks("aep-api", 3)
    stack.run_tasks("aep-worker", 1)  # another service's task: never probed
    stack.set_address(healthy, "127.0.0.2")
    stack.set_address(broken, "127.0.0.3")
    stack.stop(stopped, "Scaling activity initiated by (deployment ecs-svc/1)")
    ids = {arn: arn.rsplit("/", 1)[-1] for arn in (healthy, broken)}

    result = await ProbeRunner.once(discover_target(port), aws=aws)

    assert not result.success and result.reason == "http_status"
    assert f"1 of 2 tasks failing; task {ids[broken]} at 127.0.0.3" in result.detail
    assert value(result, "stackprobe_ecs_tasks_discovered") == 2  # not the stopped, not the worker
    success = samples_by_name(result)["stackprobe_ecs_task_probe_success"]
    assert success == {(ids[healthy], "127.0.0.2"): 1, (ids[broken], "127.0.0.3"): 0}
    assert value(result, "stackprobe_ecs_task_http_status_code", ids[broken]) == 503
    assert value(result, "stackprobe_ecs_task_health_component_up", ids[broken], "redis") == 0
    assert value(result, "stackprobe_ecs_task_health_component_up", ids[healthy], "redis") == 1
    reasons = samples_by_name(result)["stackprobe_ecs_task_failure_reason"]
    assert reasons == {(ids[broken], "http_status"): 1}
    assert by_operation(api_calls(aws_metrics.registry)) == {"ListTasks": 1, "DescribeTasks": 1}
    # The failing task speaks for the service, and its body names Redis: AppRedisPoolBroken
    # (which mutes EcsTaskReadyFailing of the same task in alertmanager.yml).
    why = (
        f"1 of 2 tasks failing; task {ids[broken]} at 127.0.0.3: "
        "status 503, expected 2xx; `redis: false` in /health/ready"
    )
    assert result.health() == Verdict(Health.FAILING, why, "AppRedisPoolBroken")
    assert result.evidence[:3] == (
        ("discover", "2 running task(s) of aep/aep-api, 2 probed"),
        ("task", f"{ids[broken]} at 127.0.0.3"),
        ("request", f"GET http://127.0.0.3:{port}/health/ready"),
    )
    assert ("status", "HTTP/1.1 503 Service Unavailable") in result.evidence


async def test_no_running_task_and_a_failed_discovery(
    moto: None, aws: AwsClients, tasks_serving: tuple[int, dict[str, int]]
) -> None:
    port, _ = tasks_serving
    stack = EcsStack(boto3.Session(region_name=REGION))
    stack.service("aep-api", desired=0)
    target = discover_target(port)

    empty = await ProbeRunner.once(target, aws=aws)
    inject(aws.client(target.discover.ecs, "ecs"), "ListTasks", "AccessDeniedException", times=3)
    denied = await ProbeRunner.once(target, aws=aws)

    assert empty.reason == "no_tasks"
    assert value(empty, "stackprobe_ecs_tasks_discovered") == 0
    assert denied.reason == "discovery_failed"
    assert "ecs:ListTasks" in denied.detail
    # No running task: what EcsServiceNoRunningTasks pages on (the ecs_service kind's series).
    assert empty.health() == Verdict(Health.FAILING, empty.detail, "EcsServiceNoRunningTasks")
    assert empty.evidence == (("discover", "0 running task(s) of aep/aep-api, 0 probed"),)
    # No stackprobe_ecs_tasks_discovered series: the role's own rule fires for the target.
    assert denied.health() == Verdict(Health.FAILING, denied.detail, "HealthReadyFailing")
    assert denied.evidence == (("discover", "running tasks of aep/aep-api: the ECS calls failed"),)


async def test_a_task_that_refuses_pages_as_a_task(
    moto: None, aws: AwsClients, tasks_serving: tuple[int, dict[str, int]]
) -> None:
    """No body, no component: EcsTaskReadyFailing, whatever the target's role."""
    port, _ = tasks_serving
    stack = EcsStack(boto3.Session(region_name=REGION))
    stack.service("aep-api", desired=2)
    healthy, refusing = stack.run_tasks("aep-api", 2)
    stack.set_address(healthy, "127.0.0.2")
    stack.set_address(refusing, "127.0.0.4")  # nothing listens there
    task = refusing.rsplit("/", 1)[-1]

    result = await ProbeRunner.once(discover_target(port), aws=aws)

    verdict = result.health()
    assert (verdict.health, verdict.alert) == (Health.FAILING, "EcsTaskReadyFailing")
    assert verdict.why.startswith(f"1 of 2 tasks failing; task {task} at 127.0.0.4: ")
    assert ("failed in", "the connect phase") in result.evidence


def test_url_and_discover_are_exclusive() -> None:
    from stackprobe.config import ConfigError

    with pytest.raises(ConfigError, match="missing required key `url`"):
        make_target({"name": "x", "kind": "http"})
    ecs = {"cluster": "c", "service": "s", "port": 80}
    with pytest.raises(ConfigError, match="not both"):
        make_target({"name": "x", "kind": "http", "url": "http://a/", "discover": {"ecs": ecs}})


async def test_max_tasks_bounds_the_tasks_probed(
    moto: None, aws: AwsClients, tasks_serving: tuple[int, dict[str, int]]
) -> None:
    port, _ = tasks_serving
    stack = EcsStack(boto3.Session(region_name=REGION))
    stack.service("aep-api", desired=3)
    arns = stack.run_tasks("aep-api", 3)
    for arn in arns:
        stack.set_address(arn, "127.0.0.2")

    result = await ProbeRunner.once(discover_target(port, max_tasks=2), aws=aws)

    assert result.success, result.detail
    assert value(result, "stackprobe_ecs_tasks_discovered") == 3
    assert len(samples_by_name(result)["stackprobe_ecs_task_probe_success"]) == 2
    assert result.health() == Verdict(Health.OK)
    assert result.evidence[0] == ("discover", "3 running task(s) of aep/aep-api, 2 probed")
    assert ("status", "HTTP/1.1 200 OK") in result.evidence
