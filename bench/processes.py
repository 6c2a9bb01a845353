"""What every benchmark here needs to run and watch the processes it compares: the tests' own
helpers (tests/support) where a benchmark does the same, and what only a benchmark does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import exporter, polling  # noqa: E402
from tests.support.datastores import RedisServer  # noqa: E402
from tests.support.processes import free_port  # noqa: E402
from tests.support.slowloris import Slowloris  # noqa: E402

__all__ = [
    "PROMETHEUS_ACCEPT",
    "RedisServer",
    "Slowloris",
    "binary",
    "floors",
    "free_port",
    "percentile",
    "rss_mib",
    "stackprobe_run",
    "start_blackbox",
    "wait_http",
]


# What Prometheus 2.x asks a target for: OpenMetrics first, then the text format.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


# stackprobe as the image installs it: a wheel with the base dependencies only, in a venv of
# its own (scripts/setup.sh --bench). The dev venv's test tools cost 3 MiB of RSS no user runs.
RUNTIME_PYTHON = ROOT / ".venv-runtime" / "bin" / "python"
SOURCES = ("pyproject.toml", "exporter", "probes", "tools", "demo")


def runtime_python() -> Path:
    """The runtime venv's interpreter; exits saying what to run when that install is missing
    or older than the source."""
    stamps = list(RUNTIME_PYTHON.parent.parent.glob(".installed-*"))
    if not stamps:
        sys.exit("no runtime install to measure: run scripts/setup.sh --bench")
    installed = stamps[0].stat().st_mtime
    for name in SOURCES:
        path = ROOT / name
        for source in [path] if path.is_file() else path.rglob("*.py"):
            if source.stat().st_mtime > installed:
                sys.exit(
                    f"{source.relative_to(ROOT)} changed since the runtime install: run "
                    "scripts/setup.sh --bench"
                )
    return RUNTIME_PYTHON


def stackprobe_run(config: Path, port: int, *flags: str) -> list[str]:
    """The tests' command line of `stackprobe run`, on the runtime venv's interpreter."""
    return [str(runtime_python()), *exporter.stackprobe_run(config, port, *flags)[1:]]


def floors(verdicts: list[tuple[str, bool, str]]) -> int:
    """Print each floor of the issue as PASS or FAIL with its figure; the exit status."""
    print("\n## floors")
    for name, ok, figure in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {name:40} {figure}")
    return 0 if all(ok for _, ok, _ in verdicts) else 1


def percentile(values: list[float], q: float) -> float:
    """The value at quantile `q` of `values` (nearest rank); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def binary(name: str) -> str:
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        sys.exit(f"{name} is not installed: run scripts/setup.sh --bench")
    return path


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def wait_http(url: str, timeout: float = 30) -> None:
    """Until `url` answers 200; a benchmark whose process never does exits saying so."""
    try:
        polling.wait_http(url, timeout)
    except AssertionError as error:
        sys.exit(str(error))


def start_blackbox(module: Mapping[str, object], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """blackbox_exporter with one module named `http`, on a free loopback port, logging to
    `log`; the process and its base URL, once it answers."""
    config = log.with_suffix(".yml")
    config.write_text(yaml.safe_dump({"modules": {"http": module}}))
    port = free_port()
    process = subprocess.Popen(
        [
            binary("prometheus-blackbox-exporter"),
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stderr=log.open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/-/healthy")
    except BaseException:
        process.kill()
        raise
    return process, base
