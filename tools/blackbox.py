"""`stackprobe migrate-blackbox`: a blackbox_exporter module file and the targets probed with
it, as a stackprobe config.

Each (module, target) pair becomes one stackprobe target with the module's checks. What has
no stackprobe equivalent is said, module by module, as a comment at the top of the config
and on stderr; nothing is dropped silently. A credential written inline in the module file
(a basic_auth password, a bearer token, an Authorization header) is never copied: it becomes
`{from_env: NAME}` and the note names the variable to set. docs/blackbox.md has the
translation table this follows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from stackprobe.probes.http import is_credential_header

# blackbox_exporter's probers stackprobe has a kind for.
KINDS = {"http": "http", "dns": "dns"}
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:/-]+")
_ENV_CHARS = re.compile(r"[^A-Z0-9_]+")
HTTP_METHODS = ("GET", "HEAD", "POST", "OPTIONS")

# Keys read elsewhere, or whose meaning stackprobe has already (no note needed).
_HTTP_SAME = (
    "valid_http_versions",
    "follow_redirects",
    "fail_if_ssl",
    "fail_if_not_ssl",
    "fail_if_header_matches",
    "fail_if_header_not_matches",
    "body",
    "body_file",
    "preferred_ip_protocol",
    "ip_protocol_fallback",
    "fail_if_body_json_matches_cel",
    "fail_if_body_json_not_matches_cel",
    "proxy_from_environment",
    "no_proxy",
    "skip_resolve_phase_with_proxy",
    "enable_http2",
)
# Keys stackprobe has no equivalent for, and what to know instead.
_HTTP_MISSING = {
    "oauth2": "no OAuth2 client: give a token as a header secret",
    "iptables_conntrack": "not applicable",
    "source_ip_address": "stackprobe uses the system's source address",
    "follow_redirect": "no such blackbox key (follow_redirects?)",
}
_DNS_MISSING = {
    "source_ip_address": "stackprobe uses the system's source address",
    "dns_over_tls": "no DNS over TLS",
    "tls_config": "no DNS over TLS",
}


class Unsupported(Exception):
    """A module stackprobe cannot probe: its targets are left out, with this reason."""


@dataclass
class Migration:
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # per module: what changed or is missing
    skipped: list[str] = field(default_factory=list)  # targets left out, with why
    variables: list[str] = field(default_factory=list)  # environment variables to set

    def config(self, interval: str | None = None) -> str:
        """The stackprobe config, its notes as comments at the top."""
        lines = ["# Written by `stackprobe migrate-blackbox`; see docs/blackbox.md."]
        for note in [*self.notes, *self.skipped]:
            lines.append(f"# - {note}")
        if self.variables:
            lines.append(f"# Set before starting stackprobe: {', '.join(self.variables)}")
        document: dict[str, Any] = {}
        if interval:
            document["defaults"] = {"interval": interval}
        document["targets"] = self.targets
        return "\n".join(lines) + "\n" + yaml.safe_dump(document, sort_keys=False)


def migrate(
    modules: Mapping[str, Any],
    probes: Iterable[tuple[str, str]],
    timeouts: bool = True,
) -> Migration:
    """The stackprobe targets of `probes`, (module name, blackbox target) pairs, with the
    modules of a blackbox_exporter config's `modules:`. `timeouts`: keep each module's
    timeout (leave it out where the defaults' interval is shorter)."""
    migration = Migration()
    translated: dict[str, dict[str, Any] | Unsupported] = {}
    names: set[str] = set()
    for module_name, probed in probes:
        if module_name not in modules:
            migration.skipped.append(
                f"target {probed!r}: no module {module_name!r} in the file "
                f"(it has {', '.join(sorted(modules)) or 'none'})"
            )
            continue
        if module_name not in translated:
            try:
                translated[module_name] = _module(
                    module_name, modules[module_name] or {}, migration, timeouts
                )
            except Unsupported as exc:
                translated[module_name] = exc
                migration.notes.append(f"module {module_name}: not translated: {exc}")
        base = translated[module_name]
        if isinstance(base, Unsupported):
            migration.skipped.append(f"target {probed!r} ({module_name}) left out: {base}")
            continue
        try:
            target = _target(base, probed)
        except Unsupported as exc:
            migration.skipped.append(f"target {probed!r} ({module_name}) left out: {exc}")
            continue
        name = _unique(_name(module_name, probed), names)
        where: dict[str, Any] = {k: target.pop(k) for k in ("kind", "url", "server") if k in target}
        migration.targets.append({"name": name, **where, **target})
    return migration


def _module(
    name: str, module: Mapping[str, Any], migration: Migration, timeouts: bool
) -> dict[str, Any]:
    prober = module.get("prober")
    if prober not in KINDS:
        raise Unsupported(
            f"prober {prober!r} has no stackprobe kind (stackprobe has http and dns; "
            "PostgreSQL and Redis have kinds of their own, see docs/configuration.md)"
        )
    base: dict[str, Any] = {"kind": KINDS[prober]}
    if timeouts and "timeout" in module:
        base["timeout"] = str(module["timeout"])
    settings = module.get(prober) or {}
    note = _noter(name, migration)
    if prober == "http":
        _http(name, settings, base, note, migration)
    else:
        _dns(settings, base, note)
    return base


# Says one thing of a module, into Migration.notes.
Note = Callable[[str], None]


def _noter(module: str, migration: Migration) -> Note:
    def note(text: str) -> None:
        migration.notes.append(f"module {module}: {text}")

    return note


def _http(
    module: str, http: Mapping[str, Any], base: dict[str, Any], note: Note, migration: Migration
) -> None:
    for key in _HTTP_SAME:
        if key in http and http[key] not in (None, [], ""):
            base[key] = http[key]
    if "valid_http_versions" in base:
        base["valid_http_versions"] = [
            "HTTP/2.0" if v == "HTTP/2" else v for v in base["valid_http_versions"]
        ]
        if "HTTP/2.0" in base["valid_http_versions"] and http.get("enable_http2") is not False:
            # blackbox offers HTTP/2 unless told not to; stackprobe only when told to
            base["enable_http2"] = True
    if http.get("valid_status_codes"):
        base["expect_status"] = list(http["valid_status_codes"])
    method = str(http.get("method", "GET")).upper()
    if method not in HTTP_METHODS:
        raise Unsupported(f"method {method}: stackprobe sends {', '.join(HTTP_METHODS)}")
    if method != "GET":
        base["method"] = method
    if http.get("no_follow_redirects"):
        base["follow_redirects"] = False
    if http.get("fail_if_body_matches_regexp"):
        base["reject_body_regex"] = list(http["fail_if_body_matches_regexp"])
    if http.get("fail_if_body_not_matches_regexp"):
        base["expect_body_regex"] = list(http["fail_if_body_not_matches_regexp"])
    headers = _headers(module, http, note, migration)
    if headers:
        base["headers"] = headers
    auth = http.get("basic_auth") or (http.get("http_config") or {}).get("basic_auth")
    if auth:
        password: Any
        if auth.get("password_file"):
            password = {"from_file": auth["password_file"]}
        else:
            variable = _variable(module, "PASSWORD", migration)
            password = {"from_env": variable}
            note(f"basic_auth's password is read from ${variable} (it is never copied)")
        base["basic_auth"] = {"username": str(auth.get("username", "")), "password": password}
    for key in ("bearer_token", "bearer_token_file", "authorization"):
        if http.get(key):
            variable = _variable(module, "AUTHORIZATION", migration)
            base.setdefault("headers", {})["Authorization"] = {"from_env": variable}
            note(
                f"{key}: the Authorization header is read from ${variable}, whole "
                "(`Bearer <token>`)"
            )
    tls = http.get("tls_config") or {}
    kept = {k: tls[k] for k in ("ca_file", "cert_file", "key_file", "server_name") if tls.get(k)}
    if tls.get("insecure_skip_verify"):
        kept["insecure_skip_verify"] = True
    if kept:
        base["tls"] = kept
    for key in sorted(set(tls) - {*kept, "insecure_skip_verify"}):
        note(f"tls_config.{key} is not translated")
    if http.get("compression"):
        base["compression"] = str(http["compression"]).lower()
    if http.get("body_size_limit"):
        base["body_size_limit"] = _bytes(http["body_size_limit"])
    _ip_protocol(http, base)
    _proxy(module, http, base, note, migration)
    for key, why in _HTTP_MISSING.items():
        if key in http and http[key] not in (None, False, "", []):
            note(f"{key} is not translated: {why}")
    known = {
        *_HTTP_SAME,
        *_HTTP_MISSING,
        "valid_status_codes",
        "method",
        "headers",
        "http_headers",
        "no_follow_redirects",
        "fail_if_body_matches_regexp",
        "fail_if_body_not_matches_regexp",
        "basic_auth",
        "bearer_token",
        "bearer_token_file",
        "authorization",
        "tls_config",
        "compression",
        "body_size_limit",
        "proxy_url",
        "proxy_connect_header",
        "http_config",
    }
    for key in sorted(set(http) - known):
        note(f"{key} is not translated: stackprobe has no such option")


def _headers(
    module: str, http: Mapping[str, Any], note: Note, migration: Migration
) -> dict[str, Any]:
    """`headers` (name: value) and the newer `http_headers` (name: {values, files, secrets}).
    A credential header written inline becomes an environment variable."""
    found: dict[str, Any] = {}
    for name, value in (http.get("headers") or {}).items():
        found[str(name)] = str(value)
    for name, spec in (http.get("http_headers") or {}).items():
        spec = spec or {}
        values = [*spec.get("values", ()), *spec.get("secrets", ())]
        if spec.get("files"):
            found[str(name)] = {"from_file": spec["files"][0]}
        elif values:
            found[str(name)] = str(values[0])
        if len(values) + len(spec.get("files", ())) > 1:
            note(f"header {name}: only the first of its values is sent")
    for name, value in found.items():
        if isinstance(value, str) and is_credential_header(name):
            variable = _variable(module, name, migration)
            found[name] = {"from_env": variable}
            note(f"header {name} carries a credential: it is read from ${variable}")
    return found


def _proxy(
    module: str, http: Mapping[str, Any], base: dict[str, Any], note: Note, migration: Migration
) -> None:
    """`proxy_url` (a password in it becomes an environment variable) and the CONNECT's
    headers (the first value of each; a credential one from the environment)."""
    url = http.get("proxy_url")
    if url:
        if urlsplit(str(url)).password:
            variable = _variable(module, "PROXY_URL", migration)
            base["proxy_url"] = {"from_env": variable}
            note(f"proxy_url carries a password: the whole URL is read from ${variable}")
        else:
            base["proxy_url"] = str(url)
    headers: dict[str, Any] = {}
    for name, values in (http.get("proxy_connect_header") or {}).items():
        values = values if isinstance(values, list) else [values]
        if not values:
            continue
        if is_credential_header(str(name)):
            variable = _variable(module, f"PROXY_{name}", migration)
            headers[str(name)] = {"from_env": variable}
            note(f"proxy_connect_header {name} carries a credential: it is read from ${variable}")
        else:
            headers[str(name)] = str(values[0])
    if headers:
        base["proxy_connect_header"] = headers


def _ip_protocol(settings: Mapping[str, Any], base: dict[str, Any]) -> None:
    """blackbox's address family keys; without a preference, no fallback means IPv6 only
    (its default preference)."""
    preferred = settings.get("preferred_ip_protocol")
    if preferred:
        base["preferred_ip_protocol"] = str(preferred)
    if settings.get("ip_protocol_fallback") is False:
        base["ip_protocol_fallback"] = False
        base.setdefault("preferred_ip_protocol", "ip6")


_UNITS = {"": 1, "b": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2, "gb": 1024**3}


def _bytes(value: Any) -> int:
    """`body_size_limit` as blackbox reads it: bytes, or a size with a unit (powers of 2)."""
    found = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(value))
    if not found or found[2].lower() not in _UNITS:
        raise Unsupported(f"body_size_limit {value!r} is not a size (bytes, or 10MB)")
    return int(found[1]) * _UNITS[found[2].lower()]


