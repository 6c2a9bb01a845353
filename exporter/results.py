"""The one store of results: the latest run of every target, each replaced whole.

Probes never write here; the scheduler puts a finished, already rendered `TargetResult` in a
single call, so a scrape sees either the previous run or the new one, never a mix. The rendered
chunks are also kept family by family, the order a /metrics body needs them in, and each
family's lines are kept joined until a run changes them: most of a target's series keep their
value from run to run (its status code, TLS version, components, interval), so a scrape joins
again only the few families whose lines changed (the durations, the last run's time) instead
of every family of every target (at 5,000 targets, 125,000 small objects scattered in memory:
most of a scrape's time, bench/http_vs_blackbox.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from stackprobe.contract import Health, ProbeResult

# Runs of history per target the console's strip shows: 15 minutes at the default 15 s. One
# byte a run, so 1,000 targets keep 60 KB of it.
HISTORY_RUNS = 60
HEALTHS = tuple(Health)  # a byte of history is an index into this


@dataclass(slots=True)
class Trail:
    """A target's recent healths, oldest first, and when its current one began."""

    runs: bytearray = field(default_factory=bytearray)
    since: float = 0.0  # unix time of the first run in the current health

    def add(self, health: Health, started: float) -> None:
        code = HEALTHS.index(health)
        if not self.runs or self.runs[-1] != code:
            self.since = started
        self.runs.append(code)
        if len(self.runs) > HISTORY_RUNS:
            del self.runs[0]

    def healths(self) -> list[Health]:
        return [HEALTHS[code] for code in self.runs]


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: str
    kind: str
    result: ProbeResult
    started: float  # unix time the run started
    duration: float  # seconds the run took, as the scheduler measured it
    # metric family name -> its rendered sample lines; the store puts back the lines it
    # already holds where they did not change, so that one copy of them stays in memory
    chunks: dict[str, bytes]


class ResultStore:
    def __init__(self) -> None:
        self._results: dict[str, TargetResult] = {}
        self._by_family: dict[str, dict[str, bytes]] = {}
        self._joined: dict[str, bytes] = {}  # family -> its lines joined, until they change
        self._trails: dict[str, Trail] = {}

    def put(self, result: TargetResult) -> None:
        previous = self._results.get(result.target)
        if previous is not None:
            for family in previous.chunks.keys() - result.chunks.keys():
                del self._by_family[family][result.target]
                self._joined.pop(family, None)
        for family, chunk in result.chunks.items():
            lines = self._by_family.get(family)
            if lines is None:
                lines = self._by_family[family] = {}
            kept = lines.get(result.target)
            if kept == chunk:
                # most of a run's lines are the last run's (1.6 KB a target of http's)
                result.chunks[family] = kept
            else:  # a target keeps its place in the order
                lines[result.target] = chunk
                self._joined.pop(family, None)
        self._results[result.target] = result
        self._trails.setdefault(result.target, Trail()).add(
            result.result.health().health, result.started
        )

    def remove(self, target: str) -> None:
        previous = self._results.pop(target, None)
        self._trails.pop(target, None)
        if previous is not None:
            for family in previous.chunks:
                del self._by_family[family][target]
                self._joined.pop(family, None)

    def get(self, target: str) -> TargetResult | None:
        return self._results.get(target)

    def trail(self, target: str) -> Trail | None:
        """The target's recent healths, for the console; None before its first run."""
        return self._trails.get(target)

    def family(self, name: str) -> bytes:
        """Every target's rendered lines of one metric family, in a stable target order,
        joined once per change."""
        joined = self._joined.get(name)
        if joined is None:
            joined = self._joined[name] = b"".join(self._by_family.get(name, {}).values())
        return joined

    def __iter__(self) -> Iterator[TargetResult]:
        return iter(list(self._results.values()))

    def __len__(self) -> int:
        return len(self._results)
