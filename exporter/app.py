"""The running exporter: config, scheduler, results and exposition wired together, and reload.

A reload that fails keeps the previous config running, logs every problem and sets
`stackprobe_config_last_reload_successful 0`; one that succeeds restarts only the targets whose
config changed, so the others keep their results and their place in the schedule.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from stackprobe.config import Config, ConfigError, load_config
from stackprobe.contract import MetricSpec, ProbeKind
from stackprobe.exposition import CORE_METRICS, Exposition
from stackprobe.resource import ResourceEnv, Shared, declared
from stackprobe.results import ResultStore
from stackprobe.scheduler import GRACE_SECONDS, Scheduler
from stackprobe.secrets import Redactor
from stackprobe.selfmetrics import SelfMetrics

FULL_COLLECTION_EVERY = 100  # second-generation collections per full one (default 10)


def _freeze_long_lived() -> None:
    """Move what lives as long as a config (modules, targets, clients, each target's task and
    its state) out of the garbage collector's sight. A full collection walks every tracked
    object: at 5,000 targets that took ~200 ms and came every few seconds, stalling scrapes and
    probes alike (measured). Thawed first, so what a reload made garbage is collected once."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    # What a run leaves for the collector lives a whole interval and is freed by reference
    # counting; full collections ten times rarer than the default still find any cycle.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


@dataclass(frozen=True)
class Outcome:
    """Whether a reload worked, or whether the exporter is ready, with why in words."""

    ok: bool
    message: str


def all_metric_specs(kinds: Mapping[str, ProbeKind[Any]]) -> list[MetricSpec]:
    """Every per-target family, core first, then each kind's in kind-table order."""
    return [*CORE_METRICS, *(spec for kind in kinds.values() for spec in kind.metrics)]


class App:
    def __init__(
        self,
        config: Config,
        *,
        kinds: Mapping[str, ProbeKind[Any]],
        redactor: Redactor,
        config_path: Path | None,
    ) -> None:
        self.config = config
        self.kinds = kinds
        self.redactor = redactor
        self.config_path = config_path
        self.store = ResultStore()
        self.metrics = SelfMetrics()
        self.exposition = Exposition(all_metric_specs(kinds), self.store, self.metrics.registry)
        self._shared = declared(kinds.values())
        self.resources = self._open_resources(config, {})
        self.scheduler = Scheduler(
            kinds=kinds, exposition=self.exposition, metrics=self.metrics, resources=self.resources
        )
        self.started = time.time()
        self.last_reload_error = ""
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._log = structlog.get_logger("stackprobe.app")

    def start(self) -> None:
        self.redactor.update(self.config.secrets() | self._ambient_secrets())
        settled = self.scheduler.apply(self.config.targets)
        self.metrics.reload_successful.set(1)
        self.metrics.reload_success_time.set(time.time())
        self._later(self._freeze_after(settled))

    async def reload(self) -> Outcome:
        async with self._reload_lock:
            if self.config_path is None:
                return Outcome(False, "started without --config: there is nothing to reload")
            try:
                new = await asyncio.to_thread(load_config, self.config_path, self.kinds)
            except Exception as exc:  # ConfigError, or anything the loader did not foresee
                if not isinstance(exc, ConfigError):
                    self._log.error("config reload raised; this is a stackprobe bug", exc_info=True)
                self.metrics.reload_successful.set(0)
                self.metrics.reloads.labels("failure").inc()
                self.last_reload_error = str(exc)
                self._log.error(
                    "config reload failed; the previous config keeps running",
                    path=str(self.config_path),
                    problems=str(exc),
                )
                return Outcome(False, str(exc))
            self._apply(new)
            return Outcome(True, f"config reloaded: {len(new.targets)} targets")

    def _apply(self, new: Config) -> None:
        old_targets = {t.name: t for t in self.config.targets}
        new_targets = {t.name: t for t in new.targets}
        added = len(new_targets.keys() - old_targets.keys())
        removed = len(old_targets.keys() - new_targets.keys())
        changed = sum(
            1 for n in new_targets.keys() & old_targets.keys() if new_targets[n] != old_targets[n]
        )
        # Old secrets stay known: a run started before the reload may still log.
        self.redactor.update(self.config.secrets() | new.secrets() | self._ambient_secrets())
        retired = self.resources
        self.resources = self._open_resources(new, retired)
        self.scheduler.use(self.resources)
        retire_after = self._longest_timeout()
        for shared, resource in retired.items():
            if self.resources[shared] is not resource:
                self._later(self._close_after(resource, retire_after))
        settled = self.scheduler.apply(new.targets)
        self.config = new
        if added or removed or changed:  # a reload that changes nothing costs nothing
            self._later(self._freeze_after(max(settled, retire_after)))
        self.last_reload_error = ""
        self.metrics.reload_successful.set(1)
        self.metrics.reload_success_time.set(time.time())
        self.metrics.reloads.labels("success").inc()
        self._log.info(
            "config reloaded",
            path=str(self.config_path),
            targets=len(new_targets),
            added=added,
            removed=removed,
            changed=changed,
        )

    @staticmethod
    async def _freeze_after(seconds: float) -> None:
        """Freeze once every new target has run, so each task's own state is frozen with it."""
        await asyncio.sleep(seconds)
        _freeze_long_lived()

    def ready(self) -> Outcome:
        """Ready once every target has a first result, so a first scrape is never partial."""
        pending = [t.name for t in self.scheduler.targets if self.store.get(t.name) is None]
        if pending:
            return Outcome(
                False, f"{len(pending)} of {len(self.scheduler.targets)} targets have no result yet"
            )
        return Outcome(True, "ready")

    async def stop(self) -> None:
        await self.scheduler.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for resource in self.resources.values():
            await _close(resource, self._log)

    def _open_resources(
        self, config: Config, previous: Mapping[Shared[Any, Any], Any]
    ) -> dict[Shared[Any, Any], Any]:
        """Every resource the kinds declare, from the config's sections; on reload each is
        given the one in use and keeps it, or replaces it, as its settings say."""
        env = ResourceEnv(self.metrics.registry, config.built)
        return {
            shared: shared.open(config.section(shared), env, previous.get(shared))
            for shared in self._shared
        }

    def _ambient_secrets(self) -> set[str]:
        found: set[str] = set()
        for shared in self._shared:
            if shared.ambient_secrets is not None:
                found |= shared.ambient_secrets(os.environ)
        return found

    def _longest_timeout(self) -> float:
        return max((t.timeout for t in self.config.targets), default=0.0) + GRACE_SECONDS

    def _later(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_after(self, resource: Any, delay: float) -> None:
        """Close a retired resource once every run that may still hold it has ended."""
        try:
            await asyncio.sleep(delay)
        finally:
            await _close(resource, self._log)


async def _close(resource: Any, log: Any) -> None:
    try:
        await resource.aclose()
    except Exception:
        log.warning("closing a shared resource failed", exc_info=True)
