"""Shared fixtures: real peers on loopback, HTTP clients and probe runs, and AWS in moto.
The helpers they are built from live in tests/support."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvloop
from prometheus_client import CollectorRegistry

from stackprobe.probes._aws_api import AwsClients, AwsMetrics, AwsSettings
from stackprobe.probes._http_clients import HttpClients
from tests.support.peers import Peers, PeerServers
from tests.support.probing import ProbeRunner, RunProbe


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, object]:
    """Every async test on uvloop, the loop `stackprobe run` uses (exporter/cli.py)."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    servers = PeerServers(tmp_path_factory.mktemp("peers"))
    yield servers.start()
    servers.stop()


@pytest.fixture
async def http_clients() -> AsyncIterator[HttpClients]:
    clients = HttpClients(max_connections=64)
    yield clients
    await clients.aclose()


@pytest.fixture
def run_probe(http_clients: HttpClients) -> RunProbe:
    """Run one target's probe directly, with its deadline, the way the scheduler would."""
    return functools.partial(ProbeRunner.once, http=http_clients)


@pytest.fixture
def fixtures_dir() -> Path:
    return Path(__file__).parent / "fixtures"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Canary credentials and a region, and nothing from the machine's own AWS setup."""
    from tests.support.aws import CANARY_KEY_ID, CANARY_SECRET, REGION

    for name in list(os.environ):
        if name.startswith(("AWS_", "MOTO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CANARY_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto(aws_env: None) -> Iterator[None]:
    from tests.support.aws import faithful_aws

    with faithful_aws():
        yield


@pytest.fixture
def aws_metrics() -> AwsMetrics:
    return AwsMetrics(CollectorRegistry())


@pytest.fixture
def aws(moto: None, aws_metrics: AwsMetrics) -> Iterator[AwsClients]:
    """A client factory talking to moto, with stackprobe's own call accounting."""
    from tests.support.aws import REGION

    clients = AwsClients(AwsSettings(region=REGION), aws_metrics)
    yield clients
    clients.shutdown()


# The long e2e modules, placed (see pytest_collection_modifyitems).
INCIDENTS = "tests/e2e/test_incidents.py"
BROWSER = "tests/e2e/test_console_browser.py"
CLUSTER = "tests/e2e/test_cluster_ha.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`make test` runs two processes and hands each a module at a time, in this order
    (xdist's loadscope, not reordered), giving a process its next module once it has two
    tests or fewer left. The e2e incidents go first, then one module of unit tests (the
    other process's first), then the browser test: the process running the incidents (two
    tests) takes it next and runs it after them, never beside them, whose load would eat
    the e2e clock's one-second margins between a cause and the symptom it mutes; the other
    process runs unit tests meanwhile. The HA cluster's e2e (one test) goes last: whichever
    process takes it is the last to finish, by its minute only. (Last were the cluster and
    the browser test, which one process then ran back to back, the other idle: 4 minutes.)"""

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    order = list(dict.fromkeys(module(item) for item in items))
    rest = [m for m in order if m not in (INCIDENTS, BROWSER, CLUSTER)]
    placed = [m for m in (INCIDENTS, *rest[:1], BROWSER, *rest[1:], CLUSTER) if m in order]
    rank = {m: i for i, m in enumerate(placed)}
    items.sort(key=lambda item: rank[module(item)])
