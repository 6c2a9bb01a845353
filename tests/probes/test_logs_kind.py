"""kind: logs against moto's CloudWatch Logs (made faithful by demo/moto_stack.py: filter
patterns, stream prefixes, AWS's pages and tokens): counts per pattern and log group, windows
that close `ingestion_lag` back and resume where they stopped, the restart look-back, and log
text that never reaches any output.

(tests/test_logs.py is the exporter's own logging; this is the kind's file.)

The kind reads the wall clock through its state's `clock`, which these tests set: no test
waits on time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry

from stackprobe.app import all_metric_specs
from stackprobe.config import ConfigError, parse_config
from stackprobe.contract import Health, ProbeResult, Verdict
from stackprobe.exposition import Exposition
from stackprobe.probes import KINDS
from stackprobe.probes import logs as kind
from stackprobe.probes._aws_api import AwsClients, AwsMetrics
from stackprobe.results import ResultStore
from stackprobe.secrets import Redactor
from tests.support.aws import CANARY_KEY_ID, CANARY_SECRET, REGION, api_calls, by_operation, inject
from tests.support.in_process import serving
from tests.support.probing import ProbeRunner, make_target, samples_by_name, value

# A whole minute of wall time near now (CloudWatch Logs refuses events 14 days old), as ms.
T0 = math.floor(time.time() / 60) * 60 * 1000
MIN = 60_000
API = "/ecs/api-staging"
SECRET = "sk-live-CANARY-9f3Kq2xW7vB1"  # in a log line; must never show anywhere


@pytest.fixture
def cwlogs(moto: None) -> Any:
    return boto3.client("logs", region_name=REGION)


def group(cwlogs: Any, name: str, *streams: str) -> None:
    cwlogs.create_log_group(logGroupName=name)
    for stream in streams or ("web/1",):
        cwlogs.create_log_stream(logGroupName=name, logStreamName=stream)


def put(cwlogs: Any, name: str, *events: tuple[int, str], stream: str = "web/1") -> None:
    """Events (ms, message) into one stream, in the order PutLogEvents wants."""
    cwlogs.put_log_events(
        logGroupName=name,
        logStreamName=stream,
        logEvents=[{"timestamp": at, "message": text} for at, text in sorted(events)],
    )


def logs_target(**keys: Any) -> Any:
    raw = {
        "name": "api-logs",
        "kind": "logs",
        "interval": "1m",
        "timeout": "20s",
        "log_groups": [API],
        **keys,
    }
    return make_target(raw)


class Clock:
    """The wall clock the kind reads, in seconds; set in ms as the events are."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def runner_at(target: Any, aws: AwsClients, ms: int) -> tuple[ProbeRunner, Clock]:
    runner = ProbeRunner(target, aws=aws)
    clock = Clock(ms)
    runner.state.clock = clock
    return runner, clock


def matches(result: ProbeResult, pattern: str, log_group: str = API) -> float:
    return value(result, "stackprobe_logs_pattern_matches", log_group, pattern)


def catch_up(result: ProbeResult, pattern: str, log_group: str = API) -> float:
    return value(result, "stackprobe_logs_catch_up_matches", log_group, pattern)


def calls(result: ProbeResult) -> list[str]:
    """The "aws call" lines of a run's evidence, without their durations."""
    return [
        v.split(" in ")[0] + (", " + v.split(", ")[-1] if v.endswith(("page", "pages")) else "")
        for label, v in result.evidence
        if label == "aws call"
    ]


