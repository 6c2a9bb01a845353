"""Config loading: each tests/fixtures/config/invalid-*.yaml fails with exactly the messages
listed in its own `# expect:` lines (after blackbox_exporter's testdata/invalid-*.yml)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stackprobe.config import ConfigError, load_config, parse_config
from stackprobe.durations import format_duration, parse_duration
from stackprobe.probes import KINDS
from stackprobe.probes.dns import DnsTarget
from stackprobe.probes.http import HttpTarget
from stackprobe.secrets import SecretRef
from tests.support.processes import IN_CI

FIXTURES = Path(__file__).parent / "fixtures" / "config"
INVALID = sorted(FIXTURES.glob("invalid-*.yaml"))


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackprobe", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def expected_problems(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect: ").replace("{file}", str(path))
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]


def test_there_are_at_least_ten_kinds_of_config_error() -> None:
    assert len(INVALID) >= 10


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_fails_with_its_exact_messages(path: Path) -> None:
    expected = expected_problems(path)
    assert expected, f"{path.name} lists no `# expect:` lines"

    with pytest.raises(ConfigError) as caught:
        load_config(path, KINDS, environ={})

    assert [str(p) for p in caught.value.problems] == expected


def test_the_issue_example_loads_with_defaults_applied() -> None:
    config = load_config(
        FIXTURES / "valid-issue-example.yaml", KINDS, environ={"HEALTH_TOKEN": "t0k"}
    )

    http, dns = config.targets
    assert isinstance(http, HttpTarget) and isinstance(dns, DnsTarget)
    assert (http.name, http.interval, http.timeout) == ("backend-ready", 15.0, 5.0)
    assert http.expect_status == (200,)
    assert isinstance(http.headers["Authorization"], SecretRef)
    assert dict(http.request_headers)["Authorization"] == "t0k"
    assert (dns.query, dns.record_type) == ("staging.example.com", "A")
    assert config.secrets() == {"t0k"}


def test_secret_from_file_is_read_and_trimmed(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-value\n")
    config = parse_config(
        f"""
targets:
  - name: api
    kind: http
    url: http://127.0.0.1/health
    basic_auth: {{username: probe, password: {{from_file: {secret}}}}}
