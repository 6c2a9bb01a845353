"""HTTP probe: `/health/live`, `/health/ready`, tile URLs and external dependencies.

A runbook's first checks: `curl /health/ready` (and which dependency its body says is
down), a connection that times out (a security group between balancer and task), a page
that loads too slowly, and the external services the site depends on. Metric names follow
blackbox_exporter's so its dashboards and rules keep working.

Defaults worth knowing:
- Every probe opens a fresh connection (see `probes/_http_clients.py`), so resolve, connect
  and TLS are measured each time. The name is resolved once per connection and its
  addresses tried one at a time, the `preferred_ip_protocol`'s first (probes/_ip.py).
- The body is always read, through a bounded decoder, up to `max_body_bytes` (1 MiB): a
  readiness body is the evidence ("503 with `redis: false`"), and a 50 MB body or a gzip bomb
  must not cost more memory than the cap.
- A body is parsed as JSON when the response says it is JSON (`body_format: auto`); its
  component booleans and status strings become `stackprobe_health_component_up`.

What a hostile or broken server gets (tests/support/peers.py has one of each):
- A response cut short (fewer body bytes than its Content-Length or chunked framing
  promised, then a close) is `connection_closed`, whether or not any check reads the body:
  blackbox_exporter reads every body to its end and fails a short one, and a truncated
  response is a broken server, which is what an on-call engineer should hear. So the body is
  read even when nothing needs it, but never past `max_body_bytes`: a `Content-Length` over
  the cap is read up to the cap, and a body still coming there passes (it may be whole; it
  is too large to wait for). Only a run that needs the body (`_needs_body`) fails on the
  announced length alone, with `body_too_large`, before reading it.
- Bytes that are not HTTP/1.x (an SSH banner, an HTTP/0.9 body, Redis's `-ERR`, a PostgreSQL
  error packet), or HTTP whose head or chunked framing does not parse, are
  `invalid_response`, judged from the first bytes without waiting for more. A close before any
  byte stays `connection_closed`: that is also how PostgreSQL and Redis answer an HTTP
  request (they hang up without a word), and nothing on the wire tells them from a crash; the
  detail says so. `probes/_http_network.py` tells these apart (`NotHttp`, `ClosedEarly`).
- A redirect to anything but http:// or https:// (file:, gopher:, ftp:), or with a
  `Location` that is not a URL, is `invalid_redirect`; its detail names the scheme.
- A body whose compression is broken fails a run (`invalid_body`) only when the run reads
  the body: a check needs it (`_needs_body`) or it is said to be JSON (read for components).
  One in a coding that was not asked for (`br`, `zstd`) fails only when a check needs it, as
  blackbox_exporter reads it raw and passes; its components stay unread. Either only once
  the status has been judged, so a 503 stays `http_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import h11
import httpx
import jmespath
import jmespath.exceptions
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from stackprobe.contract import (
    EVIDENCE_VALUE_MAX,
    Area,
    Evidence,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
    Verdict,
)
from stackprobe.durations import Duration
from stackprobe.probes._aws_api import AWS
from stackprobe.probes._cel import CelProgram
from stackprobe.probes._components import OVERALL, components
from stackprobe.probes._ecs_tasks import METRICS as TASK_METRICS
from stackprobe.probes._ecs_tasks import (
    TASK_COMPONENT,
    TASK_SUCCESS,
    TASKS,
    Discover,
    EcsDiscovery,
    probe_tasks,
)
from stackprobe.probes._http_body import (
    ACCEPT_ENCODING,
    BodyTooLarge,
    UndecodableBody,
    read_capped,
)
from stackprobe.probes._http_clients import (
    ADDRESSING,
    HTTP_CLIENTS,
    PROXY,
    Proxy,
    redirect,
    same_origin,
)
from stackprobe.probes._http_network import ClosedEarly, NotHttp
from stackprobe.probes._ip import PROBE_IP_ADDR_HASH, PROBE_IP_PROTOCOL, Addressing, IpProtocol
from stackprobe.probes._tls import TLSConfig
from stackprobe.secrets import (
    Redactor,
    SecretRef,
    StrOrSecret,
    collect_secrets,
    reveal,
    unresolved,
)
from stackprobe.target import Regex, TargetConfig

if TYPE_CHECKING:
    from cryptography import x509

# A credential in one of these headers must come from env or file, never the config text.
_SENSITIVE_HEADER = re.compile(
    r"^(authorization|proxy-authorization|cookie)$|token|secret|passw|api[-_]?key", re.I
)


def is_credential_header(name: str) -> bool:
    """Whether a request header of this name carries a credential, which the config must
    give as a secret (`{from_env: ...}`), never inline."""
    return bool(_SENSITIVE_HEADER.search(name))


# What httpx can send: visible ASCII and tabs in values (RFC 9110 allows Latin-1 too, but
# httpx encodes values as ASCII), and a token for names.
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Reason(StrEnum):
    """Why an HTTP probe failed; the label values of `stackprobe_probe_failure_reason`."""

    TIMEOUT = "timeout"  # the deadline passed after the connection was up
    CONNECT_TIMEOUT = "connect_timeout"  # no TCP connection within the deadline: SG, NACL, route
    CONNECT_REFUSED = "connect_refused"  # nothing listens on the port
    UNREACHABLE = "unreachable"  # no route to the host or network
    DNS = "dns"  # the host name does not resolve
    TLS = "tls"  # handshake or certificate verification failed
    TLS_CERT_EXPIRED = "tls_cert_expired"
    CONNECTION_CLOSED = "connection_closed"  # reset or closed before a complete response
    INVALID_RESPONSE = "invalid_response"  # not HTTP, or HTTP framing that does not parse
    TOO_MANY_REDIRECTS = "too_many_redirects"
    INVALID_REDIRECT = "invalid_redirect"  # to a scheme other than http(s), or not a URL
    HTTP_STATUS = "http_status"  # a status outside `expect_status`
    BODY_TOO_LARGE = "body_too_large"
    INVALID_BODY = "invalid_body"  # undecodable compression, or JSON that does not parse
    BODY_MISMATCH = "body_mismatch"  # a body regex, JSON expectation or CEL check did not hold
    HEADER_MISMATCH = "header_mismatch"  # fail_if_header_matches / _not_matches
    HTTP_VERSION = "http_version"  # a version outside valid_http_versions
    TLS_MISMATCH = "tls_mismatch"  # fail_if_ssl / fail_if_not_ssl
    POOL_TIMEOUT = "pool_timeout"  # stackprobe's own connection limit was saturated
    DISCOVERY_FAILED = "discovery_failed"  # `discover`: the ECS API calls failed
    NO_TASKS = "no_tasks"  # `discover`: the service has no running task to probe
    OTHER = "other"


class BasicAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str
    password: SecretRef

    def derived_secrets(self) -> list[str]:
        """The Authorization header carries base64 of `user:password`; the redactor needs it."""
        return [f"{self.username}:{self.password.get()}"]


class HeaderMatch(BaseModel):
    """A `fail_if_header_matches` / `fail_if_header_not_matches` entry, as blackbox_exporter
    has it: the regexp is searched in each value of the header; a header that is missing
    fails the run unless `allow_missing`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str
    regexp: Regex
    allow_missing: bool = False

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise _invalid_header_name({"found": repr(value)[:80]})
        return value


def _invalid_header_name(context: dict[str, str]) -> PydanticCustomError:
    """A header name that is not an HTTP token, in `headers` or a header check."""
    return PydanticCustomError(
        "header_name", "{found} is not a valid header name: use letters, digits and -", context
    )


# What blackbox_exporter calls the versions (Go's resp.Proto), and httpx's names for them.
_HTTP_VERSIONS = {"HTTP/1.0": "HTTP/1.0", "HTTP/1.1": "HTTP/1.1", "HTTP/2.0": "HTTP/2"}
BODY_FILE_MAX = 1024 * 1024  # bytes a `body_file` may hold


