"""Component health from readiness bodies in the shapes found in the wild."""

from __future__ import annotations

from typing import Any

import pytest

from stackprobe.probes._components import components


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "ok", "db": True, "redis": False}, {"overall": 1, "db": 1, "redis": 0}),
        ({"checks": {"redis": {"status": "fail"}}}, {"redis": 0}),
        (
            {"status": "UP", "components": {"db": {"status": "UP", "details": {"x": "PG"}}}},
            {"overall": 1, "db": 1},
        ),
        (
            {"status": "pass", "checks": {"redis:ping": [{"status": "warn"}]}},
            {"overall": 1, "redis:ping": 1},
        ),
        (
            {
                "status": "DOWN",
                "checks": [{"name": "redis", "status": "DOWN"}, {"name": "db", "status": "UP"}],
            },
            {"overall": 0, "redis": 0, "db": 1},
        ),
        ({"version": "1.2.3", "uptime": 12, "env": "prod"}, {}),
        ({"db": {"ok": True, "latency_ms": 3}}, {"db": 1}),
        ([{"status": "ok"}], {}),
    ],
)
def test_shapes(body: Any, expected: dict[str, int]) -> None:
    found, dropped = components(body, limit=32)

    assert found == expected and dropped == 0


def test_ignored_and_bounded() -> None:
    body = {f"c{i}": True for i in range(10)}

    found, dropped = components(body, limit=4, ignore=frozenset({"c0"}))

    assert list(found) == ["c1", "c2", "c3", "c4"] and dropped == 5


def test_hostile_bodies_neither_crash_nor_produce_unencodable_labels() -> None:
    deep: Any = True
    for _ in range(900):
        deep = [deep]
    found, _ = components({"\ud800db": False, "nested": deep}, limit=32)

    assert found == {"?db": 0}
    for name in found:
        name.encode("utf-8")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"status": "ok", "db": True, "redis": False}, {"redis": "false"}),
        ({"checks": {"redis": {"status": "fail"}}}, {"redis": "fail"}),
        (
            {"status": "DOWN", "checks": [{"name": "redis", "status": "DOWN"}]},
            {"overall": "DOWN", "redis": "DOWN"},
        ),
        (
            {"status": "pass", "checks": {"redis:ping": [{"status": "warn"}, {"status": "fail"}]}},
            {"redis:ping": "fail"},
        ),
        ({"database": {"healthy": False, "latency_ms": 3}}, {"database": "false"}),
        ({"status": "ok", "db": True}, {}),
    ],
)
def test_components_found_down_keep_the_word_the_body_used(
    body: Any, words: dict[str, str]
) -> None:
    """What the console's why quotes: "`redis: false` in /health/ready"."""
    down: dict[str, str] = {}

    components(body, limit=32, down=down)

    assert down == words


def test_a_component_past_the_limit_or_ignored_keeps_no_word() -> None:
    down: dict[str, str] = {}

    components(
        {"a": True, "redis": False, "db": False}, limit=2, ignore=frozenset({"a"}), down=down
    )

    assert down == {"redis": "false", "db": "false"}
    down.clear()
    components({"a": True, "b": True, "redis": False}, limit=2, down=down)
    assert down == {}
