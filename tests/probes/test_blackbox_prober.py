"""blackbox_exporter's own prober tests, played against stackprobe (issue 16).

The scenarios of blackbox's `prober/http_test.go` and `prober/dns_test.go`, and the TLS
cases of its `prober/tcp_test.go` over HTTPS, with servers and configs written here from
its test cases (tests/support/blackbox_peers.py): each blackbox table entry is one case, its
module translated to stackprobe's keys, its expectations (success, metric values, phases)
asserted as blackbox asserts them. A case stackprobe deliberately answers otherwise is in
DIFFERENCES, with why; docs/blackbox.md says each. `test_the_count` holds the tally: 180
cases, at least 140 played here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import brotli
import dns.message
import dns.rcode
import dns.rrset
import pytest
import trustme

from stackprobe.config import ConfigError
from stackprobe.contract import ProbeResult
from tests.support.blackbox_peers import (
    Answer,
    DnsPeer,
    HttpPeer,
    Reply,
    Seen,
    dual_stack_name,
)
from tests.support.probing import RunProbe, make_target, samples_by_name
from tests.support.processes import free_port

DOCS = Path(__file__).parent.parent.parent / "docs" / "blackbox.md"
MSG = b"hello world" * 10


def _deflate(data: bytes) -> bytes:
    """Raw deflate, as Go's compress/flate writes it."""
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


GZIPPED, DEFLATED, BROTLIED = gzip.compress(MSG), _deflate(MSG), brotli.compress(MSG)

# The cases blackbox's tests have that stackprobe answers otherwise, on purpose or for want
# of a protocol, each with why; docs/blackbox.md says each of these reasons.
DIFFERENCES: dict[str, str] = {
    "TestContentLength/gzip": "asks for gzip and decodes it",
    "TestContentLength/deflate": "asks for gzip and decodes it",
    "TestHandlingOfCompressionSetting/compressed content without compression setting": (
        "asks for gzip and decodes it"
    ),
    "TestCookieJar": "No cookies",
    "TestHTTPParsingScheme/missing scheme": "A URL needs its scheme",
    **{f"TestValidHTTPVersionsQUIC/{i}": "No HTTP/3" for i in range(6)},
    "TestHTTP3ProbeQUIC": "No HTTP/3",
    "TestHTTP3ProbeQUICMixedCaseHTTPScheme": "No HTTP/3",
    "TestTCPConnectionWithTLSAndVerifiedCertificateChain": "no certificate chain",
}


def http_target(url: str, **keys: Any) -> Any:
    return make_target({"name": "bb", "kind": "http", "url": url, "timeout": "1s", **keys})


def check_metrics(result: ProbeResult, expected: dict[str, float]) -> None:
    """blackbox's checkRegistryResults: each named metric present with its value."""
    found = {name: values.get(()) for name, values in samples_by_name(result).items()}
    for name, want in expected.items():
        assert found.get(name) == want, f"{name}: {found.get(name)} != {want} ({result.detail})"


def phases(result: ProbeResult, metric: str) -> set[str]:
    return {labels[0] for labels in samples_by_name(result).get(metric, {})}


def empty(_: Seen) -> Reply:
    return Reply()


# --- http_test.go ------------------------------------------------------------------------

STATUS_CODES = [
    (200, [], True),
    (201, [], True),
    (299, [], True),
    (300, [], False),
    (404, [], False),
    (404, [200, 404], True),
    (200, [200, 404], True),
    (201, [200, 404], False),
    (404, [404], True),
    (200, [404], False),
]


@pytest.mark.parametrize(("status", "valid", "succeeds"), STATUS_CODES)
async def test_http_status_codes(
    run_probe: RunProbe, status: int, valid: list[int], succeeds: bool
) -> None:
    async with HttpPeer(lambda _: Reply(status)) as server:
        result = await run_probe(http_target(server.url, expect_status=valid))
    assert result.success is succeeds, result.detail


VALID_HTTP_VERSIONS = [
    ([], True),
    (["HTTP/1.1"], True),
    (["HTTP/1.1", "HTTP/2.0"], True),
    (["HTTP/1.1", "HTTP/2.0", "HTTP/3.0"], False),
    (["HTTP/2.0"], False),
    (["HTTP/3.0"], False),
]


@pytest.mark.parametrize(("versions", "succeeds"), VALID_HTTP_VERSIONS)
async def test_valid_http_version(run_probe: RunProbe, versions: list[str], succeeds: bool) -> None:
    """HTTP/3.0 is refused when the config loads, as blackbox's loader refuses it without
    HTTP/3 enabled: the failure its test allows for."""
    async with HttpPeer(empty) as server:
        if "HTTP/3.0" in versions:
            with pytest.raises(ConfigError, match=r"HTTP/3\.0"):
                http_target(server.url, valid_http_versions=versions)
            return
        result = await run_probe(http_target(server.url, valid_http_versions=versions))
    assert result.success is succeeds, result.detail


CONTENT_LENGTH = {
    "identity": (Reply(headers=(("Content-Encoding", "identity"),), body=MSG), len(MSG), True),
    "no content-encoding": (Reply(body=MSG), len(MSG), True),
    "unknown content-encoding": (
        Reply(headers=(("Content-Encoding", "xxx"),), body=b"x" * len(MSG)),
        len(MSG),
        True,
    ),
    "401": (Reply(404, body=b"not found"), len(b"not found"), False),
    "brotli": (Reply(headers=(("Content-Encoding", "br"),), body=BROTLIED), len(BROTLIED), True),
}