class JsonExpectation(BaseModel):
    """`path` is a JMESPath expression (`checks.redis.status`); the value found must equal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    equals: Any
    _compiled: Any = PrivateAttr(default=None)

    @field_validator("path")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            jmespath.compile(value)
        except jmespath.exceptions.ParseError as exc:
            raise PydanticCustomError(
                "jmespath",
                "{path} is not a JMESPath expression: {error}",
                {"path": repr(value), "error": str(exc).splitlines()[0]},
            ) from None
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._compiled = jmespath.compile(self.path)

    def holds(self, doc: Any) -> bool:
        return bool(self._compiled.search(doc) == self.equals)


Role = Literal["liveness", "readiness", "endpoint", "dependency"]
_ROLE_BY_LAST_SEGMENT: dict[str, Role] = {
    "live": "liveness",
    "livez": "liveness",
    "liveness": "liveness",
    "ready": "readiness",
    "readyz": "readiness",
    "readiness": "readiness",
}


def _role_from_path(path: str) -> Role:
    """`/health/live` is a liveness check and `/health/ready` a readiness check (the runbooks'
    paths, and Kubernetes' `/livez`, `/readyz`); any other URL is one of the team's endpoints."""
    last = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()
    return _ROLE_BY_LAST_SEGMENT.get(last, "endpoint")


def _http_url(text: str, error: str, shown: str, wanted: str) -> httpx.URL:
    """`text` as an http(s) URL with a host, or a config error that shows it as `shown`."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        raise PydanticCustomError(error, "{shown} is not a valid URL", {"shown": shown}) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise PydanticCustomError(error, "{shown} must be " + wanted, {"shown": shown})
    return url


def _without_userinfo(url: str) -> str:
    """The URL without a `user@` (a password is refused at load; a user name is not shown)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{path}"


class HttpTarget(TargetConfig):
    kind: Literal["http"] = "http"
    # What the check stands for, which sets its alert's priority: liveness (site down, P0),
    # readiness (a dependency down, P1), endpoint (a team URL such as a tile server, P1),
    # dependency (a third party, P2). Unset: from the URL's path (`_role_from_path`).
    role: Role | None = None

    OWN_LABELS: ClassVar[Mapping[str, str]] = {
        "role": "it is an http target's own key: set `role:` on the target"
    }
    url: StrOrSecret | None = None
    # Instead of `url`: probe every running task of an ECS service at its own address.
    discover: Discover | None = None
    method: Literal["GET", "HEAD", "POST", "OPTIONS"] = "GET"
    headers: dict[str, StrOrSecret] = Field(default_factory=dict)
    basic_auth: BasicAuth | None = None
    expect_status: tuple[Annotated[int, Field(ge=100, le=599)], ...] = ()
    follow_redirects: bool = True
    max_redirects: int = Field(10, ge=0, le=100)
    max_body_bytes: int = Field(1024 * 1024, gt=0, le=64 * 1024 * 1024)
    # blackbox_exporter's: a (decoded) body larger than this fails the run, with
    # body_too_large; max_body_bytes only bounds memory
    body_size_limit: int | None = Field(None, gt=0, le=64 * 1024 * 1024)
    # The coding the response must come in: asked for with Accept-Encoding and decoded.
    # Unset: gzip is asked for and decoded, deflate decoded, any other left undecoded.
    compression: Literal["gzip", "br", "deflate", "identity"] | None = None
    body_format: Literal["auto", "json", "text"] = "auto"
    expect_body_regex: tuple[Regex, ...] = ()
    reject_body_regex: tuple[Regex, ...] = ()
    expect_json: tuple[JsonExpectation, ...] = ()
    # blackbox_exporter's CEL checks over the JSON body (`body`): fail when it yields true /
    # when it does not yield true
    fail_if_body_json_matches_cel: CelProgram | None = None
    fail_if_body_json_not_matches_cel: CelProgram | None = None
    health_components: bool = True
    max_health_components: int = Field(32, ge=1, le=256)
    ignore_components: frozenset[str] = frozenset()
    latency_threshold: Duration | None = None
    tls: TLSConfig = TLSConfig()
    # Which address family to connect over, as blackbox_exporter's keys (probes/_ip.py).
    # Unset: the resolver's order.
    preferred_ip_protocol: IpProtocol | None = None
    ip_protocol_fallback: bool = True
    # blackbox_exporter's proxy keys: every request through `proxy_url` (hosts in `no_proxy`
    # excepted), or through HTTP_PROXY / HTTPS_PROXY / NO_PROXY when asked to read them
    proxy_url: StrOrSecret | None = None
    proxy_from_environment: bool = False
    no_proxy: str | None = None
    proxy_connect_header: dict[str, StrOrSecret] = Field(default_factory=dict)
    skip_resolve_phase_with_proxy: bool = False
    # blackbox_exporter's checks of the final response, judged after the status
    fail_if_header_matches: tuple[HeaderMatch, ...] = ()
    fail_if_header_not_matches: tuple[HeaderMatch, ...] = ()
    valid_http_versions: tuple[Literal["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"], ...] = ()
    # Offer HTTP/2 over TLS (ALPN), as blackbox_exporter does by default; the server picks.
    enable_http2: bool = False
    fail_if_ssl: bool = False
    fail_if_not_ssl: bool = False
    # the request's body (a POST check); `body_file` is read when the config loads
    body: StrOrSecret | None = None
    body_file: str | None = None
    _body_bytes: bytes | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _usable_url(cls, value: str | SecretRef | None) -> str | SecretRef | None:
        if value is None:
            return None
        if unresolved(value):
            return value  # check-config without the secret: nothing to check here
        secret = isinstance(value, SecretRef)
        text = reveal(value)
        # Before anything that could echo the URL: a password in it must never be repeated.
        authority = re.split(r"[/?#]", text.split("://", 1)[-1], maxsplit=1)[0]
        if ":" in authority.rpartition("@")[0] and not secret:
            raise PydanticCustomError(
                "inline_secret",
                "the URL carries a password; move it to basic_auth: {username: ..., password: "
                "{from_env: VARIABLE}}, or give the whole url as {from_env: VARIABLE}",
            )
        # A URL holding "@" may hold credentials in a shape no parse foresaw: never echo it.
        shown = "url" if "@" in text else repr(text)
        if isinstance(value, SecretRef):
            shown = f"the URL from {value.source()}"
        _http_url(text, "http_url", shown, "an absolute http:// or https:// URL with a host")
        return value

    @field_validator("proxy_url")
    @classmethod
    def _usable_proxy(cls, value: str | SecretRef | None) -> str | SecretRef | None:
        if value is None or unresolved(value):
            return value
        text = reveal(value)
        shown = "proxy_url" if "@" in text or isinstance(value, SecretRef) else repr(text)
        authority = re.split(r"[/?#]", text.split("://", 1)[-1], maxsplit=1)[0]
        if not isinstance(value, SecretRef) and ":" in authority.rpartition("@")[0]:
            raise PydanticCustomError(
                "inline_secret",
                "proxy_url carries a password; give the whole proxy_url as {from_env: VARIABLE}",
            )
        kind = "an http:// or https:// URL with a host, like http://proxy.internal:3128"
        _http_url(text, "proxy_url", shown, kind)
        return value

    @field_validator("headers", "proxy_connect_header")
    @classmethod
    def _credentials_not_inline(cls, value: dict[str, str | SecretRef]) -> dict[str, Any]:
        for name, header in value.items():
            if not _HEADER_NAME.match(name):
                raise _invalid_header_name({"found": repr(name), "entry": name})
            if isinstance(header, str) and _SENSITIVE_HEADER.search(name):
                raise PydanticCustomError(
                    "inline_secret",
                    "header {name} carries a credential and cannot be written inline; give it "
                    "as {from_env: VARIABLE} or {from_file: /path/to/file}",
                    {"name": name, "entry": name},
                )
            if unresolved(header):
                continue  # check-config without the secret
            text = reveal(header)
            if not _HEADER_VALUE.match(text):
                where = f" (from {header.source()})" if isinstance(header, SecretRef) else ""
                raise PydanticCustomError(
                    "header_value",
                    "the value of header {name}{where} holds a control character or a non-ASCII "
                    "character, which stackprobe cannot send in a header",
                    {"name": name, "where": where, "entry": name},
                )
        return value

    @model_validator(mode="after")
    def _url_or_discover(self) -> HttpTarget:
        if self.url is None and self.discover is None:
            raise ValueError(
                "missing required key `url` (or `discover: {ecs: ...}` to probe every task of "
                "an ECS service)"
            )
        if self.url is not None and self.discover is not None:
            raise ValueError("give url: (one endpoint) or discover: (every task), not both")
        return self

    @model_validator(mode="after")
    def _latency_threshold_within_timeout(self) -> HttpTarget:
        if self.latency_threshold is not None and self.latency_threshold >= self.timeout:
            raise ValueError(
                "latency_threshold must be below the timeout, or a slow target shows as a "
                "timeout instead of as slow"
            )
        return self

    def inferred_role(self) -> Role:
        if self.role is not None:
            return self.role
        if self.discover is not None:
            return _role_from_path(self.discover.ecs.path)
        if isinstance(self.url, str):
            return _role_from_path(httpx.URL(self.url).path)
        return "endpoint"  # a URL from a secret is not read for this

    def own_labels(self) -> dict[str, str]:
        # The tasks of an ECS service are that service's: the rules and inhibitions that
        # match on `service` need no relabeling for them.
        service = {"service": self.discover.ecs.service} if self.discover is not None else {}
        return {"role": self.inferred_role(), **service}

    @cached_property
    def secret_scrubber(self) -> Redactor:
        """Finds this target's secrets, in every form they travel in, in what it received."""
        return Redactor(collect_secrets(self))

    @cached_property
    def request_url(self) -> httpx.URL:
        """The URL parsed once, as every run sends it (its secret is read at the load)."""
        return httpx.URL(self.url_text())

    def url_text(self) -> str:
        if self.url is None:
            raise ValueError("a discover target has no url of its own; probe its tasks")
        return reveal(self.url)

    def request_line(self) -> str:
        """The request as the console's evidence shows it: no user name, and a URL from a
        secret only by where it comes from."""
        if isinstance(self.url, str):
            return f"{self.method} {_without_userinfo(self.url)}"
        return self.describe()

    def shown_path(self) -> str:
        """Where a health body was read, for a verdict's why: "/health/ready"."""
        if not isinstance(self.url, str):
            return "the response body"  # a URL from a secret is not shown, not even its path
        return httpx.URL(self.url).path or "/"

    def describe(self) -> str:
        if self.discover is not None:
            ecs = self.discover.ecs
            where = f"{ecs.scheme}://<task>:{ecs.port}{ecs.path}"
            return f"{self.method} {where} of each task of {ecs.cluster}/{ecs.service}"
        if isinstance(self.url, SecretRef):
            return f"{self.method} <url from {self.url.source()}>"
        return f"{self.method} {self.url}"

    @model_validator(mode="after")
    def _one_proxy(self) -> HttpTarget:
        if self.proxy_url is not None and self.proxy_from_environment:
            raise PydanticCustomError(
                "proxy", "give proxy_url or proxy_from_environment: true, not both", {}
            )
        return self

    def derived_secrets(self) -> list[str]:
        """A proxy URL's password travels alone and in Proxy-Authorization's `user:password`."""
        if self.proxy_url is None:
            return []
        url = httpx.URL(reveal(self.proxy_url))
        if not url.password:
            return []
        password = urllib.parse.unquote(url.password)
        return [password, f"{urllib.parse.unquote(url.username)}:{password}"]

    @cached_property
    def _configured_proxy(self) -> Proxy | None:
        return None if self.proxy_url is None else self._proxy(reveal(self.proxy_url))

    def _proxy(self, text: str) -> Proxy:
        url = httpx.URL(text)
        auth = None
        if url.username:  # bytes: httpcore takes only ASCII as text, a password may be UTF-8
            auth = (
                urllib.parse.unquote(url.username).encode(),
                urllib.parse.unquote(url.password or "").encode(),
            )
        headers = tuple((name, reveal(value)) for name, value in self.proxy_connect_header.items())
        return Proxy(str(url.copy_with(username=None, password=None)), auth, headers)

    def proxy_for(self, url: httpx.URL) -> Proxy | None:
        """The proxy a request to `url` goes through, if any."""
        if self.proxy_url is not None:
            if self.no_proxy and _bypasses(url.host, _port(url), self.no_proxy):
                return None
            return self._configured_proxy
        if not self.proxy_from_environment:
            return None
        import urllib.request  # only a target reading the environment's proxies pays for it

        proxies = urllib.request.getproxies_environment()
        found = proxies.get(url.scheme)
        if not found or _bypasses(url.host, _port(url), proxies.get("no", "")):
            return None
        return self._proxy(found)

    @model_validator(mode="after")
    def _response_checks_and_body(self) -> HttpTarget:
        if self.fail_if_ssl and self.fail_if_not_ssl:
            raise PydanticCustomError(
                "tls_mismatch", "fail_if_ssl and fail_if_not_ssl together fail every run", {}
            )
        if self.body is not None and self.body_file is not None:
            raise PydanticCustomError(
                "body", "give the request's body as body or as body_file, not both", {}
            )
        if self.body_file is not None:
            try:
                with open(self.body_file, "rb") as file:
                    data = file.read(BODY_FILE_MAX + 1)
            except OSError as exc:
                raise PydanticCustomError(
                    "body_file",
                    "cannot read body_file {path}: {error}",
                    {"path": self.body_file, "error": exc.strerror or type(exc).__name__},
                ) from None
            if len(data) > BODY_FILE_MAX:
                raise PydanticCustomError(
                    "body_file",
                    "body_file {path} is over {most} bytes",
                    {"path": self.body_file, "most": BODY_FILE_MAX},
                )
            self._body_bytes = data
        return self

    def request_body(self) -> bytes | None:
        if self.body is not None:
            return reveal(self.body).encode()
        return self._body_bytes

    @cached_property
    def checks_response(self) -> bool:
        """Whether any of blackbox_exporter's final-response checks is set (the hot path
        skips them otherwise); computed once per config, not per run."""
        return bool(
            self.fail_if_header_matches
            or self.fail_if_header_not_matches
            or self.valid_http_versions
            or self.fail_if_ssl
            or self.fail_if_not_ssl
        )

    @cached_property
    def read_cap(self) -> int:
        """Decoded body bytes read at most: body_size_limit when set, else max_body_bytes."""
        return self.body_size_limit or self.max_body_bytes

    @cached_property
    def checks_regex(self) -> bool:
        """Whether probe_failed_due_to_regex is exported: a body or header regex is set."""
        return bool(
            self.expect_body_regex
            or self.reject_body_regex
            or self.fail_if_header_matches
            or self.fail_if_header_not_matches
        )

    @cached_property
    def checks_cel(self) -> bool:
        return bool(self.fail_if_body_json_matches_cel or self.fail_if_body_json_not_matches_cel)

    @cached_property
    def request_headers(self) -> tuple[tuple[str, str], ...]:
        """The headers of its own a run sends, over the client's (its secrets are read at
        the load); targets with the same ones share one set (HttpClients.headers)."""
        headers = {"Accept-Encoding": self.compression or ACCEPT_ENCODING}
        for name, value in self.headers.items():
            if name.lower() == "accept-encoding":
                del headers["Accept-Encoding"]
            headers[name] = reveal(value)
        return tuple(headers.items())

    def secret_header_names(self) -> list[str]:
        return [name for name, value in self.headers.items() if isinstance(value, SecretRef)]

    def status_ok(self, status: int) -> bool:
        return status in self.expect_status if self.expect_status else 200 <= status < 300


_PHASES = ("resolve", "connect", "tls", "processing", "transfer")

PROBE_HTTP_STATUS_CODE = MetricSpec(
    "probe_http_status_code", "HTTP status code of the final response, 0 when none arrived."
)
PROBE_HTTP_CONTENT_LENGTH = MetricSpec(
    "probe_http_content_length", "Content-Length of the final response, -1 when not sent."
)
PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH = MetricSpec(
    "probe_http_uncompressed_body_length",
    "Decoded body bytes read (raw bytes for a coding left undecoded), at most "
    "max_body_bytes + 1, or body_size_limit.",
)
PROBE_HTTP_DURATION_SECONDS = MetricSpec(
    "probe_http_duration_seconds",
    "Seconds per phase (resolve, connect, tls, processing, transfer), summed over redirects.",
    ("phase",),
)
PROBE_HTTP_REDIRECTS = MetricSpec(
    "probe_http_redirects",
    "Redirects followed; past max_redirects, the refused one is counted too, as "
    "blackbox_exporter counts it.",
)
PROBE_HTTP_SSL = MetricSpec("probe_http_ssl", "1 if the final response came over TLS.")
PROBE_HTTP_VERSION = MetricSpec("probe_http_version", "HTTP version of the final response.")
PROBE_SSL_EARLIEST_CERT_EXPIRY = MetricSpec(
    "probe_ssl_earliest_cert_expiry",
    "Unix time the server's leaf certificate expires (only over TLS).",
)
PROBE_TLS_VERSION_INFO = MetricSpec(
    "probe_tls_version_info", "TLS version of the final connection.", ("version",)
)
PROBE_SSL_LAST_CHAIN_INFO = MetricSpec(
    "probe_ssl_last_chain_info",
    "1, with the server's leaf certificate: its SHA-256 fingerprint, subject, issuer, DNS "
    "names and serial number (only over TLS).",
    ("fingerprint_sha256", "subject", "issuer", "subjectalternative", "serialnumber"),
)
PROBE_FAILED_DUE_TO_REGEX = MetricSpec(
    "probe_failed_due_to_regex",
    "1 if a body or header regex failed the run; only for a target with one.",
)
PROBE_FAILED_DUE_TO_CEL = MetricSpec(
    "probe_failed_due_to_cel",
    "1 if a CEL check of the JSON body failed the run; only for a target with one.",
)
HEALTH_COMPONENT_UP = MetricSpec(
    "stackprobe_health_component_up",
    "1 if the readiness body reports the component healthy, 0 if unhealthy.",
    ("component",),
)
HEALTH_COMPONENTS_DROPPED = MetricSpec(
    "stackprobe_health_components_dropped",
    "Components found in the body beyond max_health_components and not exported.",
)
HTTP_LATENCY_THRESHOLD = MetricSpec(
    "stackprobe_http_latency_threshold_seconds",
    "The target's configured latency_threshold, for alerting on probe_duration_seconds.",
)

METRICS = (
    PROBE_HTTP_STATUS_CODE,
    PROBE_HTTP_CONTENT_LENGTH,
    PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH,
    PROBE_HTTP_DURATION_SECONDS,
    PROBE_HTTP_REDIRECTS,
    PROBE_HTTP_SSL,
    PROBE_HTTP_VERSION,
    PROBE_SSL_EARLIEST_CERT_EXPIRY,
    PROBE_TLS_VERSION_INFO,
    PROBE_SSL_LAST_CHAIN_INFO,
    PROBE_IP_PROTOCOL,
    PROBE_IP_ADDR_HASH,
    PROBE_FAILED_DUE_TO_REGEX,
    PROBE_FAILED_DUE_TO_CEL,
    HEALTH_COMPONENT_UP,
    HEALTH_COMPONENTS_DROPPED,
    HTTP_LATENCY_THRESHOLD,
    *TASK_METRICS,
)


# What pages when a run fails, by the target's role (alert_rules/health.rules.yml: the rules
# on probe_success{role=...}).
ROLE_ALERTS: Mapping[Role, str] = {
    "liveness": "HealthLiveFailing",
    "readiness": "HealthReadyFailing",
    "endpoint": "EndpointFailing",
    "dependency": "ExternalDependencyFailing",
}
# A body naming a component down pages whatever the status: AppRedisPoolBroken for a
# component=~"(?i).*redis.*", DependencyComponentDown for any other but "overall".
REDIS_COMPONENT = re.compile("redis", re.IGNORECASE)
REDIS_ALERT = "AppRedisPoolBroken"
COMPONENT_ALERT = "DependencyComponentDown"
# TlsCertificateExpiringSoon: probe_ssl_earliest_cert_expiry - time() < 14 * 86400.
CERT_EXPIRY_WARNING_SECONDS = 14 * 86400
CERT_ALERT = "TlsCertificateExpiringSoon"
# EndpointSlow: probe_duration_seconds > stackprobe_http_latency_threshold_seconds.
SLOW_ALERT = "EndpointSlow"
# EcsTaskReadyFailing: stackprobe_ecs_task_probe_success == 0, whatever the role.
TASK_ALERT = "EcsTaskReadyFailing"
# EcsServiceNoRunningTasks (alert_rules/ecs.rules.yml), on the ecs_service kind's series:
# what a `discover` target finding no running task is, seen from ECS.
NO_TASKS_ALERT = "EcsServiceNoRunningTasks"

# Evidence bounds: a run's evidence is kept per target until the next, so about 1 KB.
EVIDENCE_HEADERS = 10  # response headers shown at most
EVIDENCE_HEADER_MAX = 100  # characters of one header line
EVIDENCE_HEADERS_TOTAL = 400  # characters of header lines in all
EVIDENCE_COMPONENTS = 3  # components named in a why at most
_CERT_LABEL_MAX = 256  # characters of a certificate's subject, issuer or names as a label
# Never shown, whatever the target: credentials and what a server sets to stand for one.
_HIDDEN_HEADER = re.compile(
    r"auth|cookie|token|secret|passw|api[-_]?key|session|credential|jwt|oidc|signature",
    re.I,
)
# Headers whose value is a URL: shown without its query, where presigned signatures and OAuth
# codes travel.
_URL_HEADERS = frozenset({"location", "content-location", "link", "refresh"})
# How a status failure's detail lists the components down; a verdict's why says it better.
_COMPONENTS_SAID = "; unhealthy components: "
_TEXT_TYPES = ("json", "text/", "xml", "javascript", "html", "yaml", "urlencoded")


class _Failure(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Trace:
    """Phase timings from httpcore's trace events, summed over every hop of a redirect chain.

    `phase` is where the request was when it stopped, which is what tells a connect timeout
    (a security group dropping packets) from a slow application.
    """

    __slots__ = ("_started", "addressing", "durations", "phase", "resolved", "resolved_apart")

    def __init__(self, addressing: Addressing) -> None:
        self.durations = dict.fromkeys(_PHASES, 0.0)
        self.phase = "pool"
        self._started = 0.0
        # the connections resolve the name inside their connect (probes/_http_network.py)
        self.addressing = addressing
        self.resolved = True  # False: through a proxy that resolves the name (no resolve phase)
        self.resolved_apart = 0.0  # of the resolve time, what was looked up outside connect

    def seconds(self) -> dict[str, float]:
        """Seconds per phase, the name's resolution taken out of connect (through a proxy,
        looked up apart, before connecting)."""
        resolve = self.addressing.resolve_seconds
        if not self.resolved:
            return {phase: self.durations[phase] for phase in _PHASES if phase != "resolve"}
        inside_connect = resolve - self.resolved_apart
        return {
            **self.durations,
            "resolve": resolve,
            "connect": max(self.durations["connect"] - inside_connect, 0.0),
        }

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if event == "connection.connect_tcp.started":
            self.phase, self._started = "connect", now
        elif event == "connection.connect_tcp.complete":
            self.durations["connect"] += now - self._started
        elif event.endswith(".start_tls.started"):  # a CONNECT tunnel's is "proxy.start_tls"
            self.phase, self._started = "tls", now
        elif event.endswith(".start_tls.complete"):
            self.durations["tls"] += now - self._started
        elif event.endswith(".send_request_headers.started"):
            self.phase, self._started = "processing", now
        elif event.endswith(".receive_response_headers.complete"):
            self.durations["processing"] += now - self._started
            self.phase = "transfer"


class _Observed:
    """What the final response showed, kept apart so a failure still reports what was seen."""

    def __init__(self) -> None:
        self.status = 0
        self.content_length = -1
        self.body_length = 0
        self.redirects = 0
        self.http_version = 0.0
        self.tls_version: str | None = None
        self.cert_expiry: float | None = None
        self.leaf: tuple[str, str, str, str, str] | None = None  # probe_ssl_last_chain_info
        self.components: dict[str, float] = {}
        self.components_dropped = 0
        # Evidence of the final response, taken as it arrives (the response is not kept).
        self.status_line = ""
        self.headers: Evidence = ()
        self.final_url: httpx.URL | None = None  # after a redirect only
        # Components found down and the word the body used: {"redis": "false"}.
        self.down: dict[str, str] = {}
        # a final-response check that failed (HeaderMatch, versions, TLS), raised after the
        # status has been judged
        self.mismatch: _Failure | None = None
        self.failed_regex = False  # probe_failed_due_to_regex
        self.failed_cel = False


async def probe(target: HttpTarget, ctx: ProbeContext) -> ProbeResult:
    if target.discover is not None:
        return await _probe_each_task(target, target.discover.ecs, ctx)
    started = time.perf_counter()
    trace = _Trace(Addressing(target.preferred_ip_protocol, target.ip_protocol_fallback))
    seen = _Observed()
    body: _Body | None = None
    try:
        body = await _fetch(target, ctx, trace, seen)
        _check(target, seen, body)
        if target.checks_cel:
            await _check_cel(target, seen, body, ctx)
    except _Failure as failure:
        phase = "the checks of the response" if body is not None else f"the {trace.phase} phase"
        return _failed(target, failure.reason, failure.detail, trace, seen, body, phase)
    except TimeoutError:
        reason = Reason.CONNECT_TIMEOUT if trace.phase == "connect" else Reason.TIMEOUT
        if trace.phase == "pool":
            reason = Reason.POOL_TIMEOUT
        elif trace.phase == "resolve":  # the target's name, looked up before a proxy
            reason = Reason.DNS
        detail = f"no answer within {target.timeout:g}s (stopped in the {trace.phase} phase)"
        return _failed(target, reason, detail, trace, seen, body, f"the {trace.phase} phase")
    except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
        reason = classify(exc)
        detail = target.secret_scrubber(_describe(exc, reason))  # may echo what the peer sent
        if reason is Reason.TLS_CERT_EXPIRED:
            seen.cert_expiry = await _expired_certificate(target, ctx, seen)
            if seen.cert_expiry is not None:
                until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seen.cert_expiry))
                detail = f"{detail}; it expired on {until}"
        return _failed(target, reason, detail, trace, seen, body, f"the {trace.phase} phase")
    elapsed = time.perf_counter() - started
    verdict = _ok_verdict(target, seen, elapsed)
    evidence = _evidence(target, seen, body)
    if verdict is not None and verdict.alert == SLOW_ALERT:
        evidence += (("timing", _timing(trace)),)
    return ProbeResult.ok(_samples(target, trace, seen), verdict=verdict, evidence=evidence)


