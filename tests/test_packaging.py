"""The wheel, the Dockerfile and the Fargate task definition: what a deployment is built from.
There is no Docker engine here, so the image is checked by what it would be built from: each
stage's COPYs are done into a temporary folder as Docker does them, and the wheel is built,
installed and run from there: a file the Dockerfile forgets fails here, not in `docker build`."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

import pytest

from stackprobe.cli import DEFAULT_LISTEN, SHUTDOWN_SECONDS

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
TASK = json.loads((ROOT / "deploy" / "ecs-task-definition.json").read_text())
PORT = int(DEFAULT_LISTEN.rsplit(":", 1)[1])
IGNORED = [
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
# what the demo extra pulls in; the image runs without them (redis-py: the demo app's client,
# not the redis kind's, which is probes/_resp.py on hiredis)
DEMO_ONLY = ("moto", "flask", "werkzeug", "aiohttp", "redis")

Instruction = tuple[str, str]


def dockerfile_stages(text: str) -> list[list[Instruction]]:
    """Each stage's instructions as (KEYWORD, arguments), continuation lines joined."""
    stages: list[list[Instruction]] = []
    for line in re.sub(r"\\[ \t]*\n", " ", text).splitlines():
        keyword, _, args = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if keyword and not keyword.startswith("#") and stages:
            stages[-1].append((keyword.upper(), args.strip()))
    return stages


def wheel_stage(text: str) -> list[Instruction]:
    (stage,) = [s for s in dockerfile_stages(text) if runs(s, "pip wheel")]
    return stage


def runs(stage: list[Instruction], command: str) -> list[str]:
    return [args for keyword, args in stage if keyword == "RUN" and command in args]


def context_copy(keyword: str, args: str) -> tuple[list[str], str] | None:
    """A COPY's (sources, destination) when it copies from the build context (not --from)."""
    flags = re.fullmatch(r"((?:--\S+\s+)*)(.*)", args)
    if keyword != "COPY" or not flags or "--from=" in flags.group(1):
        return None
    rest = flags.group(2)
    *sources, destination = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return sources, destination


def dockerignored(relative: str) -> bool:
    """Whether .dockerignore keeps a context path, or a folder above it, out of the build."""
    parts = PurePosixPath(relative).parts
    for pattern in IGNORED:
        assert not pattern.startswith("!"), f"{pattern}: exceptions are not simulated here"
        bare = pattern.strip("/").removeprefix("**/")
        for end in range(1, len(parts) + 1):
            starts = range(end) if pattern.startswith("**/") else range(1)
            if any(fnmatch.fnmatchcase("/".join(parts[s:end]), bare) for s in starts):
                return True
    return False


def do_copies(stage: list[Instruction], root: Path) -> Path:
    """Do a stage's COPYs from the repository into root (the image's /) as Docker does them:
    a folder's contents, not the folder, land in the destination, and .dockerignore'd paths
    stay out. Returns the stage's last WORKDIR under root."""

    def ignore(folder: str, names: list[str]) -> list[str]:
        base = Path(folder).relative_to(ROOT)
        return [n for n in names if dockerignored(str(base / n))]

    workdir = PurePosixPath("/")
    for keyword, args in stage:
        if keyword == "WORKDIR":
            workdir /= args
            (root / workdir.relative_to("/")).mkdir(parents=True, exist_ok=True)
        if (copy := context_copy(keyword, args)) is None:
            continue
        sources, destination = copy
        target = root / (workdir / destination).relative_to("/")
        into = destination.endswith("/") or len(sources) > 1 or target.is_dir()
        for source in sources:
            path = ROOT / source
            assert path.exists() and not dockerignored(source), f"COPY {source}: not in context"
            if path.is_dir():
                shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
            else:
                file = target / path.name if into else target
                file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, file)
    return root / workdir.relative_to("/")


def build_image_wheel(dockerfile: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    """pip wheel, as the wheel stage runs it, on only what that stage copies. With pip's build
    isolation: this venv's setuptools predates pyproject's SPDX `license`, and the configured
    index holds a newer one, offline too."""
    stage = wheel_stage(dockerfile)
    workdir = do_copies(stage, tmp / "root")
    (command,) = runs(stage, "pip wheel")
    assert shlex.split(command)[-1] == ".", command  # the stage builds its WORKDIR
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "out"), workdir],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel-stage")
    built = build_image_wheel(DOCKERFILE, tmp)
    assert built.returncode == 0, built.stderr
    (found,) = (tmp / "out").glob("stackprobe-*.whl")
    return found


