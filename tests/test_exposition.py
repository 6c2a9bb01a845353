"""The per-run rendering must produce exactly what prometheus_client would render whole."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import UNDERSCORES
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from stackprobe.app import all_metric_specs
from stackprobe.contract import MetricSpec, ProbeResult
from stackprobe.exposition import (
    CORE_METRICS,
    Exposition,
    Renderer,
    _Families,
    _family,
    core_samples,
)
from stackprobe.exposition import generate_openmetrics as ours
from stackprobe.probes import KINDS
from stackprobe.probes._aws_api import AwsMetrics
from stackprobe.probes.http import HEALTH_COMPONENT_UP, PROBE_HTTP_STATUS_CODE, Reason
from stackprobe.results import ResultStore, TargetResult
from stackprobe.selfmetrics import SelfMetrics

TRICKY = 'we"ird\\name\nwith newline'


def results(renderer: Renderer) -> list[TargetResult]:
    runs = {
        "backend-ready": ProbeResult.failed(
            Reason.HTTP_STATUS,
            "status 503",
            (
                PROBE_HTTP_STATUS_CODE(503),
                HEALTH_COMPONENT_UP(0, "redis"),
                HEALTH_COMPONENT_UP(1, TRICKY),
            ),
        ),
        "frontend": ProbeResult.ok((PROBE_HTTP_STATUS_CODE(200),)),
    }
    out = []
    for name, result in runs.items():
        samples = (*core_samples("http", result, 1700000000.25, 0.125, 15.0), *result.samples)
        out.append(
            TargetResult(name, "http", result, 1700000000.25, 0.125, renderer.render(name, samples))
        )
    return out


def reference(specs: list[MetricSpec], runs: list[TargetResult], openmetrics: bool) -> bytes:
    """What prometheus_client renders from one collector holding every sample at once."""
    families = []
    for spec in specs:
        family = _family(spec)
        for run in runs:
            samples = (
                *core_samples(run.kind, run.result, run.started, run.duration, 15.0),
                *run.result.samples,
            )
            for sample in samples:
                if sample.spec == spec:
                    family.add_metric((run.target, *sample.label_values), sample.value)
        if family.samples:
            families.append(family)
    render = generate_openmetrics if openmetrics else generate_latest
    return render(_Families(families))


@pytest.mark.parametrize("openmetrics", [False, True])
def test_joined_chunks_equal_prometheus_client_rendering(openmetrics: bool) -> None:
    specs = all_metric_specs(KINDS)
    renderer = Renderer(specs)
    runs = results(renderer)
    store = ResultStore()
    for run in runs:
        store.put(run)

    body = b"".join(renderer.parts(store, openmetrics))

    expected = reference(specs, runs, openmetrics)
    if openmetrics:
        expected = expected.removesuffix(b"# EOF\n")
    assert body == expected


def test_the_whole_body_parses_and_keeps_each_family_together() -> None:
    specs = all_metric_specs(KINDS)
    store = ResultStore()
    exposition = Exposition(specs, store, CollectorRegistry())
    for run in results(exposition.renderer):
        store.put(run)

    text = exposition.body(openmetrics=False).decode()
    families = list(text_string_to_metric_families(text))

    names = [f.name for f in families]
    assert len(names) == len(set(names))
    component = next(f for f in families if f.name == "stackprobe_health_component_up")
    assert {s.labels["component"] for s in component.samples} == {"redis", TRICKY}
    reason = next(f for f in families if f.name == "stackprobe_probe_failure_reason")
    assert [(s.labels, s.value) for s in reason.samples] == [
        ({"target": "backend-ready", "reason": "http_status"}, 1.0)
    ]


def test_openmetrics_body_ends_with_eof_once() -> None:
    store = ResultStore()
    exposition = Exposition(list(CORE_METRICS), store, CollectorRegistry())

    body = exposition.body(openmetrics=True)

    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1


def test_a_family_is_joined_again_only_when_a_run_changes_its_lines() -> None:
    store = ResultStore()
    renderer = Renderer(all_metric_specs(KINDS))
    first, _ = results(renderer)
    store.put(first)
    status, success = store.family("probe_http_status_code"), store.family("probe_success")
    again = ProbeResult.failed(
        Reason.HTTP_STATUS, "status 503", (PROBE_HTTP_STATUS_CODE(503),)
    )  # the same status, and now no components
    samples = (*core_samples("http", again, 1700000015.25, 0.5, 15.0), *again.samples)
    rendered = renderer.render(first.target, samples)
    store.put(TargetResult(first.target, "http", again, 1700000015.25, 0.5, rendered))

    assert store.family("probe_http_status_code") is status  # unchanged: not joined again
    assert store.family("probe_success") is success
    assert b"0.5" in store.family("probe_duration_seconds")  # changed: joined again
    assert store.family("stackprobe_health_component_up") == b""  # gone with the run


def test_lines_a_run_left_unchanged_are_held_once() -> None:
    """A run renders every line anew; where they equal the last run's, the store keeps the
    last run's bytes in the new result too, so that only one copy stays in memory."""
    store = ResultStore()
    renderer = Renderer(all_metric_specs(KINDS))
    first, _ = results(renderer)
    store.put(first)
    rendered = {name: bytes(bytearray(lines)) for name, lines in first.chunks.items()}
    again = TargetResult(first.target, "http", first.result, first.started, 0.5, rendered)
    store.put(again)

    kept = store.get(first.target)
    assert kept is again and kept.chunks == first.chunks
    assert all(kept.chunks[name] is first.chunks[name] for name in first.chunks)


