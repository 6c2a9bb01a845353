"""stackprobe as a user runs it: a real process, real misbehaving peers, real scrapes.

One exporter probes every kind of broken health endpoint at once while the tests scrape it:
/metrics must stay fast, every failure must carry its reason, the output must pass promtool,
and the canary secrets planted in its config must appear nowhere it writes.
"""

from __future__ import annotations

import base64
import gzip
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.exporter import Exporter, start_exporter, stop_exporter
from tests.support.peers import AUTH_TOKEN, Peers
from tests.support.processes import free_port, require_binary

URL_PASSWORD = "CANARY-urlpw-31337"
BASIC_PASSWORD = "CANARY-basic-8a8a"
CANARIES = (AUTH_TOKEN.removeprefix("Bearer "), URL_PASSWORD, BASIC_PASSWORD)


def canary_forms() -> list[str]:
    forms = []
    for canary in CANARIES:
        forms += [canary, quote(canary), base64.b64encode(canary.encode()).decode()]
    forms.append(base64.b64encode(f"probe:{BASIC_PASSWORD}".encode()).decode())
    return forms


EXPECTED_REASONS = {
    "ok": None,
    "auth-from-env": None,
    "url-password-refused": "connect_refused",
    "basic-auth-hang": "timeout",
    "hang": "timeout",
    "trickle": "timeout",
    "fifty-megabytes": "body_too_large",
    "gzip-bomb": "body_too_large",
    "garbage-as-json": "invalid_body",
    "invalid-json": "invalid_body",
    "redis-down": "http_status",
    "reset": "connection_closed",
    "not-http": "invalid_response",
    "tls-self-signed": "tls",
    "tls-expired": "tls_cert_expired",
    "redirect-loop": "too_many_redirects",
    "refused": "connect_refused",
    "dns-silent-server": "timeout",
}


def misbehaving_config(peers: Peers) -> dict[str, Any]:
    http = peers.http

    def target(name: str, url: Any, **extra: Any) -> dict[str, Any]:
        return {"name": name, "kind": "http", "url": url, **extra}

    return {
        "defaults": {"interval": "4s", "timeout": "2s"},
        "targets": [
            target("ok", f"{http}/health/ready"),
            target(
                "auth-from-env",
                f"{http}/auth",
                headers={"Authorization": {"from_env": "HEALTH_TOKEN"}},
            ),
            target("url-password-refused", {"from_env": "URL_WITH_PASSWORD"}),
            target(
                "basic-auth-hang",
                f"{http}/hang",
                basic_auth={"username": "probe", "password": {"from_env": "BASIC_PASSWORD"}},
            ),
            target("hang", f"{http}/hang"),
            target("trickle", f"{http}/trickle"),
            target("fifty-megabytes", f"{http}/big-chunked", body_format="json"),
            target("gzip-bomb", f"{http}/gzip-bomb", body_format="json"),
            target("garbage-as-json", f"{http}/garbage", body_format="json"),
            target("invalid-json", f"{http}/invalid-json"),
            target("redis-down", f"{http}/redis-down"),
            target("reset", f"http://127.0.0.1:{peers.reset_port}/health/ready"),
            target("not-http", f"http://127.0.0.1:{peers.garbage_port}/health/ready"),
            target("tls-self-signed", f"{peers.https_self_signed}/ok"),
            target("tls-expired", f"{peers.https_expired}/ok", tls={"ca_file": str(peers.ca_file)}),
            target("redirect-loop", f"{http}/redirect-loop"),
            target("refused", f"http://127.0.0.1:{peers.closed_port}/health/live"),
            {
                "name": "dns-silent-server",
                "kind": "dns",
                "query": "site.test",
                "server": f"127.0.0.1:{free_port()}",
            },
        ],
    }


