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
import itertools
import json
import os
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import SplitResult, parse_qs, quote, unquote, urlsplit

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


def _walk(obj: Any) -> Iterator[Any]:
    """Every object reachable from a config object: models, their fields and private values,
    mappings, sequences, and the `SecretRef`s among them."""
    stack = [obj]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, BaseModel) and not isinstance(item, SecretRef):
            stack.extend(getattr(item, name) for name in type(item).model_fields)
            stack.extend((item.__pydantic_private__ or {}).values())
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)


def secret_refs(obj: Any) -> list[SecretRef]:
    """Every secret reference reachable from a config object, resolved or not."""
    return [item for item in _walk(obj) if isinstance(item, SecretRef)]


def collect_secrets(obj: Any) -> set[str]:
    """Every resolved secret value reachable from a config object, and the forms a model says
    its secrets travel in (`derived_secrets()`, such as basic auth's `user:password`)."""
    found: set[str] = set()
    for item in _walk(obj):
        if isinstance(item, SecretRef):
            if item.resolved:
                found.add(item.get())
        elif isinstance(item, BaseModel):
            derived = getattr(item, "derived_secrets", None)
            if callable(derived):
                with contextlib.suppress(SecretUnresolved):  # no value, so no form of it
                    found.update(derived())
    return found


# A secret of at least this many characters is scrubbed wherever it stands as a whole token
# (not inside a longer word) in a log line, an error or a page. A shorter one, or a common
# one, is scrubbed only where it stands as a credential (`CREDENTIAL_PLACES`): anywhere else it
# matches ordinary words and numbers (`redis`, `postgres`, `1`, `x`), and scrubbing it would
# turn every line into `kind=<redacted>` and every URL into `<redacted>ql://...`. Eight is
# where that stops: log text is made of words, identifiers, numbers and durations, and a
# random 8-character value (62**8, about 2e14 of them) is not one of them by chance, while
# 4 to 7 characters are exactly the length of `redis`, `https`, `probe`, `warning`, `target`
# and of port numbers and PIDs. It is also the length below which a secret is guessable.
SCRUB_ANYWHERE_MIN_CHARS = 8

# Where a secret of any length is scrubbed (`_USERINFO`, `_KEY_VALUE`): a URL's userinfo
# (`scheme://user:password@`), the value of a key or header named like a credential
# (`Authorization: Bearer x`, `Basic <base64 of user:password>`, libpq's `password=x`, JSON's
# `"token": "x"`). That is where the client libraries put one in their texts: asyncpg's
# `InvalidPasswordError` and the redis kind's `AuthenticationError` name the user only, httpx's
# `HTTPStatusError` repeats the URL (userinfo and all), botocore's errors the endpoint URL,
# and signed headers only in its debug lines, which are never logged (see `stackprobe.logs`).
CREDENTIAL_PLACES = "a URL's password, a credential header, password= and the like"

# A value of letters in one case (`postgres`, `Localhost`, `WARNING`, `authentication`), at
# most this long, has the shape of a word, and log text is made of words: it is scrubbed only
# as a credential, however it was chosen. A generated secret mixes cases, digits or symbols.
WORD_SHAPE_MAX_CHARS = 16

# Common passwords with digits or symbols, or longer than a word, that scrubbing wherever they
# stand would garble text with (numbers, `password123` in a doc link), compared in lower case.
COMMON_SECRETS = frozenset(
    {
        "00000000", "11111111", "12345678", "123456789", "1234567890", "87654321",
        "abc12345", "abcd1234", "admin123", "admin1234", "administrator", "authorization",
        "changeme1", "changeme123", "dragon123", "letmein1", "p@ssw0rd", "passw0rd",
        "password1", "password12", "password123", "postgres1", "postgres123", "qwerty123",
        "qwertyuiop", "root1234", "secret123", "test1234", "trustno1", "welcome1",
    }
)  # fmt: skip

# An auth scheme in front of a header value: `Bearer x` is the secret `x` as far as
# guessing and garbling go.
_SCHEME = re.compile(r"(?i:bearer|basic|token|digest|apikey)[ \t]+")


