"""/metrics: results rendered once per run, scrapes served from the rendered pieces.

The scheduler hands every finished run here; this module adds the core's own samples,
renders them, keeps the result in the store and builds /metrics bodies from it.

prometheus_client costs 5-7 us per sample, so rendering 1,000 targets x ~20 samples on every
scrape would take 100 ms or more (bench/http_vs_blackbox.py measures /metrics). Instead each
finished run is rendered once into one chunk of sample lines per metric family, and a scrape
only joins the chunks under each family's header. A sample line is the same in the
Prometheus text format and in OpenMetrics for the gauges and counters-without-created probes
emit; only the headers differ, and those come from prometheus_client, once per family and
format.

The sample lines are written here, one format string per family and set of label names
(`_Shape`), because going through prometheus_client's family objects and renderer for every
run was a sixth of the CPU of an http probe (bench/profile_http.py). They are what
prometheus_client writes, byte for byte: its label order (sorted by name), its escaping of
label values (the text format's three escapes) and its own float formatting
(`floatToGoString`); tests/test_exposition.py checks them against generate_latest for every
family of every kind and for label values and numbers at the edges.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

from stackprobe.contract import CoreReason, MetricSpec, ProbeResult, Sample
from stackprobe.results import ResultStore, TargetResult

if TYPE_CHECKING:
    from stackprobe.target import TargetConfig

# prometheus_client types its text renderer but not the OpenMetrics one. Every name
# stackprobe exports is a legacy one (tests/test_exposition.py), which `allow-utf-8` writes
# byte for byte as the default `underscores` does, without its escaping of each sample's
# name one character at a time: half the time of rendering stackprobe's own registry.
generate_openmetrics = cast(
    Callable[[Any], bytes],
    functools.partial(
        openmetrics_exposition.generate_latest, escaping=openmetrics_exposition.ALLOWUTF8
    ),
)
# prometheus_client's value formatting (Go's), untyped there too.
floatToGoString = cast(Callable[[float], str], _untyped_float_to_go)

TARGET_LABEL = "target"
_EOF = b"# EOF\n"

PROBE_SUCCESS = MetricSpec("probe_success", "1 if the last run of the target succeeded, else 0.")
PROBE_DURATION_SECONDS = MetricSpec(
    "probe_duration_seconds", "Seconds the last run of the target took."
)
PROBE_FAILURE_REASON = MetricSpec(
    "stackprobe_probe_failure_reason",
    "1 with the reason the last run failed; absent while the target succeeds.",
    ("reason",),
)
PROBE_LAST_RUN_TIMESTAMP = MetricSpec(
    "stackprobe_probe_last_run_timestamp_seconds",
    "Unix time the last finished run started; time() minus this is the result's age.",
)
PROBE_INTERVAL_SECONDS = MetricSpec(
    "stackprobe_probe_interval_seconds", "The target's configured interval in seconds."
)
TARGET_INFO = MetricSpec(
    "stackprobe_target_info", "Always 1; `kind` names the probe that runs the target.", ("kind",)
)

CORE_METRICS = (
    PROBE_SUCCESS,
    PROBE_DURATION_SECONDS,
    PROBE_FAILURE_REASON,
    PROBE_LAST_RUN_TIMESTAMP,
    PROBE_INTERVAL_SECONDS,
    TARGET_INFO,
)


def core_samples(
    kind: str, result: ProbeResult, started: float, duration: float, interval: float
) -> tuple[Sample, ...]:
    """The samples the core adds to every run, whatever its kind."""
    samples = [
        PROBE_SUCCESS(1 if result.success else 0),
        PROBE_DURATION_SECONDS(duration),
        PROBE_LAST_RUN_TIMESTAMP(started),
        PROBE_INTERVAL_SECONDS(interval),
        TARGET_INFO(1, kind),
    ]
    if not result.success:
        samples.append(PROBE_FAILURE_REASON(1, result.reason or "unknown"))
    return tuple(samples)


class _Families:
    """The one-method Collector protocol prometheus_client renders from."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _family(
    spec: MetricSpec, constant: tuple[str, ...] = ()
) -> GaugeMetricFamily | CounterMetricFamily:
    labels = (TARGET_LABEL, *constant, *spec.labels)
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


def _headers(spec: MetricSpec) -> tuple[bytes, bytes]:
    """A family's HELP and TYPE lines in the text format and in OpenMetrics."""
    family = _Families([_family(spec)])
    return generate_latest(family), generate_openmetrics(family)[: -len(_EOF)]


