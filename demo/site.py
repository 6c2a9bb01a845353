"""The demo's web app, as its users and stackprobe see it: `/health/live`, `/health/ready` and
a tile route over HTTPS under a name the demo's DNS answers for, and over plain HTTP on the
tasks' port.

The TLS certificate is made at start (60 days, for 127.0.0.1 and the site's name), so the
certificate-expiry panel has a figure; the DNS server answers A queries for the site's name
only, so the DNS check has a real resolver to ask.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SITE_NAME = "app.aep-demo.test"
CERT_DAYS = 60


@dataclass
class SiteState:
    """What the app would report right now; the faults change it."""

    up: bool = True  # False: no task behind the load balancer (the site answers 503)
    redis: bool = True  # False: the app's pooled Redis connections are dead
    database: bool = True  # False: the app's tasks cannot reach PostgreSQL
    broken: bool = False  # a deployment broke every route but /health/live
    tiles: bool = True  # False: the tile server does not answer
    dns: bool = True  # False: the site's name has no record


# A 1x1 transparent PNG: what a tile URL answers.
TILE = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)


def health_app(state: SiteState) -> web.Application:
    async def live(_: web.Request) -> web.Response:
        if not state.up:
            return web.Response(status=503, text="503 Service Temporarily Unavailable")
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        if not state.up:
            return web.Response(status=503, text="503 Service Temporarily Unavailable")
        if state.broken:  # the new code fails before its handler can say what is wrong
            return web.Response(status=500, text="Internal Server Error")
        # the database check passes even with the pool exhausted: it has its own connection
        # (AEP Incident 4)
        components = {"database": state.database, "redis": state.redis}
        healthy = all(components.values())
        body = {"status": "ok" if healthy else "degraded", **components}
        return web.json_response(body, status=200 if healthy else 503)

    async def tile(_: web.Request) -> web.Response:
        # the tile server is a service of its own: the backend's outage leaves it up
        if not state.tiles:
            return web.Response(status=503, text="503 Service Temporarily Unavailable")
        return web.Response(body=TILE, content_type="image/png")

    app = web.Application()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/tiles/{tile:.+}.png", tile)
    return app


def self_signed(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context, and the certificate file a client trusts it by."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SITE_NAME)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SITE_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / "site.pem"
    key_file = directory / "site-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context, cert_file


class _Resolver(asyncio.DatagramProtocol):
    """Answers A queries for the site's name with 127.0.0.1; NXDOMAIN for any other name, and
    for the site's own while its record is gone (`SiteState.dns`)."""

    def __init__(self, state: SiteState) -> None:
        self.state = state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return
        response = dns.message.make_response(query)
        question = query.question[0] if query.question else None
        # (a question is an RRset without records: falsy, so compare with None)
        name = question.name.to_text(omit_final_dot=True).lower() if question is not None else ""
        if question is not None and name == SITE_NAME and self.state.dns:
            if question.rdtype == dns.rdatatype.A:
                answer = dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1")
                response.answer.append(answer)
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


async def serve_dns(
    state: SiteState, host: str = "127.0.0.1"
) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Resolver(state), local_addr=(host, 0)
    )
    port: int = transport.get_extra_info("sockname")[1]
    return transport, port