def weakness(value: str) -> str | None:
    """Why a secret is too short or too common to scrub wherever it stands (so it is scrubbed
    only as a credential, see `CREDENTIAL_PLACES`), or None. Never repeats the value."""
    core = value.removeprefix(":")  # a `user:password` pair without a user is the password
    if (scheme := _SCHEME.match(core)) is not None:
        core = core[scheme.end() :]
    if len(core) < SCRUB_ANYWHERE_MIN_CHARS:
        return f"is shorter than {SCRUB_ANYWHERE_MIN_CHARS} characters"
    if core.lower() in COMMON_SECRETS:
        return "is a common password"
    one_case = core.islower() or core.isupper() or core.istitle()
    if len(core) <= WORD_SHAPE_MAX_CHARS and core.isascii() and core.isalpha() and one_case:
        return "is a single word of letters"
    return None


def scrub_warning(ref: SecretRef) -> str | None:
    """For the config loader: a sentence saying that a resolved secret (or the password in a
    URL given as one) is scrubbed only as a credential, and what to do; None when it is
    scrubbed everywhere. Names the secret's source, never its value."""
    if not ref.resolved:
        return None
    value = ref.get()
    what = f"the secret from {ref.source()}"
    why = weakness(value)
    if why is None:
        password = next(iter(_url_credentials(value)), None)
        if password is None or (why := weakness(password)) is None:
            return None
        what = f"the password in the URL from {ref.source()}"
    return (
        f"{what} {why}, so it is redacted only where it stands as a credential "
        f"({CREDENTIAL_PLACES}), not wherever it appears; use a random value of at least "
        f"{SCRUB_ANYWHERE_MIN_CHARS} characters, with digits or symbols"
    )


def _url_credentials(secret: str) -> list[str]:
    """The password in a URL given as a secret, as written and decoded, then `user:password`
    (basic auth sends it base64-encoded); nothing if it is not a URL with a password."""
    if "://" not in secret:
        return []
    try:
        parts = urlsplit(secret)
        username, password = parts.username, parts.password
    except ValueError:
        return []
    if not password:
        return []
    return [password, unquote(password), f"{username or ''}:{password}"]


def _forms(secret: str) -> set[str]:
    """The forms a secret travels in: as is, URL-encoded, base64 (basic auth), inside a
    Python repr or a JSON string (escaped quotes, newlines)."""
    forms = {secret, quote(secret, safe=""), quote(secret)}
    forms.add(base64.b64encode(secret.encode()).decode())
    forms.update({repr(secret)[1:-1], json.dumps(secret)[1:-1]})
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    forms.discard("")
    return forms


_WORD = re.compile(r"\w")
_RUN = re.compile(r"\w+")
_HEX2 = re.compile(r"[0-9A-Fa-f]{2}\w")  # `2Fabc` after a `%`: an escape, then a word


class _Tokens:
    """Where the forms of long secrets stand as whole tokens in a text: not touching a word
    character on a side where the form has one (`CANARY-pw` in `(CANARY-pw)`, not in
    `xCANARY-pw`), unless that character ends an escape in front (`%2F`, a backslash's `n`).

    A form that starts with a word character is found by its first run of word characters:
    a set lookup per word of the text, so a line costs the same with 5,000 secrets as with 5,
    and adding secrets compiles nothing. The few that start with another character (the
    encoded forms of a secret starting with a symbol, `:password`) are one compiled pattern
    (`_token_pattern`)."""

    __slots__ = ("_by_run", "_others")  # one per target: no __dict__ each

    def __init__(self, forms: set[str]) -> None:
        self._by_run: dict[str, list[str]] = {}
        others: set[str] = set()
        for form in sorted(forms, key=len, reverse=True):  # the longest wins
            run = _RUN.match(form)
            if run is None:
                others.add(form)
            else:
                self._by_run.setdefault(run.group(), []).append(form)
        self._others = _token_pattern(others)

    def spans(self, text: str) -> list[tuple[int, int]]:
        found = [m.span() for m in self._others.finditer(text)] if self._others else []
        if not self._by_run or (
            len(self._by_run) <= 32 and not any(word in text for word in self._by_run)
        ):  # a few substring tests are cheaper than cutting the text into words
            return found
        if "%" in text or "\\" in text:  # escapes: every word, and what follows their letters
            done = 0
            for run in _RUN.finditer(text):
                span = self._at(text, run.start(), run.group()) if run.start() >= done else None
                if span is not None:
                    found.append(span)
                    done = span[1]
            return found
        for word in self._by_run.keys() & _RUN.findall(text):  # most often none
            start = text.find(word)
            while start >= 0:
                if not (start and _WORD.match(text, start - 1)):
                    span = self._at(text, start, word)
                    if span is not None:
                        found.append(span)
                start = text.find(word, start + 1)
        return found

    def _at(self, text: str, start: int, word: str) -> tuple[int, int] | None:
        """The longest form found at `start`, whose first run is `word`, or after an escape's
        letters at the start of `word`."""
        skips = [0]
        if start and text[start - 1] == "%" and _HEX2.match(word):
            skips.append(2)
        elif start and text[start - 1] == "\\" and word[0] in "nrt":
            skips.append(1)
        for skip in skips:
            for form in self._by_run.get(word[skip:], ()):
                end = start + skip + len(form)
                if text.startswith(form, start + skip) and not (
                    _WORD.match(form[-1]) and _WORD.match(text, end)
                ):
                    return start + skip, end
        return None


