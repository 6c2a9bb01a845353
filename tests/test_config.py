"""Config loading: each tests/fixtures/config/invalid-*.yaml fails with exactly the messages
listed in its own `# expect:` lines (after blackbox_exporter's testdata/invalid-*.yml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stackprobe.config import ConfigError, load_config, parse_config
from stackprobe.durations import format_duration, parse_duration
from stackprobe.probes import KINDS
from stackprobe.probes.dns import DnsTarget
from stackprobe.probes.http import HttpTarget
from stackprobe.secrets import SecretRef

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
    assert http.request_headers()["Authorization"] == "t0k"
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
        "No such file or directory"
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
    done = check_config(path, env={"HEALTH_TOKEN": "x", "PATH": ""})

    assert (done.returncode, done.stdout) == (0, f"{path}: OK, 2 targets (dns: 1, http: 1)\n")


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
    assert target.request_headers()["Authorization"] == "relative-secret"


def test_a_trailing_newline_in_an_env_secret_is_dropped_and_an_inner_one_refused() -> None:
    text = (
        "targets:\n  - name: a\n    kind: http\n    url: http://127.0.0.1/\n"
        "    headers: {Authorization: {from_env: TOKEN}}\n"
    )
    ok = parse_config(text, "c.yml", KINDS, environ={"TOKEN": "Bearer abc\n"}).targets[0]
    assert isinstance(ok, HttpTarget) and ok.request_headers()["Authorization"] == "Bearer abc"

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
