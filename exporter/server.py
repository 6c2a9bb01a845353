"""The HTTP endpoints: /metrics, /-/healthy, /-/ready, /-/reload and the landing page, and the
listener that serves them with what the web config file asks (docs/security.md).

No handler does probe work: /metrics joins what the runs already rendered, so a scrape stays
fast while targets hang (blackbox_exporter probes at scrape time, so a slow target slows it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from isal import isal_zlib
from prometheus_client.exposition import choose_encoder, gzip_accepted

from stackprobe.alert_feed import AlertFeed
from stackprobe.app import App
from stackprobe.http_server import Connections, Handler, Request, Response, serve
from stackprobe.landing import render_landing, render_target
from stackprobe.secrets import read_capped
from stackprobe.webconfig import (
    WEB_CONFIG_MAX_BYTES,
    Gate,
    TlsServerConfig,
    WebConfig,
    WebConfigError,
    load_web_config,
    server_context,
)

LandingMode = Literal["full", "names", "off"]
LANDING_MODES: tuple[LandingMode, ...] = ("full", "names", "off")

# Level 1 is several times cheaper than gzip's default 9 and still shrinks metrics text ~8x;
# ISA-L's level 1 compresses as well as zlib's, about four times faster.
_GZIP_LEVEL = 1
_GZIP_WBITS = 16 + 15  # a gzip header and trailer, a 32 KiB window
# An idle connection, or one that has not finished sending its request, is closed after this
# long: a scrape every 15 s reuses its connection, a slowloris client does not hold a socket.
KEEPALIVE_SECONDS = 15.0
# What a browser may send on its own to another site (a form, a beacon): never enough to
# reload. A request with another type needs a CORS preflight, which stackprobe never grants.
_HTML = "text/html; charset=utf-8"
# What a 405 adds to "use METHOD" for a path a person types into a browser.
_HINTS = {"/-/reload": " to reload the config, e.g. curl -X POST http://HOST:PORT/-/reload"}
_SIMPLE_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


@dataclass
class WebOptions:
    """The web surface's flags: fixed for the process's life."""

    config_file: Path | None = None
    lifecycle: bool = False
    landing: LandingMode = "full"


@dataclass(frozen=True)
class Loaded:
    """One reading of the web config file and what it names, built off the event loop."""

    gate: Gate
    tls: ssl.SSLContext | None
    files: str  # a digest of every file read, to tell when one changed


class Surface:
    """What the web config file sets, loaded at start and swapped whole on reload: a file
    that cannot be used is an error at start and keeps the previous one on reload."""

    def __init__(self, options: WebOptions) -> None:
        self.options = options
        self.loaded = self.load()

    @property
    def gate(self) -> Gate:
        return self.loaded.gate

    @property
    def tls(self) -> ssl.SSLContext | None:
        return self.loaded.tls

    def load(self) -> Loaded:
        """Read the file and everything it names. Blocking (files, bcrypt): call it from a
        thread once running. Raises WebConfigError."""
        path = self.options.config_file
        previous = getattr(self, "loaded", None)
        config = load_web_config(path) if path is not None else WebConfig()
        gate = Gate(config, previous.gate if previous else None)
        tls = config.tls_server_config
        if path is None or tls is None or not tls.enabled:
            return Loaded(gate, None, files_digest(path, None))
        return Loaded(gate, server_context(tls, path.parent), files_digest(path, tls))

    def use(self, loaded: Loaded) -> bool:
        """Swap in a new reading; True when its TLS context differs (the listener then serves
        new connections with it). Raises WebConfigError for a change that needs a restart."""
        if (loaded.tls is None) != (self.tls is None):
            raise WebConfigError(
                f"web config {self.options.config_file}: TLS cannot be turned "
                f"{'on' if loaded.tls is not None else 'off'} by a reload; restart stackprobe"
            )
        changed = loaded.files != self.loaded.files
        self.loaded = loaded
        return changed and loaded.tls is not None


def files_digest(path: Path | None, tls: TlsServerConfig | None) -> str:
    """A digest of the web config and the certificate files it names, so a rotated
    certificate (cert-manager, ACME) is noticed without a reload being asked for."""
    digest = hashlib.sha256()
    names = [] if tls is None else [tls.cert_file, tls.key_file, tls.client_ca_file]
    for name in [path, *names]:
        if name is None:
            continue
        where = name if name.is_absolute() or path is None else path.parent / name
        try:
            digest.update(read_capped(where, WEB_CONFIG_MAX_BYTES * 16).encode())
        except (OSError, ValueError):
            digest.update(b"unreadable")
    return digest.hexdigest()


Reload = Callable[[], Awaitable[tuple[bool, str]]]


class WebApp:
    """The endpoints behind the web config's gate, each answer with its headers."""

    def __init__(self, app: App, surface: Surface, reload: Reload) -> None:
        self.app = app
        self.surface = surface
        self.reload = reload
        self.feed = AlertFeed()
        self._routes: dict[str, dict[str, Handler]] = {
            "/": {"GET": self._landing},
            "/target": {"GET": self._target},
            "/metrics": {"GET": self._metrics},
            "/-/healthy": {"GET": self._healthy},
            "/-/ready": {"GET": self._ready},
            "/-/reload": {"POST": self._reload},
        }

    async def __call__(self, request: Request) -> Response:
        response = await self._gate(request)
        response.headers.update(self.surface.gate.headers)
        return response

    async def _route(self, request: Request) -> Response:
        methods = self._routes.get(request.path)
        if methods is None:
            return Response.text("not found; metrics are at /metrics\n", 404)
        endpoint = methods.get("GET" if request.method == "HEAD" else request.method)
        if endpoint is None:
            allowed = ", ".join(sorted({*methods, "HEAD"} if "GET" in methods else methods))
            hint = _HINTS.get(request.path, "")
            return Response.text(f"use {allowed}{hint}\n", 405, {"Allow": allowed})
        return await endpoint(request)

    async def _gate(self, request: Request) -> Response:
        """The web config's client certificate names, basic auth and rate limit, for every
        path.

        Credentials come before the rate limit, so clients without them cannot spend the
        budget of those with them; a remembered pair skips bcrypt and its queue."""
        gate = self.surface.gate
        tls = gate.config.tls_server_config
        transport = request.transport
        if tls is not None and tls.client_allowed_sans:
            allowed = {_san(value) for value in tls.client_allowed_sans}
            if not _sans(transport.get_extra_info("peercert")) & allowed:
                return Response.text("client certificate not allowed\n", 403)
        if gate.needs_auth:
            given = _credentials(request.headers.get("Authorization"))
            if given is None or not gate.remembered(*given):
                if gate.busy():
                    return Response.text("too many credential checks at once\n", 429)
                if given is None or not await gate.authenticate(*given):
                    return Response.text("Unauthorized\n", 401, {"WWW-Authenticate": "Basic"})
        if not gate.admit():
            return Response.text("too many requests\n", 429)
        response = await self._route(request)
        if self.surface.tls is not None:
            context = transport.get_extra_info("sslcontext")
            if context is not None and context is not self.surface.tls:
                # A keep-alive connection from before a new certificate or CA: this answer
                # is its last, so the client reconnects under the new settings.
                response.close = True
        return response

    async def _metrics(self, request: Request) -> Response:
        _, content_type = choose_encoder(",".join(request.headers.getall("Accept")))
        names = frozenset(request.query.get("name[]", ())) or None
        openmetrics = content_type.startswith("application/openmetrics-text")
        body = self.app.exposition.parts(openmetrics, names)
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if gzip_accepted(request.headers.get("Accept-Encoding")):
            # On the loop: ~0.7 ms for 1,000 targets with ISA-L (zlib took 2.5, the largest
            # part of a scrape), less than a hop to a thread and back costs. Part by part,
            # as fast as the whole at once and without a copy of the whole to compress.
            gzip = isal_zlib.compressobj(_GZIP_LEVEL, isal_zlib.DEFLATED, _GZIP_WBITS)
            body = [gzip.compress(part) for part in body]
            body.append(gzip.flush())
            headers["Content-Encoding"] = "gzip"
        return Response(200, body, headers)

    async def _healthy(self, request: Request) -> Response:
        return Response.text("Healthy\n")

    async def _ready(self, request: Request) -> Response:
        outcome = self.app.ready()
        return Response.text(outcome.message + "\n", 200 if outcome.ok else 503)

    async def _reload(self, request: Request) -> Response:
        if not self.surface.options.lifecycle:
            return Response.text(
                "reloading over HTTP is disabled; start stackprobe with "
                "--web.enable-lifecycle, or send it SIGHUP\n",
                403,
            )
        why = _cross_site(request)
        if why is not None:
            return Response.text(
                f"refused: {why}; reload with a plain POST (curl -X POST URL/-/reload)\n", 403
            )
        ok, message = await self.reload()
        return Response.text(message + "\n", 200 if ok else 500)

    async def _landing(self, request: Request) -> Response:
        mode = self.surface.options.landing
        if mode == "off":
            return Response.text(
                "the landing page is off (--web.landing-page=off); metrics are at /metrics\n",
                404,
            )
        feed = await self.feed.get(self.app.config.console) if mode == "full" else None
        page = render_landing(self.app, urls=mode == "full", feed=feed)
        return Response.text(page, content_type=_HTML)

    async def _target(self, request: Request) -> Response:
        if self.surface.options.landing != "full":
            return Response.text(
                "the detail view needs --web.landing-page=full; metrics are at /metrics\n", 404
            )
        page = render_target(self.app, request.query.get("name", [""])[0])
        if page is None:
            return Response.text("no target has that name; the landing page lists them\n", 404)
        return Response.text(page, content_type=_HTML)