def shown(result: ProbeResult) -> str:
    """Everything a run shows a person or Prometheus, but the log text it must not."""
    samples = " ".join(f"{s.spec.name}{s.label_values}{s.value}" for s in result.samples)
    evidence = " ".join(f"{k} {v}" for k, v in result.evidence)
    return " ".join([samples, evidence, result.health().why, result.detail])


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 2 events, so a few events make several pages."""
    monkeypatch.setattr(kind, "PAGE_EVENTS", 2)


# Counting


async def test_signals_and_custom_patterns_counted_across_pages(
    cwlogs: Any, aws: AwsClients, aws_metrics: AwsMetrics, small_pages: None
) -> None:
    group(cwlogs, API)
    target = logs_target(
        signals=["redis_transport_closed", "queuepool_exhausted", "code_error"],
        patterns={"budget": '"budget exceeded"'},
        ingestion_lag="0s",
    )
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        first = await runner.run()  # counting begins: the look-back is catch-up
        put(
            cwlogs,
            API,
            *[(T0 + 1000 + i, f"redis: transport closed ({i})") for i in range(5)],
            (
                T0 + 2000,
                "sqlalchemy.exc.TimeoutError: QueuePool limit of size 5 overflow 10 "
                "reached, connection timed out, timeout 30.00",
            ),
            (T0 + 3000, "Traceback ... KeyError: 'user_id'"),
            (T0 + 3001, "AttributeError: 'NoneType' object has no attribute 'id'"),
            (T0 + 4000, "GET /health/live 200"),
            (T0 + 5000, "keyerror: patterns are case-sensitive"),
        )
        clock.ms = T0 + MIN
        second = await runner.run()

    assert first.success and first.health() == Verdict(
        Health.OK, f"no match of 4 patterns in {API} in the last 15m"
    )
    assert second.success, second.detail
    assert matches(second, "redis_transport_closed") == 5
    assert matches(second, "queuepool_exhausted") == 1
    assert matches(second, "code_error") == 2  # not the lower-case keyerror
    assert matches(second, "budget") == 0
    assert (
        value(second, "stackprobe_logs_pattern_last_match_timestamp_seconds", API, "code_error")
        == (T0 + 3001) / 1000
    )
    assert "budget" not in {
        labels[1]
        for labels in samples_by_name(second)[
            "stackprobe_logs_pattern_last_match_timestamp_seconds"
        ]
    }  # absent until a match
    assert value(second, "stackprobe_logs_window_end_timestamp_seconds", API) == T0 / 1000 + 60
    assert value(second, "stackprobe_logs_counted_since_timestamp_seconds", API) == T0 / 1000
    assert value(second, "stackprobe_logs_truncated_runs", API) == 0
    assert second.health() == Verdict(
        Health.DEGRADED,
        f"5 `redis_transport_closed` in {API} in the last 1m (+2 more)",
        "AppRedisTransportClosedLogged",  # the first finding's signal names its alert
    )
    evidence = dict((k, v) for k, v in second.evidence if k in ("window", "matches"))
    assert evidence == {
        "window": f"{API}: {kind._clock(T0)} to {kind._clock(T0 + MIN)} UTC",
        "matches": f"{API}: redis_transport_closed 5, queuepool_exhausted 1, code_error 2, "
        "budget 0",
    }
    ingestion = [v for k, v in second.evidence if k == "ingestion"]
    assert ingestion and ingestion[0].startswith(f"{API}: matches reached CloudWatch up to ")
    # 2 events a page: 3 pages for 5 events, 1 for 2, 1 or none; one call per pattern
    assert calls(second) == ["logs:FilterLogEvents ok, 4 calls, 6 pages"]
    assert by_operation(api_calls(aws_metrics.registry))["FilterLogEvents"] == 4 + 6


async def test_a_page_holds_10000_events_at_most(cwlogs: Any, aws: AwsClients) -> None:
    group(cwlogs, API)
    target = logs_target(patterns={"hit": "hit"}, ingestion_lag="0s")
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        await runner.run()
        put(cwlogs, API, *[(T0 + i, f"hit {i}") for i in range(10_001)])
        clock.ms = T0 + MIN
        result = await runner.run()

    assert matches(result, "hit") == 10_001
    assert calls(result) == ["logs:FilterLogEvents ok, 2 pages"]


async def test_several_groups_and_a_prefix(
    cwlogs: Any, aws: AwsClients, aws_metrics: AwsMetrics
) -> None:
    for name in (API, "/ecs/worker-a", "/ecs/worker-b", "/ecs/other"):
        group(cwlogs, name)
    target = logs_target(
        log_groups=[API, "/ecs/worker-b"],
        log_group_prefix="/ecs/worker-",
        signals=["code_error"],
        ingestion_lag="0s",
    )
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        await runner.run()
        put(cwlogs, API, (T0 + 1, "KeyError: 'a'"))
        put(cwlogs, "/ecs/worker-a", (T0 + 2, "TypeError: x"), (T0 + 3, "KeyError: y"))
        put(cwlogs, "/ecs/worker-b", (T0 + 4, "AttributeError: z"))
        put(cwlogs, "/ecs/other", (T0 + 5, "KeyError: not read"))
        before = by_operation(api_calls(aws_metrics.registry))
        clock.ms = T0 + MIN
        result = await runner.run()
        made = by_operation(api_calls(aws_metrics.registry)) - before

    assert samples_by_name(result)["stackprobe_logs_pattern_matches"] == {
        (API, "code_error"): 1,
        ("/ecs/worker-b", "code_error"): 1,
        ("/ecs/worker-", "code_error"): 2,  # worker-a only: worker-b is listed by name
    }
    # FilterLogEvents takes one group a call: one per group read, and the prefix resolved
    assert made == {"FilterLogEvents": 3, "DescribeLogGroups": 1}
    assert result.health().why == (f"1 `code_error` in {API} in the last 1m (+2 more)")
    assert ("matches", "/ecs/worker-*: code_error 2") in result.evidence


async def test_the_stream_prefix_reads_only_those_streams(cwlogs: Any, aws: AwsClients) -> None:
    group(cwlogs, API, "web/1", "web/2", "worker/1")
    target = logs_target(signals=["code_error"], stream_prefix="web/", ingestion_lag="0s")
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        await runner.run()
        put(cwlogs, API, (T0 + 1, "KeyError: a"), stream="web/1")
        put(cwlogs, API, (T0 + 2, "KeyError: b"), stream="web/2")
        put(cwlogs, API, (T0 + 3, "KeyError: c"), stream="worker/1")
        clock.ms = T0 + MIN
        result = await runner.run()

    assert matches(result, "code_error") == 2


# Windows: the ingestion lag, truncation and its catch-up, restarts


async def test_an_event_inside_the_ingestion_lag_is_counted_next_run_once(
    cwlogs: Any, aws: AwsClients
) -> None:
    group(cwlogs, API)
    target = logs_target(signals=["code_error"])  # ingestion_lag 1m
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        await runner.run()  # catch-up up to T0 - 1m
        clock.ms = T0 + MIN
        await runner.run()  # catch-up [T0 - 1m, T0)
        put(
            cwlogs,
            API,
            (T0 + 30_000, "KeyError: a"),
            (T0 + 70_000, "KeyError: on the boundary"),  # the next window's first ms
            (T0 + 100_000, "KeyError: inside the lag"),
        )
        clock.ms = T0 + 130_000  # reads [T0, T0 + 70s)
        third = await runner.run()
        clock.ms = T0 + 190_000  # reads [T0 + 70s, T0 + 130s)
        fourth = await runner.run()
        later = []
        for ms in range(250_000, 430_001, 60_000):
            clock.ms = T0 + ms
            later.append(await runner.run())

    assert matches(third, "code_error") == 1
    assert value(third, "stackprobe_logs_window_end_timestamp_seconds", API) == T0 / 1000 + 70
    assert matches(fourth, "code_error") == 3  # neither lost nor counted twice
    # the verdict counts the last VERDICT_RUNS (4) runs' matches, so a quiet run between
    # two bursts does not show the log group ok
    assert fourth.health().why == f"3 `code_error` in {API} in the last 3m10s"
    assert all(matches(r, "code_error") == 3 for r in later)
    assert later[0].health().why == f"3 `code_error` in {API} in the last 4m10s"
    assert later[2].health().why == f"2 `code_error` in {API} in the last 5m"
    assert later[3].health().health is Health.OK


async def test_the_page_cap_carries_the_window_to_the_next_run(
    cwlogs: Any, aws: AwsClients, small_pages: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kind, "MAX_PAGES", 1)
    group(cwlogs, API)
    put(cwlogs, API, *[(T0 + i, f"KeyError {i}") for i in range(5)])
    target = logs_target(signals=["code_error"], ingestion_lag="0s")
    runner, clock = runner_at(target, aws, T0 - MIN)
    async with runner:
        await runner.run()
        clock.ms = T0 + MIN
        results = [await runner.run()]
        clock.ms = T0 + 2 * MIN  # still the first window: resumed from its nextToken
        results.append(await runner.run())
        clock.ms = T0 + 3 * MIN
        results.append(await runner.run())
        clock.ms = T0 + 4 * MIN  # a new window: nothing more
        results.append(await runner.run())

    assert [matches(r, "code_error") for r in results] == [2, 4, 5, 5]
    assert [value(r, "stackprobe_logs_truncated_runs", API) for r in results] == [1, 2, 2, 2]
    ends = [value(r, "stackprobe_logs_window_end_timestamp_seconds", API) for r in results]
    assert ends == [T0 / 1000 - 60, T0 / 1000 - 60, T0 / 1000 + 60, T0 / 1000 + 240]
    assert results[0].health() == Verdict(
        Health.DEGRADED,
        f"2 `code_error` in {API} in the last 2m; window truncated (page cap): 1 query "
        "carried to the next run",
        "AppCodeErrorsAfterDeploy",
    )
    assert results[2].health().why == f"5 `code_error` in {API} in the last 4m"


async def test_the_deadline_carries_the_rest_to_the_next_run(
    cwlogs: Any, aws: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    group(cwlogs, API)
    target = logs_target(
        signals=["redis_transport_closed", "queuepool_exhausted", "code_error"],
        ingestion_lag="0s",
    )
    runner, clock = runner_at(target, aws, T0)
    budget = {"queries": 99}

    def time_left(ctx: Any) -> float:
        budget["queries"] -= 1
        return 10.0 if budget["queries"] >= 0 else 0.0

    monkeypatch.setattr(kind, "_time_left", time_left)
    async with runner:
        await runner.run()
        put(cwlogs, API, (T0 + 1, "transport closed"), (T0 + 2, "KeyError: a"))
        clock.ms = T0 + MIN
        budget["queries"] = 1  # time for one query, then the deadline
        cut = await runner.run()
        budget["queries"] = 99
        clock.ms = T0 + 2 * MIN
        after = await runner.run()
        clock.ms = T0 + 3 * MIN
        then = await runner.run()

    assert cut.success
    assert matches(cut, "redis_transport_closed") == 1
    assert matches(cut, "code_error") == 0
    assert value(cut, "stackprobe_logs_truncated_runs", API) == 1
    assert cut.health().why == (
        f"1 `redis_transport_closed` in {API} in the last 1m; window truncated (deadline): "
        "2 queries carried to the next run"
    )
    assert calls(cut) == ["logs:FilterLogEvents ok, 1 page"]
    # the next run reads the two patterns' windows from T0 to its own end
    assert matches(after, "code_error") == 1 and matches(after, "redis_transport_closed") == 1
    assert value(after, "stackprobe_logs_window_end_timestamp_seconds", API) == T0 / 1000 + 60
    assert matches(then, "code_error") == 1
    assert value(then, "stackprobe_logs_window_end_timestamp_seconds", API) == T0 / 1000 + 180


async def test_a_restart_reads_back_max_catch_up_apart_from_the_counter(
    cwlogs: Any, aws: AwsClients
) -> None:
    group(cwlogs, API)
    put(
        cwlogs,
        API,
        (T0 - 20 * MIN, "transport closed: older than max_catch_up"),
        (T0 - 11 * MIN, "transport closed"),
        (T0 - 2 * MIN, "transport closed"),
    )
    target = logs_target(signals=["redis_transport_closed"], ingestion_lag="0s")
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        before = await runner.run()
        put(cwlogs, API, (T0 + 1000, "transport closed"))
        clock.ms = T0 + MIN
        counting = await runner.run()
    # the process restarts 5 minutes later: a new state, counting from its own first run
    restarted, clock = runner_at(target, aws, T0 + 5 * MIN)
    async with restarted:
        again = await restarted.run()

    assert catch_up(before, "redis_transport_closed") == 2
    assert matches(before, "redis_transport_closed") == 0
    assert before.health() == Verdict(
        Health.DEGRADED, f"2 `redis_transport_closed` in {API} in the 15m before counting began"
    )
    assert (
        "window",
        f"{API}: {kind._clock(T0 - 15 * MIN)} to {kind._clock(T0)} UTC "
        "(catch-up, before counting began)",
    ) in before.evidence
    assert matches(counting, "redis_transport_closed") == 1
    assert catch_up(counting, "redis_transport_closed") == 2
    # after the restart: the look-back is catch-up again, the counter starts from 0, so
    # increase() over the restart adds nothing the first process counted
    assert catch_up(again, "redis_transport_closed") == 2  # T0 - 2m and T0 + 1s
    assert matches(again, "redis_transport_closed") == 0
    assert value(again, "stackprobe_logs_counted_since_timestamp_seconds", API) == (T0 / 1000 + 300)
    assert (
        value(
            again,
            "stackprobe_logs_pattern_last_match_timestamp_seconds",
            API,
            "redis_transport_closed",
        )
        == (T0 + 1000) / 1000
    )


async def test_a_backlog_older_than_max_catch_up_is_skipped_and_said(
    cwlogs: Any, aws: AwsClients
) -> None:
    group(cwlogs, API)
    target = logs_target(signals=["code_error"], ingestion_lag="0s", max_catch_up="10m")
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        await runner.run()
        put(cwlogs, API, (T0 + 5 * MIN, "KeyError: skipped"), (T0 + 25 * MIN, "KeyError: read"))
        clock.ms = T0 + 30 * MIN  # 30 minutes without a run: only the last 10 are read
        result = await runner.run()

    assert matches(result, "code_error") == 1
    assert value(result, "stackprobe_logs_truncated_runs", API) == 1
    assert result.health().why == (
        f"1 `code_error` in {API} in the last 10m; skipped 20m of {API} older than "
        "max_catch_up (10m)"
    )


# Failures


async def test_throttled_runs_keep_the_last_values_and_lose_nothing(
    cwlogs: Any, aws: AwsClients
) -> None:
    group(cwlogs, API)
    target = logs_target(signals=["code_error"], ingestion_lag="0s")
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        await runner.run()
        put(cwlogs, API, (T0 + 1, "KeyError: a"))
        clock.ms = T0 + MIN
        good = await runner.run()
        put(cwlogs, API, (T0 + MIN + 1, "KeyError: b"))
        clock.ms = T0 + 2 * MIN
        inject(aws.client(target, "logs"), "FilterLogEvents", "ThrottlingException", times=2)
        throttled = await runner.run()
        clock.ms = T0 + 3 * MIN
        after = await runner.run()

    assert throttled.reason == "throttled"
    assert samples_by_name(throttled) == samples_by_name(good)
    assert throttled.health() == Verdict(
        Health.DEGRADED,
        f"AWS throttled this run; the last good values: 1 `code_error` in {API} in the last 1m",
        "AppCodeErrorsAfterDeploy",  # the last good verdict's alert: StackprobeAwsThrottled if none
    )
    assert calls(throttled) == ["logs:FilterLogEvents throttled"]
    assert matches(after, "code_error") == 2  # the throttled window is read, once
    assert after.health().why == f"2 `code_error` in {API} in the last 3m"


@pytest.mark.parametrize(
    ("operation", "action"),
    [("FilterLogEvents", "logs:FilterLogEvents"), ("DescribeLogGroups", "logs:DescribeLogGroups")],
)
async def test_access_denied_names_the_logs_action(
    cwlogs: Any, aws: AwsClients, operation: str, action: str
) -> None:
    group(cwlogs, "/ecs/worker-a")
    target = logs_target(log_groups=[], log_group_prefix="/ecs/worker-", signals=["code_error"])
    inject(aws.client(target, "logs"), operation, "AccessDeniedException", status=400, times=3)

    result = await ProbeRunner.once(target, aws=aws)

    assert result.reason == "access_denied"
    verdict = result.health()
    assert verdict.health is Health.FAILING and verdict.alert == "StackprobeAwsAccessDenied"
    assert action in verdict.why
    assert f"{action} denied" in calls(result)


async def test_a_missing_log_group_or_prefix_cannot_be_measured(
    cwlogs: Any, aws: AwsClients
) -> None:
    missing = await ProbeRunner.once(logs_target(signals=["code_error"]), aws=aws)
    none = await ProbeRunner.once(
        logs_target(log_groups=[], log_group_prefix="/ecs/none-", signals=["code_error"]),
        aws=aws,
    )

    assert missing.reason == "not_found"
    assert missing.health().alert == "StackprobeCannotMeasure"
    assert calls(missing) == ["logs:FilterLogEvents error (ResourceNotFoundException)"]
    assert none.reason == "not_found"
    assert none.health().why == "no log group's name starts with /ecs/none-"


# Log text never leaves


async def test_a_secret_in_a_log_line_reaches_no_output(cwlogs: Any, aws: AwsClients) -> None:
    group(cwlogs, API)
    line = f"KeyError: 'token' while calling the LLM with api_key={SECRET}"
    put(cwlogs, API, (T0 - MIN, line))
    target = logs_target(signals=["code_error"], patterns={"llm": SECRET[:12]}, ingestion_lag="0s")
    runner, clock = runner_at(target, aws, T0)
    async with runner:
        first = await runner.run()
        put(cwlogs, API, (T0 + 1, line))
        clock.ms = T0 + MIN
        second = await runner.run()
    exposition = Exposition(all_metric_specs(KINDS), ResultStore(), CollectorRegistry())
    exposition.put(exposition.render(target, second, time.time(), 0.1))

    assert catch_up(first, "llm") == 1 and matches(second, "llm") == 1
    for result in (first, second):
        assert SECRET not in shown(result) and "api_key" not in shown(result)
        assert CANARY_KEY_ID not in shown(result) and CANARY_SECRET not in shown(result)
    metrics = exposition.body(openmetrics=False).decode()
    assert 'stackprobe_logs_pattern_matches_total{log_group="/ecs/api-staging"' in metrics
    assert SECRET not in metrics and "api_key" not in metrics


async def test_the_exporter_shows_counts_never_the_log_text(moto: None) -> None:
    """The whole exporter over moto: /metrics, the landing page, the detail view and the
    exporter's own log hold the counts and none of the log line."""
    cwlogs = boto3.client("logs", region_name=REGION)
    group(cwlogs, API)
    now = int(time.time() * 1000)
    put(cwlogs, API, (now - 5 * MIN, f"redis transport closed; url=redis://:{SECRET}@cache"))
    config = parse_config(
        f"""
aws: {{region: {REGION}}}
targets:
  - {{name: api-logs, kind: logs, interval: 1m, timeout: 10s, log_groups: ["{API}"],
      signals: [redis_transport_closed]}}
""",
        "<test>",
        KINDS,
        {},
    )
    async with serving(config, Redactor()) as (_, client, log):
        metrics = await (await client.get("/metrics")).text()
        landing = await (await client.get("/")).text()
        detail = await (await client.get("/target", params={"name": "api-logs"})).text()

    assert (
        'stackprobe_logs_catch_up_matches{log_group="/ecs/api-staging",'
        'pattern="redis_transport_closed",target="api-logs"} 1.0'
    ) in metrics
    assert "redis_transport_closed" in detail and "logs:FilterLogEvents ok" in detail
    outputs = {"metrics": metrics, "landing": landing, "detail": detail, "log": log.getvalue()}
    for name, text in outputs.items():
        for secret in (SECRET, "redis://", CANARY_KEY_ID, CANARY_SECRET):
            assert secret not in text, f"{secret} in {name}"