""",
        "<test>",
        KINDS,
        environ={},
    )

    target = config.targets[0]
    assert isinstance(target, HttpTarget) and target.basic_auth is not None
    assert target.basic_auth.password.get() == "s3cret-value"
    assert "s3cret" not in repr(target)


def test_an_unreadable_secret_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigError) as caught:
        parse_config(
            f"targets: [{{name: a, kind: http, url: 'http://h/', "
            f"headers: {{X-Token: {{from_file: {missing}}}}}}}]",
            "cfg.yaml",
            KINDS,
            environ={},
        )

    assert str(caught.value) == (
        f"cfg.yaml:1: targets[0].headers.X-Token: cannot read secret file {missing}: "
        "No such file or directory; check the path and its permissions"
    )


def test_a_missing_config_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml", KINDS)

    assert (
        str(caught.value) == f"{tmp_path / 'nope.yaml'}: cannot read the config file: "
        "No such file or directory; check the path"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("15s", 15), ("1m30s", 90), ("1h", 3600), ("2d", 172800), ("0", 0)],
)
def test_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 s", "1s1m", "-1s", "1.5s", "5S"])
def test_not_prometheus_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Prometheus duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (90, "1m30s"), (3600, "1h")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == seconds


def test_check_config_lists_every_problem_and_exits_1() -> None:
    path = FIXTURES / "invalid-timeout-not-below-interval.yaml"
    done = check_config(path)

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{path}: 2 problems:",
        *(f"  {line}" for line in expected_problems(path)),
    ]


def test_check_config_accepts_a_valid_file() -> None:
    path = FIXTURES / "valid-issue-example.yaml"
    done = check_config(path, env={"HEALTH_TOKEN": "Bearer c8Kq-2mVx-71Lp", "PATH": ""})

    assert (done.returncode, done.stdout) == (0, f"{path}: OK, 2 targets (dns: 1, http: 1)\n")
    assert done.stderr == ""


def test_check_config_warns_that_a_one_character_token_is_scrubbed_only_as_a_credential() -> None:
    path = FIXTURES / "valid-issue-example.yaml"
    done = check_config(path, env={"HEALTH_TOKEN": "x", "PATH": ""})

    assert (done.returncode, done.stdout) == (
        0,
        f"{path}: OK, 2 targets (dns: 1, http: 1), 1 warning\n",
    )
    assert done.stderr == (
        f"warning: {path}:8: targets[0].headers.Authorization: the secret from env HEALTH_TOKEN "
        "is shorter than 8 characters, so it is redacted only where it stands as a credential "
        "(a URL's password, a credential header, password= and the like), not wherever it "
        "appears; use a random value of at least 8 characters, with digits or symbols\n"
    )


def test_secrets_typed_inline_are_never_echoed() -> None:
    path = FIXTURES / "invalid-secrets-not-echoed.yaml"
    done = check_config(path)

    assert done.returncode == 1 and "6 problems" in done.stderr
    assert "CANARY" not in done.stderr + done.stdout


def test_relative_secret_files_are_read_next_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text("relative-secret\n")
    config = tmp_path / "stackprobe.yml"
    config.write_text(
        "targets:\n  - name: a\n    kind: http\n    url: http://127.0.0.1/\n"
        "    headers: {Authorization: {from_file: secrets/token}}\n"
    )

    target = load_config(config, KINDS, environ={}).targets[0]

    assert isinstance(target, HttpTarget)
    assert dict(target.request_headers)["Authorization"] == "relative-secret"


def test_a_trailing_newline_in_an_env_secret_is_dropped_and_an_inner_one_refused() -> None:
    text = (
        "targets:\n  - name: a\n    kind: http\n    url: http://127.0.0.1/\n"
        "    headers: {Authorization: {from_env: TOKEN}}\n"
    )
    ok = parse_config(text, "c.yml", KINDS, environ={"TOKEN": "Bearer abc\n"}).targets[0]
    assert isinstance(ok, HttpTarget) and dict(ok.request_headers)["Authorization"] == "Bearer abc"

    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yml", KINDS, environ={"TOKEN": "Bearer CANARY\nX-Evil: 1"})

    assert str(caught.value) == (
        "c.yml:5: targets[0].headers.Authorization: the value of header Authorization (from env "
        "TOKEN) holds a control character or a non-ASCII character, which stackprobe cannot "
        "send in a header"
    )


def test_reloading_reads_tls_files_again(tmp_path: Path) -> None:
    """A CA file replaced in place is loaded anew: validation does not cache across loads."""
    ca = tmp_path / "ca.pem"
    config = tmp_path / "c.yml"
    config.write_text(
        "targets:\n  - name: a\n    kind: http\n    url: https://127.0.0.1/\n"
        "    tls: {ca_file: ca.pem}\n"
    )
    import trustme

    trustme.CA().cert_pem.write_to_path(str(ca))
    assert load_config(config, KINDS, environ={}).targets[0].tls.ca_file == ca  # type: ignore[attr-defined]

    ca.write_text("garbage\n")
    with pytest.raises(ConfigError, match="cannot use these TLS files"):
        load_config(config, KINDS, environ={})


@pytest.mark.parametrize(
    ("kind", "key", "value", "message"),
    [
        (
            "postgres",
            "dsn",
            "postgresql://app:CANARY#frag/ment?x@db:5432/aep",
            "the dsn does not parse; percent-encode any '#', '/', '?' or '@' in it",
        ),
        (
            "redis",
            "url",
            "redis://:CANARY#frag/ment?x@cache:6379/0",
            "the url does not parse; percent-encode any '#', '/', '?' or '@' in it",
        ),
    ],
)
def test_a_secret_url_that_does_not_parse_is_never_echoed(
    kind: str, key: str, value: str, message: str
) -> None:
    """A password with an unencoded '#', '/' or '?' must not come back in pieces."""
    text = f"targets: [{{name: a, kind: {kind}, {key}: {{from_env: SECRET_URL}}}}]"

    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yml", KINDS, environ={"SECRET_URL": value})

    assert str(caught.value) == f"c.yml:1: targets[0].{key}: {message}"
    for fragment in ("CANARY", "frag", "ment", "x@"):
        assert fragment not in str(caught.value)


def alias_bomb(levels: int, indent: str = "") -> str:
    """Each anchor lists the one before it nine times: a few hundred bytes, 9**levels values."""
    lines = [f"{indent}- &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{indent}- &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("where", ["top", "expect_json"])
def test_an_alias_bomb_is_refused_at_once_with_what_to_do(where: str) -> None:
    """Anywhere in the file: validating, hashing or comparing it would walk every value."""
    if where == "top":
        text = f"targets: []\nx:\n{alias_bomb(9, '  ')}\n"
    else:
        text = (
            "targets:\n  - {name: api, kind: http, url: 'http://127.0.0.1/health'}\n"
            "  - name: ready\n    kind: http\n    url: http://127.0.0.1/health/ready\n"
            f"    expect_json:\n      - path: a\n        equals:\n{alias_bomb(9, '          ')}\n"
        )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bomb.yml", KINDS, {})

    message = str(caught.value)
    assert message.startswith("bomb.yml: the YAML expands to ")
    assert "more than the 5,000,000 a config may hold" in message


def test_aliases_that_stay_small_still_load() -> None:
    text = """