def test_the_body_follows_every_put_and_remove() -> None:
    store = ResultStore()
    exposition = Exposition(all_metric_specs(KINDS), store, CollectorRegistry())
    renderer = exposition.renderer
    runs = results(renderer)
    store.put(runs[0])
    first = exposition.body(openmetrics=False)
    store.put(runs[1])
    second = exposition.body(openmetrics=False)
    store.remove("frontend")

    assert b'target="frontend"' not in first
    assert b'target="frontend"' in second
    assert exposition.body(openmetrics=False) == first


def test_an_undeclared_metric_is_refused() -> None:
    renderer = Renderer(list(CORE_METRICS))
    stray = MetricSpec("probe_stray", "not in the kind table")

    with pytest.raises(ValueError, match="probe_stray is not declared"):
        renderer.render("t", (stray(1),))


def test_a_family_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Renderer([*CORE_METRICS, CORE_METRICS[0]])


def test_a_new_result_replaces_every_family_of_the_old_one() -> None:
    """A family the new run no longer emits (a component that vanished) leaves with it."""
    store = ResultStore()
    exposition = Exposition(all_metric_specs(KINDS), store, CollectorRegistry())
    renderer = exposition.renderer
    failing, healthy = results(renderer)
    store.put(failing)
    recovered = TargetResult(
        failing.target,
        "http",
        healthy.result,
        1.0,
        0.1,
        renderer.render(failing.target, (PROBE_HTTP_STATUS_CODE(200),)),
    )
    store.put(recovered)

    text = exposition.body(openmetrics=False).decode()

    assert "stackprobe_health_component_up" not in text
    assert "stackprobe_probe_failure_reason" not in text
    assert 'probe_http_status_code{target="backend-ready"} 200.0' in text


def test_a_series_emitted_twice_is_refused() -> None:
    renderer = Renderer(all_metric_specs(KINDS))

    with pytest.raises(ValueError, match="emitted twice"):
        renderer.render("t", (HEALTH_COMPONENT_UP(1, "db"), HEALTH_COMPONENT_UP(0, "db")))


def test_a_targets_constant_labels_are_on_every_series() -> None:
    renderer = Renderer(all_metric_specs(KINDS))
    result = ProbeResult.failed(
        Reason.HTTP_STATUS, "status 503", (HEALTH_COMPONENT_UP(0, "redis"),)
    )
    labels = (("priority", "P2"), ("role", "readiness"), ("service", TRICKY))
    samples = (*core_samples("http", result, 1700000000.0, 0.1, 15.0), *result.samples)
    store = ResultStore()
    store.put(
        TargetResult("ready", "http", result, 1.0, 0.1, renderer.render("ready", samples, labels))
    )

    text = (
        Exposition(all_metric_specs(KINDS), store, CollectorRegistry())
        .body(openmetrics=False)
        .decode()
    )

    parsed = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert len(parsed) == len(samples)
    for sample in parsed:
        assert {k: sample.labels[k] for k, _ in labels} == dict(labels)
    assert (
        'stackprobe_health_component_up{component="redis",priority="P2",role="readiness",'
        'service="we\\"ird\\\\name\\nwith newline",target="ready"} 0.0'
    ) in text


