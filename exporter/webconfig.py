"""The web configuration file (`--web.config.file`): TLS, basic auth, response headers and a
rate limit for stackprobe's own HTTP surface.

The format is the Prometheus exporter-toolkit's (docs/security.md), so a file written for
blackbox_exporter, postgres_exporter or node_exporter works unchanged, except for the few keys
Python's ssl module cannot honour, which are refused by name rather than silently narrowed.
Relative paths are relative to the file, as the toolkit resolves them.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import re
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stackprobe.durations import Duration
from stackprobe.secrets import read_capped

WEB_CONFIG_MAX_BYTES = 64 * 1024

# Go's names (what the toolkit's docs list) for the TLS 1.2 suites Go offers, as OpenSSL names
# them; TLS 1.3 suites are not configurable in Go either.
_CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}
# Go accepts these in cipher_suites and ignores them (TLS 1.3 suites are not configurable).
_TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]
# The two policies that verify what they ask for; Go's RequestClientCert and
# RequireAnyClientCert accept any certificate unverified, which Python's ssl cannot do (and
# the toolkit's docs call insecure).
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = {"RequestClientCert", "RequireAnyClientCert"}
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
HOW_TO_HASH = (
    "hash it with bcrypt: `htpasswd -nBC 10 \"\" | tr -d ':\\n'`, or "
    "`python3 -c 'import bcrypt,getpass; print(bcrypt.hashpw(getpass.getpass().encode(), "
    "bcrypt.gensalt()).decode())'`"
)
HEADERS = (
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
)

# The values the toolkit accepts for the headers it checks.
_HEADER_VALUES = {"X-Frame-Options": ("deny", "sameorigin"), "X-Content-Type-Options": ("nosniff",)}


class WebConfigError(Exception):
    """The web config file cannot be used; the message names the file and every problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """`key:` with no value means the default, as Go's zero values do in the toolkit."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value not in ("", None)}
        return data


class TlsServerConfig(_Model):
    cert: str | None = None
    key: str | None = Field(default=None, repr=False)
    client_ca: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: tuple[str, ...] = ()
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: tuple[str, ...] = ()
    prefer_server_cipher_suites: bool = True
    curve_preferences: tuple[str, ...] = ()

    @field_validator("client_auth_type")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value in _UNVERIFIED_CLIENT_AUTH:
            raise ValueError(
                f"{value} accepts client certificates without verifying them, which stackprobe "
                "does not offer; use RequireAndVerifyClientCert with client_ca_file"
            )
        if value not in _CLIENT_AUTH:
            raise ValueError(f"must be one of {', '.join(_CLIENT_AUTH)}")
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [s for s in value if s not in _CIPHER_SUITES and s not in _TLS13_SUITES]
        if unknown:
            raise ValueError(
                f"unknown cipher suite {', '.join(unknown)}; one of {', '.join(_CIPHER_SUITES)}"
            )
        return tuple(suite for suite in value if suite in _CIPHER_SUITES)

    @field_validator("curve_preferences")
    @classmethod
    def _no_curves(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if value:
            raise ValueError(
                "is not supported (Python's ssl module cannot set a list of curves); remove "
                "it: OpenSSL's defaults (X25519, P-256, P-384) apply"
            )
        return value

    @property
    def enabled(self) -> bool:
        """A block with no certificate serves plain HTTP, as the toolkit does."""
        return any(x is not None for x in (self.cert, self.key, self.cert_file, self.key_file))

    @model_validator(mode="after")
    def _one_of_each(self) -> TlsServerConfig:
        if not self.enabled:
            return self
        for inline, path in (("cert", "cert_file"), ("key", "key_file")):
            given = getattr(self, inline) is not None, getattr(self, path) is not None
            if given == (False, False):
                raise ValueError(f"give {path} (or {inline} inline)")
            if given == (True, True):
                raise ValueError(f"give {inline} or {path}, not both")
        if self.client_ca is not None and self.client_ca_file is not None:
            raise ValueError("give client_ca or client_ca_file, not both")
        verifies = self.client_auth_type != "NoClientCert"
        has_ca = self.client_ca is not None or self.client_ca_file is not None
        if has_ca and not verifies:
            raise ValueError(
                "client_ca_file is set but client_auth_type is NoClientCert, so no client "
                "certificate is asked for; set client_auth_type: RequireAndVerifyClientCert"
            )
        if self.client_allowed_sans and self.client_auth_type != "RequireAndVerifyClientCert":
            raise ValueError(
                "client_allowed_sans needs client_auth_type RequireAndVerifyClientCert"
            )
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError("min_version is above max_version")
        return self


class HttpServerConfig(_Model):
    # HTTP/2 is accepted for the toolkit's files and not served: stackprobe speaks HTTP/1.1,
    # which every Prometheus scrapes.
    http2: bool = True
    headers: dict[str, str] = {}

    @field_validator("headers")
    @classmethod
    def _known_headers(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [name for name in value if name not in HEADERS]
        if unknown:
            raise ValueError(f"unknown header {', '.join(unknown)}; one of {', '.join(HEADERS)}")
        for name, text in value.items():
            if "\r" in text or "\n" in text:
                raise ValueError(f"{name} must be one line")
            allowed = _HEADER_VALUES.get(name)
            if allowed and text.lower() not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        return {name: text for name, text in value.items() if text}


class RateLimit(_Model):
    interval: Duration
    burst: int = Field(ge=0)


class WebConfig(_Model):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[str, str] = Field(default={}, repr=False)
    rate_limit: RateLimit | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _hashed(cls, value: dict[str, str]) -> dict[str, str]:
        for user, hashed in value.items():
            if not user or ":" in user:
                raise ValueError(f"user name {user!r} must be non-empty and have no ':'")
            if not _BCRYPT.fullmatch(hashed or ""):
                # Never echo the value: it may be a password typed in plain.
                raise ValueError(f"the password of {user!r} is not a bcrypt hash; {HOW_TO_HASH}")
        return value


def load_web_config(path: Path) -> WebConfig:
    """Read and check the file; every problem in one WebConfigError naming the file."""
    try:
        text = read_capped(path, WEB_CONFIG_MAX_BYTES)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WebConfigError(f"web config {path}: cannot read it: {reason}") from None
    try:
        # Anchors and aliases have no use in a file this small and are the whole of a YAML
        # bomb: refused from the token stream, before anything is built.
        if any(isinstance(token, yaml.AliasToken) for token in yaml.scan(text)):
            raise WebConfigError(f"web config {path}: YAML aliases (*name) are not allowed")
        # Every scalar as the string it was written as: `X-XSS-Protection: 1` and a user named
        # `no` stay strings, as Go's YAML reads them into the toolkit's string fields.
        data = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise WebConfigError(f"web config {path}: not valid YAML: {exc}") from None
    if data is None or data == "":
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"web config {path}: expected a mapping at the top level")
    try:
        config = WebConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'top level'}: {error['msg']}"
            for error in exc.errors(include_input=False)
        )
        raise WebConfigError(f"web config {path}: {problems}") from None
    return config


def server_context(tls: TlsServerConfig, base_dir: Path) -> ssl.SSLContext:
    """The TLS context the listener serves with; every file is read now, so a missing or
    mismatched certificate is a start-up (or reload) error, not a failed handshake later."""

    def where(path: Path) -> Path:
        return path if path.is_absolute() else base_dir / path

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    context.set_alpn_protocols(["http/1.1"])
    try:
        if tls.cipher_suites:
            context.set_ciphers(":".join(_CIPHER_SUITES[suite] for suite in tls.cipher_suites))
        if tls.prefer_server_cipher_suites:
            context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(where(tls.cert_file), where(tls.key_file))
        else:
            _load_inline(context, tls.cert or "", tls.key or "")
        context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
        if tls.client_ca_file is not None:
            context.load_verify_locations(cafile=where(tls.client_ca_file))
        elif tls.client_ca is not None:
            context.load_verify_locations(cadata=tls.client_ca)
        elif context.verify_mode != ssl.CERT_NONE:
            # Go verifies client certificates against the system's roots when no CA is given.
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise WebConfigError(f"web config: tls_server_config: {exc}") from None
    return context


def _load_inline(context: ssl.SSLContext, cert: str, key: str) -> None:
    """load_cert_chain reads only files: inline PEM goes through anonymous in-memory files
    (memfd), so a read-only root filesystem, as ECS tasks often have, is no obstacle and the
    key never touches a disk."""
    descriptors = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("cert", "key")]
    try:
        for descriptor, text in zip(descriptors, (cert, key), strict=True):
            os.write(descriptor, text.encode())
        context.load_cert_chain(*(f"/proc/self/fd/{d}" for d in descriptors))
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


@dataclass
class _Bucket:
    """A token bucket: `burst` requests at once, then one per `interval`."""

    interval: float
    burst: int
    tokens: float = 0.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) / self.interval)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


# bcrypt reads at most this many bytes of a password; htpasswd and Go's bcrypt ignore the rest.
_BCRYPT_MAX_BYTES = 72
# Credential checks that may wait for a bcrypt slot; past that, 429 at once, so clients
# without the password cannot queue enough work to delay a scrape that has it.
_MAX_WAITING = 8


class Gate:
    """What one web config asks of every request: credentials, a rate, headers.

    bcrypt is slow on purpose (~70 ms at cost 10), so checks run in threads, two at a time,
    with a short queue; a pair that passed is remembered, as an HMAC under a key that lives
    only in this process (never the password), so a Prometheus scraping every 15 s costs one
    bcrypt per process, not one per scrape, and skips the queue that strangers fill."""

    _REMEMBERED = 256

    def __init__(self, config: WebConfig, previous: Gate | None = None) -> None:
        self.config = config
        self.headers = dict(config.http_server_config.headers)
        self._users = {user: hashed.encode() for user, hashed in config.basic_auth_users.items()}
        same_users = previous is not None and previous._users == self._users
        # A reload that keeps the users keeps what passed, so scrapes do not queue again.
        self._key: bytes = previous._key if previous and same_users else os.urandom(32)
        self._passed: OrderedDict[bytes, None] = (
            previous._passed if previous and same_users else OrderedDict()
        )
        # An unknown user costs a bcrypt at the dearest configured cost, as a known one does,
        # so timing does not tell which user names exist.
        cost = max((int(h[4:6]) for h in self._users.values()), default=4)
        self._dummy: bytes = (
            previous._dummy
            if previous and same_users
            else bcrypt.hashpw(b"-", bcrypt.gensalt(cost))
        )
        self._checks = asyncio.Semaphore(2)
        self._waiting = 0
        limit = config.rate_limit
        self._bucket = (
            _Bucket(limit.interval, limit.burst) if limit and limit.interval > 0 else None
        )

    @property
    def needs_auth(self) -> bool:
        return bool(self._users)

    def admit(self) -> bool:
        """False when the rate limit says no."""
        return self._bucket is None or self._bucket.take()

    def _digest(self, user: bytes, password: bytes) -> bytes:
        framed = len(user).to_bytes(4, "big") + user + password
        return hmac.new(self._key, framed, "sha256").digest()

    def remembered(self, user: bytes, password: bytes) -> bool:
        """A pair that passed before: no bcrypt, no queue."""
        digest = self._digest(user, password)
        if digest in self._passed:
            self._passed.move_to_end(digest)
            return True
        return False

    def busy(self) -> bool:
        return self._waiting >= _MAX_WAITING

    async def authenticate(self, user: bytes, password: bytes) -> bool:
        """`user` and `password` as the raw bytes of the Authorization header (UTF-8 as
        clients send it), compared as Go compares them."""
        try:
            hashed = self._users.get(user.decode("utf-8"))
        except UnicodeDecodeError:
            hashed = None
        self._waiting += 1
        try:
            async with self._checks:
                ok = await asyncio.to_thread(
                    bcrypt.checkpw,
                    password[:_BCRYPT_MAX_BYTES],
                    hashed if hashed is not None else self._dummy,
                )
        except ValueError:  # a hash bcrypt cannot read
            ok = False
        finally:
            self._waiting -= 1
        if ok and hashed is not None:
            self._passed[self._digest(user, password)] = None
            if len(self._passed) > self._REMEMBERED:
                self._passed.popitem(last=False)
            return True
        return False