@pytest.mark.parametrize("case", CONTENT_LENGTH)
async def test_content_length(run_probe: RunProbe, case: str) -> None:
    """A body in a coding not asked for is read raw, its raw length reported."""
    reply, length, succeeds = CONTENT_LENGTH[case]
    async with HttpPeer(lambda _: reply) as server:
        result = await run_probe(http_target(server.url))
    assert result.success is succeeds, result.detail
    check_metrics(
        result,
        {"probe_http_content_length": length, "probe_http_uncompressed_body_length": length},
    )


def _coded(coding: str, body: bytes) -> Reply:
    return Reply(headers=(("Content-Encoding", coding),), body=body)


COMPRESSION = {
    "gzip": (_coded("gzip", GZIPPED), {"compression": "gzip"}, len(MSG), True),
    "brotli": (_coded("br", BROTLIED), {"compression": "br"}, len(MSG), True),
    "deflate": (_coded("deflate", DEFLATED), {"compression": "deflate"}, len(MSG), True),
    "identity": (_coded("identity", MSG), {"compression": "identity"}, len(MSG), True),
    "compression encoding mismatch": (
        _coded("gzip", GZIPPED),
        {"compression": "deflate"},
        0,
        False,
    ),
    "accept gzip": (
        _coded("gzip", GZIPPED),
        {"compression": "gzip", "headers": {"Accept-Encoding": "gzip"}},
        len(MSG),
        True,
    ),
    "accept br, gzip": (
        _coded("gzip", GZIPPED),
        {"compression": "gzip", "headers": {"Accept-Encoding": "br, gzip"}},
        len(MSG),
        True,
    ),
    "accept anything": (
        _coded("gzip", GZIPPED),
        {"compression": "gzip", "headers": {"Accept-Encoding": "*"}},
        len(MSG),
        True,
    ),
}


@pytest.mark.parametrize("case", COMPRESSION)
async def test_handling_of_compression_setting(run_probe: RunProbe, case: str) -> None:
    reply, keys, decoded, succeeds = COMPRESSION[case]
    async with HttpPeer(lambda _: reply) as server:
        result = await run_probe(http_target(server.url, **keys))
        asked = server.seen[0].headers["accept-encoding"]
    assert result.success is succeeds, result.detail
    check_metrics(
        result,
        {
            "probe_http_content_length": len(reply.body),
            "probe_http_uncompressed_body_length": decoded,
        },
    )
    assert asked == keys.get("headers", {}).get("Accept-Encoding", keys["compression"])


LIMIT = 128
SHORT_GZ, LONG_GZ = gzip.compress(b"A" * (LIMIT - 1)), gzip.compress(b"A" * (LIMIT + 1))
MAX_RESPONSE_LENGTH = {
    "short": (Reply(body=b"A" * (LIMIT - 1)), None, True, (LIMIT - 1, LIMIT - 1)),
    "long": (Reply(body=b"A" * (LIMIT + 1)), None, False, (LIMIT + 1, None)),
    "short compressed": (_coded("gzip", SHORT_GZ), "gzip", True, (len(SHORT_GZ), LIMIT - 1)),
    # it stops decompressing at the limit
    "long compressed": (_coded("gzip", LONG_GZ), "gzip", False, (len(LONG_GZ), LIMIT)),
}


@pytest.mark.parametrize("case", MAX_RESPONSE_LENGTH)
async def test_max_response_length(run_probe: RunProbe, case: str) -> None:
    reply, compression, succeeds, (length, decoded) = MAX_RESPONSE_LENGTH[case]
    keys: dict[str, Any] = {"body_size_limit": LIMIT}
    if compression:
        keys["compression"] = compression
    async with HttpPeer(lambda _: reply) as server:
        result = await run_probe(http_target(server.url, **keys))
    assert result.success is succeeds, result.detail
    expected: dict[str, float] = {"probe_http_content_length": length}
    if decoded is not None:
        expected["probe_http_uncompressed_body_length"] = decoded
    check_metrics(result, expected)
    if not succeeds:
        assert result.reason == "body_too_large"


def _redirect(to: str, status: int = 302) -> Reply:
    return Reply(status, headers=(("Location", to),))


async def test_redirect_followed(run_probe: RunProbe) -> None:
    async with HttpPeer(
        lambda seen: _redirect("/noredirect") if seen.target == "/" else Reply()
    ) as s:
        result = await run_probe(http_target(s.url))
    assert result.success, result.detail
    check_metrics(result, {"probe_http_redirects": 1})


async def test_redirect_not_followed(run_probe: RunProbe) -> None:
    async with HttpPeer(lambda _: _redirect("/noredirect")) as server:
        result = await run_probe(
            http_target(server.url, follow_redirects=False, expect_status=[302])
        )
    assert result.success, result.detail


async def test_redirection_limit(run_probe: RunProbe) -> None:
    """Go's client stops after 10 redirects; the refused 11th is counted."""
    limit = 11

    def chain(seen: Seen) -> Reply:
        if seen.target == f"/redirect-{limit + 1}":
            return Reply(429)
        if seen.target.startswith("/redirect-"):
            return _redirect(f"/redirect-{int(seen.target.rsplit('-', 1)[1]) + 1}")
        return _redirect("/redirect-1")

    async with HttpPeer(chain) as server:
        result = await run_probe(http_target(server.url))
        paths = [seen.target for seen in server.seen]
    assert not result.success
    assert f"/redirect-{limit + 1}" not in paths, "followed too many redirects"
    check_metrics(result, {"probe_http_redirects": limit, "probe_http_status_code": 302})


