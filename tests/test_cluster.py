"""Several replicas sharing one config (exporter/cluster.py): every target has exactly its
number of owners, a member that leaves moves only its own targets, the member list comes from
a static index or from ECS (moto, with AWS's paging and batch limits), and a replica keeps
probing a target it hands over until the new owner has run it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from stackprobe.app import App, Outcome
from stackprobe.cluster import (
    Cluster,
    ClusterSettings,
    EcsMembershipSettings,
    View,
    owners,
    with_overrides,
)
from stackprobe.config import ConfigError, load_config, parse_config
from stackprobe.landing import render_landing
from stackprobe.probes import KINDS, MEMBERSHIPS
from stackprobe.probes._ecs_members import METADATA_ENV, EcsMembership, EcsMembershipError
from stackprobe.secrets import Redactor
from tests.support.aws import EcsStack, boto3_session, faithful_aws, inject
from tests.support.cluster_stack import Loopback
from tests.support.polling import wait_until_async
from tests.support.processes import require_binary, run


async def _until(condition: Callable[[], object], seconds: float, what: str) -> None:
    """Poll a plain condition while the test's loop runs the app."""

    async def check() -> object:
        return condition()

    await wait_until_async(check, seconds, what=what)


def test_every_key_has_exactly_its_number_of_owners_spread_evenly() -> None:
    members = ["0", "1", "2"]
    keys = [f"target-{i}" for i in range(3000)]
    for replicas in (1, 2, 3):
        load: Counter[str] = Counter()
        for key in keys:
            found = owners(key, members, replicas)
            assert len(set(found)) == replicas
            load.update(found)
        share = 3000 * replicas / 3
        assert all(abs(n - share) < share * 0.1 for n in load.values()), load


def test_a_member_that_leaves_moves_only_its_own_keys() -> None:
    keys = [f"target-{i}" for i in range(2000)]
    before = {key: owners(key, ["a", "b", "c", "d"], 2) for key in keys}
    after = {key: owners(key, ["a", "b", "d"], 2) for key in keys}
    for key in keys:
        kept = [m for m in before[key] if m != "c"]
        # every owner but the one that left keeps the key, in the same order
        assert after[key][: len(kept)] == kept
        if "c" not in before[key]:
            assert after[key] == before[key]
    moved = sum(after[key] != before[key] for key in keys)
    assert 0.4 * 2000 < moved < 0.6 * 2000  # half the keys had c among their two owners


def test_the_replica_index_comes_from_the_flags_over_the_file_and_says_what_is_missing() -> None:
    file = ClusterSettings(count=3)
    assert with_overrides(file, 2, None).index == 2
    assert with_overrides(ClusterSettings(index=0, count=3), 1, None).index == 1
    with pytest.raises(ValueError, match="STACKPROBE_CLUSTER_INDEX") as missing:
        with_overrides(file, None, None)
    assert "cluster.count is 3" in str(missing.value)
    with pytest.raises(ValueError, match="index 3 is not below count 3"):
        with_overrides(file, 3, None)
    with pytest.raises(ValueError, match="not both"):
        with_overrides(ClusterSettings(ecs=EcsMembershipSettings()), 1, None)


def test_a_bad_cluster_section_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "cluster:\n  count: 2\n  shard_key: account\n"
        "targets:\n  - {name: a, kind: http, url: 'http://127.0.0.1:9/', replicas: 0}\n"
    )
    with pytest.raises(ConfigError) as failed:
        load_config(path, KINDS)
    text = str(failed.value)
    assert "c.yml:3: cluster.shard_key:" in text and "'target' or 'group'" in text
    assert "c.yml:5: targets[0].replicas:" in text
    path.write_text("cluster:\n  index: 4\n  count: 2\ntargets: []\n")
    with pytest.raises(ConfigError) as failed:
        load_config(path, KINDS)
    assert "c.yml:2: cluster: index 4 is not below count 2: replicas are numbered 0 to" in str(
        failed.value
    )


