"""`cluster.ecs`: the members of a stackprobe cluster are the RUNNING tasks of its own ECS
service, as the task metadata endpoint (v4) and ListTasks/DescribeTasks tell.

This replica's identity is its task ARN, from `$ECS_CONTAINER_METADATA_URI_V4/task`, which
also gives the cluster and the service when the config does not. The calls run on a daemon
thread, one refresh at a time, each with botocore's timeouts, and
are counted apart from the probes' calls (`stackprobe_cluster_membership_calls_total`), so
what clustering costs in AWS calls is its own figure. A task that is still starting or
already stopping is no member: only RUNNING tasks own targets, and this replica is always
one of them (exporter/cluster.py), whatever ECS says.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CollectorRegistry, Counter

from stackprobe.cluster import EcsMembershipSettings, View
from stackprobe.daemon_thread import run_in_daemon_thread

METADATA_ENV = "ECS_CONTAINER_METADATA_URI_V4"
METADATA_TIMEOUT_SECONDS = 2.0
# DescribeTasks takes at most 100 tasks per call.
DESCRIBE_BATCH = 100
T = TypeVar("T")


class EcsMembershipError(Exception):
    """What keeps the member list from being known, in words: the last list stays."""


class EcsMembership:
    dynamic = True

    def __init__(
        self,
        settings: EcsMembershipSettings,
        registry: CollectorRegistry,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self._client: Any = None
        self._identity: str | None = None
        self._cluster = settings.cluster
        self._service = settings.service
        self._region = settings.region
        self.calls = Counter(
            "stackprobe_cluster_membership_calls",
            "AWS API calls made to learn the cluster's members, by operation and result "
            "(success or failure); the probes' own calls are counted apart.",
            ["operation", "result"],
            registry=registry,
        )

    async def view(self) -> View:
        """On a daemon thread of its own: a call that hangs past the app's limit is left
        behind, and never holds up stackprobe's exit (the app asks one at a time)."""
        return await run_in_daemon_thread(self._view, "cluster members")

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()

    def _view(self) -> View:
        if self._identity is None:
            self._identify()
        assert self._identity is not None and self._cluster and self._service
        try:  # botocore finds its credentials here, which may fail as a call does
            client = self.client()
        except BotoCoreError as exc:
            raise EcsMembershipError(f"no ECS client: {exc}") from exc
        arns: list[str] = []
        pages = client.get_paginator("list_tasks").paginate(
            cluster=self._cluster, serviceName=self._service, desiredStatus="RUNNING"
        )
        iterator = iter(pages)
        while True:
            page = self._call("ListTasks", lambda: next(iterator, None))
            if page is None:
                break
            arns += page.get("taskArns", [])
        running: list[str] = []
        for start in range(0, len(arns), DESCRIBE_BATCH):
            batch = arns[start : start + DESCRIBE_BATCH]
            found: dict[str, Any] = self._call(
                "DescribeTasks",
                functools.partial(client.describe_tasks, cluster=self._cluster, tasks=batch),
            )
            running += [
                t["taskArn"] for t in found.get("tasks", []) if t.get("lastStatus") == "RUNNING"
            ]
        members = tuple(sorted({*running, self._identity}))  # itself, whatever ECS says
        return View(self._identity, members, len(members))

    def _identify(self) -> None:
        """This task's ARN, and the cluster, service and region the config leaves out."""
        base = self._environ.get(METADATA_ENV)
        if not base:
            raise EcsMembershipError(
                f"${METADATA_ENV} is not set: cluster.ecs needs to run as an ECS task "
                "(Fargate sets it; on EC2 the agent 1.39 or later)"
            )
        # never through a proxy (HTTP_PROXY): the endpoint is the task's own, link-local
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with direct.open(f"{base}/task", timeout=METADATA_TIMEOUT_SECONDS) as answer:
                task = json.loads(answer.read(1024 * 1024))
        except (OSError, ValueError) as exc:
            raise EcsMembershipError(f"the task metadata endpoint did not answer: {exc}") from exc
        arn = task.get("TaskARN")
        if not isinstance(arn, str) or not arn.startswith("arn:"):
            raise EcsMembershipError("the task metadata has no TaskARN")
        self._cluster = self._cluster or task.get("Cluster")
        self._service = self._service or task.get("ServiceName")
        if not self._service:
            raise EcsMembershipError(
                "the task metadata names no service (a task not started by a service?): "
                "set cluster.ecs.service"
            )
        self._region = self._region or arn.split(":")[3]
        self._identity = arn

    def client(self) -> Any:
        """The ECS client, built on first use."""
        if self._client is None:
            import botocore.config
            import botocore.session

            self._client = botocore.session.get_session().create_client(
                "ecs",
                region_name=self._region,
                endpoint_url=self.settings.endpoint_url,
                config=botocore.config.Config(
                    connect_timeout=3,
                    read_timeout=5,
                    retries={"mode": "standard", "max_attempts": 2},
                ),
            )
        return self._client

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        try:
            result = call()
        except (BotoCoreError, ClientError) as exc:
            self.calls.labels(operation, "failure").inc()
            raise EcsMembershipError(f"{operation}: {exc}") from exc
        if result is not None:
            self.calls.labels(operation, "success").inc()
        return result