def _token_regex(forms: list[str], last: str = "") -> str:
    """A regex matching any of `forms` (sorted, distinct), the longest first, written as a
    trie: at each position the engine follows one branch per character instead of trying
    each form in turn. A form whose last character is a word character must not be followed
    by one (forms given here start with another character, so need nothing in front)."""
    terminal = bool(forms) and forms[0] == ""
    branches = []
    for _, group_iter in itertools.groupby(forms[1:] if terminal else forms, key=itemgetter(0)):
        group = list(group_iter)
        # Sorted, so the first and the last share what all of them share.
        prefix = next(
            (
                group[0][:i]
                for i, (a, b) in enumerate(zip(group[0], group[-1], strict=False))
                if a != b
            ),
            min(group[0], group[-1], key=len),
        )
        branches.append(
            re.escape(prefix) + _token_regex([s[len(prefix) :] for s in group], prefix[-1])
        )
    if terminal:  # after the longer forms, so that the longest wins
        branches.append(r"(?!\w)" if _WORD.match(last) else "")
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


def _token_pattern(forms: set[str]) -> re.Pattern[str] | None:
    if not forms:
        return None
    try:
        return re.compile(_token_regex(sorted(forms)))
    except (RecursionError, re.error, OverflowError):  # thousands of forms nested in each
        # other (":aaaaaaaa", ":aaaaaaaaa", ...): one flat alternation, slower but the same
        bounded = (
            re.escape(f) + (r"(?!\w)" if _WORD.match(f[-1]) else "")
            for f in sorted(forms, key=len, reverse=True)
        )
        return re.compile("|".join(bounded))


# The places a credential stands, for secrets of any length (see `CREDENTIAL_PLACES`): a URL's
# userinfo, and the value after a key named like a credential. A key is found by its keyword
# in the text in lower case (`in` tests first, the cheapest), then matched from there: a line
# with neither a keyword nor `://` costs a few substring tests.
_USERINFO = re.compile(r"""://(?P<user>[^\s/?#@:"'<>\\]*)(?::(?P<password>[^\s/?#"'<>\\]*))?@""")
_KEYWORD = re.compile(r"passw|pwd|secret|token|auth|cookie|api[-_]?key|credential|session")
_KEYWORDS = (
    *("passw", "pwd", "secret", "token", "auth", "cookie", "credential", "session"),
    *("apikey", "api-key", "api_key"),
)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_KEY_VALUE = re.compile(
    r"""
    [\w-]{0,40}["']?[ \t]*[:=][ \t]*            # the rest of the key; `: `, `=`, `": "`
    (?: "(?P<dq>(?:[^"\\\n]|\\.)*)"
      | '(?P<sq>(?:[^'\\\n]|\\.)*)'
      | (?P<scheme>(?i:bearer|basic|token|digest|apikey)[ \t]+)?(?P<value>[^\s"'<>,;&]+)
    )
    """,
    re.VERBOSE,
)
_SCHEME_VALUE = re.compile(r"""(?i:bearer|basic)[ \t]+(?P<value>[^\s"'<>,;&]+)""")
_TRAILING = ".,:;!?)]}"


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans found by different means, sorted, overlapping ones as one: one marker each."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


_NOTHING: frozenset[str] = frozenset()  # shared by the Redactors of targets with no secret


