"""Shared resources: what every target of the kinds that declare one uses together.

An HTTP connection limit, AWS clients and their thread pool: each lives beside the kinds that
use it (in `stackprobe.probes`), owns a top-level section of the config (`http_client:`,
`aws:`) and decides on reload whether it can stay. The core opens each declared resource
once, hands it to every run in `ProbeContext`, renews it on reload and closes the one it
replaced once no run can still hold it. The core knows no resource by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import BaseModel

S = TypeVar("S", bound=BaseModel)
R = TypeVar("R", bound="Resource")


class Resource(Protocol):
    async def aclose(self) -> None:
        """Release what it holds; called once no run can use it any more."""


@dataclass(frozen=True)
class ResourceEnv:
    """What the core gives a resource when it opens one: stackprobe's own registry (for the
    resource's metrics, registered once: a renewed resource carries them over) and what
    the config load built while validating (`Config.built`, such as TLS contexts)."""

    registry: CollectorRegistry
    built: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Shared(Generic[S, R]):
    """A resource kinds declare in `ProbeKind.resources`; compared by identity.

    `open(settings, env, previous)` builds it from its config section; on reload it gets the
    resource in use as `previous` and returns it unchanged when it can stay, or a new one
    (which may share parts of the old, such as its metrics or its connection limit).
    """

    section: str
    settings: type[S]
    open: Callable[[S, ResourceEnv, R | None], R]
    # Secret values it reads from the environment rather than from the config (ambient AWS
    # credentials): the redactor must know them too.
    ambient_secrets: Callable[[Mapping[str, str]], set[str]] | None = None


def declared(kinds: Iterable[Any]) -> list[Shared[Any, Any]]:
    """Every resource the kinds declare, once each, in kind-table order."""
    found: list[Shared[Any, Any]] = []
    for kind in kinds:
        found += [shared for shared in kind.resources if shared not in found]
    return found
