"""The wheel, the Dockerfile and the Fargate task definition: what a deployment is built from.
There is no Docker engine here, so the image is checked by what it would be built from."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from stackprobe.cli import DEFAULT_LISTEN, SHUTDOWN_SECONDS

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
TASK = json.loads((ROOT / "deploy" / "ecs-task-definition.json").read_text())
PORT = int(DEFAULT_LISTEN.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("stackprobe-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_command(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {f"stackprobe/{p.name}" for p in (ROOT / "exporter").glob("*.py")}
    modules |= {f"stackprobe/probes/{p.name}" for p in (ROOT / "probes").glob("*.py")}

    assert modules <= names, sorted(modules - names)
    assert "stackprobe/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "stackprobe = stackprobe.cli:main" in text


def test_the_dockerfile_copies_only_what_exists() -> None:
    sources = []
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources.extend(line.split()[1:-1])
    ignored = (ROOT / ".dockerignore").read_text().split()

    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not any(source == i or source.startswith(f"{i}/") for i in ignored), source


def test_the_image_is_slim_non_root_and_checks_its_health() -> None:
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    user = re.search(r"^USER (\S+)", DOCKERFILE, re.M)

    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim", b) for b in bases)
    assert user and user.group(1) not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*\n?.*/-/healthy", DOCKERFILE, re.M)
    assert f"EXPOSE {PORT}" in DOCKERFILE
    assert "pip install --no-cache-dir /wheels/*.whl" in DOCKERFILE  # from the wheel


def test_the_task_definition_runs_the_image_as_it_expects() -> None:
    (container,) = TASK["containerDefinitions"]
    user = re.search(r"^USER (\S+)", DOCKERFILE, re.M)

    assert TASK["requiresCompatibilities"] == ["FARGATE"] and TASK["networkMode"] == "awsvpc"
    assert user and container["user"] == user.group(1)
    assert container["portMappings"][0]["containerPort"] == PORT
    assert "/-/healthy" in " ".join(container["healthCheck"]["command"])
    assert TASK["taskRoleArn"].endswith(":role/stackprobe-task")
    # credentials come from the task role and secrets, never from plain environment values
    for entry in container["environment"]:
        assert not re.search(r"SECRET|PASSWORD|TOKEN|KEY|URL", entry["name"]), entry["name"]
    assert all(s["valueFrom"].startswith("arn:aws:") for s in container["secrets"])
    # the SIGTERM stackprobe drains on must come before ECS's SIGKILL
    assert container["stopTimeout"] > SHUTDOWN_SECONDS


def test_the_task_role_trusts_ecs_tasks_and_takes_the_read_only_policy() -> None:
    trust = json.loads((ROOT / "deploy" / "task-role-trust-policy.json").read_text())
    readme = (ROOT / "deploy" / "README.md").read_text()

    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert "../docs/iam-policy.json" in readme and (ROOT / "docs" / "iam-policy.json").is_file()