def _cross_site(request: Request) -> str | None:
    """Why a state-changing request looks like it came from another site's page, or None.

    Browsers label their own requests (Sec-Fetch-Site, Origin); curl, Prometheus and scripts
    send neither, so they pass."""
    headers = request.headers
    site = headers.get("Sec-Fetch-Site")
    if "Sec-Fetch-Site" in headers and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("Origin")
    if "Origin" in headers and urlsplit(origin).netloc.lower() != request.host.lower():
        return "its Origin is another site"
    content_type = headers.get("Content-Type").split(";")[0].strip().lower()
    if content_type in _SIMPLE_TYPES:
        return f"a {content_type} body is what a cross-site form sends"
    return None


def _credentials(header: str) -> tuple[bytes, bytes] | None:
    """User and password of a Basic Authorization header, as the bytes the client sent
    (RFC 7617 leaves their charset to the client; bcrypt compares bytes)."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except ValueError:  # not base64, or not ASCII (binascii.Error is a ValueError)
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _san(value: str) -> str:
    """IP addresses in one spelling (Python writes 2001:DB8:0:0:0:0:0:1, Go 2001:db8::1)."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


def _sans(peercert: object) -> set[str]:
    if not isinstance(peercert, dict):
        return set()
    return {_san(str(value)) for _, value in peercert.get("subjectAltName", ())}


