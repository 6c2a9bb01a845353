"""Shared fixtures: real peers on loopback, probe contexts, and the CI rule for binaries."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from stackprobe.config import parse_config
from stackprobe.probe import ProbeContext, ProbeResult
from stackprobe.probes import KINDS
from stackprobe.probes._aws_api import AWS, AwsClients, AwsMetrics, AwsSettings
from stackprobe.probes._http_clients import HTTP_CLIENTS, HttpClients
from stackprobe.target import TargetConfig
from tests.servers import Peers, PeerServers

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(name: str) -> str:
    """The binary's path; in CI a missing one fails the test, elsewhere it skips with why."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        message = f"{name} is not installed; `make test` (scripts/setup.sh) installs it"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout`."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    servers = PeerServers(tmp_path_factory.mktemp("peers"))
    yield servers.start()
    servers.stop()


def make_target(raw: dict[str, Any], environ: dict[str, str] | None = None) -> TargetConfig:
    """A target validated the way the config loader does it, defaults included."""
    config = parse_config(yaml.safe_dump({"targets": [raw]}), "<test>", KINDS, environ or {})
    return config.targets[0]


@pytest.fixture
async def http_clients() -> AsyncIterator[HttpClients]:
    clients = HttpClients(max_connections=64)
    yield clients
    await clients.aclose()


RunProbe = Callable[..., Any]

# For the kinds that call no AWS API: a factory that is never asked for a client.
UNUSED_AWS = AwsClients(AwsSettings(), AwsMetrics(CollectorRegistry()))


@pytest.fixture
def run_probe(http_clients: HttpClients) -> RunProbe:
    """Run one target's probe directly, with its deadline, the way the scheduler would."""

    async def run(target: TargetConfig) -> ProbeResult:
        runner = KeptStateRunner(target, http=http_clients)
        try:
            return await runner.run()
        finally:
            await runner.close()

    return run


class KeptStateRunner:
    """Runs one target the way the scheduler does: its kind's state kept across runs, a
    fresh deadline each run, and the shared resources its kind declares."""

    def __init__(
        self,
        target: TargetConfig,
        aws: AwsClients | None = None,
        *,
        http: HttpClients | None = None,
    ) -> None:
        self.target = target
        kind = KINDS[target.kind]
        self.resources = {HTTP_CLIENTS: http or HttpClients(1), AWS: aws or UNUSED_AWS}
        self.resources = {shared: self.resources[shared] for shared in kind.resources}
        self.state: Any = kind.state(target) if kind.state is not None else None

    async def run(self) -> ProbeResult:
        loop = asyncio.get_running_loop()
        ctx = ProbeContext(loop.time() + self.target.timeout, self.state, self.resources)
        result: ProbeResult = await KINDS[self.target.kind].probe(self.target, ctx)
        return result

    async def close(self) -> None:
        if self.state is not None:
            await self.state.aclose()


async def run_once(target: TargetConfig, aws: AwsClients) -> ProbeResult:
    """One run with a state of its own, closed after, as a newly started target's first run."""
    runner = KeptStateRunner(target, aws)
    try:
        return await runner.run()
    finally:
        await runner.close()


def samples_by_name(result: ProbeResult) -> dict[str, dict[tuple[str, ...], float]]:
    found: dict[str, dict[tuple[str, ...], float]] = {}
    for sample in result.samples:
        found.setdefault(sample.spec.name, {})[sample.label_values] = sample.value
    return found


def value(result: ProbeResult, name: str, *labels: str) -> float:
    return samples_by_name(result)[name][labels]


@pytest.fixture
def fixtures_dir() -> Path:
    return Path(__file__).parent / "fixtures"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Canary credentials and a region, and nothing from the machine's own AWS setup."""
    from tests.aws import CANARY_KEY_ID, CANARY_SECRET, REGION

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
    from tests.aws import faithful_aws

    with faithful_aws():
        yield


@pytest.fixture
def aws_metrics() -> AwsMetrics:
    return AwsMetrics(CollectorRegistry())


@pytest.fixture
def aws(moto: None, aws_metrics: AwsMetrics) -> Iterator[AwsClients]:
    """A client factory talking to moto, with stackprobe's own call accounting."""
    from tests.aws import REGION

    clients = AwsClients(AwsSettings(region=REGION), aws_metrics)
    yield clients
    clients.shutdown()
