"""The http kind's transport: httpx's public transport interface over fresh httpcore
connections, raising what httpx's own transport would."""

from __future__ import annotations

import httpcore
import httpx

from stackprobe.probes._http_clients import _AS_HTTPX, HttpClients
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
        async with client.stream("GET", f"http://127.0.0.1:{peers.short_body_port}/") as response:
            assert response.status_code == 200
            try:
                await response.aread()
            except httpx.RemoteProtocolError as exc:
                raised: BaseException = exc
            else:
                raise AssertionError("a body 93 bytes short was read whole")
        assert isinstance(raised.__cause__, ClosedEarly), repr(raised.__cause__)
        assert [pool.open_connections for pool in clients.pools()] == [0]
        assert not clients.slots.locked()
    finally:
        await clients.aclose()
