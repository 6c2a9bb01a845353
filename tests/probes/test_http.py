"""The http probe against real misbehaving servers on loopback (tests/support/peers.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import re
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import yaml

from stackprobe.config import ConfigError
from stackprobe.contract import Health, Verdict
from stackprobe.probes._http_clients import same_origin
from stackprobe.probes.http import Reason, classify
from tests.support.blackbox_peers import HttpPeer, Reply, Seen
from tests.support.peers import AUTH_TOKEN, BIG_BODY_BYTES, HEALTHY, REDIS_DOWN, Peers
from tests.support.polling import wait_until_async
from tests.support.probing import (
    UNUSED_AWS,
    ProbeRunner,
    RunProbe,
    make_target,
    samples_by_name,
    value,
)


def target(url: str, **extra: Any) -> Any:
    return make_target(
        {"name": "t", "kind": "http", "url": url, "timeout": "2s", "interval": "10s", **extra}
    )


def hostile(peers: Peers, name: str) -> str:
    """The URL of one of tests/support/peers.py's HOSTILE peers."""
    return f"http://127.0.0.1:{peers.hostile[name]}/health/ready"


async def test_healthy_endpoint_exports_blackbox_names_and_components(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(target(f"{peers.http}/health/ready"))

    assert result.success and result.reason is None
    found = samples_by_name(result)
    assert set(found) == {
        "probe_http_status_code",
        "probe_http_content_length",
        "probe_http_uncompressed_body_length",
        "probe_http_duration_seconds",
        "probe_http_redirects",
        "probe_http_ssl",
        "probe_http_version",
        "probe_ip_protocol",
        "probe_ip_addr_hash",
        "stackprobe_health_component_up",
        "stackprobe_health_components_dropped",
    }
    assert found["probe_http_status_code"] == {(): 200.0}
    assert found["probe_ip_protocol"] == {(): 4.0}  # the peers listen on 127.0.0.1
    assert (
        found["probe_http_content_length"][()] == found["probe_http_uncompressed_body_length"][()]
    )
    assert set(found["probe_http_duration_seconds"]) == {
        ("resolve",),
        ("connect",),
        ("tls",),
        ("processing",),
        ("transfer",),
    }
    assert found["probe_http_duration_seconds"][("connect",)] > 0
    assert found["probe_http_duration_seconds"][("tls",)] == 0
    assert found["probe_http_ssl"] == {(): 0.0}
    assert found["probe_http_version"] == {(): 1.1}
    assert found["stackprobe_health_component_up"] == {
        ("overall",): 1.0,
        ("db",): 1.0,
        ("redis",): 1.0,
    }


async def test_redis_false_in_a_503_body_is_a_component_down(
    peers: Peers, run_probe: RunProbe
) -> None:
    """AEP Incident 3: `/health/ready` answers 503 with `redis: false`."""
    result = await run_probe(target(f"{peers.http}/redis-down"))

    assert not result.success
    assert result.reason == Reason.HTTP_STATUS
    assert result.detail == "status 503, expected 2xx; unhealthy components: overall, redis"
    assert samples_by_name(result)["stackprobe_health_component_up"] == {
        ("overall",): 0.0,
        ("db",): 1.0,
        ("redis",): 0.0,
    }


async def test_nested_checks_and_gzip_bodies_are_parsed(peers: Peers, run_probe: RunProbe) -> None:
    nested = await run_probe(target(f"{peers.http}/nested"))
    assert samples_by_name(nested)["stackprobe_health_component_up"] == {
        ("overall",): 0.0,
        ("redis",): 0.0,
        ("db",): 1.0,
    }
    gzipped = await run_probe(target(f"{peers.http}/gzip-ok"))
    assert samples_by_name(gzipped)["stackprobe_health_component_up"][("redis",)] == 0.0


async def test_a_redirect_past_the_limit_reports_the_last_response_as_blackbox_does(
    peers: Peers, run_probe: RunProbe
) -> None:
    """blackbox_exporter's own case: the last status, version and length, and the refused
    redirect counted (11 for a limit of 10)."""
    result = await run_probe(target(f"{peers.http}/redirect-loop", max_redirects=3))

    assert (result.success, result.reason) == (False, Reason.TOO_MANY_REDIRECTS)
    assert value(result, "probe_http_status_code") == 302
    assert value(result, "probe_http_redirects") == 4
    assert value(result, "probe_http_version") == 1.1
    assert value(result, "probe_http_content_length") >= 0


@pytest.mark.parametrize(
    ("where", "extra", "reason"),
    [
        ("/hang", {}, Reason.TIMEOUT),
        ("/trickle", {}, Reason.TIMEOUT),
        ("/big", {"expect_body_regex": ["x"]}, Reason.BODY_TOO_LARGE),
        ("/big-chunked", {"body_format": "json"}, Reason.BODY_TOO_LARGE),
        ("/gzip-bomb", {"body_format": "json"}, Reason.BODY_TOO_LARGE),
        ("/truncated-gzip", {}, Reason.INVALID_BODY),
        ("/invalid-json", {}, Reason.INVALID_BODY),
        ("/garbage", {"body_format": "json"}, Reason.INVALID_BODY),
        ("/garbage", {"expect_body_regex": ["healthy"]}, Reason.BODY_MISMATCH),
        ("/plain", {"reject_body_regex": ["^OK"]}, Reason.BODY_MISMATCH),
        ("/ok", {"expect_json": [{"path": "redis", "equals": False}]}, Reason.BODY_MISMATCH),
        ("/redis-down", {}, Reason.HTTP_STATUS),
        ("/status/404", {}, Reason.HTTP_STATUS),
        ("/ok", {"expect_status": [204]}, Reason.HTTP_STATUS),
        ("/redirect-loop", {}, Reason.TOO_MANY_REDIRECTS),
        ("/auth", {}, Reason.HTTP_STATUS),
        ("reset", {}, Reason.CONNECTION_CLOSED),
        ("close", {}, Reason.CONNECTION_CLOSED),
        # closed after the ClientHello: what a port that is not TLS, or a server refusing
        # the client, does in the handshake
        ("tls-close", {}, Reason.TLS),
        ("garbage-tcp", {}, Reason.INVALID_RESPONSE),
        ("refused", {}, Reason.CONNECT_REFUSED),
        ("blackhole", {}, Reason.CONNECT_TIMEOUT),
        ("self-signed", {}, Reason.TLS),
        ("expired", {}, Reason.TLS_CERT_EXPIRED),
        ("no-such-host", {}, Reason.DNS),
    ],
)
async def test_failure_reasons(
    peers: Peers, run_probe: RunProbe, where: str, extra: dict[str, Any], reason: Reason
) -> None:
    urls = {
        "reset": f"http://127.0.0.1:{peers.reset_port}/",
        "close": f"http://127.0.0.1:{peers.close_port}/",
        "tls-close": f"https://127.0.0.1:{peers.close_port}/",
        "garbage-tcp": f"http://127.0.0.1:{peers.garbage_port}/",
        "refused": f"http://127.0.0.1:{peers.closed_port}/",
        "blackhole": f"http://127.0.0.1:{peers.blackhole_port}/",
        "self-signed": f"{peers.https_self_signed}/ok",
        "expired": f"{peers.https_expired}/ok",
        "no-such-host": "http://no-such-host.invalid/",
    }
    if where == "expired":
        extra = {"tls": {"ca_file": str(peers.ca_file)}}
    url = urls.get(where, f"{peers.http}{where}")
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await run_probe(target(url, timeout="1s", **extra))

    assert (result.success, result.reason) == (False, reason), result.detail
    assert loop.time() - started < 1.5  # the probe keeps its own deadline
    assert "probe_http_status_code" in samples_by_name(result)  # series never go absent


async def test_timeout_names_the_phase(peers: Peers, run_probe: RunProbe) -> None:
    connect = await run_probe(target(f"http://127.0.0.1:{peers.blackhole_port}/", timeout="1s"))
    hang = await run_probe(target(f"{peers.http}/hang", timeout="1s"))

    assert connect.detail == "no answer within 1s (stopped in the connect phase)"
    assert hang.detail == "no answer within 1s (stopped in the processing phase)"


@pytest.fixture(scope="module")
def peers_elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The same peers in another process, so tracemalloc here sees only the prober."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.peers", str(tmp_path_factory.mktemp("elsewhere"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent.parent,
    )
    assert process.stdout is not None and process.stdin is not None
    yield json.loads(process.stdout.readline())
    process.stdin.close()
    process.wait(timeout=30)
    process.stdout.close()


@pytest.mark.parametrize("where", ["/big", "/big-chunked", "/gzip-bomb", "/brotli-bomb"])
async def test_huge_bodies_cost_no_more_memory_than_the_cap(
    peers_elsewhere: dict[str, Any], run_probe: RunProbe, where: str
) -> None:
    """50 MB of body or 2 GiB of gzip or brotli bomb (asked for with `compression: br`): the
    probe holds at most the cap plus a chunk."""
    cap = 1024 * 1024
    coding = {"compression": "br"} if where == "/brotli-bomb" else {}
    probe_target = target(
        f"{peers_elsewhere['http']}{where}",
        max_body_bytes=cap,
        timeout="5s",
        body_format="json",
        **coding,
    )
    gc.collect()
    tracemalloc.start()
    try:
        result = await run_probe(probe_target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.reason == Reason.BODY_TOO_LARGE
    # Bounded by the cap, not by the body: the body itself, a bytearray's growth slack, one
    # network chunk and the client's own objects (measured 1.5-1.7 MiB; httpx's own decoder
    # peaks at ~144 MiB on the same bomb).
    assert peak < cap * 2, f"peak {peak / 2**20:.2f} MiB"


async def test_a_body_declared_too_large_is_refused_before_reading(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(target(f"{peers.http}/big", expect_body_regex=["x"]))

    assert value(result, "probe_http_content_length") == BIG_BODY_BYTES
    assert value(result, "probe_http_uncompressed_body_length") == 0
    assert result.detail == f"Content-Length {BIG_BODY_BYTES} is over max_body_bytes=1048576"


async def test_a_large_body_nothing_needs_passes(peers: Peers, run_probe: RunProbe) -> None:
    """A tile, an image or a big JSON document over the cap: nothing needs its content, so
    size alone is no failure (components are simply not read from a JSON body that large)."""
    declared = await run_probe(target(f"{peers.http}/big"))
    streamed = await run_probe(target(f"{peers.http}/big-chunked"))

    assert declared.success, declared.detail
    assert streamed.success, streamed.detail
    # Read up to the cap and no further, whether the length was announced or not.
    assert value(declared, "probe_http_uncompressed_body_length") == 1024 * 1024 + 1
    assert value(streamed, "probe_http_uncompressed_body_length") == 1024 * 1024 + 1


async def test_a_wrong_status_outranks_a_large_body(peers: Peers, run_probe: RunProbe) -> None:
    result = await run_probe(target(f"{peers.http}/big", expect_status=[204]))

    assert (result.reason, result.detail) == (Reason.HTTP_STATUS, "status 200, expected 204")


async def test_a_body_cut_short_is_connection_closed(peers: Peers, run_probe: RunProbe) -> None:
    result = await run_probe(target(f"http://127.0.0.1:{peers.short_body_port}/"))

    assert result.reason == Reason.CONNECTION_CLOSED
    assert result.detail == "the connection closed before the body was complete"


async def test_credentials_stay_with_their_origin_on_redirect(
    peers: Peers, run_probe: RunProbe
) -> None:
    """A redirect to another origin must not carry basic auth or secret headers along."""
    elsewhere = f"{peers.https_trusted}/record-headers"
    raw = {
        "name": "t",
        "kind": "http",
        "url": f"{peers.http}/redirect-to?url={elsewhere}",
        "basic_auth": {"username": "probe", "password": {"from_env": "PASSWORD"}},
        "headers": {"X-Api-Token": {"from_env": "TOKEN"}, "X-Plain": "kept"},
        "tls": {"ca_file": str(peers.ca_file)},
    }
    peers.recorded_headers.clear()

    result = await run_probe(make_target(raw, {"PASSWORD": "CANARY-pw", "TOKEN": "CANARY-tok"}))

    assert result.success, result.detail
    assert peers.recorded_headers == [{"x-plain"}]


async def test_cookies_are_never_kept_between_runs(peers: Peers, run_probe: RunProbe) -> None:
    """An ALB stickiness cookie from one target must not pin the next probe to one task."""
    peers.recorded_headers.clear()
    first = await run_probe(target(f"{peers.http}/set-cookie"))
    second = await run_probe(target(f"{peers.http}/record-headers"))

    assert first.success and second.success
    assert peers.recorded_headers == [set()]


@pytest.mark.parametrize(
    ("first", "then", "same"),
    [
        ("http://h/", "http://h/x", True),
        ("http://h/", "https://h/", True),
        ("http://h:8080/", "https://h/", False),
        ("http://h/", "https://h:8443/", False),
        ("https://h/", "http://h/", False),
        ("http://h/", "http://other/", False),
    ],
)
def test_same_origin(first: str, then: str, same: bool) -> None:
    assert same_origin(httpx.URL(first), httpx.URL(then)) is same


async def test_credentials_follow_a_same_origin_redirect(peers: Peers, run_probe: RunProbe) -> None:
    raw = {
        "name": "t",
        "kind": "http",
        "url": f"{peers.http}/redirect-to?url=/record-headers",
        "headers": {"X-Api-Token": {"from_env": "TOKEN"}},
    }
    peers.recorded_headers.clear()

    result = await run_probe(make_target(raw, {"TOKEN": "CANARY-tok"}))

    assert result.success, result.detail
    assert peers.recorded_headers == [{"x-api-token"}]


@pytest.mark.parametrize(
    ("userinfo", "expected"), [("user:CANARY-pw", "user:CANARY-pw"), ("user", "user:")]
)
async def test_a_urls_own_user_and_password_go_as_basic_auth(
    run_probe: RunProbe, userinfo: str, expected: str
) -> None:
    """As Go's client and httpx send them; the URL on the wire carries neither."""
    import base64

    def reply(seen: Seen) -> Reply:
        if seen.target == "/first":  # a same-origin redirect keeps them
            return Reply(302, (("Location", "/second"),))
        return Reply(200)

    async with HttpPeer(reply) as peer:
        url = peer.url.replace("://", f"://{userinfo}@") + "/first"
        raw = {"name": "t", "kind": "http", "url": {"from_env": "URL"}}
        result = await run_probe(make_target(raw, {"URL": url}))

    assert result.success, result.detail
    sent = "Basic " + base64.b64encode(expected.encode()).decode()
    assert [(seen.target, seen.headers.get("authorization")) for seen in peer.seen] == [
        ("/first", sent),
        ("/second", sent),
    ]


async def test_tls_with_a_private_ca_reports_certificate_and_version(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(
        target(f"{peers.https_trusted}/ok", tls={"ca_file": str(peers.ca_file)})
    )

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found["probe_http_ssl"] == {(): 1.0}
    assert found["probe_http_duration_seconds"][("tls",)] > 0
    assert set(found["probe_tls_version_info"]) == {("TLS 1.3",)}
    expiry = dt.datetime.fromtimestamp(found["probe_ssl_earliest_cert_expiry"][()], dt.UTC)
    assert expiry > dt.datetime.now(dt.UTC)


async def test_insecure_skip_verify_still_reports_the_expired_certificate(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(
        target(f"{peers.https_expired}/ok", tls={"insecure_skip_verify": True})
    )

    assert result.success, result.detail
    expiry = value(result, "probe_ssl_earliest_cert_expiry")
    assert expiry == dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()


async def test_an_expired_certificate_still_reports_when_it_expired(
    peers: Peers, run_probe: RunProbe
) -> None:
    """The run fails verification, and probe_ssl_earliest_cert_expiry is still there, read
    from a second handshake (blackbox_exporter drops it once the certificate has expired)."""
    result = await run_probe(
        target(f"{peers.https_expired}/ok", tls={"ca_file": str(peers.ca_file)})
    )

    assert (result.success, result.reason) == (False, Reason.TLS_CERT_EXPIRED)
    assert value(result, "probe_ssl_earliest_cert_expiry") == (
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
    )
    assert result.detail.endswith("it expired on 2024-01-01 00:00 UTC"), result.detail


async def test_redirects_are_followed_and_counted(peers: Peers, run_probe: RunProbe) -> None:
    followed = await run_probe(target(f"{peers.http}/redirect-once"))
    not_followed = await run_probe(
        target(f"{peers.http}/redirect-once", follow_redirects=False, expect_status=[302])
    )

    assert followed.success and value(followed, "probe_http_redirects") == 1
    assert value(followed, "probe_http_status_code") == 200
    assert not_followed.success and value(not_followed, "probe_http_status_code") == 302


async def test_credentials_from_env_are_sent(peers: Peers, run_probe: RunProbe) -> None:
    raw = {
        "name": "t",
        "kind": "http",
        "url": f"{peers.http}/auth",
        "headers": {"Authorization": {"from_env": "HEALTH_TOKEN"}},
    }
    result = await run_probe(make_target(raw, {"HEALTH_TOKEN": AUTH_TOKEN}))

    assert result.success, result.detail


async def test_latency_threshold_is_exported_for_alerting(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(target(f"{peers.http}/ok", latency_threshold="500ms"))

    assert value(result, "stackprobe_http_latency_threshold_seconds") == 0.5


async def test_components_are_bounded(peers: Peers, run_probe: RunProbe) -> None:
    result = await run_probe(target(f"{peers.http}/ok", max_health_components=2))

    assert len(samples_by_name(result)["stackprobe_health_component_up"]) == 2
    assert value(result, "stackprobe_health_components_dropped") == 1


@pytest.mark.parametrize(
    ("peer", "extra", "reason"),
    [
        ("br-503", {}, Reason.HTTP_STATUS),  # the status is judged before the body
        ("br-503", {"body_format": "json"}, Reason.HTTP_STATUS),
        ("br-200", {}, None),  # an HTML page nothing reads
        ("zstd-200", {}, None),  # an image nothing reads
        ("br-200", {"body_format": "text", "health_components": False}, None),
        ("br-200", {"expect_body_regex": ["ready"]}, Reason.INVALID_BODY),
        ("br-200", {"body_format": "json"}, Reason.INVALID_BODY),
        # said to be JSON, but no check reads it: its components stay unread, and the run
        # passes, as blackbox_exporter's does
        ("br-200-json", {}, None),
        ("br-200-json", {"expect_json": [{"path": "status", "equals": "ok"}]}, Reason.INVALID_BODY),
    ],
)
async def test_an_encoding_that_was_not_asked_for_fails_only_a_run_that_reads_the_body(
    peers: Peers, run_probe: RunProbe, peer: str, extra: dict[str, Any], reason: Reason | None
) -> None:
    """The request asks for gzip only. A body in another coding cannot be read, which matters
    only to a run that reads it, and never before the status has been judged."""
    result = await run_probe(target(hostile(peers, peer), **extra))

    assert (result.success, result.reason) == (reason is None, reason), result.detail
    if reason is Reason.INVALID_BODY:
        assert "content-encoding" in result.detail and "was not asked for" in result.detail
    if reason is Reason.HTTP_STATUS:
        assert result.detail == "status 503, expected 2xx"


async def test_a_body_cut_short_in_a_coding_not_asked_for_is_connection_closed(
    peers: Peers, run_probe: RunProbe
) -> None:
    """The body is read on, raw, when it cannot be decoded: the close is what broke."""
    result = await run_probe(target(hostile(peers, "br-cut"), expect_body_regex=["ready"]))

    assert result.reason == Reason.CONNECTION_CLOSED, result.detail


@pytest.mark.parametrize(
    ("peer", "shown"),
    [
        ("ssh", "SSH-2.0-OpenSSH_9.2"),  # a banner, sent before the request
        ("http09", "<html><body>ready"),  # HTTP/0.9: a body without a status line
        ("redis", "-ERR unknown command 'GET'"),
        ("postgres", "b'E\\x00\\x00\\x00"),  # an ErrorResponse packet
        ("bad-chunk", "chunk"),  # Transfer-Encoding: chunked with a size that is not hex
        ("huge-headers", "too long"),  # 1 MiB of headers: refused at h11's limit, not held
    ],
)
async def test_a_reply_in_another_protocol_is_invalid_response(
    peers: Peers, run_probe: RunProbe, peer: str, shown: str
) -> None:
    """The port answered, but not in HTTP/1.x: the detail shows what it answered, at once."""
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await run_probe(target(hostile(peers, peer), timeout="5s"))

    assert result.reason == Reason.INVALID_RESPONSE, result.detail
    assert shown in result.detail
    assert loop.time() - started < 2  # judged from the bytes, not by waiting for the deadline


async def test_a_hang_up_in_the_middle_of_the_head_stays_connection_closed(
    peers: Peers, run_probe: RunProbe
) -> None:
    """Half an HTTP head, then a close: the peer went away, it broke no protocol (as with a
    reset or a close before any byte, in test_failure_reasons)."""
    result = await run_probe(target(hostile(peers, "head-cut")))

    assert result.reason == Reason.CONNECTION_CLOSED, result.detail
    assert "in the middle of the response head" in result.detail


@pytest.mark.parametrize("server", ["redis", "postgres"])
async def test_a_datastore_on_the_port_hangs_up_without_a_byte(
    run_probe: RunProbe, server: str
) -> None:
    """Real Redis (7) and PostgreSQL (15) answer an HTTP request by closing without a byte
    (Redis's "Host:" guard; PostgreSQL's "invalid length of startup packet"): on the wire,
    the same as an application that dies, so the reason is connection_closed and the detail
    says no byte came, and what that can mean."""
    from tests.support.datastores import RedisServer, ThrowawayCluster

    if server == "redis":
        redis = RedisServer().start()
        try:
            result = await run_probe(target(f"http://127.0.0.1:{redis.port}/"))
        finally:
            redis.stop()
    else:
        cluster = ThrowawayCluster().create()
        try:
            result = await run_probe(target(f"http://127.0.0.1:{cluster.port}/"))
        finally:
            cluster.destroy()

    assert result.reason == Reason.CONNECTION_CLOSED
    assert "without sending a byte" in result.detail
    assert "another protocol" in result.detail


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({}, Reason.CONNECTION_CLOSED),
        ({"body_format": "text", "health_components": False}, Reason.CONNECTION_CLOSED),
        # A run that needs the body fails on the announced length alone, reading nothing.
        ({"expect_body_regex": ["ok"]}, Reason.BODY_TOO_LARGE),
    ],
)
async def test_a_body_cut_short_under_a_length_over_the_cap_is_connection_closed(
    peers: Peers, run_probe: RunProbe, extra: dict[str, Any], reason: Reason
) -> None:
    """`Content-Length: 2147483648`, 10 bytes, then a close: a broken server, whether or not
    a check reads the body (the body is read up to the cap to know it)."""
    result = await run_probe(target(hostile(peers, "huge-length-cut"), **extra))

    assert result.reason == reason, result.detail
    assert value(result, "probe_http_content_length") == 2147483648
    if reason is Reason.CONNECTION_CLOSED:
        assert result.detail == "the connection closed before the body was complete"


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "gopher://127.0.0.1:70/1", "ftp://127.0.0.1/pub", "ws://x/"]
)
async def test_a_redirect_to_another_scheme_is_refused(
    peers: Peers, run_probe: RunProbe, location: str, caplog: pytest.LogCaptureFixture
) -> None:
    scheme = location.split(":", 1)[0]

    result = await run_probe(target(f"{peers.http}/redirect-to?url={location}"))
    not_followed = await run_probe(
        target(
            f"{peers.http}/redirect-to?url={location}", follow_redirects=False, expect_status=[302]
        )
    )

    assert result.reason == Reason.INVALID_REDIRECT, result.detail
    assert result.detail == (
        f"status 302 redirects to a {scheme}:// URL; only http:// and https:// are followed"
    )
    assert value(result, "probe_http_status_code") == 302
    assert not_followed.success, not_followed.detail
    assert not [record for record in caplog.records if record.exc_info]


async def test_a_location_that_is_not_a_url_is_invalid_redirect(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(target(hostile(peers, "bad-location")))

    assert result.reason == Reason.INVALID_REDIRECT, result.detail
    assert "location" in result.detail.lower()


async def test_the_request_asks_only_for_encodings_it_can_bound(run_probe: RunProbe) -> None:
    async with HttpPeer(lambda seen: Reply(200)) as peer:
        await run_probe(target(f"{peer.url}/ready"))

    (request,) = peer.seen
    assert request.headers["accept-encoding"] == "gzip"
    assert request.headers["connection"] == "close"
    assert request.headers["user-agent"].startswith("stackprobe/")
    assert "cookie" not in request.headers


def connect_error(*errors: OSError) -> httpx.ConnectError:
    """The chain a refused connect raises (probes/_http_network.py, mapped to httpx's by
    probes/_http_clients.py): the OSError itself for one address, one per address tried in
    an ExceptionGroup for several."""
    per_address = []
    for error in errors:
        core = httpcore.ConnectError(error)
        core.__cause__ = error
        per_address.append(core)
    if len(per_address) == 1:
        inner: Exception = per_address[0]
    else:
        inner = httpcore.ConnectError("every address of h failed")
        inner.__cause__ = ExceptionGroup("one error per address", per_address)
    wrapped = httpx.ConnectError(str(inner))
    wrapped.__cause__ = inner
    return wrapped


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (httpx.PoolTimeout("pool"), Reason.POOL_TIMEOUT),
        (httpx.ConnectTimeout("connect"), Reason.CONNECT_TIMEOUT),
        (httpx.ReadTimeout("read"), Reason.TIMEOUT),
        (connect_error(ConnectionRefusedError(111, "refused")), Reason.CONNECT_REFUSED),
        (
            connect_error(
                ConnectionRefusedError(111, "refused"), ConnectionRefusedError(111, "refused")
            ),
            Reason.CONNECT_REFUSED,
        ),
        (connect_error(OSError(101, "unreachable"), OSError(101, "x")), Reason.UNREACHABLE),
        (
            connect_error(OSError(101, "no route"), ConnectionRefusedError(111, "refused")),
            Reason.CONNECT_REFUSED,
        ),
        (
            connect_error(OSError(99, "cannot assign"), ConnectionRefusedError(111, "r")),
            Reason.CONNECT_REFUSED,
        ),
        (httpx.ReadError("read"), Reason.CONNECTION_CLOSED),
        (httpx.UnsupportedProtocol("ftp"), Reason.OTHER),
        (OSError(101, "Network is unreachable"), Reason.UNREACHABLE),
    ],
)
def test_classify_maps_each_exception_to_its_reason(exc: BaseException, reason: Reason) -> None:
    assert classify(exc) == reason


async def test_multi_member_gzip_and_raw_deflate_bodies_decode(run_probe: RunProbe) -> None:
    import zlib

    def gz(data: bytes) -> bytes:
        return zlib.compress(data, wbits=16 + zlib.MAX_WBITS)

    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    deflated = raw.compress(b'{"redis": false}') + raw.flush()
    bodies = {
        "/members": ("gzip", gz(b'{"redis": ') + gz(b"false}")),
        "/raw": ("deflate", deflated),
    }

    def reply(seen: Seen) -> Reply:
        coding, body = bodies[seen.target]
        headers = (("Content-Encoding", coding), ("Content-Type", "application/json"))
        return Reply(200, headers, body)

    async with HttpPeer(reply) as peer:
        for path in bodies:
            result = await run_probe(target(f"{peer.url}{path}"))
            assert result.success, result.detail
            assert samples_by_name(result)["stackprobe_health_component_up"] == {("redis",): 0.0}


async def test_the_connection_limit_holds_and_a_saturated_one_is_pool_timeout(
    peers: Peers,
) -> None:
    """One slot, two probes of a slow endpoint: the second waits its whole deadline for the
    slot and says so. Every connection is closed and its slot free afterwards."""
    from stackprobe.contract import ProbeContext
    from stackprobe.probes import KINDS
    from stackprobe.probes._aws_api import AWS
    from stackprobe.probes._http_clients import HTTP_CLIENTS, FreshConnections, HttpClients

    clients = HttpClients(max_connections=1)
    slow = target(f"{peers.http}/slow?seconds=1.5", timeout="1s")
    loop = asyncio.get_running_loop()
    try:
        # One context, so one deadline: the second probe's wait for the slot ends with it.
        ctx = ProbeContext(loop.time() + 1.0, resources={HTTP_CLIENTS: clients, AWS: UNUSED_AWS})
        first, second = await asyncio.gather(
            KINDS["http"].probe(slow, ctx), KINDS["http"].probe(slow, ctx)
        )
        pools = clients.pools()
        assert len(pools) == 1 and isinstance(pools[0], FreshConnections)
        assert pools[0].open_connections == 0 and not clients.slots.locked()
    finally:
        await clients.aclose()

    assert sorted([first.reason, second.reason]) == sorted([Reason.TIMEOUT, Reason.POOL_TIMEOUT])


@pytest.mark.parametrize("scheme", ["https", "http"])
async def test_a_probe_that_times_out_closes_its_socket_at_once(peers: Peers, scheme: str) -> None:
    """A server that never answers (not even the TLS ClientHello): each run times out, and
    its socket must be closed then, not when a garbage collection finds it. Left to the
    collector, 2,000 such targets held thousands of sockets, and the collection that closed
    them stalled /metrics for a second (bench/hostile_targets.py)."""
    from stackprobe.probes._http_clients import HttpClients

    clients = HttpClients(max_connections=20)
    silent = target(f"{scheme}://127.0.0.1:{peers.silent_port}/health/ready", timeout="300ms")
    gc.disable()  # what is left open stays open, as it would between two collections
    try:
        results = await asyncio.gather(*(ProbeRunner.once(silent, http=clients) for _ in range(10)))
        assert {r.reason for r in results} == {Reason.TIMEOUT}, [r.detail for r in results]
        await wait_until_async(
            lambda: _none_open(peers),
            5,
            what=f"the silent server to see every connection closed ({peers.silent_open[0]} open)",
        )
    finally:
        gc.enable()
        await clients.aclose()


async def test_a_run_leaves_nothing_for_the_garbage_collector(peers: Peers) -> None:
    """What a run makes is freed when it ends, by reference counting. A reference cycle per
    run (httpx binds a streamed body to its response; a nested function that calls itself;
    an exception kept in a local of the frame it is raised from) kept each run's request,
    headers, trace and parsed body until a full collection, which at 2,000 targets was
    80 MiB of RSS and a 0.7 s /metrics stall (bench/hostile_targets.py). Left out: asyncio's
    own socket transports, a cycle on Python 3.11 that 3.12 breaks."""
    from stackprobe.probes._http_clients import HttpClients

    clients = HttpClients(max_connections=4)
    urls = [
        f"{peers.http}/nested",
        f"{peers.http}/redis-down",
        hostile(peers, "ssh"),  # NotHttp, raised from the head
        f"http://127.0.0.1:{peers.short_body_port}/",  # ClosedEarly, raised from the body
        f"{peers.http}/hang",
    ]
    runners = [ProbeRunner(target(url, timeout="300ms"), http=clients) for url in urls]
    for runner in runners:
        await runner.run()  # what a first run sets up for good is not garbage
    gc.collect()
    gc.disable()
    try:
        results = [await runner.run() for runner in runners for _ in range(5)]
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = sorted(
            {_named(o) for o in gc.garbage if _named(o).startswith(("stackprobe", "httpx"))}
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        for runner in runners:
            await runner.aclose()
        await clients.aclose()

    assert [r.reason for r in results[-5:]] == [Reason.TIMEOUT] * 5
    assert ours == []


def _named(thing: object) -> str:
    """Where a garbage object comes from: its type's module, or a function's own module."""
    module = getattr(thing, "__module__", None) if callable(thing) else None
    kind = type(thing)
    return f"{module or kind.__module__}.{getattr(thing, '__qualname__', kind.__qualname__)}"


async def _none_open(peers: Peers) -> bool:
    return peers.silent_open[0] == 0


@pytest.mark.parametrize(
    ("config", "labels"),
    [
        ({"url": "https://x.example/health/live"}, {"role": "liveness"}),
        ({"url": "https://x.example/livez"}, {"role": "liveness"}),
        ({"url": "https://x.example/health/ready/"}, {"role": "readiness"}),
        ({"url": "https://x.example/readyz?verbose=1"}, {"role": "readiness"}),
        ({"url": "https://tiles.example/tiles/3/4/2.png"}, {"role": "endpoint"}),
        ({"url": "https://x.example/health/live", "role": "dependency"}, {"role": "dependency"}),
        ({"url": {"from_env": "HEALTH_URL"}}, {"role": "endpoint"}),
        (
            {
                "discover": {
                    "ecs": {"cluster": "c", "service": "api", "port": 8787, "path": "/health/ready"}
                }
            },
            {"role": "readiness", "service": "api"},
        ),
        (
            {
                "discover": {"ecs": {"cluster": "c", "service": "api", "port": 8787}},
                "labels": {"service": "api-staging"},
            },
            {"role": "endpoint", "service": "api-staging"},
        ),
    ],
)
def test_role_and_service_labels_come_from_the_config(
    config: dict[str, Any], labels: dict[str, str]
) -> None:
    target = make_target(
        {"name": "t", "kind": "http", **config}, {"HEALTH_URL": "https://x.example/health/live"}
    )

    assert dict(target.series_labels) == labels


async def test_a_component_named_after_a_secret_is_never_exported(
    peers: Peers, run_probe: RunProbe
) -> None:
    """A server that echoes the request's Authorization as a JSON key must not put the token
    in a label value: the component is left out, the others stay."""
    secret = "Bearer CANARY-reflected-4d1f"
    raw = {"name": "t", "kind": "http", "url": f"{peers.http}/reflect-auth", "timeout": "2s"}
    raw["headers"] = {"Authorization": {"from_env": "TOKEN"}}
    result = await run_probe(make_target(raw, {"TOKEN": secret}))

    assert samples_by_name(result)["stackprobe_health_component_up"] == {("db",): 1.0}
    assert "CANARY" not in repr(result)


# The console's verdict and evidence (exporter/contract.py: Verdict, Evidence).


def rule_names() -> set[str]:
    """Every alert the shipped rules define."""
    root = Path(__file__).resolve().parent.parent.parent / "alert_rules"
    return {
        rule["alert"]
        for path in root.glob("*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_every_alert_a_verdict_names_is_a_shipped_rule() -> None:
    from stackprobe.probes import http

    named = {*http.ROLE_ALERTS.values(), http.REDIS_ALERT, http.COMPONENT_ALERT}
    named |= {http.CERT_ALERT, http.SLOW_ALERT, http.TASK_ALERT, http.NO_TASKS_ALERT}

    assert named <= rule_names()


def shown(result: Any, label: str) -> list[str]:
    return [value for name, value in result.evidence if name == label]


async def test_a_healthy_run_is_ok_and_shows_request_status_headers_and_body(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(target(f"{peers.http}/health/ready"))

    assert result.health() == Verdict(Health.OK)
    assert shown(result, "request") == [f"GET {peers.http}/health/ready"]
    assert shown(result, "status") == ["HTTP/1.1 200 OK"]
    assert "content-type: application/json; charset=utf-8" in shown(result, "header")
    assert shown(result, "body") == [json.dumps(HEALTHY)]
    assert shown(result, "failed in") == shown(result, "tls") == []


@pytest.mark.parametrize(
    ("role", "alert"),
    [
        ("liveness", "HealthLiveFailing"),
        ("readiness", "HealthReadyFailing"),
        ("endpoint", "EndpointFailing"),
        ("dependency", "ExternalDependencyFailing"),
    ],
)
async def test_a_failed_run_names_the_alert_of_its_role(
    peers: Peers, run_probe: RunProbe, role: str, alert: str
) -> None:
    result = await run_probe(target(f"{peers.http}/status/503", role=role))

    assert result.health() == Verdict(Health.FAILING, "status 503, expected 2xx", alert)
    assert shown(result, "status") == ["HTTP/1.1 503 Service Unavailable"]
    assert shown(result, "body") == ["status\n"]
    assert shown(result, "failed in") == ["the checks of the response"]


@pytest.mark.parametrize(
    ("role", "alert"),
    [
        ("readiness", "AppRedisPoolBroken"),  # which mutes HealthReadyFailing (alertmanager.yml)
        ("endpoint", "AppRedisPoolBroken"),
        ("liveness", "HealthLiveFailing"),  # the P0 stays the page
    ],
)
async def test_a_503_naming_redis_down_says_so_and_pages_for_redis(
    peers: Peers, run_probe: RunProbe, role: str, alert: str
) -> None:
    """AEP Incident 3: `/health/ready` answers 503 with `redis: false`."""
    result = await run_probe(target(f"{peers.http}/redis-down", role=role))

    why = "status 503, expected 2xx; `redis: false` in /redis-down"
    assert result.health() == Verdict(Health.FAILING, why, alert)
    assert shown(result, "body") == [json.dumps(REDIS_DOWN)]


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (
            {"status": "ok", "database": False},
            Verdict(
                Health.FAILING,
                "`database: false` in /health/ready (status 200)",
                "DependencyComponentDown",
            ),
        ),
        (
            {"checks": {"redis": {"status": "fail"}, "db": {"status": "DOWN"}}},
            Verdict(
                Health.FAILING,
                "`redis: fail`, `db: DOWN` in /health/ready (status 200)",
                "AppRedisPoolBroken",
            ),
        ),
        # Only the document's own status says down: no rule pages on component="overall".
        (
            {"status": "fail", "db": True},
            Verdict(Health.DEGRADED, "overall status `fail` in /health/ready, yet status 200"),
        ),
    ],
)
async def test_a_200_whose_body_names_a_component_down_is_not_ok(
    run_probe: RunProbe, body: dict[str, Any], verdict: Verdict
) -> None:
    """The component rules page on stackprobe_health_component_up == 0 whatever the status."""
    reply = Reply(200, (("Content-Type", "application/json"),), json.dumps(body).encode())
    async with HttpPeer(lambda seen: reply) as peer:
        result = await run_probe(target(f"{peer.url}/health/ready"))

    assert result.success
    assert result.health() == verdict


async def test_a_gzipped_200_naming_redis_down_pages_for_redis(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(target(f"{peers.http}/gzip-ok"))

    assert result.success
    assert result.health() == Verdict(
        Health.FAILING, "`redis: false` in /gzip-ok (status 200)", "AppRedisPoolBroken"
    )
    assert shown(result, "body") == [json.dumps(REDIS_DOWN)]  # decoded, as the check read it


async def test_an_answer_slower_than_latency_threshold_is_degraded(
    peers: Peers, run_probe: RunProbe
) -> None:
    result = await run_probe(
        target(f"{peers.http}/slow?seconds=0.5", latency_threshold="100ms", timeout="3s")
    )

    verdict = result.health()
    assert result.success
    assert (verdict.health, verdict.alert) == (Health.DEGRADED, "EndpointSlow")
    assert verdict.why.startswith("took 0.") and verdict.why.endswith("latency_threshold 0.1s")
    [timing] = shown(result, "timing")
    assert timing.startswith("resolve ") and "connect " in timing and "processing " in timing


async def test_a_certificate_past_its_end_is_degraded_when_not_verified(
    peers: Peers, run_probe: RunProbe
) -> None:
    """probe_ssl_earliest_cert_expiry - time() < 14 days: TlsCertificateExpiringSoon."""
    result = await run_probe(
        target(f"{peers.https_expired}/ok", tls={"insecure_skip_verify": True})
    )

    verdict = result.health()
    assert (verdict.health, verdict.alert) == (Health.DEGRADED, "TlsCertificateExpiringSoon")
    assert verdict.why.startswith("TLS certificate expired on 2024-01-01 (")
    assert shown(result, "tls") == ["TLS 1.3, certificate valid until 2024-01-01 00:00 UTC"]


@pytest.fixture
async def expiring_site(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A TLS site whose certificate ends in 5 days, and the CA file that trusts it."""
    import ssl

    import trustme
    from aiohttp import web

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf = ca.issue_cert(
        "127.0.0.1", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=5, hours=1)
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)

    async def ok(_: web.Request) -> web.Response:
        return web.json_response(HEALTHY)

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}", ca_file
    await runner.cleanup()


async def test_a_certificate_ending_within_14_days_is_degraded(
    expiring_site: tuple[str, Path], peers: Peers, run_probe: RunProbe
) -> None:
    url, ca_file = expiring_site
    expiring = await run_probe(target(f"{url}/ok", tls={"ca_file": str(ca_file)}))
    lasting = await run_probe(
        target(f"{peers.https_trusted}/ok", tls={"ca_file": str(peers.ca_file)})
    )

    verdict = expiring.health()
    assert expiring.success
    assert (verdict.health, verdict.alert) == (Health.DEGRADED, "TlsCertificateExpiringSoon")
    assert re.fullmatch(r"TLS certificate expires on \d{4}-\d\d-\d\d, in 5\.0 days", verdict.why)
    assert lasting.health() == Verdict(Health.OK)
    assert shown(lasting, "tls") == ["TLS 1.3, certificate valid until 3000-01-01 00:00 UTC"]


async def test_a_connect_that_never_completes_shows_its_phase(
    peers: Peers, run_probe: RunProbe
) -> None:
    url = f"http://127.0.0.1:{peers.blackhole_port}/health/live"
    result = await run_probe(target(url, timeout="500ms"))

    assert result.health() == Verdict(
        Health.FAILING,
        "no answer within 0.5s (stopped in the connect phase)",
        "HealthLiveFailing",
    )
    assert result.evidence == (("request", f"GET {url}"), ("failed in", "the connect phase"))


async def test_a_redirect_and_a_binary_body_are_shown_short(
    peers: Peers, run_probe: RunProbe
) -> None:
    redirected = await run_probe(target(f"{peers.http}/redirect-to?url=/ok%3Fsig%3Dabc"))
    binary = await run_probe(target(f"{peers.http}/garbage"))
    # a URL from a secret (a token in its path) shows no part of where it went either
    raw = {"name": "t", "kind": "http", "url": {"from_env": "HOOK_URL"}}
    hook = f"{peers.http}/redirect-to?url=/ok/CANARY-path-token"
    secret = await run_probe(make_target(raw, {"HOOK_URL": hook}))

    base = peers.http
    assert shown(redirected, "redirected") == [f"1 time(s), last to {base}/ok"]  # no query
    assert shown(secret, "redirected") == ["1 time(s)"]
    assert "CANARY" not in repr(secret.evidence)
    assert shown(binary, "body") == ["2048 bytes of application/octet-stream, not shown"]


async def test_evidence_carries_no_credential(peers: Peers, run_probe: RunProbe) -> None:
    """No Set-Cookie, no password or user name of the URL, no header a server echoes."""
    cookie = await run_probe(target(f"{peers.http}/set-cookie"))
    user = peers.http.replace("http://", "http://probe-user@")
    named = await run_probe(target(f"{user}/ok"))
    raw = {"name": "t", "kind": "http", "url": {"from_env": "HEALTH_URL"}}
    secret_url = peers.http.replace("http://", "http://probe:CANARY-pw-77@")
    from_env = await run_probe(make_target(raw, {"HEALTH_URL": f"{secret_url}/ok"}))

    assert cookie.success and named.success and from_env.success
    assert "sticky-to-task-1" not in repr(cookie.evidence)
    assert not [h for h in shown(cookie, "header") if h.startswith("set-cookie")]
    assert shown(named, "request") == [f"GET {peers.http}/ok"]
    assert shown(from_env, "request") == ["GET <url from env HEALTH_URL>"]
    assert "CANARY" not in repr(from_env)


async def test_headers_are_few_short_and_never_credentials(run_probe: RunProbe) -> None:
    echoed = "CANARY-echoed-token-31c7"
    headers = [
        ("Set-Cookie", "session=CANARY-cookie"),
        ("X-Api-Token", "CANARY-header"),
        ("X-Amz-Security-Token", "CANARY-sts"),
        ("X-Amzn-Remapped-Authorization", "Bearer CANARY-remapped"),
        ("X-Amzn-Oidc-Data", "CANARY-jwt"),
        ("Location", "https://bucket.example/obj?X-Amz-Signature=CANARY-presigned"),
        # the echo straddles the 100-character cut: scrubbed whole before it is cut
        ("X-Request-Echo", "a" * 70 + " token=" + echoed),
        ("Content-Security-Policy", "default-src 'self' " + "https://cdn.example " * 50),
        *((f"X-Filler-{i}", "v") for i in range(30)),
    ]
    async with HttpPeer(lambda seen: Reply(200, tuple(headers), b"ok")) as peer:
        raw = {"name": "t", "kind": "http", "url": f"{peer.url}/ready"}
        raw["headers"] = {"Authorization": {"from_env": "TOKEN"}}
        result = await run_probe(make_target(raw, {"TOKEN": echoed}))

    lines = shown(result, "header")
    assert 0 < len(lines) <= 10
    assert all(len(line) <= 100 for line in lines)
    assert lines[0] == "location: https://bucket.example/obj"
    assert lines[1].startswith("x-request-echo: aaaa") and lines[1].endswith(" token=<redact")
    assert lines[2].startswith("content-security-policy: default-src 'self' https://cdn")
    assert "CANARY" not in repr(result) and "CANARY"[:4] not in repr(result.evidence)
    assert sum(len(label) + len(text) for label, text in result.evidence) < 1024


async def test_a_body_echoing_a_secret_is_scrubbed_in_the_evidence(
    peers: Peers, run_probe: RunProbe
) -> None:
    secret = "Bearer CANARY-reflected-4d1f"
    raw = {"name": "t", "kind": "http", "url": f"{peers.http}/reflect-auth", "timeout": "2s"}
    raw["headers"] = {"Authorization": {"from_env": "TOKEN"}}

    result = await run_probe(make_target(raw, {"TOKEN": secret}))

    [body] = shown(result, "body")
    assert body.endswith('": true, "db": true}')
    assert "CANARY" not in repr(result.evidence)


async def test_a_body_over_the_cap_is_said_not_shown(peers: Peers, run_probe: RunProbe) -> None:
    result = await run_probe(target(f"{peers.http}/big"))

    assert shown(result, "body") == [
        "not kept: body is over max_body_bytes=1048576; stopped reading"
    ]
    assert result.health() == Verdict(Health.OK)


# blackbox_exporter's checks of the final response, and a request body


@pytest.mark.parametrize(
    ("extra", "reason", "detail"),
    [
        (
            {"fail_if_header_matches": [{"header": "Content-Type", "regexp": "json"}]},
            Reason.HEADER_MISMATCH,
            "header Content-Type matches 'json' (fail_if_header_matches)",
        ),
        ({"fail_if_header_matches": [{"header": "content-type", "regexp": "xml"}]}, None, ""),
        (
            {"fail_if_header_matches": [{"header": "X-Cache", "regexp": "MISS"}]},
            Reason.HEADER_MISMATCH,
            "header X-Cache is missing",
        ),
        (
            {
                "fail_if_header_matches": [
                    {"header": "X-Cache", "regexp": "MISS", "allow_missing": True}
                ]
            },
            None,
            "",
        ),
        (
            {"fail_if_header_not_matches": [{"header": "Content-Type", "regexp": "^text/"}]},
            Reason.HEADER_MISMATCH,
            "header Content-Type does not match '^text/'",
        ),
        ({"fail_if_header_not_matches": [{"header": "Content-Type", "regexp": "json"}]}, None, ""),
        (
            {"valid_http_versions": ["HTTP/2.0"]},
            Reason.HTTP_VERSION,
            "HTTP/1.1, valid_http_versions is HTTP/2.0",
        ),
        ({"valid_http_versions": ["HTTP/1.0", "HTTP/1.1"]}, None, ""),
        (
            {"fail_if_not_ssl": True},
            Reason.TLS_MISMATCH,
            "the final response did not come over TLS (fail_if_not_ssl)",
        ),
        ({"fail_if_ssl": True}, None, ""),
    ],
)
async def test_blackbox_final_response_checks(
    peers: Peers, run_probe: RunProbe, extra: dict[str, Any], reason: Reason | None, detail: str
) -> None:
    result = await run_probe(target(f"{peers.http}/ok", **extra))

    assert (result.success, result.reason) == (reason is None, reason), result.detail
    if reason is not None:
        assert result.detail == detail


async def test_fail_if_ssl_on_https_and_the_status_judged_first(
    peers: Peers, run_probe: RunProbe
) -> None:
    tls = {"ca_file": str(peers.ca_file)}
    over_tls = await run_probe(target(f"{peers.https_trusted}/ok", tls=tls, fail_if_ssl=True))
    missing = [{"header": "X-Cache", "regexp": "."}]
    status = await run_probe(target(f"{peers.http}/status/503", fail_if_header_not_matches=missing))

    assert (over_tls.success, over_tls.reason) == (False, Reason.TLS_MISMATCH)
    assert (status.success, status.reason) == (False, Reason.HTTP_STATUS)


async def test_a_post_sends_its_body_and_body_file(
    peers: Peers, run_probe: RunProbe, tmp_path: Path
) -> None:
    payload = tmp_path / "query.json"
    payload.write_text('{"query": "{ health }"}')
    inline = await run_probe(
        target(
            f"{peers.http}/echo",
            method="POST",
            body="ping",
            expect_json=[{"path": "body", "equals": "ping"}],
        )
    )
    from_file = await run_probe(
        target(
            f"{peers.http}/echo",
            method="POST",
            body_file=str(payload),
            expect_json=[{"path": "body", "equals": '{"query": "{ health }"}'}],
        )
    )

    assert inline.success, inline.detail
    assert from_file.success, from_file.detail


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"fail_if_ssl": True, "fail_if_not_ssl": True}, "fail every run"),
        ({"body": "a", "body_file": "/etc/hostname"}, "not both"),
        ({"body_file": "/nonexistent/query.json"}, "cannot read body_file /nonexistent/query.json"),
        ({"fail_if_header_matches": [{"header": "bad header", "regexp": "x"}]}, "header name"),
        ({"valid_http_versions": ["HTTP/3"]}, "HTTP/1.1"),
    ],
)
def test_blackbox_options_refused_with_why(extra: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        target("http://127.0.0.1/ok", **extra)


async def test_a_body_given_as_a_secret_never_shows(peers: Peers, run_probe: RunProbe) -> None:
    """/echo sends the body back: the evidence scrubs it as it scrubs every secret."""
    canary = "body-canary-7f3a9c2e"
    result = await run_probe(
        make_target(
            {
                "name": "t",
                "kind": "http",
                "url": f"{peers.http}/echo",
                "method": "POST",
                "body": {"from_env": "PROBE_BODY"},
                "timeout": "2s",
                "interval": "10s",
            },
            {"PROBE_BODY": canary},
        )
    )

    assert result.success, result.detail
    assert canary not in repr(result.evidence) and canary not in repr(result.samples)
    assert any(name == "body" for name, _ in result.evidence)
