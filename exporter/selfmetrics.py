"""stackprobe's own health, in a registry of its own rather than the process-global one."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from stackprobe._version import __version__

_RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class SelfMetrics:
    def __init__(self) -> None:
        # No `_created` series beside each counter and histogram: Prometheus 2 ignores them,
        # Go's exporters have none, and they were a third of what a scrape renders of
        # stackprobe's own part (prometheus_client's setting, for the process).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "stackprobe_build_info",
            "Always 1; labels carry the stackprobe and Python versions.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.targets = Gauge(
            "stackprobe_targets", "Targets configured, by kind.", ["kind"], registry=r
        )
        self.runs = Counter(
            "stackprobe_probe_runs",
            "Probe runs finished, by kind and result (success or failure).",
            ["kind", "result"],
            registry=r,
        )
        self.run_duration = Histogram(
            "stackprobe_probe_run_duration_seconds",
            "Seconds each probe run took, by kind and result (success or failure).",
            ["kind", "result"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.schedule_lag = Histogram(
            "stackprobe_scheduler_lag_seconds",
            "Seconds a run started after its scheduled time; growth means stackprobe is "
            "overloaded.",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.runs_skipped = Counter(
            "stackprobe_probe_runs_skipped",
            "Scheduled runs skipped because the previous run of the target was still going.",
            ["kind"],
            registry=r,
        )
        self.task_restarts = Counter(
            "stackprobe_target_task_restarts",
            "Times a target's task died and was restarted: a stackprobe bug, logged in full.",
            ["kind"],
            registry=r,
        )
        self.reload_successful = Gauge(
            "stackprobe_config_last_reload_successful",
            "1 if the last config load or reload succeeded, 0 if it failed and the previous "
            "config is still in use.",
            registry=r,
        )
        self.reload_success_time = Gauge(
            "stackprobe_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load or reload.",
            registry=r,
        )
        self.reloads = Counter(
            "stackprobe_config_reloads",
            "Config reload attempts, by result (success or failure).",
            ["result"],
            registry=r,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        # Each (kind, result)'s children, kept: `labels()` validates and locks on every call.
        self._run_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def ran(self, kind: str, result: str, seconds: float) -> None:
        """One finished run of `kind`, counted and timed; `result` is success or failure."""
        runs, duration = self._run_series(kind, result)
        runs.inc()
        duration.observe(seconds)

    def _run_series(self, kind: str, result: str) -> tuple[Any, Any]:
        """The run counter's and duration histogram's series of (kind, result), made once."""
        children = self._run_children.get((kind, result))
        if children is None:
            children = (self.runs.labels(kind, result), self.run_duration.labels(kind, result))
            self._run_children[kind, result] = children
        return children

    def set_kinds(self, counts: dict[str, int], known: Iterable[str]) -> None:
        """Targets by kind, every known kind present so the series never vanish; the run
        series of a kind from its first target on (and kept, as counters are, after its
        last goes). A kind never configured has no runs to count: its 14 histogram buckets
        per result would be a third of /metrics' own part for nothing, rendered on every
        scrape."""
        for kind in known:
            self.targets.labels(kind).set(counts.get(kind, 0))
            if not counts.get(kind):
                continue
            for result in ("success", "failure"):
                self._run_series(kind, result)
            self.runs_skipped.labels(kind)
            self.task_restarts.labels(kind)
