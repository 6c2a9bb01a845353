"""stackprobe's own series: a kind's run series from its first target on, kept after."""

from __future__ import annotations

from prometheus_client import generate_latest

from stackprobe.selfmetrics import SelfMetrics


def test_run_series_exist_for_configured_kinds_and_stay_once_they_did() -> None:
    own = SelfMetrics()
    own.set_kinds({"http": 2}, ["http", "dns"])
    first = generate_latest(own.registry).decode()
    own.set_kinds({"dns": 1}, ["http", "dns"])
    then = generate_latest(own.registry).decode()

    assert 'stackprobe_probe_runs_total{kind="http",result="success"} 0.0' in first
    assert 'kind="dns",result=' not in first  # never configured: nothing to count yet
    assert 'stackprobe_targets{kind="dns"} 0.0' in first  # every kind's count, 0 included
    # http's counters stay (a counter never vanishes); dns's appear with its first target
    assert 'stackprobe_probe_runs_total{kind="http",result="failure"} 0.0' in then
    assert 'stackprobe_probe_run_duration_seconds_count{kind="dns",result="success"} 0.0' in then
