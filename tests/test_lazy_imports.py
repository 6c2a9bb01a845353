"""A kind's libraries load only when the config has a target of that kind (issue 19): a
config of http targets never pays for botocore, asyncpg, hiredis, dnspython, cryptography
or the CEL runtime, about 27 MiB of RSS together, and one of PostgreSQL and Redis targets
never for the http kind's httpx, httpcore and h2 (about 10 MiB): the kind table imports a
kind's module when a config first names it (probes/__init__.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from stackprobe.probes import NAMES

# A kind's libraries, by top-level package.
HEAVY = frozenset(
    {"botocore", "boto3", "asyncpg", "hiredis", "redis", "dns", "cryptography", "celpy"}
)
HTTP_KIND = frozenset({"httpx", "httpcore", "h2", "hpack", "jmespath"})

HTTP_ONLY = """
targets:
  - {name: site, kind: http, url: "http://127.0.0.1:9/health/ready"}
"""


def loaded_after(config: str, run: bool = False, among: frozenset[str] = HEAVY) -> set[str]:
    """The heavy packages a fresh interpreter holds after importing stackprobe's entry
    point and loading `config` (and, with `run`, one run of its first target)."""
    code = textwrap.dedent(
        f"""
        import asyncio, json, sys
        import stackprobe.cli
        from stackprobe.config import parse_config
        from stackprobe.probes import KINDS
        from tests.support.probing import ProbeRunner

        config = parse_config({config!r}, "<test>", KINDS, {{}})
        if {run!r}:
            asyncio.run(ProbeRunner.once(config.targets[0]))
        print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout)) & among


def test_an_http_config_and_its_runs_load_no_other_kinds_library() -> None:
    assert loaded_after(HTTP_ONLY, run=True) == set()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("{name: d, kind: dns, query: example.com, server: 127.0.0.1}", {"dns"}),
        (
            '{name: c, kind: http, url: "http://127.0.0.1:9/", '
            "fail_if_body_json_not_matches_cel: \"body.status == 'ok'\"}",
            {"celpy"},
        ),
        ('{name: r, kind: redis, url: "redis://127.0.0.1:9"}', set()),
    ],
)
def test_a_kind_loads_its_library_only_when_it_needs_it(target: str, expected: set[str]) -> None:
    """dnspython and the CEL runtime check the config, so they load with it; hiredis loads
    at the first run, not with the config."""
    assert loaded_after(f"targets:\n  - {target}\n") == expected


def test_a_redis_run_loads_hiredis_and_not_redis_py() -> None:
    """The kind's own client (probes/_resp.py) on hiredis: redis-py, a test and demo
    dependency, is never imported by a run."""
    loaded = loaded_after(
        'targets:\n  - {name: r, kind: redis, url: "redis://127.0.0.1:9"}\n', run=True
    )
    assert "hiredis" in loaded and "redis" not in loaded


def test_datastore_targets_and_their_runs_load_no_http_library_nor_its_kind() -> None:
    """The whole app (config, resources, scheduler, a first run of each target)."""
    code = textwrap.dedent(
        """
        import asyncio, json, sys
        from stackprobe.app import App
        from stackprobe.config import parse_config
        from stackprobe.probes import KINDS
        from stackprobe.secrets import Redactor

        async def main():
            config = parse_config(sys.stdin.read(), "<test>", KINDS, {})
            app = App(config, kinds=KINDS, redactor=Redactor(), config_path=None)
            app.start()
            for _ in range(200):
                if app.ready().ok:
                    break
                await asyncio.sleep(0.05)
            print(json.dumps([app.ready().ok, sorted(sys.modules)]))
            await app.stop()

        asyncio.run(main())
        """
    )
    both = (
        "targets:\n"
        '  - {name: r, kind: redis, url: "redis://127.0.0.1:9"}\n'
        '  - {name: p, kind: postgres, dsn: "postgresql://u@127.0.0.1:9/d"}\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=both,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    ready, modules = json.loads(done.stdout.splitlines()[-1])
    loaded = {name.split(".")[0] for name in modules}
    assert ready and {"hiredis", "asyncpg"} <= loaded  # both ran
    assert "redis" not in loaded  # redis-py: the tests' and the demo's, not the probe's
    assert loaded & HTTP_KIND == set()
    kinds = [m for m in modules if m.startswith("stackprobe.probes.") and m[18:] in NAMES]
    assert kinds == ["stackprobe.probes.postgres", "stackprobe.probes.redis"]
    # and an http config does load them
    assert loaded_after(HTTP_ONLY, among=HTTP_KIND) >= {"httpx", "httpcore", "jmespath"}


def test_run_and_check_config_load_no_plugin_command() -> None:
    """The commands registered by entry point (demo, rules, runbook, migrate-blackbox) are
    looked up only for a command line that is not the core's own."""
    code = (
        "import json, sys\n"
        "from stackprobe.cli import main\n"
        "main(['check-config', sys.argv[1]])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    config = "targets:\n  - {name: r, kind: redis, url: 'redis://127.0.0.1:9'}\n"
    done = subprocess.run(
        [sys.executable, "-c", code, "/dev/stdin"],
        input=config,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "stackprobe.probes.redis" in loaded  # the config was read
    plugins = {"stackprobe.demo.cli", "stackprobe.tools.cli", "httpx"}
    assert loaded & plugins == set()


def test_the_command_line_loads_no_library_of_a_command_it_does_not_run() -> None:
    """Every command line builds the whole parser, the plugin commands' included: `run`
    must not pay for `runbook check`'s markdown-it or `rules`' ruamel.yaml."""
    code = (
        "import json, sys\n"
        "from stackprobe.cli import build_parser\n"
        "build_parser().parse_args(['run'])\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert set(json.loads(done.stdout)) & {"markdown_it", "ruamel", "mdurl"} == set()
