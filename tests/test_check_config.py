"""`stackprobe check-config` where the secrets are not (CI), with `--require-secrets` where they
are, and its warnings about alerts that cannot fire for lack of a companion target."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from stackprobe.config import load_config
from stackprobe.probes import KINDS
from tests.support.exporter import start_exporter, stop_exporter

ROOT = Path(__file__).parent.parent
CANARY = "CANARY-check-config-7f3a"


def check(
    tmp_path: Path, text: str, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "stackprobe.yml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "stackprobe", "check-config", *flags, str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "", **(env or {})},
        cwd=tmp_path,
    )


def warnings(done: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr's warning lines, without the prefix and the file name."""
    lines = done.stderr.splitlines()
    assert all(line.startswith("warning: ") for line in lines), done.stderr
    return [re.sub(r"^warning: [^:]*stackprobe\.yml", "", line) for line in lines]


# A secret no validator needs the value of, so the target is checked whole without it.
DB_PASSWORD = """\
targets:
  - name: db
    kind: postgres
    dsn: postgresql://probe@db:5432/app
    password: {from_env: DB_PASSWORD}
"""


def test_an_unset_variable_is_a_warning_naming_the_variable_and_key(tmp_path: Path) -> None:
    done = check(tmp_path, DB_PASSWORD)

    assert done.returncode == 0, done.stderr
    assert warnings(done) == [
        ":5: targets[0].password: environment variable DB_PASSWORD is not set; "
        "export it before starting stackprobe, or use from_file"
    ]
    assert done.stdout.endswith("stackprobe.yml: OK, 1 targets (postgres: 1), 1 warning\n")


def test_require_secrets_makes_an_unset_variable_an_error_as_run_does(tmp_path: Path) -> None:
    done = check(tmp_path, DB_PASSWORD, "--require-secrets")

    assert (done.returncode, done.stdout) == (1, "")
    path = tmp_path / "stackprobe.yml"
    assert done.stderr.splitlines() == [
        f"{path}: 1 problem:",
        f"  {path}:5: targets[0].password: environment variable DB_PASSWORD is not set; "
        "export it before starting stackprobe, or use from_file",
    ]


def test_require_secrets_passes_when_the_secrets_are_there(tmp_path: Path) -> None:
    done = check(tmp_path, DB_PASSWORD, "--require-secrets", env={"DB_PASSWORD": CANARY})

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.endswith("OK, 1 targets (postgres: 1)\n")


def test_an_unreadable_secret_file_is_a_warning_and_with_require_secrets_an_error(
    tmp_path: Path,
) -> None:
    text = DB_PASSWORD.replace("{from_env: DB_PASSWORD}", "{from_file: secrets/pw}")

    done = check(tmp_path, text)
    required = check(tmp_path, text, "--require-secrets")

    message = (
        f"cannot read secret file {tmp_path / 'secrets' / 'pw'}: No such file or directory; "
        "check the path and its permissions"
    )
    assert done.returncode == 0
    assert warnings(done) == [f":5: targets[0].password: {message}"]
    assert required.returncode == 1 and f"password: {message}" in required.stderr


def test_an_empty_secret_is_a_warning_and_with_require_secrets_an_error(tmp_path: Path) -> None:
    done = check(tmp_path, DB_PASSWORD, env={"DB_PASSWORD": ""})
    required = check(tmp_path, DB_PASSWORD, "--require-secrets", env={"DB_PASSWORD": ""})

    message = "targets[0].password: the secret from env DB_PASSWORD is empty"
    assert done.returncode == 0 and warnings(done) == [f":5: {message}"]
    assert required.returncode == 1 and message in required.stderr


def test_a_structural_error_still_fails_with_the_secrets_absent(tmp_path: Path) -> None:
    text = DB_PASSWORD + "    statment_timeout: 1s\n"

    done = check(tmp_path, text)

    path = tmp_path / "stackprobe.yml"
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"warning: {path}:5: targets[0].password: environment variable DB_PASSWORD is not set; "
        "export it before starting stackprobe, or use from_file",
        f"{path}: 1 problem:",
        f"  {path}:6: targets[0].statment_timeout: unknown key 'statment_timeout'; did you "
        "mean 'statement_timeout'?",
    ]


