"""Component health read from a readiness body, so "503 with `redis: false`" becomes a series.

Readiness endpoints in the wild come in a few shapes, and all of them reduce to
"component -> up or down":

    {"status": "ok", "db": true, "redis": false}                   flat booleans
    {"checks": {"redis": {"status": "fail"}}}                       nested status objects
    {"status": "UP", "components": {"db": {"status": "UP"}}}        Spring Boot Actuator
    {"status": "pass", "checks": {"redis:ping": [{"status": "warn"}]}}   IETF health+json
    {"status": "DOWN", "checks": [{"name": "redis", "status": "DOWN"}]}  MicroProfile Health

A component is named by its key path with wrapper keys (`checks`, `components`, ...) dropped;
an object's own status names the object, and the document's own status is `overall`. Values
that are not recognisably healthy or unhealthy are ignored rather than guessed at.

For a component found down, the word the body used for it (`false`, `fail`, `DOWN`) can be
kept too, so the console can say "`redis: false` in /health/ready" rather than "redis is 0".
"""

from __future__ import annotations

from typing import Any

UP_WORDS = frozenset(
    {
        "ok",
        "up",
        "pass",
        "passed",
        "passing",
        "healthy",
        "ready",
        "true",
        "green",
        "warn",
        "connected",
        "available",
        "alive",
        "online",
        "running",
        "success",
        "succeeded",
    }
)
DOWN_WORDS = frozenset(
    {
        "fail",
        "failed",
        "failing",
        "down",
        "error",
        "unhealthy",
        "not_ready",
        "notready",
        "false",
        "red",
        "disconnected",
        "unavailable",
        "critical",
        "offline",
        "dead",
        "timeout",
    }
)
STATUS_KEYS = ("status", "state", "health", "healthy", "ok", "up", "ready", "alive")
WRAPPER_KEYS = frozenset(
    {"checks", "components", "details", "dependencies", "services", "results", "data"}
)
MAX_DEPTH = 4
MAX_NAME_LENGTH = 64
MAX_WORD_LENGTH = 32  # of the word kept for a component found down; it is the server's text
OVERALL = "overall"


def verdict(value: Any, depth: int = 0) -> float | None:
    """1.0 for healthy, 0.0 for unhealthy, None when the value says neither."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in UP_WORDS:
            return 1.0
        if word in DOWN_WORDS:
            return 0.0
        return None
    if isinstance(value, dict):
        for key in STATUS_KEYS:
            if key in value and isinstance(value[key], bool | str):
                return verdict(value[key])
        return None
    if isinstance(value, list):
        verdicts = [v for v in (verdict(item, depth + 1) for item in value) if v is not None]
        return min(verdicts) if verdicts else None
    return None


def _label_safe(name: str) -> str:
    """A JSON key can hold a lone surrogate, which no exposition can encode."""
    return name.encode("utf-8", "replace").decode("utf-8")[:MAX_NAME_LENGTH]


def components(
    doc: Any,
    limit: int,
    ignore: frozenset[str] = frozenset(),
    down: dict[str, str] | None = None,
) -> tuple[dict[str, float], int]:
    """Components found in `doc` (first `limit` in document order) and how many were dropped.

    `down`, when given, receives each kept component found down with the word the body used
    for it (`down_word`): worked out only for those, so a healthy body costs nothing more.
    """
    found = _Found(limit, ignore, down)
    if isinstance(doc, dict):
        _walk(doc, (), 0, found)
    return found.found, found.dropped


def down_word(value: Any, depth: int = 0) -> str:
    """What the body said of a component found down, short: `false`, `fail`, `DOWN`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip()[:MAX_WORD_LENGTH]
    if isinstance(value, dict) and depth <= MAX_DEPTH:
        for key in STATUS_KEYS:
            if key in value and isinstance(value[key], bool | str):
                return down_word(value[key])
    if isinstance(value, list) and depth <= MAX_DEPTH:
        for item in value:
            if verdict(item, depth + 1) == 0.0:
                return down_word(item, depth + 1)
    return "down"


class _Found:
    """The components kept so far. (A class and a module-level walk, not closures: a nested
    function that calls itself is a reference cycle, left for the garbage collector on every
    probe run.)"""

    __slots__ = ("down", "dropped", "found", "ignore", "limit")

    def __init__(self, limit: int, ignore: frozenset[str], down: dict[str, str] | None) -> None:
        self.found: dict[str, float] = {}
        self.dropped = 0
        self.limit = limit
        self.ignore = ignore
        self.down = down

    def add(self, path: tuple[str, ...], value: float | None, raw: Any) -> None:
        if value is None:
            return
        name = _label_safe(".".join(path)) or OVERALL
        if name in self.found or name in self.ignore:
            return
        if len(self.found) >= self.limit:
            self.dropped += 1
            return
        self.found[name] = value
        if not value and self.down is not None:
            self.down[name] = down_word(raw)


def _walk(node: dict[Any, Any], path: tuple[str, ...], depth: int, found: _Found) -> None:
    own_status_seen = False
    for key, value in node.items():
        if not isinstance(key, str):
            continue
        lowered = key.lower()
        if lowered in STATUS_KEYS and isinstance(value, bool | str) and not own_status_seen:
            own_status_seen = True
            found.add(path, verdict(value), value)
        elif isinstance(value, dict):
            if depth < MAX_DEPTH:
                inner = path if lowered in WRAPPER_KEYS else (*path, key)
                _walk(value, inner, depth + 1, found)
        elif isinstance(value, list) and _named_checks(value):
            # MicroProfile Health: {"checks": [{"name": "redis", "status": "DOWN"}]}
            base = path if lowered in WRAPPER_KEYS else (*path, key)
            for item in value:
                found.add((*base, item["name"]), verdict(item), item)
        elif isinstance(value, list | bool | str) and lowered not in STATUS_KEYS:
            found.add((*path, key), verdict(value), value)


def _named_checks(items: list[Any]) -> bool:
    return bool(items) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
    )