async def test_post(run_probe: RunProbe) -> None:
    async with HttpPeer(lambda seen: Reply(200 if seen.method == "POST" else 400)) as server:
        result = await run_probe(http_target(server.url, method="POST"))
    assert result.success, result.detail


async def test_basic_auth(run_probe: RunProbe) -> None:
    raw = {
        "name": "bb",
        "kind": "http",
        "timeout": "1s",
        "basic_auth": {"username": "username", "password": {"from_env": "BB_PASSWORD"}},
        "tls": {"insecure_skip_verify": False},
    }
    async with HttpPeer(empty) as server:
        target = make_target({**raw, "url": server.url}, {"BB_PASSWORD": "password"})
        result = await run_probe(target)
        sent = server.seen[0].headers["authorization"]
    assert result.success, result.detail
    assert sent == "Basic dXNlcm5hbWU6cGFzc3dvcmQ="


async def test_bearer_token(run_probe: RunProbe) -> None:
    """blackbox's bearer_token is a secret Authorization header here."""
    raw = {
        "name": "bb",
        "kind": "http",
        "timeout": "1s",
        "headers": {"Authorization": {"from_env": "BB_TOKEN"}},
    }
    async with HttpPeer(empty) as server:
        target = make_target({**raw, "url": server.url}, {"BB_TOKEN": "Bearer mysecret"})
        result = await run_probe(target)
        sent = server.seen[0].headers["authorization"]
    assert result.success, result.detail
    assert sent == "Bearer mysecret"


async def test_fail_if_not_ssl(run_probe: RunProbe) -> None:
    async with HttpPeer(empty) as server:
        result = await run_probe(http_target(server.url, fail_if_not_ssl=True))
    assert not result.success
    check_metrics(result, {"probe_http_ssl": 0})


