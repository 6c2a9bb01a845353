"""The pause before a kind reconnects after failures: shared by the kinds that keep one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Longest pause, whatever the interval.
MAX_PAUSE_SECONDS = 60.0


@dataclass
class ReconnectPause:
    """After consecutive failures, the next connection attempt waits 1 s, 2, 4, ... up to the
    target's interval (so a recovery shows at the next run) and 60 s: a server out of slots
    is not hammered by short intervals. A run inside the pause reports the last failure."""

    failures: int = 0
    until: float = 0.0
    last: tuple[StrEnum, str] | None = None

    def pending(self, now: float) -> tuple[StrEnum, str] | None:
        """The last failure, with how long the pause still runs, while it runs."""
        if self.last is None or now >= self.until:
            return None
        reason, detail = self.last
        return reason, f"{detail} (next connection attempt in {self.until - now:.0f}s)"

    def failed(self, now: float, interval: float, reason: StrEnum, detail: str) -> None:
        self.failures += 1
        self.until = now + min(MAX_PAUSE_SECONDS, interval, 2.0 ** (self.failures - 1))
        self.last = (reason, detail)

    def succeeded(self) -> None:
        self.failures, self.last = 0, None
