"""stackprobe run as a real process, for the tests that watch it from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import wait_http, wait_until
from tests.support.processes import free_port, stop


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

    def until(self, what: str, condition: Callable[[], Any], timeout: float = 15) -> None:
        """Wait for what this exporter shows, failing with the end of its log."""
        wait_until(condition, timeout, what=what, logs=[self.log_path])

    def wait_ready(self, timeout: float = 20) -> None:
        wait_until(
            lambda: self.get("/-/ready").status_code == 200,
            timeout,
            what=lambda: f"/-/ready to answer 200; it says: {self.get('/-/ready').text}",
            logs=[self.log_path],
        )


def stackprobe_run(config: Path, port: int, *flags: str) -> list[str]:
    """The command line of `stackprobe run` on `config`, listening on a loopback `port`, as
    the tests and the benchmarks start it."""
    return [
        sys.executable,
        "-m",
        "stackprobe",
        "run",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        *flags,
    ]


def start_exporter(
    tmp: Path,
    config: dict[str, Any] | str,
    env: dict[str, str],
    *flags: str,
    scheme: str = "http",
    wait: bool = True,
) -> Exporter:
    """`flags` go after the test defaults (JSON logs at debug, /-/reload enabled); with
    `wait=False` the test itself waits (a server behind TLS or basic auth)."""
    config_path = tmp / "stackprobe.yml"
    config_path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    port = free_port()
    log_path = tmp / "stackprobe.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        stackprobe_run(
            config_path,
            port,
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--web.enable-lifecycle",
            *flags,
        ),
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        env={**os.environ, **env},
    )
    exporter = Exporter(f"{scheme}://127.0.0.1:{port}", process, log_path, config_path, log_file)
    if not wait:
        return exporter
    try:
        wait_http(f"{exporter.url}/-/healthy", 20, process=process, logs=[log_path], interval=0.1)
    except BaseException:
        stop(process)  # a failed start leaves no process running and no file open
        log_file.close()
        raise
    return exporter


def stop_exporter(exporter: Exporter) -> None:
    exporter.process.send_signal(signal.SIGTERM)
    code = exporter.process.wait(timeout=20)
    exporter.log_file.close()
    assert code == 0, exporter.logs()
