"""The http kind's client: httpx's public transport interface over fresh httpcore
connections, raising what httpx's own transport would, and the request a redirect leads to
by httpx's client's rules."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpcore
import httpx
import pytest

from stackprobe.probes._http_clients import _AS_HTTPX, HttpClients, redirect, with_defaults
from stackprobe.probes._http_network import ClosedEarly
from stackprobe.probes._tls import TLSConfig
from tests.support.peers import Peers


def test_every_httpcore_exception_has_its_httpx_one() -> None:
    """An httpcore exception left unmapped would pass the probe's `except httpx.HTTPError` and
    end as internal_error; a new one in an httpcore upgrade fails here first."""
    exported = {
        getattr(httpcore, name)
        for name in httpcore.__all__
        if isinstance(getattr(httpcore, name), type)
        and issubclass(getattr(httpcore, name), Exception)
    }
    # Raised by httpcore's pool when a kept connection is taken; there is no pool here.
    exported.discard(httpcore.ConnectionNotAvailable)

    assert exported - set(_AS_HTTPX) == set()
    for core, mapped in _AS_HTTPX.items():
        assert mapped.__name__ == core.__name__ and issubclass(mapped, httpx.TransportError)


async def test_a_body_cut_short_reaches_the_caller_as_httpx_with_the_reason_as_cause(
    peers: Peers,
) -> None:
    clients = HttpClients(max_connections=2)
    client = clients.client(TLSConfig())
    try:
        url = f"http://127.0.0.1:{peers.short_body_port}/"
        response = await client.send(client.request("GET", url, None, with_defaults({}), {}))
        assert response.status_code == 200
        try:
            await response.aread()
        except httpx.RemoteProtocolError as exc:
            raised: BaseException = exc
        else:
            raise AssertionError("a body 93 bytes short was read whole")
        finally:
            await response.aclose()
        assert isinstance(raised.__cause__, ClosedEarly), repr(raised.__cause__)
        assert [pool.open_connections for pool in clients.pools()] == [0]
        assert not clients.slots.locked()
    finally:
        await clients.aclose()


async def test_the_system_ca_bundle_is_read_by_the_first_https_connection_only(
    peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the system's CA bundle costs 2.5 MiB of RSS: a config of plain http://
    targets never pays it, and the https ones pay it once per client, not per run."""
    made: list[ssl.SSLContext] = []
    real = TLSConfig.ssl_context

    def counted(self: TLSConfig) -> ssl.SSLContext:
        made.append(real(self))
        return made[-1]

    monkeypatch.setattr(TLSConfig, "ssl_context", counted)
    clients = HttpClients(max_connections=2)
    client = clients.client(TLSConfig())
    try:
        for _ in range(2):
            response = await client.send(
                client.request("GET", peers.http, None, with_defaults({}), {})
            )
            await response.aclose()
        assert made == []
        for _ in range(2):  # the default profile verifies: this certificate fails it
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.send(
                    client.request("GET", peers.https_self_signed, None, with_defaults({}), {})
                )
        assert len(made) == 1
    finally:
        await clients.aclose()


def test_a_profiles_own_files_are_read_when_its_client_is_made(tmp_path: Path) -> None:
    """A CA file that broke after the load fails the run with the file's error at once, not
    at the first connection (probes/http.py says "cannot use the TLS files")."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    tls = TLSConfig.model_construct(ca_file=ca)
    with pytest.raises(ssl.SSLError):
        HttpClients(max_connections=1).client(tls)


def _redirected(
    method: str, url: str, status: int, location: str | None, **headers: str
) -> httpx.Request | None:
    request = httpx.Request(
        method, url, headers=headers, content=b"x" if method == "POST" else None
    )
    response = httpx.Response(status, headers={"Location": location} if location else {})
    return redirect(request, response)


@pytest.mark.parametrize(
    ("method", "status", "after"),
    [
        ("GET", 301, "GET"),
        ("POST", 301, "GET"),
        ("PUT", 301, "PUT"),
        ("POST", 302, "GET"),
        ("HEAD", 302, "HEAD"),
        ("PUT", 303, "GET"),
        ("HEAD", 303, "HEAD"),
        ("POST", 307, "POST"),
        ("POST", 308, "POST"),
    ],
)
def test_a_redirect_changes_the_method_as_httpx_does(method: str, status: int, after: str) -> None:
    following = _redirected(method, "http://h/a", status, "/b")

    assert following is not None and following.method == after
    # a body (and its length) goes on only with the method unchanged
    assert ("content-length" in following.headers) is (after == method in ("POST", "PUT"))


@pytest.mark.parametrize(
    ("url", "location", "expected"),
    [
        ("http://h/a/b?q=1", "c", "http://h/a/c"),
        ("http://h/a", "/x?y=2", "http://h/x?y=2"),
        ("http://h:8080/a", "//other/p", "http://other/p"),
        ("https://h/a", "http:/p", "http://h/p"),  # a scheme but no host: the request's host
        ("http://h/a#frag", "/b", "http://h/b#frag"),  # the request's fragment carried over
        ("http://h/a#frag", "/b#own", "http://h/b#own"),
    ],
)
def test_a_location_is_resolved_against_the_request(url: str, location: str, expected: str) -> None:
    following = _redirected("GET", url, 302, location)

    assert following is not None and str(following.url) == expected


@pytest.mark.parametrize(
    ("location", "kept"),
    [
        ("/same", True),
        ("https://h/upgraded", True),  # http -> https on the default ports, as httpx allows
        ("https://h:8443/other-port", False),
        ("http://elsewhere/", False),
    ],
)
def test_authorization_goes_only_to_the_same_origin(location: str, kept: bool) -> None:
    following = _redirected("GET", "http://h/", 302, location, Authorization="Basic eDp5")

    assert following is not None
    assert ("authorization" in following.headers) is kept
    assert following.headers["host"] == following.url.netloc.decode()


def test_what_is_not_a_redirect_leads_nowhere() -> None:
    assert _redirected("GET", "http://h/", 302, None) is None  # no Location
    assert _redirected("GET", "http://h/", 200, "/elsewhere") is None
    assert _redirected("GET", "http://h/", 304, "/elsewhere") is None
    with pytest.raises(httpx.InvalidURL):
        _redirected("GET", "http://h/", 302, "http://[::1/health")