def _dns(dns: Mapping[str, Any], base: dict[str, Any], note: Note) -> None:
    if not dns.get("query_name"):
        raise Unsupported("no query_name")
    base["query"] = str(dns["query_name"])
    base["record_type"] = str(dns.get("query_type", "ANY")).upper()
    # blackbox passes an empty answer with a valid code; stackprobe's default (1) does not
    base["min_answers"] = 0
    note(
        "min_answers: 0 keeps blackbox's meaning (an empty answer passes); stackprobe's "
        "default, 1, fails a name that no longer resolves"
    )
    for key, ours in (
        ("query_class", "query_class"),
        ("valid_rcodes", "valid_rcodes"),
        ("recursion_desired", "recursion_desired"),
        ("validate_answer_rrs", "validate_answer_rrs"),
        ("validate_authority_rrs", "validate_authority_rrs"),
        ("validate_additional_rrs", "validate_additional_rrs"),
    ):
        if key in dns and dns[key] not in (None, {}, []):
            base[ours] = dns[key]
    if "transport_protocol" in dns:
        base["transport"] = str(dns["transport_protocol"])
    _ip_protocol(dns, base)
    for key, why in _DNS_MISSING.items():
        if key in dns and dns[key] not in (None, False, "", {}):
            note(f"{key} is not translated: {why}")
    known = {
        *_DNS_MISSING,
        "preferred_ip_protocol",
        "ip_protocol_fallback",
        "query_name",
        "query_type",
        "query_class",
        "valid_rcodes",
        "recursion_desired",
        "validate_answer_rrs",
        "validate_authority_rrs",
        "validate_additional_rrs",
        "transport_protocol",
    }
    for key in sorted(set(dns) - known):
        note(f"{key} is not translated: stackprobe has no such option")


def _target(base: Mapping[str, Any], probed: str) -> dict[str, Any]:
    target = dict(base)
    if base["kind"] == "http":
        url = probed if "://" in probed else f"http://{probed}"  # as blackbox reads it
        if urlsplit(url).scheme not in ("http", "https"):
            raise Unsupported(f"{urlsplit(url).scheme}:// is not http:// or https://")
        target["url"] = url
    else:
        target["server"] = probed.rsplit("://", 1)[-1]
    return target


def _name(module: str, probed: str) -> str:
    """`module-host`: the target label blackbox's relabelling usually gave the series."""
    host = urlsplit(probed if "://" in probed else f"//{probed}").netloc or probed
    name = _NAME_CHARS.sub("-", f"{module}-{host}").strip("-_.:/")
    return (name or "blackbox")[:120]


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _variable(module: str, what: str, migration: Migration) -> str:
    variable = _ENV_CHARS.sub("_", f"BLACKBOX_{module}_{what}".upper()).strip("_")
    if variable not in migration.variables:
        migration.variables.append(variable)
    return variable