@pytest.fixture(scope="module")
def exporter(peers: Peers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    env = {
        "HEALTH_TOKEN": AUTH_TOKEN,
        "URL_WITH_PASSWORD": f"http://probe:{URL_PASSWORD}@127.0.0.1:{peers.closed_port}/ready",
        "BASIC_PASSWORD": BASIC_PASSWORD,
    }
    running = start_exporter(tmp_path_factory.mktemp("exporter"), misbehaving_config(peers), env)
    running.wait_ready()
    yield running
    stop_exporter(running)


def reasons(metrics: dict[str, list[Any]]) -> dict[str, str | None]:
    found: dict[str, str | None] = {
        s.labels["target"]: None for s in metrics["probe_success"] if s.value == 1
    }
    for sample in metrics.get("stackprobe_probe_failure_reason", []):
        found[sample.labels["target"]] = sample.labels["reason"]
    return found


def test_every_failure_shows_its_reason(exporter: Exporter) -> None:
    metrics = exporter.metrics()

    assert reasons(metrics) == EXPECTED_REASONS
    components = {
        s.labels["component"]: s.value
        for s in metrics["stackprobe_health_component_up"]
        if s.labels["target"] == "redis-down"
    }
    assert components == {"overall": 0.0, "db": 1.0, "redis": 0.0}


def test_scrapes_stay_fast_while_targets_hang(exporter: Exporter) -> None:
    """Hanging targets take their whole 2 s timeout every run; a scrape must not wait."""
    hang_runs_before = _runs(exporter, "hang")
    slowest = 0.0
    end = time.monotonic() + 4.5  # longer than an interval: runs of `hang` overlap the scrapes
    while time.monotonic() < end:
        started = time.monotonic()
        assert exporter.get("/metrics").status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.2)

    assert _runs(exporter, "hang") > hang_runs_before
    assert slowest < 1.0, f"a scrape took {slowest:.2f}s"


def _runs(exporter: Exporter, target: str) -> float:
    samples = exporter.metrics()["stackprobe_probe_last_run_timestamp_seconds"]
    return next(s.value for s in samples if s.labels["target"] == target)


def test_openmetrics_is_negotiated_and_gzip_offered(exporter: Exporter) -> None:
    om = exporter.get(
        "/metrics",
        headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
    )
    plain = exporter.get("/metrics", headers={"Accept-Encoding": "gzip"})

    assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om.text.endswith("# EOF\n")
    assert "# TYPE stackprobe_probe_runs counter" in om.text
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert plain.headers["content-encoding"] == "gzip"
    assert "# TYPE stackprobe_probe_runs_total counter" in plain.text
    # compressed part by part (exporter/server.py): every family, whole, in its order
    identity = exporter.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers
    assert [line for line in plain.text.splitlines() if line.startswith("# TYPE")] == [
        line for line in identity.text.splitlines() if line.startswith("# TYPE")
    ]


def test_promtool_check_metrics_is_clean(exporter: Exporter) -> None:
    promtool = require_binary("promtool")
    body = exporter.get("/metrics").content

    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )

    assert checked.returncode == 0, checked.stderr.decode() + checked.stdout.decode()
    assert checked.stdout.decode().strip() == ""


def test_landing_page_lists_every_target_with_its_reason(exporter: Exporter) -> None:
    page = exporter.get("/").text

    for name, reason in EXPECTED_REASONS.items():
        assert f">{name}</a>" in page
        if reason:
            assert f"run failed: {reason}</div>" in page
    assert "&lt;url from env URL_WITH_PASSWORD&gt;" in page


