"""stackprobe run as a real process, for the tests that watch it from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port


@dataclass
class Exporter:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path
    log_file: Any

    def logs(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def metrics(self) -> dict[str, list[Any]]:
        families = text_string_to_metric_families(self.get("/metrics").text)
        return {family.name: family.samples for family in families}

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/-/ready").status_code == 200:
                return
            time.sleep(0.2)
        pytest.fail(f"not ready after {timeout}s: {self.get('/-/ready').text}\n{self.logs()}")


def start_exporter(tmp: Path, config: dict[str, Any] | str, env: dict[str, str]) -> Exporter:
    config_path = tmp / "stackprobe.yml"
    config_path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    port = free_port()
    log_path = tmp / "stackprobe.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stackprobe",
            "run",
            "--config",
            str(config_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env={**os.environ, **env},
    )
    exporter = Exporter(f"http://127.0.0.1:{port}", process, log_path, config_path, log_file)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if exporter.get("/-/healthy").status_code == 200:
                return exporter
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"stackprobe exited {process.returncode}:\n{exporter.logs()}")
        time.sleep(0.1)
    pytest.fail(f"stackprobe did not answer:\n{exporter.logs()}")


def stop_exporter(exporter: Exporter) -> None:
    exporter.process.send_signal(signal.SIGTERM)
    code = exporter.process.wait(timeout=20)
    exporter.log_file.close()
    assert code == 0, exporter.logs()


def wait_for(condition: Any, exporter: Exporter, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"condition not met in {timeout}s:\n{exporter.logs()}")
