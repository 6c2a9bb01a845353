"""`stackprobe migrate-blackbox` on blackbox_exporter's own example.yml: every http and dns
module becomes a target that stackprobe's config loader takes, every other prober is left
out with why, and no credential of the file reaches the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from stackprobe.config import parse_config
from stackprobe.probes import KINDS
from stackprobe.tools.blackbox import migrate
from tests.support.probing import make_target

EXAMPLE = Path(__file__).parent / "fixtures" / "blackbox" / "example.yml"
MODULES: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["modules"]
# the credentials example.yml writes inline
INLINE_SECRETS = ("mysecret", "client_secret", "secret_token", "Bearer token")
# A target for each module, as Prometheus would pass it in ?target=
TARGETS = {
    name: ("1.1.1.1:53" if module["prober"] == "dns" else "https://app.example.com/ready")
    for name, module in MODULES.items()
}


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stackprobe", "migrate-blackbox", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_every_http_and_dns_module_of_blackboxs_example_loads(tmp_path: Path) -> None:
    migration = migrate(MODULES, TARGETS.items())
    text = migration.config()
    # the files example.yml names, made here: the loader reads them
    ca = trustme.CA()
    files = {
        "/files/body.txt": b"{}",
        "/path/to/api-key.txt": b"key-from-a-file",
        "/certs/my_cert.crt": ca.cert_pem.bytes(),
    }
    for number, (path, content) in enumerate(files.items()):
        made = tmp_path / f"file-{number}"
        made.write_bytes(content)
        assert path in text
        text = text.replace(path, str(made))
    environ = {variable: "set-by-the-test" for variable in migration.variables}
    config = parse_config(text, "<migrated>", KINDS, environ)

    probers = {name: module["prober"] for name, module in MODULES.items()}
    translated = {t["name"].split("-", 1)[0] for t in migration.targets}
    assert translated == {n for n, p in probers.items() if p in ("http", "dns")}
    assert len(config.targets) == len(translated) >= 15
    left_out = {n for n, p in probers.items() if p not in ("http", "dns")}
    for name in left_out:
        assert any(f"({name}) left out: prober '{probers[name]}'" in s for s in migration.skipped)
    for secret in INLINE_SECRETS:
        assert secret not in text


def test_the_modules_checks_are_kept() -> None:
    migration = migrate(
        MODULES,
        [
            ("http_2xx_example", "https://app.example.com/ready"),
            ("http_2xx_oauth_client_credentials", "https://api.example.com/"),
            ("http_with_header_from_files", "api.example.com/v1"),
            ("dns_udp_example", "8.8.8.8"),
        ],
    )
    web, oauth, from_file, dns = migration.targets

    assert web["reject_body_regex"] == ["Could not connect to database"]
    assert web["expect_body_regex"] == ["Download the latest version here"]
    assert web["fail_if_header_matches"][0]["header"] == "Set-Cookie"
    assert web["headers"] == {
        "Host": "vhost.example.com",
        "Origin": "example.com",
        "Accept-Language": "en-US",
    }
    assert web["valid_http_versions"] == ["HTTP/1.1", "HTTP/2.0"]
    assert oauth["expect_status"] == [200, 201]
    assert any("oauth2 is not translated" in n for n in migration.notes)
    # a key from a file stays in its file; a URL without a scheme is http://, as blackbox reads it
    assert from_file["headers"] == {"X-API-Key": {"from_file": "/path/to/api-key.txt"}}
    assert from_file["url"] == "http://api.example.com/v1"
    assert dns["query"] == "www.prometheus.io" and dns["server"] == "8.8.8.8"
    assert dns["validate_answer_rrs"]["fail_if_not_matches_regexp"] == [
        "www.prometheus.io.\t300\tIN\tA\t127.0.0.1"
    ]
    assert dns["min_answers"] == 0  # blackbox passes an empty answer


def test_the_command_writes_a_config_check_config_takes(tmp_path: Path) -> None:
    out = tmp_path / "stackprobe.yml"
    done = cli(
        EXAMPLE,
        "--target=http_basic_auth_example=https://login.example.com/",
        "--target=http_post_2xx=https://api.example.com/echo",
        "--target=tcp_connect_example=db.internal:5432",
        "--interval=30s",
        f"--out={out}",
    )

    assert done.returncode == 1, done.stderr  # one target left out
    assert "'db.internal:5432' (tcp_connect_example) left out" in done.stderr
    assert "set BLACKBOX_HTTP_BASIC_AUTH_EXAMPLE_PASSWORD" in done.stderr
    assert "mysecret" not in out.read_text() + done.stderr + done.stdout
    checked = subprocess.run(
        [sys.executable, "-m", "stackprobe", "check-config", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BLACKBOX_HTTP_BASIC_AUTH_EXAMPLE_PASSWORD": "x"},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    document = yaml.safe_load(out.read_text())
    assert document["defaults"] == {"interval": "30s"}
    assert [t["name"] for t in document["targets"]] == [
        "http_basic_auth_example-login.example.com",
        "http_post_2xx-api.example.com",
    ]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("/nonexistent/blackbox.yml", "--target=a=b"), "cannot read /nonexistent/blackbox.yml"),
        ((EXAMPLE, "--target=http_2xx_example"), "must be MODULE=TARGET"),
        ((EXAMPLE,), "no target"),
    ],
)
def test_unusable_input_says_what_to_fix(args: tuple[str | Path, ...], says: str) -> None:
    done = cli(*args)

    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_a_file_that_is_not_blackboxs_and_an_unknown_module(tmp_path: Path) -> None:
    other = tmp_path / "prometheus.yml"
    other.write_text("scrape_configs: []\n")
    refused = cli(other, "--target=a=b")
    unknown = migrate(MODULES, [("http_2xx", "https://a.example.com/")])

    assert refused.returncode == 2 and "has no `modules:` mapping" in refused.stderr
    assert not unknown.targets
    assert "no module 'http_2xx' in the file (it has dns_soa," in unknown.skipped[0]


def test_a_dns_server_given_by_name_is_kept_and_loads() -> None:
    migration = migrate(MODULES, [("dns_soa", "dns.google")])

    [target] = migration.targets
    assert target["server"] == "dns.google" and not migration.skipped
    assert make_target(target).server == "dns.google"  # type: ignore[attr-defined]


def test_address_family_compression_size_limit_and_cel_are_translated() -> None:
    modules = {
        "strict": {
            "prober": "http",
            "http": {
                "preferred_ip_protocol": "ip4",
                "ip_protocol_fallback": False,
                "compression": "GZIP",
                "body_size_limit": "1KB",
                "headers": {"Accept-Encoding": "gzip"},
                "fail_if_body_json_not_matches_cel": "body.status == 'ok'",
                "proxy_url": "http://probe:CANARY-pw@proxy.internal:3128",
                "no_proxy": "localhost",
                "proxy_connect_header": {"Proxy-Authorization": ["Basic CANARY-x"], "X-A": ["b"]},
                "skip_resolve_phase_with_proxy": True,
            },
        },
        "v6": {"prober": "dns", "dns": {"query_name": "a.example", "ip_protocol_fallback": False}},
    }
    migration = migrate(modules, [("strict", "https://a.example/"), ("v6", "10.0.0.2")])

    text = migration.config()
    assert "CANARY" not in text, "an inline proxy credential was copied"
    environ = {
        "BLACKBOX_STRICT_PROXY_URL": "http://probe:pw@proxy.internal:3128",
        "BLACKBOX_STRICT_PROXY_PROXY_AUTHORIZATION": "Basic eA==",
    }
    http, dns = (make_target(t, environ) for t in migration.targets)
    assert http.proxy_connect_header["X-A"] == "b"  # type: ignore[attr-defined]
    assert http.skip_resolve_phase_with_proxy and http.no_proxy == "localhost"  # type: ignore[attr-defined]
    assert (http.preferred_ip_protocol, http.ip_protocol_fallback) == ("ip4", False)  # type: ignore[attr-defined]
    assert (http.compression, http.body_size_limit) == ("gzip", 1024)  # type: ignore[attr-defined]
    assert http.headers == {"Accept-Encoding": "gzip"}  # type: ignore[attr-defined]
    assert http.fail_if_body_json_not_matches_cel.expression == "body.status == 'ok'"  # type: ignore[attr-defined]
    assert (dns.preferred_ip_protocol, dns.ip_protocol_fallback) == ("ip6", False)  # type: ignore[attr-defined]
    assert not any("not translated" in note for note in migration.notes), migration.notes


def test_the_translation_table_names_every_key_of_blackboxs_example() -> None:
    """docs/blackbox.md says what becomes of each http and dns key example.yml uses."""
    doc = (Path(__file__).parent.parent / "docs" / "blackbox.md").read_text()
    keys = {
        key
        for module in MODULES.values()
        if module["prober"] in ("http", "dns")
        for key in (module.get(module["prober"]) or {})
    }
    missing = sorted(key for key in keys if f"`{key}`" not in doc)
    assert not missing, f"docs/blackbox.md does not say what becomes of {missing}"
