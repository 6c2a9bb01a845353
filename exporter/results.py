"""The one store of results: the latest run of every target, each replaced whole.

Probes never write here; the scheduler puts a finished, already rendered `TargetResult` in a
single assignment, so a scrape sees either the previous run or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from stackprobe.probe import ProbeResult


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: str
    kind: str
    result: ProbeResult
    started: float  # unix time the run started
    duration: float  # seconds the run took, as the scheduler measured it
    chunks: Mapping[str, bytes]  # metric family name -> its rendered sample lines


class ResultStore:
    def __init__(self) -> None:
        self._results: dict[str, TargetResult] = {}
        self.version = 0  # bumped on every change, so renderers can cache by it

    def put(self, result: TargetResult) -> None:
        self._results[result.target] = result
        self.version += 1

    def remove(self, target: str) -> None:
        if self._results.pop(target, None) is not None:
            self.version += 1

    def get(self, target: str) -> TargetResult | None:
        return self._results.get(target)

    def __iter__(self) -> Iterator[TargetResult]:
        return iter(list(self._results.values()))

    def __len__(self) -> int:
        return len(self._results)
