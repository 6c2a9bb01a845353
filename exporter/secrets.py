"""Secrets are named by where they live (`from_env`, `from_file`), never written inline.

Values are read once at config load, so a missing variable is a config error with a fix rather
than a failing probe at 3 a.m., and so the `Redactor` knows every value it must scrub from
logs, error messages and pages.

`check-config` runs where the secrets are not (CI, as `promtool check config` does): with
`"secrets": "defer"` in the validation context, a secret that cannot be read is noted in the
context's `unresolved` list instead of failing the load, and stays unresolved. Validators that
need a value check `resolved` first; `get()` on an unresolved secret raises `SecretUnresolved`,
which the loader reads as "not checked", never as a config error.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import SplitResult, parse_qs, quote, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PrivateAttr,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

REDACTED = "<redacted>"

_HOW = "give it as {from_env: VARIABLE} or {from_file: /path/to/file}"


class SecretUnresolved(PydanticCustomError):
    """`get()` on a secret left unresolved by a deferred load: a validator that needs the value
    stops there, and the loader reports the key as not checked rather than as wrong."""


class SecretRef(BaseModel):
    """Where a secret lives. The value is resolved at validation and never serialised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_env: str | None = None
    from_file: Path | None = None
    _value: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_values(cls, data: Any) -> Any:
        if isinstance(data, str | int | float | bool):
            # Never echo the value: it is, by construction, a secret typed into the config.
            raise PydanticCustomError("inline_secret", "a secret cannot be written inline; " + _HOW)
        return data

    @model_validator(mode="after")
    def _resolve(self, info: ValidationInfo) -> SecretRef:
        if (self.from_env is None) == (self.from_file is None):
            raise PydanticCustomError("secret_source", "name exactly one source: " + _HOW)
        context = info.context or {}
        problem = self._read(context.get("environ", os.environ), info)
        if problem is None:
            return self
        if context.get("secrets") != "defer":
            raise problem
        context.setdefault("unresolved", []).append((self, problem.message()))
        return self

    def _read(self, environ: Mapping[str, str], info: ValidationInfo) -> PydanticCustomError | None:
        """Resolve the value, or return (not raise) why it cannot be, for `_resolve` to raise
        or to defer."""
        if self.from_env is not None:
            if self.from_env not in environ:
                return PydanticCustomError(
                    "secret_env_missing",
                    "environment variable {name} is not set; export it before starting "
                    "stackprobe, or use from_file",
                    {"name": self.from_env},
                )
            # A value pasted from a file often ends in a newline nobody meant.
            value = environ[self.from_env].rstrip("\r\n")
        else:
            assert self.from_file is not None
            path = resolve_path(self.from_file, info)
            try:
                value = read_capped(path, SECRET_FILE_MAX_BYTES).rstrip("\r\n")
            except OSError as exc:
                return PydanticCustomError(
                    "secret_file_unreadable",
                    "cannot read secret file {path}: {error}; check the path and its permissions",
                    {"path": str(path), "error": exc.strerror or type(exc).__name__},
                )
            except ValueError as exc:  # too large, or not UTF-8 text
                return PydanticCustomError(
                    "secret_file_unusable",
                    "cannot use secret file {path}: {error}; a secret file holds one value",
                    {"path": str(path), "error": str(exc).split(":")[0][:80]},
                )
        if not value:
            return PydanticCustomError(
                "secret_empty", "the secret from {source} is empty", {"source": self.source()}
            )
        self._value = value
        return None

    @property
    def resolved(self) -> bool:
        """False only after a load that deferred secrets and could not read this one."""
        return self._value is not None

    def get(self) -> str:
        if self._value is None:
            raise SecretUnresolved(
                "secret_unresolved",
                "not checked: it needs the secret from {source}, which could not be read",
                {"source": self.source()},
            )
        return self._value

    def source(self) -> str:
        """Where the secret comes from, safe to show anywhere."""
        return f"env {self.from_env}" if self.from_env is not None else f"file {self.from_file}"

    def __repr__(self) -> str:
        return f"SecretRef({self.source()})"

    __str__ = __repr__


SECRET_FILE_MAX_BYTES = 64 * 1024


def read_capped(path: Path, limit: int) -> str:
    """A file's UTF-8 text, refused past `limit` bytes with a ValueError, so a path named by
    mistake (/dev/zero, a log) fails with a sentence instead of taking all the memory."""
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit // 1024:,} KiB")
    return data.decode("utf-8")


