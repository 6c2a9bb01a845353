"""The HTTP endpoints: /metrics, /-/healthy, /-/ready, /-/reload and the landing page, and the
listener that serves them with what the web config file asks (docs/security.md).

No handler does probe work: /metrics joins what the runs already rendered, so a scrape stays
fast while targets hang (blackbox_exporter probes at scrape time, so a slow target slows it).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from aiohttp import BasicAuth, web
from isal import igzip
from prometheus_client.exposition import choose_encoder, gzip_accepted

from stackprobe.alert_feed import AlertFeed
from stackprobe.app import App
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
# An idle connection, or one that has not finished sending its request, is closed after this
# long: a scrape every 15 s reuses its connection, a slowloris client does not hold a socket.
KEEPALIVE_SECONDS = 15.0
# What a browser may send on its own to another site (a form, a beacon): never enough to
# reload. A request with another type needs a CORS preflight, which stackprobe never grants.
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


APP_KEY = web.AppKey("stackprobe", App)
SURFACE_KEY = web.AppKey("surface", Surface)
Reload = Callable[[], Awaitable[tuple[bool, str]]]
RELOAD_KEY: web.AppKey[Reload] = web.AppKey("reload")
FEED_KEY = web.AppKey("alert_feed", AlertFeed)


async def _metrics(request: web.Request) -> web.Response:
    app = request.app[APP_KEY]
    accept = ",".join(request.headers.getall("Accept", []))
    _, content_type = choose_encoder(accept)
    names = frozenset(request.query.getall("name[]", [])) or None
    body = app.exposition.body(content_type.startswith("application/openmetrics-text"), names)
    headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
    if gzip_accepted(request.headers.get("Accept-Encoding", "")):
        # On the loop: ~0.7 ms for 1,000 targets with ISA-L (zlib took 2.5, the largest part
        # of a scrape), less than a hop to a thread and back costs.
        body = igzip.compress(body, _GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers)


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def _ready(request: web.Request) -> web.Response:
    outcome = request.app[APP_KEY].ready()
    return web.Response(text=outcome.message + "\n", status=200 if outcome.ok else 503)


def _cross_site(request: web.Request) -> str | None:
    """Why a state-changing request looks like it came from another site's page, or None.

    Browsers label their own requests (Sec-Fetch-Site, Origin); curl, Prometheus and scripts
    send neither, so they pass."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc.lower() != request.host.lower():
        return "its Origin is another site"
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type in _SIMPLE_TYPES:
        return f"a {content_type} body is what a cross-site form sends"
    return None


async def _reload(request: web.Request) -> web.Response:
    if not request.app[SURFACE_KEY].options.lifecycle:
        return web.Response(
            text="reloading over HTTP is disabled; start stackprobe with "
            "--web.enable-lifecycle, or send it SIGHUP\n",
            status=403,
        )
    why = _cross_site(request)
    if why is not None:
        return web.Response(
            text=f"refused: {why}; reload with a plain POST (curl -X POST URL/-/reload)\n",
            status=403,
        )
    ok, message = await request.app[RELOAD_KEY]()
    return web.Response(text=message + "\n", status=200 if ok else 500)


async def _reload_needs_post(request: web.Request) -> web.Response:
    return web.Response(
        text="use POST to reload the config, e.g. curl -X POST http://HOST:PORT/-/reload\n",
        status=405,
        headers={"Allow": "POST"},
    )


async def _landing(request: web.Request) -> web.Response:
    mode = request.app[SURFACE_KEY].options.landing
    if mode == "off":
        return web.Response(
            text="the landing page is off (--web.landing-page=off); metrics are at /metrics\n",
            status=404,
        )
    app = request.app[APP_KEY]
    feed = await request.app[FEED_KEY].get(app.config.console) if mode == "full" else None
    return web.Response(
        text=render_landing(app, urls=mode == "full", feed=feed), content_type="text/html"
    )