targets:
  - &api {name: api, kind: http, url: 'http://127.0.0.1/health/live', labels: &l {service: api}}
  - {<<: *api, name: api-ready, url: 'http://127.0.0.1/health/ready', labels: *l}
"""
    config = parse_config(text, "c.yml", KINDS, {})

    assert [t.name for t in config.targets] == ["api", "api-ready"]
    assert [t.labels for t in config.targets] == [{"service": "api"}] * 2


def test_a_file_that_never_ends_is_refused_not_read_into_memory() -> None:
    with pytest.raises(ConfigError) as config:
        load_config("/dev/zero", KINDS)
    with pytest.raises(ConfigError) as secret:
        parse_config(
            "targets: [{name: a, kind: http, url: 'http://h/', "
            "headers: {X-Token: {from_file: /dev/zero}}}]",
            "c.yml",
            KINDS,
            environ={},
        )

    assert (
        str(config.value) == "/dev/zero: cannot read the config file: it is larger than 16,384 KiB"
    )
    assert str(secret.value) == (
        "c.yml:1: targets[0].headers.X-Token: cannot use secret file /dev/zero: it is larger "
        "than 64 KiB; a secret file holds one value"
    )


def test_a_target_name_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not a usable target name"):
        parse_config('targets: [{name: "api\\n", kind: dns, query: a.test}]', "c.yml", KINDS, {})


def _symlink_loop(path: Path) -> None:
    path.symlink_to(path.with_name("other.yml"))
    path.with_name("other.yml").symlink_to(path)


# How the config path is made wrong, and the one line that says so (after `{path}`).
UNUSABLE_FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "a directory": (
        lambda path: path.mkdir(),
        ": cannot read the config file: it is a directory; give the path of the YAML file",
    ),
    "a path under a file": (
        lambda path: path.parent.write_text("targets: []\n"),
        ": cannot read the config file: a part of the path before the file name is not a "
        "directory; check the path",
    ),
    "a dangling symlink": (
        lambda path: path.symlink_to("gone.yml"),
        ": cannot read the config file: it is a symbolic link to gone.yml, which does not "
        "exist; fix the link",
    ),
    "a symlink loop": (
        _symlink_loop,
        ": cannot read the config file: its symbolic links go round in a loop; fix the link",
    ),
    # Nothing to probe is most likely an empty ConfigMap or a truncated write, not a wish:
    # it stays an error, and `targets: []` is how to ask for no target.
    "0 bytes": (
        lambda path: path.write_bytes(b""),
        ": expected a mapping with a `targets:` list, found an empty file",
    ),
    "only comments": (
        lambda path: path.write_text("# targets come later\n\n   \n# really\n"),
        ": expected a mapping with a `targets:` list, found an empty file",
    ),
    "binary bytes": (
        lambda path: path.write_bytes(bytes(range(256))),
        ":2: cannot read the config file: it is not UTF-8 text (byte 0x80 at offset 128): a "
        "binary file, or text in another encoding; a config is YAML text saved as UTF-8",
    ),
    "NUL bytes": (
        lambda path: path.write_bytes(b"targets:\n  - name: a\x00\x00\n"),
        ":2: a control character (U+0000) YAML does not allow: is it a binary file? Remove "
        "the character, or give the path of the YAML text file",
    ),
    "an executable": (
        lambda path: path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9)),
        ":1: a control character (U+007F) YAML does not allow: is it a binary file? Remove "
        "the character, or give the path of the YAML text file",
    ),
    "Latin-1 text": (
        lambda path: path.write_bytes("targets: []\n# café\n".encode("latin-1")),
        ":2: cannot read the config file: it is not UTF-8 text (byte 0xe9 at offset 17): a "
        "binary file, or text in another encoding; a config is YAML text saved as UTF-8",
    ),
    "UTF-16 text": (
        lambda path: path.write_bytes("targets: []\n".encode("utf-16")),
        ":1: cannot read the config file: it is UTF-16 text; save it as UTF-8",
    ),
}


@pytest.mark.parametrize("case", UNUSABLE_FILES, ids=str)
def test_an_unusable_config_file_is_one_line_that_says_what_to_do(
    case: str, tmp_path: Path
) -> None:
    """From `load_config` (as `run` and a reload call it) and from the real CLI alike."""
    make, problem = UNUSABLE_FILES[case]
    path = tmp_path / ("cfg.yml/x" if case == "a path under a file" else "stackprobe.yml")
    make(path)

    with pytest.raises(ConfigError) as caught:
        load_config(path, KINDS, environ={})
    done = check_config(path, env={"PATH": ""})

    assert str(caught.value) == f"{path}{problem}"
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [f"{path}: 1 problem:", f"  {path}{problem}"]


# Run as root, the test process reads any file whatever its mode: this drops the two
# capabilities that allow it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the bounding set and
# starts Python again, which then holds them no more, as any other user.
WITHOUT_DAC_OVERRIDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for capability in (1, 2):
    if libc.prctl(24, capability, 0, 0, 0):  # PR_CAPBSET_DROP
        sys.exit(f"cannot drop capability {capability}: {os.strerror(ctypes.get_errno())}")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def run_unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """`python ARGS`, unable to read a file its mode forbids, even as root."""
    prefix = ["-c", WITHOUT_DAC_OVERRIDE] if os.geteuid() == 0 else []
    done = subprocess.run(
        [sys.executable, *prefix, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 and "cannot drop capability" in done.stderr:
        message = f"cannot read-protect a file from root here: {done.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return done


def test_an_unreadable_config_file_says_whose_permission_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "stackprobe.yml"
    path.write_text("targets: []\n")
    path.chmod(0)
    load = (
        "from stackprobe.config import ConfigError, load_config\n"
        "from stackprobe.probes import KINDS\n"
        "try:\n"
        f"    load_config({str(path)!r}, KINDS, environ={{}})\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )

    loaded = run_unprivileged("-c", load)
    done = run_unprivileged("-m", "stackprobe", "check-config", str(path))

    problem = (
        f"{path}: cannot read the config file: permission denied; make it (and the "
        "directories above it) readable by the user stackprobe runs as "
        f"(uid {os.geteuid()})"
    )
    assert (loaded.returncode, loaded.stdout, loaded.stderr) == (0, problem + "\n", "")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [f"{path}: 1 problem:", f"  {problem}"]


@pytest.mark.parametrize("name", ["api\nx", "api'x", 'api"x', "api x", "api\tx", "-api", "ä"])
def test_a_target_name_that_cannot_be_a_label_value_is_refused_naming_the_pattern(
    name: str, tmp_path: Path
) -> None:
    text = f"targets: [{{name: {json.dumps(name)}, kind: dns, query: a.test}}]\n"
    path = tmp_path / "stackprobe.yml"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yml", KINDS, {})
    done = check_config(path, env={"PATH": ""})

    problem = (
        f"targets[0].name: {name!r} is not a usable target name: it becomes the `target` "
        "label, so use 1-128 letters, digits and _ . : / - (starting with a letter or digit)"
    )
    assert str(caught.value) == f"c.yml:1: {problem}"
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{path}: 1 problem:", f"  {path}:1: {problem}"]