@pytest.mark.parametrize("openmetrics", [False, True])
def test_name_filter_keeps_only_the_families_asked_for(openmetrics: bool) -> None:
    """`/metrics?name[]=...`, as prometheus_client's own handler reads it: a large fleet's
    scrape of a few families, its own and the targets', a counter by its sample name."""
    specs = all_metric_specs(KINDS)
    store = ResultStore()
    own = CollectorRegistry()
    Counter("stackprobe_test_calls", "calls", registry=own).inc()
    Counter("stackprobe_test_other", "other", registry=own).inc()
    exposition = Exposition(specs, store, own)
    for run in results(exposition.renderer):
        store.put(run)
    asked = frozenset({"probe_http_status_code", "probe_success", "stackprobe_test_calls_total"})

    filtered = exposition.body(openmetrics, asked).decode()
    whole = exposition.body(openmetrics).decode()

    names = {
        family.name.removesuffix("_total")  # as the text parser names a counter in either
        for family in text_string_to_metric_families(filtered)
    }
    assert names == {"probe_http_status_code", "probe_success", "stackprobe_test_calls"}
    assert filtered.endswith("# EOF\n") is openmetrics
    # the same lines as in the whole body, for the families kept
    kept = [line for line in whole.splitlines() if line.startswith("probe_success{")]
    assert kept and all(line in filtered.splitlines() for line in kept)


EDGE_VALUES = (0.0, -0.0, 1.0, -1.5, 0.1, 1e-7, 123456789.0, 1e21, 2.0**63, float("inf"))


@pytest.mark.parametrize("openmetrics", [False, True])
def test_every_family_of_every_kind_renders_as_prometheus_client_does(openmetrics: bool) -> None:
    """The sample lines are written by the renderer's own format strings (for speed), so
    every family any kind declares is rendered once with constant labels that sort before,
    between and after `target`, label values that need escaping, and numbers at the edges
    of Go's formatting, and compared with prometheus_client's rendering byte for byte."""
    specs = all_metric_specs(KINDS)
    renderer = Renderer(specs)
    constant = (("aaa", "first"), ("site", TRICKY), ("zzz", "a{b}c"))
    reference_families = []
    chunks: dict[str, bytes] = {}
    for i, spec in enumerate(specs):
        own = tuple(f"{label}-{TRICKY}-{{0}}" for label in spec.labels)
        values = (EDGE_VALUES[i % len(EDGE_VALUES)], float("nan"), -float("inf"))
        values = values if spec.labels else values[:1]  # one series without labels of its own
        series = [spec(value, *(f"{v}{n}" for v in own)) for n, value in enumerate(values)]
        chunks.update(renderer.render("t-" + TRICKY, series, constant))
        family = _family(spec, tuple(name for name, _ in constant))
        for sample in series:
            row = ("t-" + TRICKY, *(value for _, value in constant), *sample.label_values)
            family.add_metric(row, sample.value)
        reference_families.append(family)
    store = ResultStore()
    store.put(TargetResult("t", "http", ProbeResult.ok(()), 1.0, 0.1, chunks))

    body = b"".join(renderer.parts(store, openmetrics))

    render = generate_openmetrics if openmetrics else generate_latest
    expected = render(_Families(reference_families))
    assert body == expected.removesuffix(b"# EOF\n")
    assert len(specs) > 100  # every kind's families, not a handful


def test_every_exported_name_is_legacy_so_allow_utf8_renders_what_underscores_does() -> None:
    """exporter/exposition.py renders OpenMetrics with `escaping=allow-utf-8`, which is only
    byte for byte the default when every metric and label name is a legacy one."""
    metric, label = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*"), re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
    for spec in all_metric_specs(KINDS):
        assert metric.fullmatch(spec.name) and all(label.fullmatch(n) for n in spec.labels), spec
    own = SelfMetrics()
    aws = AwsMetrics(own.registry)
    aws.calls.labels("ecs", "DescribeServices", TRICKY).inc()
    own.runs.labels("http", "success").inc()
    for family in own.registry.collect():
        for sample in family.samples:
            assert metric.fullmatch(sample.name), sample
            assert all(label.fullmatch(name) for name in sample.labels), sample

    # the process collector's samples (CPU seconds, memory) move between the two renderings
    # on a busy machine: compared without their values
    def settled(text: bytes) -> bytes:
        return b"\n".join(
            line.rsplit(b" ", 1)[0] if line.startswith(b"process_") else line
            for line in text.split(b"\n")
        )

    assert settled(ours(own.registry)) == settled(
        generate_openmetrics(own.registry, escaping=UNDERSCORES)
    )