async def _target(request: web.Request) -> web.Response:
    if request.app[SURFACE_KEY].options.landing != "full":
        return web.Response(
            text="the detail view needs --web.landing-page=full; metrics are at /metrics\n",
            status=404,
        )
    name = request.query.get("name", "")
    page = render_target(request.app[APP_KEY], name)
    if page is None:
        return web.Response(
            text="no target has that name; the landing page lists them\n", status=404
        )
    return web.Response(text=page, content_type="text/html")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The web config's client certificate names, basic auth and rate limit, for every path.

    Credentials come before the rate limit, so clients without them cannot spend the budget
    of those with them; a remembered pair skips bcrypt and its queue."""
    surface = request.app[SURFACE_KEY]
    gate = surface.gate
    tls = gate.config.tls_server_config
    transport = request.transport
    if tls is not None and tls.client_allowed_sans:
        allowed = {_san(value) for value in tls.client_allowed_sans}
        if not _sans(transport.get_extra_info("peercert") if transport else None) & allowed:
            return web.Response(text="client certificate not allowed\n", status=403)
    if gate.needs_auth:
        given = _credentials(request)
        if given is None or not gate.remembered(*given):
            if gate.busy():
                return web.Response(text="too many credential checks at once\n", status=429)
            if given is None or not await gate.authenticate(*given):
                return web.Response(
                    text="Unauthorized\n", status=401, headers={"WWW-Authenticate": "Basic"}
                )
    if not gate.admit():
        return web.Response(text="too many requests\n", status=429)
    response = await handler(request)
    if transport is not None and surface.tls is not None:
        context = transport.get_extra_info("sslcontext")
        if context is not None and context is not surface.tls:
            # A keep-alive connection from before a new certificate or CA: this answer is its
            # last, so the client reconnects under the new settings.
            response.force_close()
    return response


def _credentials(request: web.Request) -> tuple[bytes, bytes] | None:
    """User and password as the bytes the client sent (aiohttp decodes them as latin-1,
    which maps each byte to one character, so encoding back gives the bytes unchanged)."""
    try:
        given = BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        return None
    return given.login.encode("latin-1"), given.password.encode("latin-1")


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


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(request.app[SURFACE_KEY].gate.headers)


def make_web_app(
    app: App,
    surface: Surface | None = None,
    reload: Reload | None = None,
) -> web.Application:
    surface = surface if surface is not None else Surface(WebOptions())

    async def reload_app() -> tuple[bool, str]:
        outcome = await app.reload()
        return outcome.ok, app.redactor(outcome.message)

    web_app = web.Application(middlewares=[_gate])
    web_app[APP_KEY] = app
    web_app[SURFACE_KEY] = surface
    web_app[FEED_KEY] = AlertFeed()
    web_app[RELOAD_KEY] = reload if reload is not None else reload_app
    web_app.on_response_prepare.append(_headers)
    web_app.router.add_get("/", _landing)
    web_app.router.add_get("/target", _target)
    web_app.router.add_get("/metrics", _metrics)
    web_app.router.add_get("/-/healthy", _healthy)
    web_app.router.add_get("/-/ready", _ready)
    web_app.router.add_post("/-/reload", _reload)
    web_app.router.add_get("/-/reload", _reload_needs_post)
    return web_app


class Listener:
    """The listening socket, bound once. A new TLS context (a rotated certificate, another
    CA) is served by a second server on a duplicate of the same socket, started before the
    first stops: no moment without a listener, and no second bind that could fail."""

    def __init__(self, web_app: web.Application, host: str | None, port: int) -> None:
        self._runner = web.AppRunner(
            web_app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=KEEPALIVE_SECONDS,
            # A client that hangs up stops its handler, so it stops waiting for bcrypt.
            handler_cancellation=True,
        )
        self._host, self._port = host, port
        self._socket: socket.socket | None = None
        self._site: web.SockSite | None = None

    async def start(self, context: ssl.SSLContext | None) -> None:
        """Raises OSError when the address cannot be bound."""
        self._socket = _bind(self._host, self._port)
        await self._runner.setup()
        await self.serve(context)

    async def serve(self, context: ssl.SSLContext | None) -> None:
        """Serve new connections with `context`; established ones finish their request."""
        assert self._socket is not None
        site = web.SockSite(self._runner, self._socket.dup(), ssl_context=context)
        await site.start()
        previous, self._site = self._site, site
        if previous is not None:
            await previous.stop()

    async def stop(self) -> None:
        await self._runner.cleanup()
        if self._socket is not None:
            self._socket.close()


def _bind(host: str | None, port: int) -> socket.socket:
    if host is None:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)