def make_web_app(
    app: App,
    surface: Surface | None = None,
    reload: Reload | None = None,
) -> WebApp:
    surface = surface if surface is not None else Surface(WebOptions())

    async def reload_app() -> tuple[bool, str]:
        outcome = await app.reload()
        return outcome.ok, app.redactor(outcome.message)

    return WebApp(app, surface, reload if reload is not None else reload_app)


class Listener:
    """The listening socket, bound once. A new TLS context (a rotated certificate, another
    CA) is served by a second server on a duplicate of the same socket, started before the
    first stops: no moment without a listener, and no second bind that could fail."""

    def __init__(self, handler: Handler, host: str | None, port: int) -> None:
        self._handler = handler
        self._host, self._port = host, port
        self._socket: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._connections = Connections()

    @property
    def port(self) -> int:
        """The bound port (the one the system chose when asked for port 0)."""
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self, context: ssl.SSLContext | None) -> None:
        """Raises OSError when the address cannot be bound."""
        self._socket = _bind(self._host, self._port)
        await self.serve(context)

    async def serve(self, context: ssl.SSLContext | None) -> None:
        """Serve new connections with `context`; established ones finish their request."""
        assert self._socket is not None
        server = await serve(
            self._handler, self._socket.dup(), context, self._connections, KEEPALIVE_SECONDS
        )
        previous, self._server = self._server, server
        if previous is not None:
            previous.close()

    async def stop(self) -> None:
        """Stop listening and hang up every connection; a handler still running is
        cancelled."""
        if self._server is not None:
            self._server.close()
        self._connections.close()
        if self._socket is not None:
            self._socket.close()
        await asyncio.sleep(0)  # the transports' connection_lost callbacks


def _bind(host: str | None, port: int) -> socket.socket:
    if host is None:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)