def _config(targets: int, cluster: str = "", own: str = "") -> str:
    """`targets` http targets to a closed port, one pinned to 3 replicas and one to 1; `own`
    is more keys for each of the first ones."""
    lines = [cluster, "defaults: {interval: 2s, timeout: 1s}", "targets:"]
    for i in range(targets):
        lines.append(f"  - {{name: web-{i}, kind: http, url: 'http://127.0.0.1:9/{i}'{own}}}")
    lines.append("  - {name: pinned, kind: http, url: 'http://127.0.0.1:9/p', replicas: 3}")
    lines.append("  - {name: single, kind: http, url: 'http://127.0.0.1:9/s', replicas: 1}")
    return "\n".join(lines) + "\n"


def _samples(app: App, name: str) -> dict[str, float]:
    body = app.exposition.body(openmetrics=False, names=frozenset({name})).decode()
    return {
        s.labels["target"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


async def test_three_static_replicas_probe_each_target_as_often_as_it_asks() -> None:
    config = parse_config(_config(60), "<test>", KINDS)
    apps = [
        App(
            config,
            kinds=KINDS,
            redactor=Redactor(),
            config_path=None,
            cluster_overrides=(index, 3),
        )
        for index in range(3)
    ]
    try:
        for app in apps:
            app.start()
        await asyncio.sleep(0.1)  # the first apply starts its tasks in slices
        probed: Counter[str] = Counter(t.name for app in apps for t in app.scheduler.targets)
        wanted = {f"web-{i}": 2 for i in range(60)} | {"pinned": 3, "single": 1}
        assert dict(probed) == wanted
        for app in apps:
            owned = _samples(app, "stackprobe_target_owned")
            assert set(owned) == set(wanted)  # every replica says it of every target
            mine = {t.name for t in app.scheduler.targets}
            assert {t for t, v in owned.items() if v == 1} == mine
            assert _samples(app, "stackprobe_target_replicas") == wanted
        # and each owner's share is about even
        shares = [len(app.scheduler.targets) for app in apps]
        assert max(shares) - min(shares) < 20, shares
        # each replica's console says that it shows its share
        page = render_landing(apps[1])
        share = len(apps[1].scheduler.targets)
        assert f"replica 1, one of 3: it probes {share} of the config's 62 targets" in page
    finally:
        for app in apps:
            await app.stop()


async def test_without_a_cluster_one_process_owns_every_target_once() -> None:
    config = parse_config(_config(5), "<test>", KINDS)
    app = App(config, kinds=KINDS, redactor=Redactor(), config_path=None)
    app.start()
    try:
        await asyncio.sleep(0.05)
        assert len(app.scheduler.targets) == 7
        assert set(_samples(app, "stackprobe_target_replicas").values()) == {1.0}
        assert set(_samples(app, "stackprobe_target_owned").values()) == {1.0}
    finally:
        await app.stop()


class ScriptedMembership:
    """A dynamic member list the test changes, or breaks."""

    dynamic = True

    def __init__(self, identity: str, members: list[str]) -> None:
        self.identity = identity
        self.members = members
        self.error: Exception | None = None
        self.asked = 0

    async def view(self) -> View:
        self.asked += 1
        if self.error is not None:
            raise self.error
        return View(self.identity, tuple(self.members), len(self.members))

    async def aclose(self) -> None:
        pass


def _scripted_app(config_text: str, membership: ScriptedMembership) -> App:
    return App(
        parse_config(config_text, "<test>", KINDS),
        kinds=KINDS,
        redactor=Redactor(),
        config_path=None,
        memberships={"ecs": lambda settings, registry: membership},
    )


async def test_a_new_member_takes_its_share_after_the_old_owner_handed_it_over() -> None:
    membership = ScriptedMembership("a", ["a"])
    cluster = "cluster: {ecs: {cluster: probes}, refresh: 1s, handover: 1s}"
    app = _scripted_app(_config(40, cluster, ", replicas: 1"), membership)
    app.start()
    try:
        await _until(lambda: app.ready().ok, 10, what="the first runs")
        assert len(app.scheduler.targets) == 42  # alone, it owns everything
        membership.members = ["a", "b"]
        config = app.config
        # b's share: pinned asks for 3 owners, so both have it
        moving = {
            t.name
            for t in config.targets
            if t.name != "pinned" and owners(t.name, ["a", "b"], 1) == ["b"]
        }
        assert 10 < len(moving) < 31

        def owned() -> set[str]:
            return {t for t, v in _samples(app, "stackprobe_target_owned").items() if v == 1}

        await _until(lambda: not owned() & moving, 5, what="the new ownership")
        assert owned() == {t.name for t in config.targets} - moving
        # b's new targets are still probed here until b has had time to run them
        assert moving <= {t.name for t in app.scheduler.targets}
        handover = app._handover_seconds(config.targets[0])
        await _until(
            lambda: not moving & {t.name for t in app.scheduler.targets},
            handover + 3,
            what="the handover to end",
        )
        assert {t.name for t in app.scheduler.targets} == owned()
        # their series went with them; the others' stay
        assert set(_samples(app, "probe_success")) == owned()
    finally:
        await app.stop()


async def test_a_member_list_that_fails_keeps_the_last_and_counts_the_failure() -> None:
    membership = ScriptedMembership("a", ["a", "b", "c"])
    app = _scripted_app(_config(30, "cluster: {ecs: {}, refresh: 1s}"), membership)
    app.start()
    try:
        await _until(lambda: app.ready().ok, 10, what="the first runs")
        before = {t.name for t in app.scheduler.targets}
        assert 0 < len(before) < 32
        membership.error = EcsMembershipError("ListTasks: AccessDeniedException")
        asked = membership.asked
        await _until(lambda: membership.asked >= asked + 2, 5, what="two refreshes")
        assert {t.name for t in app.scheduler.targets} == before
        refreshes = app.metrics.registry.get_sample_value(
            "stackprobe_cluster_membership_refreshes_total", {"result": "failure"}
        )
        assert refreshes is not None and refreshes >= 2
    finally:
        await app.stop()


async def test_a_member_list_unknown_at_start_owns_every_target_rather_than_none() -> None:
    membership = ScriptedMembership("a", ["a", "b"])
    membership.error = EcsMembershipError("the task metadata endpoint did not answer")
    app = _scripted_app(_config(10, "cluster: {ecs: {}, refresh: 1s}"), membership)
    app.start()
    try:
        await _until(lambda: app.ready().ok, 10, what="the first runs")
        assert len(app.scheduler.targets) == 12
    finally:
        await app.stop()


class HeldMembership(ScriptedMembership):
    """A member list that answers only once the test lets it."""

    def __init__(self, identity: str, members: list[str]) -> None:
        super().__init__(identity, members)
        self.answer = asyncio.Event()

    async def view(self) -> View:
        await self.answer.wait()
        return await super().view()


async def test_before_the_first_member_list_nothing_runs_not_even_after_a_reload() -> None:
    membership = HeldMembership("a", ["a", "b"])
    app = _scripted_app(_config(10, "cluster: {ecs: {}, refresh: 5s}"), membership)
    app.start()
    try:
        await asyncio.sleep(0.2)
        assert app.ready() == Outcome(False, "waiting for the cluster's member list")
        await app._applied(app._schedule())  # what a reload that comes first applies
        assert app.scheduler.targets == []
        membership.answer.set()
        await _until(lambda: app.ready().ok, 10, what="the first runs")
        assert 0 < len(app.scheduler.targets) < 12
    finally:
        await app.stop()


async def test_a_member_list_that_hangs_counts_as_a_failed_refresh() -> None:
    membership = HeldMembership("a", ["a"])
    registry = CollectorRegistry()
    cluster = Cluster(ClusterSettings(ecs=EcsMembershipSettings()), membership, registry)
    changed, error = await cluster.refresh(0.2)
    assert (changed, error) == (False, "no answer within 0.2s")
    assert (
        registry.get_sample_value(
            "stackprobe_cluster_membership_refreshes_total", {"result": "failure"}
        )
        == 1
    )


# What the task metadata endpoint says of a task of stackprobe's own service.
A_TASK = {
    "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/probes/abc",
    "Cluster": "probes",
    "ServiceName": "stackprobe",
}


@pytest.fixture
def metadata() -> Iterator[tuple[str, dict[str, Any]]]:
    """The task metadata endpoint (v4), serving what the test puts in the dict as `/task`."""
    task: dict[str, Any] = {}
    server = Loopback(
        lambda path: (200, json.dumps(task).encode()) if path == "/v4/task" else (404, b"{}")
    )
    try:
        yield f"{server.url}/v4", task
    finally:
        server.close()


async def test_ecs_members_are_the_running_tasks_of_the_service_paged_and_batched(
    metadata: tuple[str, dict[str, Any]],
) -> None:
    url, task = metadata
    with faithful_aws():
        stack = EcsStack(boto3_session(), "probes")
        definition = stack.task_definition("stackprobe")
        stack.service("stackprobe", desired=130, task_definition=definition)
        stack.service("other", desired=1, task_definition=definition)
        tasks = stack.run_tasks("stackprobe", 130)  # more than a page, and a batch, of them
        stack.run_tasks("other", 1)
        task.update(TaskARN=tasks[0], Cluster=stack.cluster, ServiceName="stackprobe")
        registry = CollectorRegistry()
        membership = EcsMembership(EcsMembershipSettings(), registry, {METADATA_ENV: url})
        try:
            view = await membership.view()
            assert view.identity == tasks[0]
            assert sorted(view.members) == sorted(tasks)
            stack.stop(tasks[5], "Scaling activity initiated by deployment")
            view = await membership.view()
            assert tasks[5] not in view.members and len(view.members) == 129
            calls = {
                (s.labels["operation"], s.labels["result"]): s.value
                for f in registry.collect()
                for s in f.samples
                if s.name == "stackprobe_cluster_membership_calls_total"
            }
            # two pages of ListTasks and two batches of DescribeTasks per view
            assert calls == {("ListTasks", "success"): 4, ("DescribeTasks", "success"): 4}
            inject(membership.client(), "ListTasks", "AccessDeniedException")
            with pytest.raises(EcsMembershipError, match=r"ListTasks: .*AccessDenied"):
                await membership.view()
        finally:
            await membership.aclose()


async def test_a_client_that_cannot_be_made_is_a_failed_refresh(
    metadata: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, aws_env: None
) -> None:
    url, task = metadata
    task.update(A_TASK)
    monkeypatch.setenv("AWS_PROFILE", "nowhere")  # a profile that does not exist
    membership = EcsMembership(EcsMembershipSettings(), CollectorRegistry(), {METADATA_ENV: url})
    try:
        with pytest.raises(EcsMembershipError, match=r"^no ECS client: .*nowhere"):
            await membership.view()
    finally:
        await membership.aclose()


async def test_ecs_membership_outside_ecs_says_what_it_needs() -> None:
    membership = EcsMembership(EcsMembershipSettings(), CollectorRegistry(), {})
    try:
        with pytest.raises(EcsMembershipError, match=METADATA_ENV):
            await membership.view()
    finally:
        await membership.aclose()


def test_the_ecs_membership_is_what_cluster_ecs_builds() -> None:
    settings = ClusterSettings(ecs=EcsMembershipSettings(cluster="probes"))
    registry = CollectorRegistry()
    built = MEMBERSHIPS["ecs"](settings, registry)
    assert isinstance(built, EcsMembership) and built.settings.cluster == "probes"
    assert Cluster(settings, built, registry).dynamic


def test_the_ha_deployment_example_checks_with_promtool_and_stackprobe() -> None:
    """deploy/ha/: the Prometheus of the HA pair (which tests/e2e/test_cluster_ha.py runs)
    and the replicas' config are valid as shipped."""
    deploy = Path(__file__).parent.parent / "deploy" / "ha"
    checked = run(require_binary("promtool"), "check", "config", deploy / "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = load_config(deploy / "stackprobe.yml", KINDS)
    assert config.cluster.ecs is not None and not config.warnings
    wanted = {t.name: t.replicas or KINDS[t.kind].replicas for t in config.targets}
    assert wanted["aep-backend-live"] == 2 and wanted["aep-ecs"] == 1


async def test_the_task_metadata_is_never_asked_through_a_proxy(
    metadata: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, aws_env: None
) -> None:
    """HTTP_PROXY is for the probes' world, not the task's own link-local endpoint."""
    url, task = metadata
    task.update(A_TASK)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    settings = EcsMembershipSettings(endpoint_url="http://127.0.0.1:9")
    membership = EcsMembership(settings, CollectorRegistry(), {METADATA_ENV: url})
    try:
        # past the metadata, on to ECS (which is not there)
        with pytest.raises(EcsMembershipError, match=r"^ListTasks: "):
            await membership.view()
    finally:
        await membership.aclose()