@pytest.fixture
async def closing_server() -> AsyncIterator[str]:
    """A TCP server that closes each connection without an answer."""

    async def close(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    server.close()
    await server.wait_closed()


FAIL_IF_NOT_SSL_LOG = {
    # the log message "Final request was not over SSL" is the reason tls_mismatch here
    "SSL expected, message": (True, "good", False, True),
    "No SSL expected, no message": (False, "good", True, False),
    "SSL expected, no message": (True, "bad", False, False),
}


@pytest.mark.parametrize("case", FAIL_IF_NOT_SSL_LOG)
async def test_fail_if_not_ssl_log_msg(run_probe: RunProbe, closing_server: str, case: str) -> None:
    expect_ssl, server_kind, succeeds, said = FAIL_IF_NOT_SSL_LOG[case]
    async with HttpPeer(empty) as good:
        url = good.url if server_kind == "good" else closing_server
        result = await run_probe(http_target(url, fail_if_not_ssl=expect_ssl))
    assert result.success is succeeds, result.detail
    assert (result.reason == "tls_mismatch") is said


CEL_MATCHES = {
    "celExpression matches": ('{"foo": {"bar": "baz"}}', "body.foo.bar == 'baz'", False),
    "celExpression does not match": ('{"foo": {"bar": "baz"}}', "body.foo.bar == 'qux'", True),
    "celExpression does not match with empty body": ("{}", "body.foo.bar == 'qux'", False),
    "celExpression result not boolean": ('{"foo": {"bar": "baz"}}', "body.foo.bar", False),
    "body is not json": ("hello world", "body.foo.bar == 'baz'", False),
    "body is empty json object": ("{}", "body.foo.bar == 'baz'", False),
    "body is json string": ('"foo"', "body == 'foo'", False),
    "body is json list": ('["foo","bar","baz"]', "body[2] == 'baz'", False),
    "body is json boolean": ("true", "body", False),
    "body is empty": ("", "body.foo.bar == 'baz'", False),
    "body returns emoji": ("🤠🤠🤠", "body.foo.bar == 'baz'", False),
    "body returns json with emojis": (
        '{"foo": {"bar": "🤠🤠🤠"}}',
        "body.foo.bar == '😿😿😿'",
        True,
    ),
}
CEL_NOT_MATCHES = {
    "cel matches": ('{"foo": {"bar": "baz"}}', "body.foo.bar == 'baz'", True),
    "cel does not match": ('{"foo": {"bar": "baz"}}', "body.foo.bar == 'qux'", False),
    "cel does not match with empty body": ("{}", "body.foo.bar == 'qux'", False),
    "cel result not boolean": ('{"foo": {"bar": "baz"}}', "body.foo.bar", False),
    "body is not json": ("hello world", "body.foo.bar == 'baz'", False),
    "body is empty json object": ("{}", "!has(body.foo)", True),
    "body is json string": ('"foo"', "body == 'foo'", True),
    "body is json list": ('["foo","bar","baz"]', "body[2] == 'baz'", True),
    "body is json boolean": ("true", "body", True),
    "body is empty": ("", "body.foo.bar == 'baz'", False),
    "body returns emoji": ("🤠🤠🤠", "body.foo.bar == 'baz'", False),
    "body returns json with emojis": (
        '{"foo": {"bar": "🤠🤠🤠"}}',
        "body.foo.bar == '🤠🤠🤠'",
        True,
    ),
}


async def _cel_case(run_probe: RunProbe, key: str, body: str, expression: str) -> ProbeResult:
    data = body.encode()
    async with HttpPeer(lambda _: Reply(body=data)) as server:
        return await run_probe(http_target(server.url, **{key: expression}))


@pytest.mark.parametrize("case", CEL_MATCHES)
async def test_fail_if_body_matches_cel(run_probe: RunProbe, case: str) -> None:
    body, expression, succeeds = CEL_MATCHES[case]
    result = await _cel_case(run_probe, "fail_if_body_json_matches_cel", body, expression)
    assert result.success is succeeds, result.detail
    length = len(body.encode())
    check_metrics(
        result,
        {
            "probe_failed_due_to_cel": 0 if succeeds else 1,
            "probe_http_content_length": length,
            "probe_http_uncompressed_body_length": length,
        },
    )


@pytest.mark.parametrize("case", CEL_NOT_MATCHES)
async def test_fail_if_body_not_matches_cel(run_probe: RunProbe, case: str) -> None:
    body, expression, succeeds = CEL_NOT_MATCHES[case]
    result = await _cel_case(run_probe, "fail_if_body_json_not_matches_cel", body, expression)
    assert result.success is succeeds, result.detail
    check_metrics(result, {"probe_failed_due_to_cel": 0 if succeeds else 1})


BODY_MATCHES = {
    "one regex, match": (
        "Bad news: could not connect to database server",
        ["could not connect to database"],
        False,
    ),
    "one regex, no match": (
        "Download the latest version here",
        ["could not connect to database"],
        True,
    ),
    "multiple regexes, match": (
        "internal error",
        ["could not connect to database", "internal error"],
        False,
    ),
    "multiple regexes, no match": (
        "hello world",
        ["could not connect to database", "internal error"],
        True,
    ),
}


@pytest.mark.parametrize("case", BODY_MATCHES)
async def test_fail_if_body_matches_regexp(run_probe: RunProbe, case: str) -> None:
    body, patterns, succeeds = BODY_MATCHES[case]
    async with HttpPeer(lambda _: Reply(body=body.encode())) as server:
        result = await run_probe(http_target(server.url, reject_body_regex=patterns))
    assert result.success is succeeds, result.detail
    check_metrics(
        result,
        {
            "probe_failed_due_to_regex": 0 if succeeds else 1,
            "probe_http_content_length": len(body),
            "probe_http_uncompressed_body_length": len(body),
        },
    )


BODY_NOT_MATCHES = [
    ("Bad news: could not connect to database server", ["Download the latest version here"], False),
    ("Download the latest version here", ["Download the latest version here"], True),
    (
        "Download the latest version here",
        ["Download the latest version here", "Copyright 2015"],
        False,
    ),
    (
        "Download the latest version here. Copyright 2015 Test Inc.",
        ["Download the latest version here", "Copyright 2015"],
        True,
    ),
]


@pytest.mark.parametrize(("body", "patterns", "succeeds"), BODY_NOT_MATCHES)
async def test_fail_if_body_not_matches_regexp(
    run_probe: RunProbe, body: str, patterns: list[str], succeeds: bool
) -> None:
    async with HttpPeer(lambda _: Reply(body=body.encode())) as server:
        result = await run_probe(http_target(server.url, expect_body_regex=patterns))
    assert result.success is succeeds, result.detail


COOKIES = (
    "zz=4; expires=Mon, 01-Jan-1990 00:00:00 GMT; Domain=www.example.com; Path=/",
    "gid=1; Expires=Tue, 19-Mar-2019 20:08:29 GMT; Domain=.example.com; Path=/",
)
HEADER_MATCHES = [
    ("Content-Type", "text/javascript", False, ["text/javascript"], False),
    ("Content-Type", "text/javascript", False, ["application/octet-stream"], True),
    ("content-type", "text/javascript", False, ["application/octet-stream"], True),
    ("Content-Type", ".*", False, [""], False),
    ("Content-Type", ".*", False, [], False),
    ("Content-Type", ".*", True, [""], False),
    ("Content-Type", ".*", True, [], True),
    ("Set-Cookie", ".*Domain=\\.example\\.com.*", False, [COOKIES[1]], False),
    ("Set-Cookie", ".*Domain=\\.example\\.com.*", False, list(COOKIES), False),
]
HEADER_NOT_MATCHES = [
    ("Content-Type", "text/javascript", False, ["text/javascript"], True),
    ("content-type", "text/javascript", False, ["text/javascript"], True),
    ("Content-Type", "text/javascript", False, ["application/octet-stream"], False),
    ("Content-Type", ".*", False, [""], True),
    ("Content-Type", ".*", False, [], False),
    ("Content-Type", ".*", True, [], True),
    ("Set-Cookie", ".*Domain=\\.example\\.com.*", False, [COOKIES[0]], False),
    ("Set-Cookie", ".*Domain=\\.example\\.com.*", False, list(COOKIES), True),
]


async def _header_case(
    run_probe: RunProbe,
    key: str,
    rule: tuple[str, str, bool, list[str], bool],
) -> None:
    header, regexp, allow_missing, values, succeeds = rule
    reply = Reply(headers=tuple((header, value) for value in values))
    match = {"header": header, "regexp": regexp, "allow_missing": allow_missing}
    async with HttpPeer(lambda _: reply) as server:
        result = await run_probe(http_target(server.url, **{key: [match]}))
    assert result.success is succeeds, result.detail
    check_metrics(result, {"probe_failed_due_to_regex": 0 if succeeds else 1})


@pytest.mark.parametrize("rule", HEADER_MATCHES)
async def test_fail_if_header_matches_regexp(
    run_probe: RunProbe, rule: tuple[str, str, bool, list[str], bool]
) -> None:
    await _header_case(run_probe, "fail_if_header_matches", rule)


@pytest.mark.parametrize("rule", HEADER_NOT_MATCHES)
async def test_fail_if_header_not_matches_regexp(
    run_probe: RunProbe, rule: tuple[str, str, bool, list[str], bool]
) -> None:
    await _header_case(run_probe, "fail_if_header_not_matches", rule)


async def test_http_headers(run_probe: RunProbe) -> None:
    headers = {
        "Host": "my-secret-vhost.com",
        "User-Agent": "unsuspicious-user",
        "Accept-Language": "en-US",
    }
    async with HttpPeer(empty) as server:
        result = await run_probe(http_target(server.url, headers=headers))
        seen = server.seen[0].headers
    assert result.success, result.detail
    assert {name: seen[name.lower()] for name in headers} == headers


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(
    ca: trustme.CA, *names: str, not_after: dt.datetime | None = None, tls12: bool = False
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names, not_after=not_after).configure_cert(context)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_fail_if_self_signed_ca(run_probe: RunProbe) -> None:
    """A CA the probe does not trust: verification fails."""
    stranger = trustme.CA()
    async with HttpPeer(empty, server_context(stranger, "127.0.0.1")) as server:
        result = await run_probe(http_target(server.url, tls={"insecure_skip_verify": False}))
    assert not result.success
    check_metrics(result, {"probe_http_ssl": 0})


async def test_succeed_if_self_signed_ca(run_probe: RunProbe) -> None:
    stranger = trustme.CA()
    async with HttpPeer(empty, server_context(stranger, "127.0.0.1")) as server:
        result = await run_probe(http_target(server.url, tls={"insecure_skip_verify": True}))
    assert result.success, result.detail
    check_metrics(result, {"probe_http_ssl": 1})


async def test_tls_config_is_ignored_for_plain_http(run_probe: RunProbe) -> None:
    async with HttpPeer(empty) as server:
        result = await run_probe(http_target(server.url, tls={"insecure_skip_verify": False}))
    assert result.success, result.detail
    check_metrics(result, {"probe_http_ssl": 0})


async def test_http_uses_target_as_tls_server_name(
    run_probe: RunProbe, ca: trustme.CA, ca_file: str
) -> None:
    async with HttpPeer(empty, server_context(ca, "localhost")) as server:
        url = server.url.replace("127.0.0.1", "localhost")
        result = await run_probe(
            http_target(url, preferred_ip_protocol="ip4", tls={"ca_file": ca_file})
        )
    assert result.success, result.detail


async def test_redirect_to_tls_host_works(
    run_probe: RunProbe, ca: trustme.CA, ca_file: str
) -> None:
    """blackbox's redirects to https://prometheus.io; here to a local HTTPS host its CA
    file trusts, as no test here reaches the internet."""
    async with HttpPeer(empty, server_context(ca, "localhost")) as secure:
        to = secure.url.replace("127.0.0.1", "localhost")
        async with HttpPeer(lambda _: _redirect(to)) as plain:
            result = await run_probe(http_target(plain.url, tls={"ca_file": ca_file}))
    assert result.success, result.detail
    check_metrics(result, {"probe_http_ssl": 1, "probe_http_redirects": 1})


async def test_http_phases(run_probe: RunProbe) -> None:
    async with HttpPeer(empty, server_context(trustme.CA(), "127.0.0.1")) as server:
        result = await run_probe(http_target(server.url, tls={"insecure_skip_verify": True}))
    assert result.success, result.detail
    assert phases(result, "probe_http_duration_seconds") >= {
        "connect",
        "processing",
        "resolve",
        "transfer",
        "tls",
    }


SKIP_RESOLVE_WITHOUT_PROXY = {
    f"Without Proxy {skip} skipping resolve": skip == "with" for skip in ("with", "without")
}


@pytest.mark.parametrize("case", SKIP_RESOLVE_WITHOUT_PROXY)
async def test_skip_resolve_phase_without_proxy(run_probe: RunProbe, case: str) -> None:
    """Without a proxy, skip_resolve_phase_with_proxy changes nothing: the resolve phase is
    there."""
    skip = SKIP_RESOLVE_WITHOUT_PROXY[case]
    async with HttpPeer(lambda _: Reply(204)) as server:
        result = await run_probe(http_target(server.url, skip_resolve_phase_with_proxy=skip))
    assert result.success, result.detail
    assert phases(result, "probe_http_duration_seconds") == {
        "connect",
        "processing",
        "resolve",
        "transfer",
        "tls",
    }


SKIP_RESOLVE_WITH_PROXY = {
    f"With Proxy {source} {skip} skipping resolve": (source, skip == "with")
    for source in ("config", "env")
    for skip in ("with", "without")
}


@pytest.mark.parametrize("case", SKIP_RESOLVE_WITH_PROXY)
async def test_skip_resolve_phase_with_proxy(
    run_probe: RunProbe, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """As in blackbox's test, no proxy listens where the proxy is said to be: only the
    phases are checked. Without skipping, the target's name is looked up here."""
    source, skip = SKIP_RESOLVE_WITH_PROXY[case]
    nowhere = f"http://127.0.0.1:{free_port()}"
    keys: dict[str, Any] = {"skip_resolve_phase_with_proxy": skip}
    if source == "config":
        keys["proxy_url"] = nowhere
    else:
        monkeypatch.setenv("HTTP_PROXY", nowhere)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        keys["proxy_from_environment"] = True
    async with HttpPeer(lambda _: Reply(204)) as server:
        result = await run_probe(http_target(server.url, **keys))
    assert not result.success  # nothing listens at the proxy's address
    expected = {"connect", "processing", "transfer", "tls"} | (set() if skip else {"resolve"})
    assert phases(result, "probe_http_duration_seconds") == expected


BODIES = ["body", "body_file"]


@pytest.fixture
def body_file(tmp_path: Path) -> str:
    path = tmp_path / "body.txt"
    path.write_text("Test Body")
    return str(path)


@pytest.mark.parametrize("key", BODIES)
async def test_body(run_probe: RunProbe, body_file: str, key: str) -> None:
    body = "Test Body"
    value = body_file if key == "body_file" else body
    async with HttpPeer(empty) as server:
        result = await run_probe(http_target(server.url, **{key: value}))
        sent = server.seen[0].body
    assert result.success, result.detail
    assert sent == body.encode()


PARSING_SCHEME = {
    "lowercase http scheme": ("http://", False, True),
    "lowercase https scheme": ("https://", True, True),
    "uppercase http scheme": ("HTTP://", False, True),
    "mixed case https scheme": ("HtTpS://", True, True),
    "invalid scheme": ("invalid://", False, False),
}


@pytest.mark.parametrize("case", PARSING_SCHEME)
async def test_http_parsing_scheme(run_probe: RunProbe, case: str) -> None:
    """An invalid scheme is refused when the config loads: the failure blackbox expects."""
    scheme, secure, succeeds = PARSING_SCHEME[case]
    tls = server_context(trustme.CA(), "127.0.0.1") if secure else None
    async with HttpPeer(lambda _: Reply(200), tls) as server:
        url = scheme + server.url.split("://", 1)[1]
        if not succeeds:
            with pytest.raises(ConfigError, match="must be an absolute http:// or https://"):
                http_target(url)
            return
        result = await run_probe(http_target(url, tls={"insecure_skip_verify": True}))
    assert result.success, result.detail


# --- tcp_test.go's TLS cases, over HTTPS ---------------------------------------------------

TCP_TLS = {
    "IP without IPs in the certificate": ("127.0.0.1", None, False),
    "name from the target": ("localhost", None, True),
    "name from tls_config": ("127.0.0.1", "localhost", True),
}


@pytest.mark.parametrize("case", TCP_TLS)
async def test_tcp_connection_with_tls(
    run_probe: RunProbe, ca: trustme.CA, ca_file: str, case: str
) -> None:
    host, server_name, succeeds = TCP_TLS[case]
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    tls = server_context(ca, "localhost", not_after=expiry, tls12=True)
    async with HttpPeer(empty, tls) as server:
        url = server.url.replace("127.0.0.1", host)
        settings = {"ca_file": ca_file, **({"server_name": server_name} if server_name else {})}
        result = await run_probe(http_target(url, preferred_ip_protocol="ip4", tls=settings))
    assert result.success is succeeds, result.detail
    if not succeeds:
        return
    found = samples_by_name(result)
    assert found["probe_tls_version_info"] == {("TLS 1.2",): 1.0}
    assert found["probe_ssl_earliest_cert_expiry"] == {(): expiry.timestamp()}
    [(labels, info)] = found["probe_ssl_last_chain_info"].items()
    assert info == 1 and labels[3] == "localhost"  # subjectalternative


# --- dns_test.go ---------------------------------------------------------------------------

PROTOCOLS = ["udp", "tcp"]


def _reply(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    assert isinstance(response, dns.message.Message)
    return response


def recursive(query: dns.message.Message) -> dns.message.Message:
    response = _reply(query)
    if not query.flags & dns.flags.RD:
        response.set_rcode(dns.rcode.REFUSED)
    else:
        response.answer.append(
            dns.rrset.from_text("example.com.", 3600, "IN", "A", "127.0.0.1", "127.0.0.2")
        )
    return response


def authoritative(query: dns.message.Message) -> dns.message.Message:
    response = _reply(query)
    question = query.question[0]
    if question.rdtype == dns.rdatatype.SOA:
        answer = dns.rrset.from_text(
            "example.com.",
            3600,
            "IN",
            "SOA",
            "ns.example.com. noc.example.com. 1000 7200 3600 1209600 3600",
        )
    elif question.rdclass == dns.rdataclass.CH and question.rdtype == dns.rdatatype.TXT:
        answer = dns.rrset.from_text("example.com.", 3600, "CH", "TXT", '"goCHAOS"')
    else:
        answer = dns.rrset.from_text("example.com.", 3600, "IN", "A", "127.0.0.1")
    response.answer.append(answer)
    response.authority.append(
        dns.rrset.from_text("example.com.", 7200, "IN", "NS", "ns1.isp.net.", "ns2.isp.net.")
    )
    response.additional += [
        dns.rrset.from_text("ns1.isp.net.", 7200, "IN", "A", "127.0.0.1"),
        dns.rrset.from_text("ns1.isp.net.", 7200, "IN", "AAAA", "::1"),
        dns.rrset.from_text("ns2.isp.net.", 7200, "IN", "A", "127.0.0.2"),
    ]
    return response


def servfail(query: dns.message.Message) -> dns.message.Message:
    response = _reply(query)
    response.set_rcode(dns.rcode.SERVFAIL)
    return response


def dns_target(server: str, transport: str, **keys: Any) -> Any:
    """blackbox's module as stackprobe's: its default query type (ANY) and its meaning of an
    empty answer (min_answers 0), as `stackprobe migrate-blackbox` writes them."""
    raw = {
        "name": "bb",
        "kind": "dns",
        "query": "example.com",
        "record_type": "ANY",
        "min_answers": 0,
        "server": server,
        "transport": transport,
        "timeout": "1s",
        "recursion_desired": False,
        **keys,
    }
    return make_target(raw)


async def ask(
    run_probe: RunProbe, answer: Answer, transport: str, keys: dict[str, Any]
) -> ProbeResult:
    """One of blackbox's DNS cases: its module (over IPv4, as its tests ask) against a
    server answering with `answer`."""
    async with DnsPeer(answer, transport) as server:
        return await run_probe(
            dns_target(server.address, transport, preferred_ip_protocol="ip4", **keys)
        )


RECURSIVE = [
    ({"recursion_desired": True}, True),
    ({"recursion_desired": True, "valid_rcodes": ["SERVFAIL", "NXDOMAIN"]}, False),
    (
        {
            "recursion_desired": True,
            "validate_answer_rrs": {
                "fail_if_matches_regexp": [".*7200.*"],
                "fail_if_not_matches_regexp": [".*3600.*"],
            },
        },
        True,
    ),
    (
        {
            "recursion_desired": True,
            "validate_authority_rrs": {"fail_if_matches_regexp": [".*7200.*"]},
        },
        True,
    ),
    (
        {
            "recursion_desired": True,
            "validate_additional_rrs": {"fail_if_not_matches_regexp": [".*3600.*"]},
        },
        False,
    ),
    ({"recursion_desired": False}, False),
]


@pytest.mark.parametrize("transport", PROTOCOLS)
@pytest.mark.parametrize(("keys", "succeeds"), RECURSIVE)
async def test_recursive_dns_response(
    run_probe: RunProbe, transport: str, keys: dict[str, Any], succeeds: bool
) -> None:
    result = await ask(run_probe, recursive, transport, keys)
    assert result.success is succeeds, result.detail
    check_metrics(
        result,
        {
            "probe_dns_answer_rrs": 2 if keys["recursion_desired"] else 0,
            "probe_dns_authority_rrs": 0,
            "probe_dns_additional_rrs": 0,
            "probe_dns_query_succeeded": 1,
        },
    )


AUTHORITATIVE = [
    ({}, True),
    ({"record_type": "SOA"}, True),
    (
        {
            "query_class": "CH",
            "record_type": "TXT",
            "validate_answer_rrs": {
                "fail_if_matches_regexp": [".*IN.*"],
                "fail_if_not_matches_regexp": [".*CH.*"],
            },
        },
        True,
    ),
    ({"valid_rcodes": ["SERVFAIL", "NXDOMAIN"]}, False),
    (
        {
            "validate_answer_rrs": {
                "fail_if_matches_regexp": [".*3600.*"],
                "fail_if_not_matches_regexp": [".*3600.*"],
            }
        },
        False,
    ),
    (
        {
            "validate_answer_rrs": {
                "fail_if_matches_regexp": [".*7200.*"],
                "fail_if_not_matches_regexp": [".*7200.*"],
            }
        },
        False,
    ),
    ({"validate_authority_rrs": {"fail_if_not_matches_regexp": ["ns.*.isp.net"]}}, True),
    ({"validate_additional_rrs": {"fail_if_not_matches_regexp": ["^ns.*.isp"]}}, True),
    ({"validate_additional_rrs": {"fail_if_matches_regexp": ["^ns.*.isp"]}}, False),
    ({"validate_additional_rrs": {"fail_if_all_match_regexp": [".*127.0.0.*"]}}, False),
    ({"validate_additional_rrs": {"fail_if_none_matches_regexp": [".*127.0.0.3.*"]}}, False),
]


@pytest.mark.parametrize("transport", PROTOCOLS)
@pytest.mark.parametrize(("keys", "succeeds"), AUTHORITATIVE)
async def test_authoritative_dns_response(
    run_probe: RunProbe, transport: str, keys: dict[str, Any], succeeds: bool
) -> None:
    result = await ask(run_probe, authoritative, transport, keys)
    assert result.success is succeeds, result.detail
    expected = {
        "probe_dns_answer_rrs": 1,
        "probe_dns_authority_rrs": 2,
        "probe_dns_additional_rrs": 3,
        "probe_dns_query_succeeded": 1,
    }
    if keys.get("record_type") == "SOA":
        expected["probe_dns_serial"] = 1000
    check_metrics(result, expected)


SERVFAIL = [
    ({}, True, False),
    ({"valid_rcodes": ["SERVFAIL", "NXDOMAIN"]}, True, True),
    ({"record_type": "NOT_A_VALID_QUERY_TYPE"}, False, False),
    ({"valid_rcodes": ["NOT_A_VALID_RCODE"]}, False, False),
]


@pytest.mark.parametrize("transport", PROTOCOLS)
@pytest.mark.parametrize(("keys", "loads", "succeeds"), SERVFAIL)
async def test_servfail_dns_response(
    run_probe: RunProbe, transport: str, keys: dict[str, Any], loads: bool, succeeds: bool
) -> None:
    """An invalid query type or response code is refused when the config loads (blackbox's
    loader refuses the query type too): the failure blackbox expects, before any query."""
    async with DnsPeer(servfail, transport) as server:
        if not loads:
            with pytest.raises(ConfigError, match="is not a DNS"):
                dns_target(server.address, transport, **keys)
            return
        result = await run_probe(
            dns_target(server.address, transport, preferred_ip_protocol="ip4", **keys)
        )
    assert result.success is succeeds, result.detail
    check_metrics(
        result,
        {
            "probe_dns_answer_rrs": 0,
            "probe_dns_authority_rrs": 0,
            "probe_dns_additional_rrs": 0,
            "probe_dns_query_succeeded": 1,
        },
    )


DNS_PROTOCOL = [
    ("ip6", True, 6),
    ("ip4", True, 4),
    (None, True, 6),
    ("no transport", None, 6),
]


@pytest.mark.parametrize("transport", PROTOCOLS)
@pytest.mark.parametrize(("preferred", "succeeds", "protocol"), DNS_PROTOCOL)
async def test_dns_protocol(
    run_probe: RunProbe,
    transport: str,
    preferred: str | None,
    succeeds: bool | None,
    protocol: int,
) -> None:
    """A server given by a name with both addresses: the preferred family's is asked, and
    with no preference the resolver's first (::1). With no transport given, UDP is asked,
    which a TCP-only server never answers."""
    name = dual_stack_name()
    async with DnsPeer(recursive, transport, dual=True) as server:
        keys: dict[str, Any] = {"recursion_desired": True}
        if preferred in ("ip4", "ip6"):
            keys["preferred_ip_protocol"] = preferred
        asked = "udp" if preferred == "no transport" else transport
        result = await run_probe(dns_target(f"{name}:{server.port}", asked, **keys))
    assert result.success is (succeeds if succeeds is not None else transport == "udp")
    check_metrics(result, {"probe_ip_protocol": protocol})


async def test_dns_metrics(run_probe: RunProbe) -> None:
    async with DnsPeer(recursive, "udp") as server:
        target = dns_target(
            f"localhost:{server.port}", "udp", recursion_desired=True, preferred_ip_protocol="ip4"
        )
        result = await run_probe(target)
    assert result.success, result.detail
    found = samples_by_name(result)
    assert {
        "probe_dns_lookup_time_seconds",
        "probe_dns_answer_rrs",
        "probe_dns_authority_rrs",
        "probe_dns_additional_rrs",
        "probe_dns_query_succeeded",
    } <= set(found)
    assert phases(result, "probe_dns_duration_seconds") == {"resolve", "connect", "request"}


# --- the tally -----------------------------------------------------------------------------

SINGLE_HTTP_CASES = (
    "TestRedirectFollowed",
    "TestRedirectNotFollowed",
    "TestRedirectionLimit",
    "TestPost",
    "TestBasicAuth",
    "TestBearerToken",
    "TestFailIfNotSSL",
    "TestHTTPHeaders",
    "TestFailIfSelfSignedCA",
    "TestSucceedIfSelfSignedCA",
    "TestTLSConfigIsIgnoredForPlainHTTP",
    "TestHTTPUsesTargetAsTLSServerName",
    "TestRedirectToTLSHostWorks",
    "TestHTTPPhases",
    "TestDNSMetrics",
)


def played() -> Iterator[str]:
    """The blackbox cases played above, by blackbox's test name and case."""
    tables: dict[str, Any] = {
        "TestHTTPStatusCodes": STATUS_CODES,
        "TestValidHTTPVersion": VALID_HTTP_VERSIONS,
        "TestContentLength": CONTENT_LENGTH,
        "TestHandlingOfCompressionSetting": COMPRESSION,
        "TestMaxResponseLength": MAX_RESPONSE_LENGTH,
        "TestFailIfNotSSLLogMsg": FAIL_IF_NOT_SSL_LOG,
        "TestFailIfBodyMatchesCEL": CEL_MATCHES,
        "TestFailIfBodyNotMatchesCEL": CEL_NOT_MATCHES,
        "TestFailIfBodyMatchesRegexp": BODY_MATCHES,
        "TestFailIfBodyNotMatchesRegexp": BODY_NOT_MATCHES,
        "TestFailIfHeaderMatchesRegexp": HEADER_MATCHES,
        "TestFailIfHeaderNotMatchesRegexp": HEADER_NOT_MATCHES,
        "TestBody": BODIES,
        "TestHTTPParsingScheme": PARSING_SCHEME,
        "TestTCPConnectionWithTLS": TCP_TLS,
        "TestSkipResolvePhase": {**SKIP_RESOLVE_WITH_PROXY, **SKIP_RESOLVE_WITHOUT_PROXY},
    }
    for test, table in tables.items():
        keys = list(table) if isinstance(table, dict) else range(len(table))
        yield from (f"{test}/{key}" for key in keys)
    yield from SINGLE_HTTP_CASES
    for test, table in (
        ("TestRecursiveDNSResponse", RECURSIVE),
        ("TestAuthoritativeDNSResponse", AUTHORITATIVE),
        ("TestServfailDNSResponse", SERVFAIL),
        ("TestDNSProtocol", DNS_PROTOCOL),
    ):
        yield from (f"{test}/{p}/{i}" for p in PROTOCOLS for i in range(len(table)))


def test_the_count() -> None:
    """180 cases in blackbox's tests: at least 140 played here, each other one a documented
    difference."""
    cases = list(played())
    assert len(cases) == len(set(cases))
    assert not set(cases) & set(DIFFERENCES)
    assert len(cases) + len(DIFFERENCES) == 180
    assert len(cases) >= 140, len(cases)


@pytest.mark.parametrize("why", sorted(set(DIFFERENCES.values())))
def test_each_difference_is_documented(why: str) -> None:
    assert why in DOCS.read_text(), f"docs/blackbox.md does not say: {why}"