async def _expired_certificate(
    target: HttpTarget, ctx: ProbeContext, seen: _Observed
) -> float | None:
    """When the certificate failed verification because it expired, when it expired: read
    from a second handshake that verifies nothing and sends no request, so that
    probe_ssl_earliest_cert_expiry is there when it matters most (blackbox_exporter drops it,
    its issue #1119). None when that handshake fails or the run's time is up."""
    url = seen.final_url or httpx.URL(target.url_text())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no CA bundle: it verifies nothing
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    writer = None
    try:
        async with asyncio.timeout_at(ctx.deadline):
            _, writer = await asyncio.open_connection(
                url.host,
                url.port or 443,
                ssl=context,
                server_hostname=target.tls.server_name or url.host,
            )
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            from cryptography import x509

            return float(x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp())
    except (OSError, ssl.SSLError, TimeoutError, ValueError, AttributeError):
        return None
    finally:
        if writer is not None:
            # no TLS goodbye to a server we only asked for its certificate: the socket is
            # closed at once, on the loop's next turn
            writer.transport.abort()
            await asyncio.sleep(0)


def _failed(
    target: HttpTarget,
    reason: Reason,
    detail: str,
    trace: _Trace,
    seen: _Observed,
    body: _Body | None,
    phase: str,
) -> ProbeResult:
    """A failed run, with the alert its role (or the component its body names) pages."""
    role = target.inferred_role()
    down = _down_components(seen)
    why = detail
    if down:
        why = f"{detail.split(_COMPONENTS_SAID, 1)[0]}; {_named_down(target, seen)}"
    alert = ROLE_ALERTS[role]
    if down and role != "liveness":
        # The body names the broken dependency: its alert pages (and, for readiness, mutes
        # HealthReadyFailing of the same target in alert_rules/alertmanager.yml). A liveness
        # failure stays the P0 it is.
        alert = _component_alert(down)
    return ProbeResult.failed(
        reason,
        detail,
        _samples(target, trace, seen),
        verdict=Verdict(Health.FAILING, why, alert),
        evidence=(*_evidence(target, seen, body), ("failed in", phase)),
    )