def test_a_secret_header_that_is_absent_is_only_a_warning(tmp_path: Path) -> None:
    text = (
        "targets:\n  - name: api\n    kind: http\n    url: http://127.0.0.1/\n"
        "    headers: {Authorization: {from_env: HEALTH_TOKEN}}\n"
    )

    done = check(tmp_path, text)

    assert done.returncode == 0, done.stderr
    assert (
        ":5: targets[0].headers.Authorization: environment variable HEALTH_TOKEN is not set; "
        "export it before starting stackprobe, or use from_file"
    ) in warnings(done)
    assert "OK, 1 targets (http: 1)" in done.stdout


def test_a_secret_that_names_two_sources_is_still_an_error(tmp_path: Path) -> None:
    text = DB_PASSWORD.replace("{from_env: DB_PASSWORD}", "{from_env: A, from_file: /b}")

    done = check(tmp_path, text)

    assert done.returncode == 1 and "name exactly one source" in done.stderr


SECRET_URLS = """\
targets:
  - name: web
    kind: http
    url: {from_env: WEB_URL}
  - name: db
    kind: postgres
    dsn: {from_env: DB_DSN}
    password: {from_env: DB_PASSWORD}
  - name: cache
    kind: redis
    url: {from_env: REDIS_URL}
    password: {from_file: redis-password}
"""


def test_secret_urls_that_are_absent_are_only_warnings(tmp_path: Path) -> None:
    done = check(tmp_path, SECRET_URLS)

    assert done.returncode == 0, done.stderr
    found = warnings(done)
    # Until a kind's validator checks `resolved`, its target is said to be checked in part.
    found = [w for w in found if "checked only in part" not in w]
    for line, key, source in [
        (4, "targets[0].url", "environment variable WEB_URL is not set"),
        (7, "targets[1].dsn", "environment variable DB_DSN is not set"),
        (8, "targets[1].password", "environment variable DB_PASSWORD is not set"),
        (11, "targets[2].url", "environment variable REDIS_URL is not set"),
        (12, "targets[2].password", f"cannot read secret file {tmp_path / 'redis-password'}"),
    ]:
        assert any(w.startswith(f":{line}: {key}: {source}") for w in found), found
    # nothing is said about the URLs themselves: they were not there to be checked
    assert not any(re.search(r"must start with|valid URL|absolute", w) for w in found), found
    assert "postgres: 1, redis: 1" in done.stdout


def test_secret_urls_are_still_checked_when_they_are_there(tmp_path: Path) -> None:
    env = {
        "WEB_URL": "https://example.com/health",
        "DB_DSN": f"mysql://probe:{CANARY}@db/app",
        "DB_PASSWORD": CANARY,
        "REDIS_URL": f"http://:{CANARY}@cache:6379/0",
    }
    (tmp_path / "redis-password").write_text(CANARY + "\n")

    done = check(tmp_path, SECRET_URLS, env=env)

    assert done.returncode == 1
    assert "targets[1].dsn: dsn must start with postgresql://" in done.stderr
    assert "targets[2].url: url must start with redis:// or rediss://" in done.stderr
    assert CANARY not in done.stdout + done.stderr


