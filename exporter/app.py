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

from stackprobe.aws import AwsClients, ambient_secrets
from stackprobe.config import Config, ConfigError, load_config
from stackprobe.exposition import CORE_METRICS, Exposition, Renderer
from stackprobe.httpclients import HttpClients
from stackprobe.probe import ProbeKind
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
class ReloadOutcome:
    ok: bool
    message: str


def all_metric_specs(kinds: Mapping[str, ProbeKind[Any]]) -> list[Any]:
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
        self.exposition = Exposition(
            Renderer(all_metric_specs(kinds)), self.store, self.metrics.registry
        )
        self.scheduler = Scheduler(
            kinds=kinds,
            store=self.store,
            renderer=self.exposition.renderer,
            metrics=self.metrics,
            http=HttpClients(config.http_client.max_connections, config.tls_contexts),
            aws=AwsClients(config.aws, self.metrics),
        )
        self.started = time.time()
        self.last_reload_error = ""
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._log = structlog.get_logger("stackprobe.app")

    def start(self) -> None:
        self.redactor.update(self.config.secrets() | ambient_secrets(os.environ))
        settled = self.scheduler.apply(self.config.targets)
        self.metrics.reload_successful.set(1)
        self.metrics.reload_success_time.set(time.time())
        self._later(self._freeze_after(settled))

    async def reload(self) -> ReloadOutcome:
        async with self._reload_lock:
            if self.config_path is None:
                return ReloadOutcome(False, "started without --config: there is nothing to reload")
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
                return ReloadOutcome(False, str(exc))
            self._apply(new)
            return ReloadOutcome(True, f"config reloaded: {len(new.targets)} targets")

    def _apply(self, new: Config) -> None:
        old_targets = {t.name: t for t in self.config.targets}
        new_targets = {t.name: t for t in new.targets}
        added = len(new_targets.keys() - old_targets.keys())
        removed = len(old_targets.keys() - new_targets.keys())
        changed = sum(
            1 for n in new_targets.keys() & old_targets.keys() if new_targets[n] != old_targets[n]
        )
        # Old secrets stay known: a run started before the reload may still log.
        self.redactor.update(self.config.secrets() | new.secrets() | ambient_secrets(os.environ))
        # Fresh clients on every reload, so rotated CA, certificate and key files are read
        # again; runs already holding the old ones finish with them, under the same limit.
        retired = self.scheduler.http
        same_limit = new.http_client.max_connections == retired.max_connections
        self.scheduler.http = HttpClients(
            new.http_client.max_connections,
            new.tls_contexts,
            retired.slots if same_limit else None,
        )
        retire_after = self._longest_timeout()
        self._later(self._close_after(retired, retire_after))
        if new.aws != self.config.aws:  # clients and credentials are kept while it holds
            retired_aws = self.scheduler.aws
            self.scheduler.aws = AwsClients(new.aws, self.metrics)
            self._later(self._shutdown_after(retired_aws, retire_after))
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

    def ready(self) -> ReloadOutcome:
        """Ready once every target has a first result, so a first scrape is never partial."""
        pending = [t.name for t in self.scheduler.targets if self.store.get(t.name) is None]
        if pending:
            return ReloadOutcome(
                False, f"{len(pending)} of {len(self.scheduler.targets)} targets have no result yet"
            )
        return ReloadOutcome(True, "ready")

    async def stop(self) -> None:
        await self.scheduler.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.scheduler.http.aclose()
        self.scheduler.aws.shutdown()

    def _longest_timeout(self) -> float:
        return max((t.timeout for t in self.config.targets), default=0.0) + GRACE_SECONDS

    def _later(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _shutdown_after(clients: AwsClients, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            clients.shutdown()

    @staticmethod
    async def _close_after(clients: HttpClients, delay: float) -> None:
        """Close retired clients once every run that may still hold them has ended."""
        try:
            await asyncio.sleep(delay)
        finally:
            await clients.aclose()