def _ok_verdict(target: HttpTarget, seen: _Observed, elapsed: float) -> Verdict | None:
    """None (ok, as the core reads a successful run) unless the answer shows something wrong:
    a component down in the body, a slow answer, a certificate about to expire."""
    if seen.down:
        down = _down_components(seen)
        named = _named_down(target, seen)
        if down:
            return Verdict(
                Health.FAILING, f"{named} (status {seen.status})", _component_alert(down)
            )
        # Only the document's own status says down: no rule pages on "overall".
        return Verdict(Health.DEGRADED, f"{named}, yet status {seen.status}")
    threshold = target.latency_threshold
    if threshold is not None and elapsed > threshold:
        why = f"took {elapsed:.2f}s, over latency_threshold {threshold:g}s"
        return Verdict(Health.DEGRADED, why, SLOW_ALERT)
    if seen.cert_expiry is not None:
        left = seen.cert_expiry - time.time()
        if left < CERT_EXPIRY_WARNING_SECONDS:
            return Verdict(Health.DEGRADED, _cert_why(seen.cert_expiry, left), CERT_ALERT)
    return None


def _down_components(seen: _Observed) -> list[str]:
    """The components found down that an alert pages on: any but the document's own."""
    return [name for name in seen.down if name != OVERALL]


def _component_alert(down: list[str]) -> str:
    """AppRedisPoolBroken when any component down is the app's Redis: it pages as well, and
    its runbook section is the more specific one."""
    return REDIS_ALERT if any(REDIS_COMPONENT.search(name) for name in down) else COMPONENT_ALERT