class Redactor:
    """Scrubs known secret values, in the forms they travel in, from any text before output.

    A secret long and uncommon enough (`weakness`) is scrubbed wherever it stands as a whole
    token; any secret is scrubbed where it stands as a credential (`CREDENTIAL_PLACES`). The
    marker `<redacted>` is never rewritten, whatever the secrets: text is scrubbed between
    the markers already in it, never across one.
    """

    __slots__ = ("_anywhere", "_known", "_marked")  # one per target: no __dict__ each

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._known = _NOTHING
        self._anywhere = _Tokens(set())
        self._marked: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Replaces what the redactor knows (callers pass every secret still in use)."""
        known: set[str] = set()
        anywhere: set[str] = set()
        pending = [s for s in secrets if s]
        seen: set[str] = set()
        while pending:
            secret = pending.pop()
            if secret in seen:
                continue
            seen.add(secret)
            forms = _forms(secret)
            known |= forms
            if weakness(secret) is None:
                anywhere |= forms
            pending += _url_credentials(secret)
        self._known = frozenset(known) if known else _NOTHING
        self._anywhere = _Tokens(anywhere)
        # A secret holding the marker itself: replaced before the text is cut at markers.
        self._marked = tuple(sorted((n for n in known if REDACTED in n), key=len, reverse=True))

    def is_secret(self, text: str) -> bool:
        """Whether `text` is, whole, a known secret in one of its forms (a label value a
        server echoed back, say): true for short secrets too, which `__call__` leaves alone
        outside credential places."""
        return text in self._known

    def __call__(self, text: str) -> str:
        if not self._known:
            return text
        for needle in self._marked:
            text = text.replace(needle, REDACTED)
        if REDACTED in text:
            return REDACTED.join(map(self._scrub, text.split(REDACTED)))
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        """Whole tokens first, so that a long secret holding a credential place (a URL with
        its password) goes whole; then the credential places in what is left."""
        out: list[str] = []
        pos = 0
        for start, end in _merged(self._anywhere.spans(text)):
            out += [self._scrub_credentials(text[pos:start]), REDACTED]
            pos = end
        out.append(self._scrub_credentials(text[pos:]))
        return "".join(out)

    def _scrub_credentials(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        if "://" in text:
            for match in _USERINFO.finditer(text):
                spans += [
                    match.span(part)
                    for part in ("user", "password")
                    if match.group(part) and self._known_value(match.group(part))
                ]
        lower = text.lower()
        if len(lower) != len(text):  # a letter whose lower case is longer (İ): keep indexes
            lower = text.translate(_ASCII_LOWER)
        if any(keyword in lower for keyword in _KEYWORDS):
            for keyword in _KEYWORD.finditer(lower):  # a key inside a value too (cookies)
                found = _KEY_VALUE.match(text, keyword.end())
                if found is not None:
                    spans += self._value_span(found)
        if "bearer" in lower or "basic" in lower:  # a scheme names a credential by itself
            for found in _SCHEME_VALUE.finditer(text):
                spans += self._known_span(found.start("value"), found.group("value"))
        if not spans:
            return text
        out: list[str] = []
        pos = 0
        for start, end in _merged(spans):  # a URL inside a key's value: the union of both
            out += [text[pos:start], REDACTED]
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def _known_value(self, value: str) -> bool:
        return value in self._known or ("%" in value and unquote(value) in self._known)

    def _value_span(self, match: re.Match[str]) -> list[tuple[int, int]]:
        """Where the value of a `key: value` match holds a known secret: the value, or the
        part after its auth scheme (`Bearer x`), or Basic auth's base64."""
        group = next(g for g in ("dq", "sq", "value") if match.group(g) is not None)
        start, value = match.start(group), match.group(group)
        if match.group("scheme") is not None:  # unquoted, so the scheme is not in `value`
            start, value = match.start("scheme"), match.group("scheme") + value
        candidates = [(start, value)]
        scheme = _SCHEME.match(value)
        if scheme is not None:
            candidates.insert(0, (start + scheme.end(), value[scheme.end() :]))
        for offset, candidate in candidates:
            if found := self._known_span(offset, candidate):
                return found
        return []

    def _known_span(self, offset: int, candidate: str) -> list[tuple[int, int]]:
        """The candidate's span if it is a known secret or Basic auth's base64 of one, or
        the span of what follows its first `=` if that is (a cookie's `name=value`)."""
        name, equals, value = candidate.partition("=")
        for start, text in ((offset, candidate), (offset + len(name) + 1, value if equals else "")):
            for part in (text, text.rstrip(_TRAILING)):  # `password=x.` ends a sentence
                if part and (self._known_value(part) or self._known_basic(part)):
                    return [(start, start + len(part))]
        return []

    def _known_basic(self, value: str) -> bool:
        """Basic auth's base64 of `user:password` with a known password, whatever the user."""
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        _, colon, password = decoded.partition(":")
        return bool(colon) and (decoded in self._known or self._known_value(password))
