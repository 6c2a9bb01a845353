"""The http kind through a real forward proxy (Debian's tinyproxy, with basic auth):
blackbox_exporter's `proxy_url`, `proxy_from_environment`, `no_proxy`,
`proxy_connect_header` and `skip_resolve_phase_with_proxy`."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from stackprobe.config import ConfigError
from stackprobe.probes.http import _bypasses
from tests.support.blackbox_peers import HttpPeer, Reply, Seen
from tests.support.polling import wait_until
from tests.support.probing import RunProbe, make_target, samples_by_name
from tests.support.processes import free_port, require_binary, stop

PASSWORD = "CANARY-proxy-pw-7d1e"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """tinyproxy on a loopback port, asking for `probe` / PASSWORD; its port."""
    binary = require_binary("tinyproxy")
    port = free_port()
    conf = tmp_path_factory.mktemp("tinyproxy") / "tinyproxy.conf"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 10\nMaxClients 32\nLogLevel Warning\n"
        f"BasicAuth probe {PASSWORD}\nDisableViaHeader Yes\n"
    )
    process = subprocess.Popen(
        [binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    def listening() -> bool:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 10, what="tinyproxy to listen")
    yield port
    stop(process)
    if process.stderr is not None:
        process.stderr.close()


def through(url: str, proxy: str, **keys: Any) -> Any:
    raw = {"name": "p", "kind": "http", "url": url, "timeout": "3s", **keys}
    return make_target({**raw, "proxy_url": {"from_env": "PROXY_URL"}}, {"PROXY_URL": proxy})


def ok(_: Seen) -> Reply:
    return Reply(body=b"ok")


async def test_a_request_goes_through_the_proxy_with_its_credentials(
    run_probe: RunProbe, proxy: int
) -> None:
    async with HttpPeer(ok) as server:
        good = await run_probe(through(server.url, f"http://probe:{PASSWORD}@127.0.0.1:{proxy}"))
        refused = await run_probe(through(server.url, f"http://probe:wrong@127.0.0.1:{proxy}"))
        reached = len(server.seen)

    assert good.success, good.detail
    assert samples_by_name(good)["probe_http_status_code"] == {(): 200.0}
    # the proxy asked for its credentials: it stood between probe and server
    assert (refused.success, refused.reason) == (False, "http_status")
    # tinyproxy answers a forwarded request's bad credentials with 401, a CONNECT's with 407
    assert samples_by_name(refused)["probe_http_status_code"][()] in (401, 407)
    assert reached == 1
    for result in (good, refused):
        assert PASSWORD not in repr(result), "the proxy's password leaked into a result"


async def test_https_goes_through_a_connect_tunnel(
    run_probe: RunProbe, proxy: int, tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with HttpPeer(ok, context) as server:
        result = await run_probe(
            through(
                server.url,
                f"http://probe:{PASSWORD}@127.0.0.1:{proxy}",
                tls={"ca_file": str(ca_file)},
                proxy_connect_header={"X-Probe": "stackprobe"},
            )
        )
        refused = await run_probe(
            through(
                server.url, f"http://probe:wrong@127.0.0.1:{proxy}", tls={"ca_file": str(ca_file)}
            )
        )
        reached = len(server.seen)

    assert result.success, result.detail
    # the tunnel went through the proxy: its CONNECT with the wrong password never reached
    assert not refused.success and reached == 1
    found = samples_by_name(result)
    assert found["probe_http_ssl"] == {(): 1.0}
    assert found["probe_http_duration_seconds"][("tls",)] > 0
    assert found["probe_ip_protocol"] == {(): 4.0}  # the target's address, as blackbox


async def test_the_environment_is_read_only_when_asked_and_no_proxy_bypasses(
    run_probe: RunProbe, proxy: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://probe:wrong@127.0.0.1:{proxy}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    raw = {"name": "p", "kind": "http", "timeout": "3s"}
    async with HttpPeer(ok) as server:
        ignored = await run_probe(make_target({**raw, "url": server.url}))
        read = await run_probe(
            make_target({**raw, "url": server.url, "proxy_from_environment": True})
        )
        monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.0/8")
        bypassed = await run_probe(
            make_target({**raw, "url": server.url, "proxy_from_environment": True})
        )

    assert ignored.success, "HTTP_PROXY was used by a target that did not ask for it"
    assert samples_by_name(read)["probe_http_status_code"][()] in (401, 407)
    assert bypassed.success, bypassed.detail


async def test_no_proxy_sends_a_host_straight(run_probe: RunProbe) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    async with HttpPeer(ok) as server:
        result = await run_probe(through(server.url, closed, no_proxy="localhost,127.0.0.1"))
    assert result.success, result.detail


async def test_the_target_name_is_resolved_here_unless_skipped(
    run_probe: RunProbe, proxy: int
) -> None:
    """blackbox looks the target's name up itself even through a proxy (the resolve phase),
    unless skip_resolve_phase_with_proxy: then only the proxy resolves it."""
    url = "http://no-such-host.invalid/health"
    via = f"http://probe:{PASSWORD}@127.0.0.1:{proxy}"
    resolved = await run_probe(through(url, via))
    skipped = await run_probe(through(url, via, skip_resolve_phase_with_proxy=True))

    assert (resolved.success, resolved.reason) == (False, "dns")
    assert not skipped.success and skipped.reason == "http_status"
    assert samples_by_name(skipped)["probe_http_status_code"][()] >= 500  # the proxy's answer
    assert ("resolve",) not in samples_by_name(skipped)["probe_http_duration_seconds"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"proxy_url": "http://probe:pw@proxy:3128"}, "proxy_url carries a password"),
        ({"proxy_url": "socks5://proxy:1080"}, "must be an http:// or https:// URL"),
        (
            {"proxy_url": "http://proxy:3128", "proxy_from_environment": True},
            "not both",
        ),
        (
            {
                "proxy_url": "http://proxy:3128",
                "proxy_connect_header": {"Proxy-Authorization": "x"},
            },
            "carries a credential",
        ),
    ],
)
def test_bad_proxy_settings_are_refused_with_why(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        make_target({"name": "p", "kind": "http", "url": "http://a.example/", **keys})
    assert "pw@" not in str(error.value)


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypassed"),
    [
        ("a.example.com", 80, "example.com", True),
        ("example.com", 80, ".example.com", True),
        ("badexample.com", 80, "example.com", False),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("10.0.0.1", 80, "0.0.1", False),  # an address is not matched as a domain
        ("::1", 80, "::1", True),
        ("[::1]", 80, "[::1]", True),
        ("::1", 8080, "[::1]:8080", True),
        ("anything", 80, "*", True),
        ("a.example.com", 8080, "example.com:8080", True),
        ("a.example.com", 443, "example.com:8080", False),
        ("a.example.com", 80, "", False),
    ],
)
def test_no_proxy_entries_match_as_go_reads_them(
    host: str, port: int, no_proxy: str, bypassed: bool
) -> None:
    assert _bypasses(host, port, no_proxy) is bypassed