def test_canary_secrets_appear_nowhere(exporter: Exporter) -> None:
    outputs = {
        path: exporter.get(path, headers=headers).text
        for path, headers in (
            ("/metrics", {}),
            ("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
            ("/", {}),
            ("/-/ready", {}),
            ("/-/healthy", {}),
        )
    }
    outputs["logs"] = exporter.logs()
    assert '"reason": "connect_refused"' in outputs["logs"]  # failures were logged

    for where, text in outputs.items():
        for form in canary_forms():
            assert form not in text, f"{form!r} leaked into {where}"


def test_logs_are_json_lines_with_kind_and_target(exporter: Exporter) -> None:
    lines = [json.loads(line) for line in exporter.logs().splitlines() if line.strip()]
    failing = [line for line in lines if line["event"] == "probe failing"]

    assert {line["target"] for line in failing} == {
        name for name, reason in EXPECTED_REASONS.items() if reason
    }
    assert all(line["kind"] in ("http", "dns") and line["level"] == "warning" for line in failing)


def test_reload_keeps_the_old_config_when_the_new_one_is_bad(peers: Peers, tmp_path: Path) -> None:
    good = {
        "targets": [
            {
                "name": "ok",
                "kind": "http",
                "url": f"{peers.http}/ok",
                "interval": "2s",
                "timeout": "1s",
            }
        ]
    }
    exporter = start_exporter(tmp_path, good, {})
    try:
        exporter.wait_ready()
        exporter.config_path.write_text(
            "targets:\n  - name: ok\n    kind: http\n    urll: http://x/\n"
            "    headers: {Authorization: Bearer CANARY-inline-0000}\n"
        )

        refused = httpx.post(exporter.url + "/-/reload", timeout=10)

        assert refused.status_code == 500
        assert "targets[0].urll: unknown key 'urll'; did you mean 'url'?" in refused.text
        metrics = exporter.metrics()
        assert metrics["stackprobe_config_last_reload_successful"][0].value == 0
        assert [s.labels["target"] for s in metrics["probe_success"]] == ["ok"]
        assert "The last config reload failed" in exporter.get("/").text

        good["targets"].append(
            {
                "name": "added",
                "kind": "http",
                "url": f"{peers.http}/plain",
                "interval": "2s",
                "timeout": "1s",
            }
        )
        exporter.config_path.write_text(yaml.safe_dump(good))
        exporter.process.send_signal(signal.SIGHUP)
        exporter.until("the added target", lambda: "added" in reasons(exporter.metrics()))

        metrics = exporter.metrics()
        assert metrics["stackprobe_config_last_reload_successful"][0].value == 1
        assert reasons(metrics) == {"ok": None, "added": None}
        logs = exporter.logs()
        assert "config reload failed; the previous config keeps running" in logs
        assert '"event": "config reloaded"' in logs
        assert "CANARY-inline-0000" not in logs + refused.text
        assert exporter.get("/-/reload").status_code == 405
    finally:
        stop_exporter(exporter)


def test_an_alias_bomb_by_sighup_is_refused_and_the_next_reload_works(
    peers: Peers, tmp_path: Path
) -> None:
    """A few hundred bytes of nested aliases (490 million values) once wedged reloading:
    now the reload fails at once, /metrics keeps answering, and a good reload follows."""
    good = {"targets": [{"name": "ok", "kind": "http", "url": f"{peers.http}/ok"}]}
    exporter = start_exporter(tmp_path, good, {})
    try:
        exporter.wait_ready()
        anchors = ["  - &l0 [x, x, x, x, x, x, x, x, x]"]
        anchors += [f"  - &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
        exporter.config_path.write_text("targets: []\nbomb:\n" + "\n".join(anchors) + "\n")
        exporter.process.send_signal(signal.SIGHUP)
        exporter.until(
            "the bomb's reload to fail",
            lambda: exporter.metrics()["stackprobe_config_last_reload_successful"][0].value == 0,
        )
        assert "values through its aliases" in exporter.get("/").text
        assert exporter.get("/metrics").status_code == 200

        exporter.config_path.write_text(yaml.safe_dump(good))
        refused_or_not = httpx.post(exporter.url + "/-/reload", timeout=10)

        assert refused_or_not.status_code == 200, refused_or_not.text
        assert exporter.metrics()["stackprobe_config_last_reload_successful"][0].value == 1
    finally:
        stop_exporter(exporter)


def test_a_bad_config_at_start_exits_2_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("targets:\n  - name: a\n    kind: htp\n  - name: a\n    kind: dns\n")

    done = subprocess.run(
        [sys.executable, "-m", "stackprobe", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "stackprobe: the config is invalid, not starting:",
        f"{config}:3: targets[0].kind: unknown kind 'htp'; did you mean 'http'? known kinds: "
        "alb, cloudwatch, dns, ecs_service, elasticache, http, logs, postgres, rds, redis, s3, sqs",
        f"{config}:4: targets[1]: missing required key `query`",
        f"{config}:4: targets[1].name: duplicate target name 'a' (first used by targets[0]); "
        "names must be unique because they become the `target` label",
    ]


def test_a_busy_listen_address_exits_1_and_says_so(tmp_path: Path) -> None:
    blocker = __import__("socket").socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "stackprobe", "run", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        blocker.close()

    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "pick another address with --listen" in done.stderr


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stackprobe", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )

    from stackprobe import __version__

    assert done.stdout == f"stackprobe {__version__}\n"


def test_gzip_body_decodes_to_the_same_families(exporter: Exporter) -> None:
    raw = httpx.get(exporter.url + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=10)
    # httpx decodes transparently; decode the raw bytes by hand to be sure they are gzip.
    with httpx.stream("GET", exporter.url + "/metrics", headers={"Accept-Encoding": "gzip"}) as r:
        compressed = b"".join(r.iter_raw())

    text = gzip.decompress(compressed).decode()
    assert {f.name for f in text_string_to_metric_families(text)} == {
        f.name for f in text_string_to_metric_families(raw.text)
    }