# Config


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ({"patterns": {"code_error": "x"}}, "is a built-in signal's name"),
        ({"patterns": {"Bad-Name": "x"}}, "is not a pattern name"),
        ({"patterns": {f"p{i}": "x" for i in range(21)}}, "21 patterns; at most 20"),
        ({"patterns": {"blank": "  "}}, "must be 1-1024 characters"),
        ({"signals": ["code_error", "code_error"]}, "listed twice"),
        ({"signals": ["not_a_signal"]}, "too_many_clients"),
        ({"signals": []}, "nothing to count"),
        ({"log_groups": []}, "name log_groups, a log_group_prefix, or both"),
        ({"log_group_prefix": API}, "both a log group and the prefix"),
        ({"log_groups": ["no spaces"]}, "is not a log group name"),
        ({"stream_prefix": "web*"}, "stream_prefix"),
        ({"max_catch_up": "1m"}, "at least twice the interval (2m)"),
        ({"ingestion_lag": "2h"}, "between 0s and 1h"),
    ],
)
def test_config_errors(keys: dict[str, Any], said: str) -> None:
    raw = {"signals": ["code_error"], **keys}
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        logs_target(**raw)


def test_the_defaults() -> None:
    target = logs_target(signals=["code_error", "too_many_clients"])

    assert target.ingestion_lag == 60 and target.max_catch_up == 900
    assert [n for n, _ in target.all_patterns()] == ["too_many_clients", "code_error"]
    assert target.describe() == f"logs {API}: too_many_clients, code_error"