def resolve_path(path: Path, info: ValidationInfo) -> Path:
    """Relative paths in a config are relative to the config file, not to the working dir."""
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


def secret_or_plain(value: Any, info: ValidationInfo) -> str | SecretRef:
    """Validator for fields that take either a plain string or a secret reference."""
    if isinstance(value, SecretRef | str):
        return value
    if isinstance(value, Mapping):
        return SecretRef.model_validate(value, context=info.context)
    raise PydanticCustomError(
        "string_or_secret",
        "expected a string or {from_env: VARIABLE} / {from_file: PATH}, found {kind}",
        {"kind": type(value).__name__},
    )


# A config value given either inline or, where it may carry a secret, as a reference.
StrOrSecret = Annotated[str | SecretRef, BeforeValidator(secret_or_plain)]


def unresolved(value: object) -> bool:
    """A secret a deferred load could not read: validators that need its value skip it."""
    return isinstance(value, SecretRef) and not value.resolved


def reveal(value: str | SecretRef) -> str:
    """The value to use, whether given inline or as a secret."""
    return value.get() if isinstance(value, SecretRef) else value


def split_url(text: str, key: str, prefixes: tuple[str, ...], expected: str) -> SplitResult:
    """A URL that may hold credentials, parsed with errors that never repeat it: a password
    with an unencoded `#`, `/` or `?` would otherwise come back in pieces in a parser's text.
    `expected` says what it must start with, e.g. "redis:// or rediss://, e.g. redis://c/0"."""
    if not text.startswith(prefixes):
        raise PydanticCustomError(
            "url_scheme", "{what} must start with {expected}", {"what": key, "expected": expected}
        )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise PydanticCustomError(
            "url_parse",
            "the {what} does not parse; percent-encode any '#', '/', '?' or '@' in it",
            {"what": key},
        ) from None
    return parts


def credential_free_url(
    value: str | SecretRef,
    key: str,
    prefixes: tuple[str, ...],
    expected: str,
    *,
    carries: frozenset[str],
    fix: str,
) -> str | SecretRef:
    """A URL field that may be given as a secret: parsed at load with messages that never
    repeat it (see `split_url`). Given inline, it must carry none of `carries` ("username",
    "password": in its userinfo or its query), or a secret is written in the config; `fix`
    says where they go instead. A secret `check-config` could not read is left unchecked."""
    if unresolved(value):
        return value
    parts = split_url(reveal(value), key, prefixes, expected)
    found = {name.lower() for name in parse_qs(parts.query)}
    found |= {name for name in ("username", "password") if getattr(parts, name)}
    if not isinstance(value, SecretRef) and found & carries:
        raise PydanticCustomError("inline_secret", fix)
    return value


def collect_secrets(obj: Any) -> set[str]:
    """Every resolved secret value reachable from a config object, and the forms a model says
    its secrets travel in (`derived_secrets()`, such as basic auth's `user:password`)."""
    found: set[str] = set()
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, SecretRef):
            if item.resolved:
                found.add(item.get())
        elif isinstance(item, BaseModel):
            derived = getattr(item, "derived_secrets", None)
            if callable(derived):
                with contextlib.suppress(SecretUnresolved):  # no value, so no form of it
                    found.update(derived())
            stack.extend(getattr(item, name) for name in type(item).model_fields)
            stack.extend((item.__pydantic_private__ or {}).values())
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return found


class Redactor:
    """Scrubs known secret values, in the forms they travel in, from any text before output."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._needles: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        needles: set[str] = set()
        pending = [s for s in secrets if s]
        while pending:
            secret = pending.pop()
            needles.update({secret, quote(secret, safe=""), quote(secret)})
            needles.add(base64.b64encode(secret.encode()).decode())
            # As it reads inside a Python repr or a JSON string (escaped quotes, newlines).
            needles.update({repr(secret)[1:-1], json.dumps(secret)[1:-1]})
            needles.add(json.dumps(secret, ensure_ascii=False)[1:-1])
            parts = urlsplit(secret) if "://" in secret else None
            if parts is not None and parts.password:
                pending += [parts.password, f"{parts.username or ''}:{parts.password}"]
        needles.discard("")
        # Longest first, so a secret that contains another is replaced whole.
        self._needles = tuple(sorted(needles, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text