def _named_down(target: HttpTarget, seen: _Observed) -> str:
    """The components down as the body said them: "`redis: false` in /health/ready"."""
    down = _down_components(seen)
    if not down:
        return f"overall status `{seen.down[OVERALL]}` in {target.shown_path()}"
    shown = [f"`{_printable(name)}: {seen.down[name]}`" for name in down[:EVIDENCE_COMPONENTS]]
    more = f" and {len(down) - EVIDENCE_COMPONENTS} more" if len(down) > EVIDENCE_COMPONENTS else ""
    return f"{', '.join(shown)}{more} in {target.shown_path()}"


def _printable(text: str) -> str:
    """A name from the server, on one line whatever it holds."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _cert_why(expiry: float, left: float) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime(expiry))
    if left < 0:
        return f"TLS certificate expired on {day} ({-left / 86400:.0f} days ago)"
    return f"TLS certificate expires on {day}, in {left / 86400:.1f} days"


def _timing(trace: _Trace) -> str:
    """The phases of a slow run: which one was slow is the first question."""
    return ", ".join(f"{phase} {took * 1000:.1f} ms" for phase, took in trace.seconds().items())


def _evidence(target: HttpTarget, seen: _Observed, body: _Body | None) -> Evidence:
    """What the console's detail view shows of the run, like blackbox_exporter's debug
    output: request, status line, some headers, the start of the body, TLS. Only what the
    run already had: nothing is read or parsed for it."""
    evidence: list[tuple[str, str]] = [("request", target.request_line())]
    if seen.final_url is not None and isinstance(target.url, SecretRef):
        # a URL from a secret is shown as its source only, not even its path
        evidence.append(("redirected", f"{seen.redirects} time(s)"))
    elif seen.final_url is not None:
        where = seen.final_url.copy_with(query=None, fragment=None, username=None, password=None)
        evidence.append(("redirected", f"{seen.redirects} time(s), last to {where}"))
    if seen.status_line:
        evidence.append(("status", seen.status_line))
    evidence += seen.headers
    if seen.tls_version:
        tls = seen.tls_version
        if seen.cert_expiry is not None:
            until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seen.cert_expiry))
            tls = f"{tls}, certificate valid until {until}"
        evidence.append(("tls", tls))
    if body is not None and seen.status_line:
        shown = _body_excerpt(target, body, seen)
        if shown:
            evidence.append(("body", shown))
    return tuple(evidence)


def _body_excerpt(target: HttpTarget, body: _Body, seen: _Observed) -> str:
    if body.too_large:
        return f"not kept: {body.too_large}"
    if body.undecodable:
        return f"not decoded: {body.undecodable}"
    if not body.data:
        return ""
    content_type = body.content_type.lower()
    if content_type and not any(kind in content_type for kind in _TEXT_TYPES):
        return f"{seen.body_length} bytes of {body.content_type[:60]}, not shown"
    # Scrubbed, then cut: a cut first could leave half a secret the scrub cannot recognise.
    # Four times what is shown is scrubbed, so a secret starting in what is shown is whole.
    text = body.data[: EVIDENCE_VALUE_MAX * 4].decode("utf-8", errors="replace")
    return target.secret_scrubber(text)[:EVIDENCE_VALUE_MAX]


def _header_name(raw: bytes) -> str | None:
    """A header's name as shown, None for one never shown."""
    name = raw.decode("latin-1").lower()
    return None if _HIDDEN_HEADER.search(name) else name


def _header_evidence(target: HttpTarget, raw: list[tuple[bytes, bytes]]) -> Evidence:
    """The first few response headers but credentials, short, each as `name: value`."""
    shown: list[tuple[str, str]] = []
    budget = EVIDENCE_HEADERS_TOTAL
    for name_bytes, value_bytes in raw:
        name = _header_name(name_bytes)
        if name is None:
            continue
        value = value_bytes.decode("latin-1")
        if name in _URL_HEADERS:
            value = value.split("?", 1)[0]
        # scrubbed whole, then cut, as the body
        line = target.secret_scrubber(f"{name}: {value}")[:EVIDENCE_HEADER_MAX]
        shown.append(("header", line))
        budget -= len(line)
        if len(shown) >= EVIDENCE_HEADERS or budget <= 0:
            break
    return tuple(shown)