# The test double itself: FilterLogEvents as the API reference says it answers


@pytest.fixture
def api_group(cwlogs: Any) -> Iterator[Callable[..., Any]]:
    group(cwlogs, API, "web/1", "worker/1")
    put(cwlogs, API, (T0, "ERROR one"), (T0 + 2, "WARN two"), stream="web/1")
    put(cwlogs, API, (T0 + 1, "error three"), stream="worker/1")

    def filtered(**params: Any) -> Any:
        return cwlogs.filter_log_events(**params)

    yield filtered


@pytest.mark.parametrize(
    ("pattern", "found"),
    [
        ("ERROR", ["ERROR one"]),  # case-sensitive
        ("?ERROR ?WARN", ["ERROR one", "WARN two"]),
        ('"error three"', ["error three"]),
        ("-ERROR", ["error three", "WARN two"]),
        ("", ["ERROR one", "error three", "WARN two"]),  # interleaved by timestamp
    ],
)
def test_the_double_evaluates_filter_patterns(
    api_group: Callable[..., Any], pattern: str, found: list[str]
) -> None:
    answer = api_group(logGroupName=API, filterPattern=pattern)

    assert [e["message"] for e in answer["events"]] == found


def test_the_double_refuses_what_aws_refuses(api_group: Callable[..., Any]) -> None:
    from botocore.exceptions import ClientError

    for params in (
        {"logGroupName": API, "limit": 10_001},
        {"logGroupName": API, "logGroupIdentifier": API},
        {"logGroupName": API, "logStreamNames": ["web/1"], "logStreamNamePrefix": "web"},
        {"logGroupName": API, "filterPattern": "{ $.level = 1 }"},
    ):
        with pytest.raises(ClientError, match="InvalidParameterException"):
            api_group(**params)


def test_the_double_pages_with_tokens_and_inclusive_bounds(
    api_group: Callable[..., Any],
) -> None:
    first = api_group(logGroupIdentifier=API, limit=2, startTime=T0, endTime=T0 + 2)
    rest = api_group(
        logGroupName=API, limit=2, startTime=T0, endTime=T0 + 2, nextToken=first["nextToken"]
    )

    assert [e["message"] for e in first["events"]] == ["ERROR one", "error three"]
    assert [e["message"] for e in rest["events"]] == ["WARN two"]
    assert "nextToken" not in rest