@pytest.mark.parametrize("flags", [(), ("--require-secrets",)])
def test_a_secret_in_the_environment_never_appears_in_the_output(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    text = SECRET_URLS + (
        "  - name: api\n    kind: http\n    url: http://127.0.0.1/\n"
        "    headers: {X-Api-Key: {from_env: API_KEY}, X-Other: {from_env: MISSING}}\n"
    )
    env = {
        "WEB_URL": f"https://probe:{CANARY}@example.com/health",
        "DB_DSN": f"postgresql://probe:{CANARY}@db/app",
        "API_KEY": CANARY,
    }

    done = check(tmp_path, text, *flags, env=env)

    assert "MISSING" in done.stderr
    assert CANARY not in done.stdout + done.stderr


WEAK = (
    "so it is redacted only where it stands as a credential (a URL's password, a credential "
    "header, password= and the like), not wherever it appears; use a random value of at "
    "least 8 characters, with digits or symbols"
)


@pytest.mark.parametrize("flags", [(), ("--require-secrets",)])
def test_a_secret_too_short_or_too_common_to_scrub_anywhere_is_a_warning(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """Named by where it comes from, never by its value."""
    text = SECRET_URLS + (
        "  - name: api\n    kind: http\n    url: http://127.0.0.1/\n"
        "    headers: {Authorization: {from_env: TOKEN}}\n"
    )
    (tmp_path / "redis-password").write_text("Swordfish\n")
    env = {
        "WEB_URL": "https://example.com/health",
        "DB_DSN": "postgresql://probe:pw7@db/app",
        "DB_PASSWORD": CANARY,
        "REDIS_URL": "redis://cache:6379/0",
        "TOKEN": "Bearer 9",
    }

    done = check(tmp_path, text, *flags, env=env)

    assert done.returncode == 0, done.stderr
    assert warnings(done) == [
        f":7: targets[1].dsn: the password in the URL from env DB_DSN is shorter than 8 "
        f"characters, {WEAK}",
        f":12: targets[2].password: the secret from file redis-password is a single word of "
        f"letters, {WEAK}",
        f":16: targets[3].headers.Authorization: the secret from env TOKEN is shorter than 8 "
        f"characters, {WEAK}",
    ]
    assert done.stdout.endswith("OK, 4 targets (http: 2, postgres: 1, redis: 1), 3 warnings\n")
    for value in ("pw7", "Swordfish", "Bearer 9"):
        assert value not in done.stdout + done.stderr


def test_the_examples_pass_with_no_secret_set() -> None:
    for name in ("aep.yml", "vivacampo.yml"):
        path = ROOT / "examples" / name
        done = subprocess.run(
            [sys.executable, "-m", "stackprobe", "check-config", str(path)],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": ""},
        )

        assert done.returncode == 0, done.stderr
        assert all("is not set" in line for line in done.stderr.splitlines()), done.stderr


# Companion targets: alerts that join two kinds' series.

SQS = """\
  - name: jobs
    kind: sqs
    queues: [aep-jobs, https://sqs.us-east-1.amazonaws.com/123456789012/aep-mail]
"""
POSTGRES = """\
  - name: db
    kind: postgres
    dsn: postgresql://probe@db:5432/aep
    app_pools:
      aep: {size: 5, max_overflow: 0, service: aep-backend}
"""
ALB = """\
  - name: lb
    kind: alb
    load_balancers: [aep-alb]
"""


def targets(*blocks: str) -> str:
    return "targets:\n" + "".join(blocks)


def cloudwatch(**keys: object) -> str:
    return "  - name: cw\n    kind: cloudwatch\n" + "".join(
        f"    {key}: {json.dumps(value)}\n" for key, value in keys.items()
    )


def ecs(services: list[str]) -> str:
    return f"  - name: ecs\n    kind: ecs_service\n    cluster: aep\n    services: {services}\n"


def test_an_sqs_queue_no_cloudwatch_target_lists_gets_a_warning(tmp_path: Path) -> None:
    done = check(tmp_path, targets(SQS, cloudwatch(sqs_queues=["aep-mail"])))

    assert done.returncode == 0
    assert warnings(done) == [
        ": targets[0] (jobs): SqsJobsStuck cannot fire for queue aep-jobs: no cloudwatch target "
        "lists it under sqs_queues (the rule needs its NumberOfMessagesDeleted); add it there"
    ]
    assert done.stdout.endswith("OK, 2 targets (cloudwatch: 1, sqs: 1), 1 warning\n")


def test_sqs_queues_a_cloudwatch_target_lists_get_none(tmp_path: Path) -> None:
    done = check(tmp_path, targets(SQS, cloudwatch(sqs_queues=["aep-jobs", "aep-mail"])))

    assert (done.returncode, done.stderr) == (0, "")


def test_an_app_pool_whose_service_no_ecs_target_covers_gets_a_warning(tmp_path: Path) -> None:
    done = check(tmp_path, targets(POSTGRES, ecs(["aep-frontend"])))

    assert warnings(done) == [
        ": targets[0] (db): PostgresAppPoolExhausted cannot fire for database aep: no "
        "ecs_service target covers service aep-backend (the rule joins on "
        "aws_ecs_service_running_tasks); add aep-backend to the services of an ecs_service "
        "target for its cluster"
    ]


@pytest.mark.parametrize("services", [["aep-frontend", "aep-backend"], []])
def test_an_app_pool_whose_service_an_ecs_target_covers_gets_none(
    tmp_path: Path, services: list[str]
) -> None:
    done = check(tmp_path, targets(POSTGRES, ecs(services)))

    assert (done.returncode, done.stderr) == (0, "")


def test_an_app_pool_without_a_service_gets_a_warning(tmp_path: Path) -> None:
    text = targets(POSTGRES.replace(", service: aep-backend", ""), ecs([]))

    done = check(tmp_path, text)

    assert warnings(done) == [
        ": targets[0] (db): PostgresAppPoolExhausted cannot fire for database aep: app_pools.aep "
        "names no service; set service: to the ECS service whose tasks hold the pool, and "
        "cover it with an ecs_service target"
    ]


def test_an_alb_no_cloudwatch_target_lists_gets_a_warning(tmp_path: Path) -> None:
    other = cloudwatch(albs=[{"load_balancer": "app/aep-alb-2/0123456789abcdef"}])

    done = check(tmp_path, targets(ALB, other))

    assert warnings(done) == [
        ": targets[0] (lb): AlbMostRequests5xx, AlbHigh5xxRate and AlbHighLatency cannot fire "
        "for load balancer aep-alb: no cloudwatch target lists it under albs; add it there as "
        "load_balancer: app/aep-alb/ID (the tail of its ARN)"
    ]


def test_an_alb_a_cloudwatch_target_lists_by_name_gets_none(tmp_path: Path) -> None:
    listed = cloudwatch(albs=[{"load_balancer": "app/aep-alb/0123456789abcdef"}])

    done = check(tmp_path, targets(ALB, listed))

    assert (done.returncode, done.stderr) == (0, "")


def test_an_http_latency_threshold_needs_no_companion(tmp_path: Path) -> None:
    text = targets(
        "  - name: tiles\n    kind: http\n    url: https://tiles.example/\n"
        "    latency_threshold: 2s\n"
    )

    assert check(tmp_path, text).stderr == ""


def test_every_alert_the_warnings_name_is_a_shipped_rule(tmp_path: Path) -> None:
    done = check(tmp_path, targets(SQS, POSTGRES, ALB))
    named = set(re.findall(r"\b((?:Sqs|Postgres|Alb)[A-Za-z0-9]+)\b", done.stderr))
    shipped = {
        rule["alert"]
        for path in (ROOT / "alert_rules").glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }

    assert len(named) == 5 and named <= shipped, named - shipped


def test_the_warnings_come_with_the_config_that_run_loads(tmp_path: Path) -> None:
    path = tmp_path / "stackprobe.yml"
    path.write_text(targets(SQS))

    config = load_config(path, KINDS, environ={})

    assert [str(w) for w in config.warnings] == [
        f"{path}: targets[0] (jobs): SqsJobsStuck cannot fire for queue {queue}: no cloudwatch "
        "target lists it under sqs_queues (the rule needs its NumberOfMessagesDeleted); add it "
        "there"
        for queue in ("aep-jobs", "aep-mail")
    ]


def test_run_logs_each_warning_once_at_start_and_not_on_reload(tmp_path: Path) -> None:
    text = targets(POSTGRES.replace("db:5432", "127.0.0.1:1"))
    exporter = start_exporter(tmp_path, text, {})
    try:
        assert httpx.post(exporter.url + "/-/reload", timeout=10).status_code == 200
    finally:
        stop_exporter(exporter)

    lines = [json.loads(line) for line in exporter.logs().splitlines() if line.startswith("{")]
    warned = [line for line in lines if "PostgresAppPoolExhausted" in line["event"]]
    assert len(warned) == 1, warned
    assert warned[0]["level"] == "warning" and warned[0]["path"] == "targets[0] (db)"