async def _probe_each_task(target: HttpTarget, ecs: EcsDiscovery, ctx: ProbeContext) -> ProbeResult:
    """`discover`: every running task probed at its own address (probes/_ecs_tasks.py). Each
    task's run is kept here, by URL, for the verdict and evidence of the whole."""
    runs: dict[str, list[ProbeResult]] = {}

    async def check(task: HttpTarget, task_ctx: ProbeContext) -> ProbeResult:
        result = await probe(task, task_ctx)
        runs.setdefault(task.url_text(), []).append(result)
        return result

    result = await probe_tasks(
        target,
        ctx,
        check,
        (Reason.DISCOVERY_FAILED, Reason.NO_TASKS),
        HEALTH_COMPONENT_UP,
        PROBE_HTTP_STATUS_CODE,
    )
    verdict, evidence = _tasks_verdict(target, ecs, result, runs)
    return replace(result, verdict=verdict, evidence=evidence)


def _tasks_verdict(
    target: HttpTarget,
    ecs: EcsDiscovery,
    result: ProbeResult,
    runs: dict[str, list[ProbeResult]],
) -> tuple[Verdict | None, Evidence]:
    """The worst task speaks for the service: a failing one, else one whose body names a
    component down, else a degraded one. The role's alerts do not fire for a `discover`
    target (they skip targets with stackprobe_ecs_tasks_discovered); the per-task ones do."""
    where = f"{ecs.cluster}/{ecs.service}"
    discovered = next((s.value for s in result.samples if s.spec is TASKS), None)
    if discovered is None:  # the ECS calls failed: no series says there are tasks
        evidence: Evidence = (("discover", f"running tasks of {where}: the ECS calls failed"),)
        alert = ROLE_ALERTS[target.inferred_role()]
        return Verdict(Health.FAILING, result.detail, alert), evidence
    tasks = [(s.label_values, s.value) for s in result.samples if s.spec is TASK_SUCCESS]
    evidence = (("discover", f"{discovered:g} running task(s) of {where}, {len(tasks)} probed"),)
    if not tasks:
        alert = NO_TASKS_ALERT if discovered == 0 else ""
        return Verdict(Health.FAILING, result.detail, alert), evidence
    down: dict[str, list[str]] = {}
    for sample in result.samples:
        if sample.spec is TASK_COMPONENT and not sample.value:
            task, component = sample.label_values
            if component != OVERALL:
                down.setdefault(task, []).append(component)
    worst: tuple[int, str, str, ProbeResult] | None = None
    for (task, address), success in tasks:
        url = f"{ecs.scheme}://{address}:{ecs.port}{ecs.path}"
        found = runs.get(url, [])
        # Tasks that share an address share a URL: take a run with the task's own outcome.
        run = next((r for r in found if r.success == bool(success)), None)
        if run is None:
            continue
        rank = 3 if not success else 2 if task in down else min(_RANK[run.health().health], 1)
        if worst is None or rank > worst[0]:
            worst = (rank, task, address, run)
    if worst is None:  # no run kept for a task the samples name: say what is known
        health = Health.OK if result.success else Health.FAILING
        return Verdict(health, result.detail, "" if result.success else TASK_ALERT), evidence
    rank, task, address, run = worst
    evidence += (("task", f"{task} at {address}"), *run.evidence)
    if rank == _RANK[Health.OK]:
        return None, evidence
    inner = run.health()
    if rank == 3:
        failing = sum(1 for _, success in tasks if not success)
        why = f"{failing} of {len(tasks)} tasks failing; task {task} at {address}: {inner.why}"
        alert = _component_alert(down[task]) if task in down else TASK_ALERT
        return Verdict(Health.FAILING, why, alert), evidence
    why = f"task {task} at {address}: {inner.why}"
    if rank == 2:
        return Verdict(Health.FAILING, why, _component_alert(down[task])), evidence
    # A task's slow answer or expiring certificate: its series are not kept per task, so no
    # rule pages on it for a `discover` target.
    return Verdict(inner.health, why), evidence


_RANK = {Health.OK: 0, Health.DEGRADED: 1, Health.FAILING: 2}


@dataclass(frozen=True, slots=True)
class _Body:
    data: bytes
    content_type: str
    # Set when the body was larger than max_body_bytes and so not kept: why, in one sentence.
    too_large: str = ""
    # Set when the body's content coding could not be decoded: why, in one sentence.
    undecodable: str = ""
    unasked: bool = False  # undecodable for a coding the request did not ask for (br)


async def _fetch(target: HttpTarget, ctx: ProbeContext, trace: _Trace, seen: _Observed) -> _Body:
    try:
        clients = ctx.use(HTTP_CLIENTS)
        client = clients.client(target.tls, target.enable_http2)
    except (ssl.SSLError, OSError, ValueError) as exc:  # files changed since the config load
        raise _Failure(Reason.TLS, f"cannot use the TLS files: {exc}") from None
    extensions: dict[str, Any] = {
        "trace": trace,
        ADDRESSING: trace.addressing,
        # a connection slot is waited for until the deadline, then it is pool_timeout
        "timeout": {"pool": max(ctx.remaining(), 0.001)},
    }
    if target.tls.server_name:
        extensions["sni_hostname"] = target.tls.server_name
    body: _Body | None = None
    try:
        async with asyncio.timeout_at(ctx.deadline):
            request = client.request(
                target.method,
                target.request_url,
                target.request_body(),
                clients.headers(target.request_headers),
                extensions,
            )
            auth = (
                httpx.BasicAuth(target.basic_auth.username, target.basic_auth.password.get())
                if target.basic_auth
                else None
            )
            origin = request.url
            while True:
                if auth is not None:  # until the first hop away from the origin
                    next(auth.auth_flow(request))
                elif request.url.username or request.url.password:
                    # a URL's own user and password, as Go's client and httpx send them
                    url = request.url
                    next(httpx.BasicAuth(url.username, url.password).auth_flow(request))
                await _route(target, request, trace)
                trace.phase = "pool"
                response = await client.send(request)
                try:
                    following = _redirect(target, request, response, seen)
                    if following is not None:
                        if seen.redirects >= target.max_redirects:
                            # as blackbox_exporter reports it: the last response's status,
                            # version and length, and the refused redirect counted too
                            _observe_response(target, response, seen)
                            seen.redirects += 1
                            raise _Failure(
                                Reason.TOO_MANY_REDIRECTS,
                                f"more than max_redirects={target.max_redirects} redirects",
                            )
                        scheme = following.url.scheme
                        if scheme not in ("http", "https"):
                            _observe_response(target, response, seen)
                            raise _Failure(
                                Reason.INVALID_REDIRECT,
                                f"status {seen.status} redirects to a {scheme[:20]}:// URL; "
                                "only http:// and https:// are followed",
                            )
                        seen.redirects += 1
                        request = following
                        seen.final_url = request.url
                        if not same_origin(origin, request.url):
                            _strip_credentials(target, request)
                            auth = None
                        continue
                    _observe_response(target, response, seen)
                    if target.checks_response:
                        seen.mismatch = _response_mismatch(target, response, seen)
                    started = time.perf_counter()
                    body = await _read_body(target, response, seen)
                    trace.durations["transfer"] += time.perf_counter() - started
                    return body
                finally:
                    await response.aclose()
    except TimeoutError:
        if body is not None:  # the deadline fell while closing a response already read
            return body
        raise


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _bypasses(host: str, port: int, no_proxy: str) -> bool:
    """Whether `host:port` skips the proxy by a NO_PROXY-style list, as Go reads it: `*`, a
    host name (and its subdomains; `.example.com` too), an address (`::1` or `[::1]`) or a
    network (`10.0.0.0/8`), each with an optional `:port` that must then match."""
    host = host.strip("[]").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        name, wanted = _entry(entry)
        if not name or (wanted is not None and wanted != port):
            continue
        if address is None:
            domain = name.lstrip(".")
            if host == domain or host.endswith("." + domain):
                return True
            continue
        with contextlib.suppress(ValueError):
            if "/" in name and address in ipaddress.ip_network(name, strict=False):
                return True
            if "/" not in name and address == ipaddress.ip_address(name):
                return True
    return False