def _escape(value: str) -> str:
    """A label value as the text format (and prometheus_client) escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Shape:
    """How one family's sample lines are written with one set of constant label names: a
    format string with the labels in prometheus_client's order (sorted by name), the
    target's and the constant labels' values first, then the kind's."""

    __slots__ = ("_format",)

    def __init__(self, spec: MetricSpec, constant: tuple[str, ...]) -> None:
        names = (TARGET_LABEL, *constant, *spec.labels)
        if len(set(names)) != len(names):
            raise ValueError(f"{spec.name} would have a label twice: {names}")
        order = sorted(range(len(names)), key=names.__getitem__)
        # prometheus_client names a counter's sample <name>_total, `_total` given or not
        sample = (
            spec.name.removesuffix("_total") + "_total" if spec.type == "counter" else spec.name
        )
        pairs = ",".join(f'{names[i]}="{{{i}}}"' for i in order)
        self._format = f"{sample}{{{{{pairs}}}}} {{{len(names)}}}\n"

    def line(self, constant: Sequence[str], own: Sequence[str], value: float) -> str:
        return self._format.format(*constant, *own, floatToGoString(value))


class Renderer:
    """Turns one run's samples into per-family chunks, and chunks into a /metrics body."""

    def __init__(self, specs: Sequence[MetricSpec]) -> None:
        self._specs: dict[str, MetricSpec] = {}
        self._headers: dict[str, tuple[bytes, bytes]] = {}
        # (family, constant label names) -> the spec declared and its shape
        self._shapes: dict[tuple[str, tuple[str, ...]], tuple[MetricSpec, _Shape]] = {}
        self.declare(specs)

    def declare(self, specs: Sequence[MetricSpec]) -> None:
        """The families from now on, in their /metrics order: a reload that brings a new
        kind declares its families (a family once declared keeps its place)."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"metric families declared twice: {names}")
        changed = [s for s in specs if self._specs.get(s.name) not in (None, s)]
        if changed:
            raise ValueError(f"metric families declared again differently: {changed}")
        for spec in specs:
            if spec.name not in self._headers:
                self._headers[spec.name] = _headers(spec)
        self._specs = {spec.name: spec for spec in specs}
        self._order = names
        self._rank = {name: i for i, name in enumerate(names)}

    def render(
        self,
        target: str,
        samples: Iterable[Sample],
        labels: tuple[tuple[str, str], ...] = (),
    ) -> dict[str, bytes]:
        """One run's samples as chunks, each series with `target`, the target's constant
        `labels` (its config's `labels:`) and the kind's own."""
        label_names = tuple(name for name, _ in labels)
        constant = (_escape(target), *(_escape(value) for _, value in labels))
        lines: dict[str, list[str]] = {}
        seen: set[tuple[str, tuple[str, ...]]] = set()
        shapes = self._shapes
        for spec, label_values, value in samples:
            name = spec.name
            cached = shapes.get((name, label_names))
            if cached is None or cached[0] is not spec:
                cached = self._shape(spec, label_names)
            key = (name, label_values)
            if key in seen:  # two series with one identity would make the scrape invalid
                raise ValueError(f"{name}{label_values} was emitted twice")
            seen.add(key)
            line = cached[1].line(constant, [_escape(v) for v in label_values], value)
            family = lines.get(name)
            if family is None:
                lines[name] = [line]
            else:
                family.append(line)
        # in the kind table's order, as /metrics has them (the console lists them so)
        ordered = sorted(lines, key=self._rank.__getitem__)
        return {name: "".join(lines[name]).encode() for name in ordered}

    def _shape(self, spec: MetricSpec, label_names: tuple[str, ...]) -> tuple[MetricSpec, _Shape]:
        """The declared family's shape, made once per set of constant label names."""
        if self._specs.get(spec.name) != spec:
            raise ValueError(f"metric {spec.name} is not declared in the kind table")
        cached = self._shapes[spec.name, label_names] = (spec, _Shape(spec, label_names))
        return cached

    def parts(
        self, store: ResultStore, openmetrics: bool, names: frozenset[str] | None = None
    ) -> list[bytes]:
        """The targets' part of /metrics, each family's headers and lines; with `names`, only
        those families (a counter by its name with or without `_total`)."""
        which = 1 if openmetrics else 0
        parts: list[bytes] = []
        for name in self._order:
            if names is not None and name not in names and f"{name}_total" not in names:
                continue
            lines = store.family(name)
            if lines:
                parts.append(self._headers[name][which])
                parts.append(lines)
        return parts


class Exposition:
    """Every target's latest result, rendered, and the whole /metrics body: stackprobe's own
    registry first, then the targets' (each family's lines kept joined by the store until a
    run changes them)."""

    def __init__(
        self, specs: Sequence[MetricSpec], store: ResultStore, own: CollectorRegistry
    ) -> None:
        self.renderer = Renderer(specs)
        self.store = store
        self._own = own
        # Families the core renders whole rather than per run (`set_fixed`), each as its
        # headers in both formats and its lines.
        self._fixed: dict[str, tuple[bytes, bytes, bytes]] = {}
        self._log = structlog.get_logger("stackprobe.exposition")

    def declare(self, specs: Sequence[MetricSpec]) -> None:
        """See `Renderer.declare`."""
        self.renderer.declare(specs)

    def render(
        self, target: TargetConfig, result: ProbeResult, started: float, duration: float
    ) -> TargetResult:
        """One finished run with the core's samples, rendered; a run whose samples cannot
        be rendered (an undeclared family, a series twice) becomes an internal error."""
        core = core_samples(target.kind, result, started, duration, target.interval)
        try:
            chunks = self.renderer.render(
                target.name, (*core, *result.samples), target.series_labels
            )
        except Exception:
            self._log.error(
                "cannot render the probe's samples; this is a stackprobe bug",
                kind=target.kind,
                target=target.name,
                reason=result.reason,
                exc_info=True,
            )
            result = ProbeResult.failed(
                CoreReason.INTERNAL_ERROR, "its samples could not be rendered; see the log"
            )
            core = core_samples(target.kind, result, started, duration, target.interval)
            chunks = self.renderer.render(target.name, core, target.series_labels)
        # The samples live on in `chunks`; keeping them too would only give the garbage
        # collector ~20 more objects per target to walk on every full collection.
        kept = ProbeResult(
            result.success, (), result.reason, result.detail, result.verdict, result.evidence
        )
        return TargetResult(target.name, target.kind, kept, started, duration, chunks)

    def put(self, record: TargetResult) -> None:
        self.store.put(record)

    def remove(self, target: str) -> None:
        self.store.remove(target)

    def set_fixed(
        self, families: Sequence[tuple[MetricSpec, Iterable[tuple[str, Sequence[str], float]]]]
    ) -> None:
        """Per-target families that are no run's result (which replica owns each configured
        target), each a row of (target, the spec's label values, value): rendered here once
        when they change, and replaced together."""
        fixed: dict[str, tuple[bytes, bytes, bytes]] = {}
        for spec, rows in families:
            shape = _Shape(spec, ())
            lines = "".join(
                shape.line((_escape(target),), [_escape(v) for v in values], value)
                for target, values, value in rows
            )
            fixed[spec.name] = (*_headers(spec), lines.encode())
        self._fixed = fixed

    def body(self, openmetrics: bool, names: frozenset[str] | None = None) -> bytes:
        """The whole /metrics body, joined (see `parts`)."""
        return b"".join(self.parts(openmetrics, names))

    def parts(self, openmetrics: bool, names: frozenset[str] | None = None) -> list[bytes]:
        """The whole /metrics body, in parts that are never joined into one: the store keeps
        each family's lines joined, and a copy of all of them per scrape (1.8 MB at 1,000
        http targets, two while they were joined in two steps) is what set the process's
        peak RSS. With `names` (`?name[]=...`, as prometheus_client's own handler reads
        it), only those families, for a large fleet's scrape of a few."""
        own: CollectorRegistry | _Families = self._own
        if names is not None:  # a scrape of a few families
            own = _Families(list(self._own.restricted_registry(names).collect()))
        parts = [generate_openmetrics(own)[: -len(_EOF)] if openmetrics else generate_latest(own)]
        parts += self.renderer.parts(self.store, openmetrics, names)
        parts += (
            b"%s%s" % (headers[1 if openmetrics else 0], headers[2])
            for name, headers in self._fixed.items()
            if headers[2] and (names is None or name in names)
        )
        if openmetrics:
            parts.append(_EOF)
        return parts