@pytest.fixture(scope="module")
def image(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The runtime stage: a fresh venv with the wheel installed as that stage installs it (no
    extras, so the base dependencies only, from the configured index), and its WORKDIR with
    the data it copies. Returns (the venv's bin, the WORKDIR)."""
    runtime = dockerfile_stages(DOCKERFILE)[-1]
    (install,) = runs(runtime, "pip install")
    assert re.search(r"pip install (--\S+ )*/wheels/\*\.whl( |$)", install), install  # no extras
    tmp = tmp_path_factory.mktemp("image")
    workdir = do_copies(runtime, tmp / "root")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return venv / "bin", workdir


def in_image(image: tuple[Path, Path], *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command of the image's venv in its WORKDIR, with nothing of this venv's around."""
    bin_, workdir = image
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [bin_ / argv[0], *argv[1:]],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_wheel_stage_copies_every_package_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for package in SETUPTOOLS["packages"]:
        folder = ROOT / SETUPTOOLS["package-dir"][package]
        into = package.replace(".", "/")
        for path in folder.rglob("*.py"):  # a sub-folder left out of `packages` fails here
            if not dockerignored(str(path.relative_to(ROOT))):
                expected.add(f"{into}/{path.relative_to(folder).as_posix()}")
        for pattern in SETUPTOOLS.get("package-data", {}).get(package, []):
            expected |= {f"{into}/{p.relative_to(folder).as_posix()}" for p in folder.glob(pattern)}
    packages = {n.rsplit("/", 1)[0].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    ours = {n for n in names if not re.match(r"stackprobe-[^/]*\.dist-info/", n)}

    assert packages == {"stackprobe", "stackprobe.probes", "stackprobe.tools", "stackprobe.demo"}
    assert packages == set(SETUPTOOLS["packages"])
    assert "stackprobe/py.typed" in expected
    assert ours == expected, (sorted(expected - ours), sorted(ours - expected))
    assert not any(n.startswith(("tests/", "bench/")) or "conftest" in n for n in names)


def test_the_wheel_needs_moto_only_for_the_demo(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    metadata = HeaderParser().parsestr(
        archive.read(
            next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        ).decode()
    )
    requires = metadata.get_all("Requires-Dist") or []
    base = [r for r in requires if "extra ==" not in r]
    demo = [r for r in requires if re.search(r"extra == ['\"]demo['\"]", r)]

    assert base and not [r for r in base if r.lower().startswith(DEMO_ONLY)], base
    assert any(r.startswith("moto[") for r in demo), demo
    assert "demo" in (metadata.get_all("Provides-Extra") or [])


def test_the_wheel_declares_the_command_and_the_commands_beside_it(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    entry_points = configparser.ConfigParser(delimiters=("=",))
    entry_points.read_string(
        archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    )

    assert entry_points["console_scripts"]["stackprobe"] == "stackprobe.cli:main"
    assert dict(entry_points["stackprobe.commands"]) == {
        "demo": "stackprobe.demo.cli:add_demo",
        "rules": "stackprobe.tools.cli:add_rules",
        "runbook": "stackprobe.tools.cli:add_runbook",
        "migrate-blackbox": "stackprobe.tools.cli:add_migrate_blackbox",
    }


def test_the_image_runs_its_commands_without_the_demo_extra(
    image: tuple[Path, Path], tmp_path: Path
) -> None:
    found = in_image(
        image,
        "python",
        "-c",
        "import importlib.util as u, stackprobe; "
        f"print(stackprobe.__file__, *(m for m in {DEMO_ONLY!r} if u.find_spec(m)))",
    )
    listed = in_image(image, "stackprobe", "--help")
    rules_help = in_image(image, "stackprobe", "rules", "--help")
    # as the image's WORKDIR has them: alert_rules/ and docs/runbook.md
    rules = in_image(image, "stackprobe", "rules", "--out", str(tmp_path / "rules"))
    runbook = in_image(image, "stackprobe", "runbook", "check", "--runbook", "docs/runbook.md")
    demo = in_image(image, "stackprobe", "demo")

    assert found.returncode == 0, found.stderr
    module, *demo_only = found.stdout.split()
    assert Path(module).is_relative_to(image[0].parent)  # the wheel's, not this checkout's
    assert not demo_only, demo_only
    assert listed.returncode == 0, listed.stderr
    for command in ("run", "check-config", "rules", "runbook", "demo"):
        assert re.search(rf"^\s+{command}\b", listed.stdout, re.M), (command, listed.stdout)
    assert rules_help.returncode == 0 and "--runbook-map" in rules_help.stdout
    assert rules.returncode == 0 and list((tmp_path / "rules").glob("*.rules.yml")), rules.stderr
    assert runbook.returncode == 0, runbook.stdout + runbook.stderr
    assert demo.returncode == 2, demo.stderr
    assert "needs moto's server" in demo.stderr
    assert "pip install 'stackprobe[demo]'" in demo.stderr


def test_the_runtime_stage_ships_the_data_the_tools_read(image: tuple[Path, Path]) -> None:
    copies = [
        copy
        for keyword, args in dockerfile_stages(DOCKERFILE)[-1]
        if (copy := context_copy(keyword, args))
    ]
    _, workdir = image

    assert (["alert_rules"], "/usr/share/stackprobe/alert_rules") in copies
    assert (["grafana/dashboards"], "/usr/share/stackprobe/dashboards") in copies
    assert (["docs/runbook.md", "docs/iam-policy.json"], "/usr/share/stackprobe/docs/") in copies
    assert (["examples"], "/usr/share/stackprobe/examples") in copies
    assert workdir.as_posix().endswith("/usr/share/stackprobe")
    assert list((workdir / "alert_rules").glob("*.rules.yml"))
    assert list((workdir / "dashboards").glob("*.json"))
    assert (workdir / "docs" / "runbook.md").is_file()
    assert (workdir / "docs" / "iam-policy.json").is_file()
    assert list((workdir / "examples").glob("*.yml"))


def test_the_dockerfile_copies_only_what_exists() -> None:
    sources = [
        source
        for stage in dockerfile_stages(DOCKERFILE)
        for keyword, args in stage
        if (copy := context_copy(keyword, args))
        for source in copy[0]
    ]

    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not dockerignored(source), source


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