def _entry(entry: str) -> tuple[str, int | None]:
    """A NO_PROXY entry as (host, port): `[::1]:8080`, `::1`, `example.com:8080`."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif entry.count(":") == 1:
        name, port = entry.split(":")
    else:
        name, port = entry, ""
    return name, int(port) if port.isdigit() else None


async def _route(target: HttpTarget, request: httpx.Request, trace: _Trace) -> None:
    """Through a proxy, the connection reaches the proxy: the target's own name is looked up
    here, as blackbox_exporter does (the resolve phase and probe_ip_protocol), unless
    skip_resolve_phase_with_proxy (the proxy resolves it, maybe a name only it can)."""
    proxy = target.proxy_for(request.url)
    if proxy is None:
        request.extensions.pop(PROXY, None)
        return
    request.extensions[PROXY] = proxy
    if target.skip_resolve_phase_with_proxy:
        trace.resolved = False
        return
    addressing = trace.addressing
    before, trace.phase = addressing.resolve_seconds, "resolve"
    addressing.address = (await addressing.candidates(request.url.host, request.url.port or 0))[0]
    trace.resolved_apart += addressing.resolve_seconds - before


def _response_mismatch(
    target: HttpTarget, response: httpx.Response, seen: _Observed
) -> _Failure | None:
    """blackbox_exporter's checks of the final response, in its order: headers, version,
    TLS. The detail names the header and the pattern, never a value (it may be a secret)."""
    for match in target.fail_if_header_matches:
        values = response.headers.get_list(match.header)
        if not values and not match.allow_missing:
            return _Failure(Reason.HEADER_MISMATCH, f"header {match.header} is missing")
        if any(match.regexp.search(v) for v in values):
            return _Failure(
                Reason.HEADER_MISMATCH,
                f"header {match.header} matches {match.regexp.pattern!r} (fail_if_header_matches)",
            )
    for match in target.fail_if_header_not_matches:
        values = response.headers.get_list(match.header)
        if not values:
            if match.allow_missing:
                continue
            return _Failure(Reason.HEADER_MISMATCH, f"header {match.header} is missing")
        if not any(match.regexp.search(v) for v in values):
            return _Failure(
                Reason.HEADER_MISMATCH,
                f"header {match.header} does not match {match.regexp.pattern!r}",
            )
    if target.valid_http_versions:
        allowed = {_HTTP_VERSIONS[v] for v in target.valid_http_versions}
        if response.http_version not in allowed:
            return _Failure(
                Reason.HTTP_VERSION,
                f"{response.http_version}, valid_http_versions is "
                + ", ".join(target.valid_http_versions),
            )
    if target.fail_if_ssl and seen.tls_version:
        return _Failure(Reason.TLS_MISMATCH, "the final response came over TLS (fail_if_ssl)")
    if target.fail_if_not_ssl and not seen.tls_version:
        return _Failure(
            Reason.TLS_MISMATCH, "the final response did not come over TLS (fail_if_not_ssl)"
        )
    return None


def _strip_credentials(target: HttpTarget, request: httpx.Request) -> None:
    """Credentials are for the configured origin only, as in Go's client; so is its SNI name."""
    for name in target.secret_header_names():
        request.headers.pop(name, None)
    request.extensions = {k: v for k, v in request.extensions.items() if k != "sni_hostname"}


def _redirect(
    target: HttpTarget, request: httpx.Request, response: httpx.Response, seen: _Observed
) -> httpx.Request | None:
    """The request a redirect leads to when the target follows it; a Location that is not
    a URL fails the run (a target that does not follow never reads it)."""
    if not target.follow_redirects:
        return None
    try:
        return redirect(request, response)
    except httpx.InvalidURL as exc:
        _observe_response(target, response, seen)
        detail = target.secret_scrubber(_first_line(exc))
        raise _Failure(
            Reason.INVALID_REDIRECT,
            f"status {seen.status} redirects to a Location that is not a URL: {detail}",
        ) from None


async def _read_body(target: HttpTarget, response: httpx.Response, seen: _Observed) -> _Body:
    """The body up to the cap, read even when nothing needs it, so that a response cut short
    is `connection_closed` (see the module docstring). What the body's size or coding means
    for the run is `_check`'s to say, after the status."""
    content_type = response.headers.get("content-type", "")
    if target.method == "HEAD":
        return _Body(b"", content_type)
    cap = target.read_cap
    setting = "max_body_bytes" if target.body_size_limit is None else "body_size_limit"
    announced = seen.content_length
    if announced > cap and "content-encoding" not in response.headers and _needs_body(target):
        # The run fails whatever comes (unless the status fails it first): nothing is read.
        return _Body(b"", content_type, f"Content-Length {announced} is over {setting}={cap}")
    try:
        data = await read_capped(response, cap, target.compression)
    except BodyTooLarge as exc:
        # blackbox_exporter stops at its limit and reports the limit
        seen.body_length = exc.read if target.body_size_limit is None else cap
        return _Body(b"", content_type, f"body is over {setting}={cap}; stopped reading")
    except UndecodableBody as exc:
        if not exc.asked:
            seen.body_length = exc.raw  # read raw, as blackbox_exporter reads it
        return _Body(b"", content_type, undecodable=str(exc), unasked=not exc.asked)
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        reason = classify(exc)
        if reason is Reason.INVALID_RESPONSE:  # framing that does not parse (a chunk size)
            raise _Failure(reason, target.secret_scrubber(_describe(exc, reason))) from None
        raise _Failure(
            Reason.CONNECTION_CLOSED, "the connection closed before the body was complete"
        ) from None
    seen.body_length = len(data)
    return _Body(data, content_type)


def _observe_response(target: HttpTarget, response: httpx.Response, seen: _Observed) -> None:
    seen.status = response.status_code
    reason_phrase = response.reason_phrase[:40]
    seen.status_line = f"{response.http_version} {seen.status} {reason_phrase}".rstrip()
    seen.headers = _header_evidence(target, response.headers.raw)
    try:
        seen.content_length = int(response.headers.get("content-length", -1))
    except ValueError:
        seen.content_length = -1
    version = response.http_version.removeprefix("HTTP/")
    try:
        seen.http_version = float(version)
    except ValueError:
        seen.http_version = 0.0
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if ssl_object is not None:
        seen.tls_version = (ssl_object.version() or "").replace("TLSv", "TLS ")
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            # only a TLS run pays for cryptography (8 MiB), on the first one
            from cryptography import x509

            certificate = x509.load_der_x509_certificate(der)
            seen.cert_expiry = certificate.not_valid_after_utc.timestamp()
            seen.leaf = _leaf_info(certificate)


def _leaf_info(certificate: x509.Certificate) -> tuple[str, str, str, str, str]:
    """probe_ssl_last_chain_info's labels, written as blackbox_exporter writes them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns_names = names.value.get_values_for_type(x509.DNSName)
    except (x509.ExtensionNotFound, ValueError):
        dns_names = []
    serial = abs(certificate.serial_number)  # as Go's Bytes(), for a (non-conforming) negative one
    return (
        certificate.fingerprint(hashes.SHA256()).hex(),
        certificate.subject.rfc4514_string()[:_CERT_LABEL_MAX],
        certificate.issuer.rfc4514_string()[:_CERT_LABEL_MAX],
        ",".join(dns_names)[:_CERT_LABEL_MAX],
        serial.to_bytes((serial.bit_length() + 7) // 8 or 1, "big").hex(),
    )


def _check(target: HttpTarget, seen: _Observed, body: _Body) -> None:
    """Status first, then the body: a 503 still has its components read, as they say why.

    A body over the cap fails the run only when something needed its content; a tile or an
    image larger than the cap is read up to the cap and passes. A body that does not decode
    fails it when the run reads it: a check needs it, or it is said to be JSON, unless its
    coding is one the request did not ask for (then only when a check needs it).
    """
    needed = _needs_body(target)
    doc = None if body.too_large or body.undecodable else _parse_json(target, body)
    if doc is not None and not isinstance(doc, _Invalid) and target.health_components:
        words: dict[str, str] = {}
        found, seen.components_dropped = components(
            doc, target.max_health_components, target.ignore_components, words
        )
        # A component name is a label value: one that carries a secret of the target (a
        # server echoing the request's Authorization as a key) is left out, never exported.
        scrub = target.secret_scrubber
        seen.components = {
            name: up
            for name, up in found.items()
            if scrub(name) == name and not scrub.is_secret(name)
        }
        if words:
            seen.down = {name: word for name, word in words.items() if name in seen.components}
    if not target.status_ok(seen.status):
        expected = ", ".join(map(str, target.expect_status)) or "2xx"
        down = sorted(name for name, up in seen.components.items() if not up)
        detail = f"status {seen.status}, expected {expected}"
        if down:
            detail += f"{_COMPONENTS_SAID}{', '.join(down)}"
        raise _Failure(Reason.HTTP_STATUS, detail)
    if seen.mismatch is not None:
        seen.failed_regex = seen.mismatch.reason is Reason.HEADER_MISMATCH
        raise seen.mismatch
    if body.too_large and needed:
        raise _Failure(Reason.BODY_TOO_LARGE, body.too_large)
    # A coding the request did not ask for (br) fails only a run a check needs the body for:
    # said to be JSON is not enough (its components stay unread), as blackbox_exporter, which
    # reads such a body raw, passes it. Compression we asked for that breaks is a broken reply.
    # With `compression`, the target said which coding the body must come in: always wanted.
    wanted = (
        target.compression is not None
        or needed
        or (not body.unasked and _wants_json(target, body.content_type))
    )
    if body.undecodable and wanted:
        raise _Failure(Reason.INVALID_BODY, body.undecodable)
    if isinstance(doc, _Invalid):
        raise _Failure(Reason.INVALID_BODY, doc.detail)
    for expectation in target.expect_json:
        if not expectation.holds(doc):
            raise _Failure(
                Reason.BODY_MISMATCH, f"expect_json {expectation.path} != {expectation.equals!r}"
            )
    if target.expect_body_regex or target.reject_body_regex:
        text = body.data.decode("utf-8", errors="replace")
        for pattern in target.expect_body_regex:
            if not pattern.search(text):
                seen.failed_regex = True
                raise _Failure(Reason.BODY_MISMATCH, f"body does not match {pattern.pattern!r}")
        for pattern in target.reject_body_regex:
            if pattern.search(text):
                seen.failed_regex = True
                raise _Failure(Reason.BODY_MISMATCH, f"body matches {pattern.pattern!r}")


async def _check_cel(target: HttpTarget, seen: _Observed, body: _Body, ctx: ProbeContext) -> None:
    """blackbox_exporter's CEL checks, after every other check: a body that is not JSON, an
    expression that fails on it or yields no boolean fails the run, as does the outcome each
    check forbids. Evaluated in a worker thread (an expression over a large body takes
    seconds), which the run waits for until its deadline."""
    for program, forbidden, key in (
        (target.fail_if_body_json_matches_cel, True, "fail_if_body_json_matches_cel"),
        (target.fail_if_body_json_not_matches_cel, False, "fail_if_body_json_not_matches_cel"),
    ):
        if program is None:
            continue
        try:
            async with asyncio.timeout_at(ctx.deadline):
                outcome = await asyncio.to_thread(program.verdict, body.data)
        except TimeoutError:
            raise _Failure(
                Reason.TIMEOUT, f"{key} did not finish within the run's {target.timeout:g}s"
            ) from None
        if outcome is forbidden or isinstance(outcome, str):
            seen.failed_cel = True
            why = outcome if isinstance(outcome, str) else f"it is {str(outcome).lower()}"
            raise _Failure(Reason.BODY_MISMATCH, f"{key} {program.expression!r}: {why}")


def _wants_json(target: HttpTarget, content_type: str) -> bool:
    if target.body_format == "text" or target.method == "HEAD":
        return False
    return (
        target.body_format == "json" or bool(target.expect_json) or "json" in content_type.lower()
    )


def _needs_body(target: HttpTarget) -> bool:
    """Whether the run cannot be judged without the whole body. Component health alone does
    not count: a JSON document over the cap is simply not read for components."""
    return bool(
        target.body_format == "json"
        or target.expect_json
        or target.expect_body_regex
        or target.reject_body_regex
        or target.body_size_limit is not None
        or target.checks_cel
    )


class _Invalid:
    """A body that should have been JSON and is not; evaluated after the status check."""

    def __init__(self, detail: str) -> None:
        self.detail = detail


def _parse_json(target: HttpTarget, body: _Body) -> Any:
    if not _wants_json(target, body.content_type):
        return None
    try:
        return json.loads(body.data)
    except (ValueError, RecursionError) as exc:
        detail = f"body is not valid JSON ({type(exc).__name__} at byte {_error_pos(exc)})"
        return _Invalid(detail)


def _error_pos(exc: BaseException) -> str:
    return str(getattr(exc, "pos", "?"))


def _samples(target: HttpTarget, trace: _Trace, seen: _Observed) -> tuple[Sample, ...]:
    seconds = trace.seconds()
    samples = [
        PROBE_HTTP_STATUS_CODE(seen.status),
        PROBE_HTTP_CONTENT_LENGTH(seen.content_length),
        PROBE_HTTP_UNCOMPRESSED_BODY_LENGTH(seen.body_length),
        *(PROBE_HTTP_DURATION_SECONDS(took, phase) for phase, took in seconds.items()),
        *trace.addressing.samples(),
        PROBE_HTTP_REDIRECTS(seen.redirects),
        PROBE_HTTP_SSL(1 if seen.tls_version else 0),
        PROBE_HTTP_VERSION(seen.http_version),
    ]
    if target.checks_regex:
        samples.append(PROBE_FAILED_DUE_TO_REGEX(1 if seen.failed_regex else 0))
    if target.checks_cel:
        samples.append(PROBE_FAILED_DUE_TO_CEL(1 if seen.failed_cel else 0))
    if seen.tls_version:
        samples.append(PROBE_TLS_VERSION_INFO(1, seen.tls_version))
    if seen.leaf is not None:
        samples.append(PROBE_SSL_LAST_CHAIN_INFO(1, *seen.leaf))
    if seen.cert_expiry is not None:
        samples.append(PROBE_SSL_EARLIEST_CERT_EXPIRY(seen.cert_expiry))
    samples.extend(HEALTH_COMPONENT_UP(up, name) for name, up in seen.components.items())
    if target.health_components:
        samples.append(HEALTH_COMPONENTS_DROPPED(seen.components_dropped))
    if target.latency_threshold is not None:
        samples.append(HTTP_LATENCY_THRESHOLD(target.latency_threshold))
    return tuple(samples)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes: httpx wraps httpcore, which wraps the socket error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# With one error per address tried, the most telling wins: that a port refused says more than
# that another family of addresses had no route (an IPv6 address on an IPv4-only task).
_NO_ROUTE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
_GROUP_FIRST = (
    Reason.CONNECT_REFUSED,
    Reason.TLS_CERT_EXPIRED,
    Reason.TLS,
    Reason.CONNECTION_CLOSED,
    Reason.INVALID_RESPONSE,
    Reason.INVALID_REDIRECT,
    Reason.CONNECT_TIMEOUT,
    Reason.TIMEOUT,
    Reason.DNS,
    Reason.UNREACHABLE,
)
_GROUP_PRIORITY = [*_GROUP_FIRST, *(r for r in Reason if r not in _GROUP_FIRST)]


def classify(exc: BaseException) -> Reason:
    """The most specific reason in the exception chain, socket-level causes first.

    A host with several addresses (every ALB name) fails with one error per address, which
    the connection gathers in an ExceptionGroup (probes/_http_network.py); the reason is
    the first address's.
    """
    for error in _chain(exc):
        if isinstance(error, BaseExceptionGroup) and error.exceptions:
            found = {classify(inner) for inner in error.exceptions}
            return min(found, key=_GROUP_PRIORITY.index)
    for error in _chain(exc):
        if isinstance(error, ssl.SSLCertVerificationError):
            return Reason.TLS_CERT_EXPIRED if error.verify_code == 10 else Reason.TLS
        if isinstance(error, ssl.SSLError):
            return Reason.TLS
        if isinstance(error, socket.gaierror):
            return Reason.DNS
        if isinstance(error, ConnectionRefusedError):
            return Reason.CONNECT_REFUSED
        if isinstance(error, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            return Reason.CONNECTION_CLOSED
        if isinstance(error, OSError) and error.errno in _NO_ROUTE:
            return Reason.UNREACHABLE
        # What the client's connections made of the server's bytes (probes/_http_network.py).
        if isinstance(error, NotHttp):
            return Reason.INVALID_RESPONSE
        if isinstance(error, ClosedEarly):
            return Reason.CONNECTION_CLOSED
        if isinstance(error, h11.RemoteProtocolError):
            return Reason.INVALID_RESPONSE
        # httpx parses a redirect's Location while receiving the response, followed or not.
        if isinstance(error, httpx.InvalidURL):
            return Reason.INVALID_REDIRECT
    for error in _chain(exc):
        if isinstance(error, httpx.PoolTimeout):
            return Reason.POOL_TIMEOUT
        if isinstance(error, httpx.ConnectTimeout):
            return Reason.CONNECT_TIMEOUT
        if isinstance(error, httpx.TimeoutException | TimeoutError):
            return Reason.TIMEOUT
        if isinstance(error, httpx.TooManyRedirects):
            return Reason.TOO_MANY_REDIRECTS
        if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
            return Reason.CONNECTION_CLOSED
    return Reason.OTHER


def _describe(exc: BaseException, reason: Reason) -> str:
    """The detail for a client error: what the connection made of the server's bytes when it
    said, else the exception's first line."""
    for error in _chain(exc):
        if isinstance(error, NotHttp | ClosedEarly):
            return f"{reason.value}: {_first_line(error)}"
    return f"{reason.value}: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


KIND = ProbeKind(
    "http",
    HttpTarget,
    probe,
    METRICS,
    Reason,
    "HTTP(S) request: status, phases, TLS, capped body, health components",
    resources=(HTTP_CLIENTS, AWS),
    area=Area.SITE,
    replicas=2,
)
