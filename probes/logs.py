"""CloudWatch Logs: how often named patterns appear in a service's log groups.

What a runbook's first look does by hand (`aws logs tail /ecs/aep-backend-staging`, then a
search for "transport closed", "QueuePool limit", "too many clients already", KeyError), as
counters the alert rules can read. Only counts and the newest match's time leave this module:
the log text never does (it can carry secrets and unbounded values). Each page of events is
reduced to (count, newest timestamp, nextToken) in the worker thread that read it, so not
even the run holds a message.

Per run, for each pattern (the built-in `signals` first, then the custom `patterns`) and each
log group: one FilterLogEvents over the window [where the last one ended, now -
ingestion_lag), paginated (10,000 events or 1 MB a page). FilterLogEvents reads one log group
per call (logGroupName or logGroupIdentifier, never a list: StartLiveTail and Logs Insights
take several, FilterLogEvents does not), so a `log_group_prefix` costs one DescribeLogGroups
and then a FilterLogEvents per group it names. Calls run one after another: the account's
FilterLogEvents quota is a few requests a second, shared with every person tailing logs.

A window not read to its end (the run's deadline, the page cap) is resumed from its
nextToken by the next run: a page's events are counted once, none is dropped. A window whose
end falls more than `max_catch_up` behind is given up, and the next starts `max_catch_up`
back; that is said in the verdict and counted as a truncated run.

Restarts. Nothing is stored outside the process, so a new process (or a reload that changes
the target) cannot know what the previous one counted. Its counter starts at 0 and counts
only events timestamped from its own first run on (`..._counted_since_timestamp_seconds`):
Prometheus' increase() takes the drop to 0 for a reset, and nothing the previous process
may have counted reaches the counter again. The `max_catch_up` before that first run (the
time a restart was down, at most) is read once into a separate gauge,
`stackprobe_logs_catch_up_matches`, and the verdict: seen, but never added to the counter,
so increase() over a restart does not double count, and an alert that must also see the
down time reads the gauge.
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stackprobe.contract import (
    Area,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
)
from stackprobe.durations import Duration, format_duration
from stackprobe.probes._aws import AwsState, Finding, Reason, judged, measured
from stackprobe.probes._aws_api import AWS, AwsCallError, AwsProblem, AwsTarget
from stackprobe.target import UniqueNames, unique

# The built-in patterns (CloudWatch filter-pattern syntax: "an exact phrase", ?any ?of,
# case-sensitive), most urgent first: the shipped alert rules key on these names. Where the
# seeds quote a paraphrase, the pattern also matches the library's own words.
Signal = Literal[
    "too_many_clients",
    "redis_transport_closed",
    "queuepool_exhausted",
    "code_error",
    "connection_refused",
    "s3_upload_failed",
    "rate_limited",
]
SIGNALS: Mapping[str, str] = {
    # PostgreSQL's "FATAL: sorry, too many clients already", and the reserved-slots refusal
    "too_many_clients": '?"too many clients already" ?"remaining connection slots are reserved"',
    "redis_transport_closed": '"transport closed"',
    # SQLAlchemy says "QueuePool limit of size 5 overflow 10 reached, connection timed out"
    "queuepool_exhausted": '?"QueuePool limit of size" ?"QueuePool limit exceeded"',
    "code_error": "?KeyError ?AttributeError ?TypeError",
    # errno's "Connection refused" (Python, libpq, redis-py) and lower-case reports of it
    "connection_refused": '?"Connection refused" ?"connection refused"',
    "s3_upload_failed": '?"S3 upload failed" ?"Timeout reading from S3"',
    # the OpenAI and Anthropic SDKs' RateLimitError, and "Rate limit reached for ..."
    "rate_limited": '?RateLimitError ?"rate limit" ?"Rate limit"',
}
assert tuple(SIGNALS) == get_args(Signal)

# The alert that pages on each signal's counter (alert_rules/logs.rules.yml), named by the
# verdict so the console links its runbook section (docs/console.md's verdict table).
# connection_refused has none: it names no dependency (the rule file says why).
SIGNAL_ALERTS: Mapping[str, str] = {
    "redis_transport_closed": "AppRedisTransportClosedLogged",
    "queuepool_exhausted": "AppQueuePoolExhaustedLogged",
    "too_many_clients": "PostgresTooManyClientsLogged",
    "rate_limited": "LlmRateLimitedLogged",
    "code_error": "AppCodeErrorsAfterDeploy",
    "s3_upload_failed": "S3UploadFailuresLogged",
}

MAX_PATTERNS = 20  # custom patterns per target
MAX_LOG_GROUPS = 10  # names per target, and groups read under a prefix
FILTER_PATTERN_MAX = 1024  # characters, FilterLogEvents' own limit
PAGE_EVENTS = 10_000  # FilterLogEvents' `limit`: its largest page
MAX_PAGES = 10  # pages of one query in one run; the rest is resumed next run
# Run time kept back when deciding to start one more query: a page can take seconds.
RESERVE_SHARE, RESERVE_MIN = 0.25, 0.5
EVIDENCE_ENTRIES = 3  # `log_group` entries whose windows and counts the evidence shows
# The verdict counts the matches of the last runs, not the last run's alone: lines arrive in
# bursts (a batch of requests, a log driver's flush), and a run that read between two would
# show a failing app as ok for a run and flicker on the console.
VERDICT_RUNS = 4

_LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,512}$")
_PATTERN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class LogsTarget(AwsTarget):
    kind: Literal["logs"] = "logs"
    # Log group names in the target's account and region; each is its own `log_group`.
    log_groups: UniqueNames = Field((), max_length=MAX_LOG_GROUPS)
    # Every group whose name starts with this (up to MAX_LOG_GROUPS, by name), together
    # labelled with the prefix itself.
    log_group_prefix: str | None = None
    stream_prefix: str | None = Field(None, min_length=1, max_length=512, pattern=r"^[^:*]+$")
    signals: Annotated[tuple[Signal, ...], AfterValidator(unique)] = ()
    # name -> CloudWatch filter pattern
    patterns: dict[str, str] = Field(default_factory=dict)
    ingestion_lag: Duration = 60.0
    max_catch_up: Duration = 900.0

    @field_validator("log_groups")
    @classmethod
    def _group_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            _check_group(name)
        return value

    @field_validator("log_group_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None:
            _check_group(value)
        return value

    @field_validator("patterns")
    @classmethod
    def _custom_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_PATTERNS:
            raise PydanticCustomError(
                "too_many_patterns",
                "{count} patterns; at most {most} (each is a FilterLogEvents call per log "
                "group and run)",
                {"count": len(value), "most": MAX_PATTERNS},
            )
        for name, pattern in value.items():
            if not _PATTERN_NAME.fullmatch(name):
                raise PydanticCustomError(
                    "pattern_name",
                    "{found} is not a pattern name: lower-case letters, digits and _, "
                    "starting with a letter (it becomes the `pattern` label)",
                    {"found": repr(name)[:80]},
                )
            if name in SIGNALS:
                raise PydanticCustomError(
                    "pattern_name",
                    "{found} is a built-in signal's name; list it under signals, or name "
                    "your pattern otherwise",
                    {"found": name},
                )
            if not pattern.strip() or len(pattern) > FILTER_PATTERN_MAX:
                raise PydanticCustomError(
                    "filter_pattern",
                    "the filter pattern of {name} must be 1-{most} characters, not blank",
                    {"name": name, "most": FILTER_PATTERN_MAX},
                )
        return value

    @model_validator(mode="after")
    def _what_to_read(self) -> LogsTarget:
        if not self.log_groups and self.log_group_prefix is None:
            raise PydanticCustomError(
                "no_log_group", "name log_groups, a log_group_prefix, or both", {}
            )
        if self.log_group_prefix in self.log_groups:
            raise PydanticCustomError(
                "duplicate_entry",
                "{found} is both a log group and the prefix: the `log_group` label would repeat",
                {"found": self.log_group_prefix},
            )
        if not self.signals and not self.patterns:
            raise PydanticCustomError(
                "no_pattern", "list signals, patterns, or both: there is nothing to count", {}
            )
        if not 0 <= self.ingestion_lag <= 3600:
            raise PydanticCustomError(
                "ingestion_lag", "ingestion_lag must be between 0s and 1h", {}
            )
        if not 2 * self.interval <= self.max_catch_up <= 86400:
            raise PydanticCustomError(
                "max_catch_up",
                "max_catch_up {found} must be at least twice the interval ({least}) and at "
                "most 1d: a window older than it is skipped",
                {
                    "found": format_duration(self.max_catch_up),
                    "least": format_duration(2 * self.interval),
                },
            )
        return self

    def entries(self) -> tuple[str, ...]:
        """The `log_group` label values: each name, and the prefix."""
        prefix = () if self.log_group_prefix is None else (self.log_group_prefix,)
        return (*self.log_groups, *prefix)

    def all_patterns(self) -> tuple[tuple[str, str], ...]:
        """(name, filter pattern): the signals in their built-in order, then the custom ones."""
        chosen = [(name, SIGNALS[name]) for name in SIGNALS if name in self.signals]
        return (*chosen, *self.patterns.items())

    def describe(self) -> str:
        return f"logs {', '.join(self.shown(e) for e in self.entries())}: " + ", ".join(
            name for name, _ in self.all_patterns()
        )

    def shown(self, entry: str) -> str:
        """An entry as the verdict names it: the prefix with a `*`."""
        return f"{entry}*" if entry == self.log_group_prefix else entry


def _check_group(name: str) -> None:
    if not _LOG_GROUP.fullmatch(name):
        raise PydanticCustomError(
            "log_group",
            "{found} is not a log group name: 1-512 letters, digits and . - _ / #",
            {"found": repr(name)[:80]},
        )


_G = ("log_group",)
_GP = ("log_group", "pattern")
MATCHES = MetricSpec(
    "stackprobe_logs_pattern_matches",
    "Log events matching the pattern, timestamped since this target started counting "
    "(stackprobe_logs_counted_since_timestamp_seconds); read ingestion_lag behind.",
    _GP,
    type="counter",
)
LAST_MATCH = MetricSpec(
    "stackprobe_logs_pattern_last_match_timestamp_seconds",
    "Unix time of the newest event seen matching the pattern, catch-up included; absent "
    "until one matches.",
    _GP,
)
CATCH_UP = MetricSpec(
    "stackprobe_logs_catch_up_matches",
    "Matches in the max_catch_up before counting began (the time a restart was down, at "
    "most), read once and never added to the counter: a previous process may have counted "
    "them.",
    _GP,
)
WINDOW_END = MetricSpec(
    "stackprobe_logs_window_end_timestamp_seconds",
    "Unix time up to which every pattern has been read in the log group: events before it "
    "are counted (or were skipped, and said so).",
    _G,
)
COUNTED_SINCE = MetricSpec(
    "stackprobe_logs_counted_since_timestamp_seconds",
    "Unix time this target started counting (its first run since the process started or its "
    "config changed): the counter holds events from then on.",
    _G,
)
TRUNCATED = MetricSpec(
    "stackprobe_logs_truncated_runs",
    "Runs that left part of a window unread: the deadline or the page cap (resumed by the "
    "next run), or a backlog older than max_catch_up (skipped).",
    _G,
    type="counter",
)
METRICS = (MATCHES, LAST_MATCH, CATCH_UP, WINDOW_END, COUNTED_SINCE, TRUNCATED)


@dataclass
class _Window:
    """One pattern's read of one `log_group` entry: [start, end) in ms, and for each log
    group still to read, the nextToken to resume from (None: not begun)."""

    start: int
    end: int
    left: dict[str, str | None]
    catch_up: bool  # before counting began: into the catch-up gauge, not the counter


@dataclass
class _Cursor:
    """Where one (entry, pattern) stands, and what it counted."""

    counted_to: int  # ms: every event before it was read, or skipped and said so
    window: _Window | None = None
    total: int = 0
    catch_up: int = 0
    newest: int | None = None  # ms


class LogsState(AwsState):
    """AwsState, plus each (entry, pattern)'s cursor and counts. `clock` is the wall clock
    in seconds, replaceable by tests."""

    def __init__(self, target: AwsTarget | None = None) -> None:
        super().__init__(target)
        self.clock = time.time
        self.started: int | None = None  # ms: the first run's wall clock
        self.cursors: dict[tuple[str, str], _Cursor] = {}
        self.truncated: Counter[str] = Counter()
        # the last VERDICT_RUNS runs: where each began reading (ms), and what it counted
        self.recent: deque[tuple[int, Counter[tuple[str, str]]]] = deque(maxlen=VERDICT_RUNS)

    async def aclose(self) -> None:
        await super().aclose()
        self.cursors.clear()


@dataclass
class _Run:
    """What one run read: counts and windows per (entry, pattern), and what it left."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    carried: int = 0  # queries left for the next run
    reasons: set[str] = field(default_factory=set)  # why: "deadline", "page cap"
    skipped: dict[str, int] = field(default_factory=dict)  # entry -> ms given up
    truncated: set[str] = field(default_factory=set)  # entries
    out_of_time: bool = False
    delays: dict[str, int] = field(default_factory=dict)  # entry -> ms, the largest seen


class _Read(NamedTuple):
    """One query's pages: matches, the newest one's time (ms), how many pages, the nextToken
    to resume from when they were not read to the end (None: all read), and the longest a
    match took from its timestamp to CloudWatch (ms)."""

    matches: int
    newest: int | None
    pages: int
    rest: str | None
    delay: int | None


async def probe(target: LogsTarget, ctx: ProbeContext) -> ProbeResult:
    return await measured(ctx, lambda: _measure(target, ctx))


def _time_left(ctx: ProbeContext) -> float:
    """Seconds the run has left (a seam for the tests, which cannot wait on a real clock)."""
    return ctx.remaining()


def _may_start(target: LogsTarget, ctx: ProbeContext) -> bool:
    """Whether one more query fits in the run: a page can take seconds."""
    return _time_left(ctx) > max(RESERVE_MIN, RESERVE_SHARE * target.timeout)


async def _measure(target: LogsTarget, ctx: ProbeContext) -> ProbeResult:
    state = ctx.state if isinstance(ctx.state, LogsState) else LogsState()
    now = int(state.clock() * 1000)
    if state.started is None:
        state.started = now
    groups, notes = await _log_groups(target, ctx)
    # the window closes ingestion_lag back: what is logged later than that after its own
    # timestamp is not seen (docs/configuration.md, `ingestion_lag`)
    until = now - round(target.ingestion_lag * 1000)
    run = _Run()
    for name, pattern in target.all_patterns():
        for entry in target.entries():
            cursor = state.cursors.setdefault(
                (entry, name),
                _Cursor(state.started - round(target.max_catch_up * 1000)),
            )
            pair = (entry, name, pattern)
            await _advance(target, ctx, state, run, cursor, until, pair, groups[entry])
    for entry in run.truncated:
        state.truncated[entry] += 1
    return _result(target, state, run, now, notes)


async def _advance(
    target: LogsTarget,
    ctx: ProbeContext,
    state: LogsState,
    run: _Run,
    cursor: _Cursor,
    until: int,
    pair: tuple[str, str, str],
    groups: Sequence[str],
) -> None:
    """Read what this run may of one (entry, pattern) up to `until` (ms): the open window
    first, else a new one from where the last ended."""
    assert state.started is not None
    entry, name, pattern = pair
    cap = round(target.max_catch_up * 1000)
    window = cursor.window
    if window is not None and window.end < until - cap:  # too far behind: give the rest up
        run.skipped[entry] = run.skipped.get(entry, 0) + (window.end - window.start)
        run.truncated.add(entry)
        cursor.counted_to, cursor.window, window = window.end, None, None
    if window is None:
        start = max(cursor.counted_to, until - cap)
        if start > cursor.counted_to:
            run.skipped[entry] = run.skipped.get(entry, 0) + (start - cursor.counted_to)
            run.truncated.add(entry)
            cursor.counted_to = start
        # a window never straddles the first run: what is before it is catch-up
        end = until if start >= state.started else min(until, state.started)
        if end <= start:
            return
        window = cursor.window = _Window(
            start, end, {group: None for group in groups}, start < state.started
        )
    else:  # a prefix may no longer name a group it named
        window.left = {g: token for g, token in window.left.items() if g in groups}
    for group in sorted(window.left):
        if run.out_of_time or not _may_start(target, ctx):
            run.out_of_time = True
            run.reasons.add("deadline")
            run.carried += 1
            run.truncated.add(entry)
            continue
        read = await _count(target, ctx, group, pattern, window, window.left[group])
        run.counts[(entry, name)] += read.matches
        run.windows[(entry, name)] = window
        if window.catch_up:
            cursor.catch_up += read.matches
        else:
            cursor.total += read.matches
        if read.newest is not None and (cursor.newest is None or read.newest > cursor.newest):
            cursor.newest = read.newest
        if read.delay is not None:
            run.delays[entry] = max(read.delay, run.delays.get(entry, 0))
        if read.rest is None:
            del window.left[group]
        else:  # stopped at the page cap or for the run's time: resumed from here next run
            window.left[group] = read.rest
            run.carried += 1
            run.reasons.add("page cap" if read.pages >= MAX_PAGES else "deadline")
            run.truncated.add(entry)
    if not window.left:
        cursor.counted_to, cursor.window = window.end, None


_Page = tuple[int, int | None, str | None, int | None]


def _tally(page: dict[str, Any]) -> _Page:
    """A page as (events, newest timestamp, nextToken, longest ingestion delay), in the
    thread that read it: the messages go no further."""
    events = page.get("events", ())
    newest = max((int(e["timestamp"]) for e in events), default=None)
    delay = max(
        (int(e["ingestionTime"]) - int(e["timestamp"]) for e in events if "ingestionTime" in e),
        default=None,
    )
    return len(events), newest, page.get("nextToken"), delay


async def _count(
    target: LogsTarget,
    ctx: ProbeContext,
    group: str,
    pattern: str,
    window: _Window,
    token: str | None,
) -> _Read:
    """Matches of one pattern in one log group's window, from `token` when resuming."""
    params: dict[str, Any] = {
        "logGroupName": group,
        "startTime": window.start,
        "endTime": window.end - 1,  # FilterLogEvents' endTime is inclusive
        "filterPattern": pattern,
        "limit": PAGE_EVENTS,
    }
    if target.stream_prefix is not None:
        params["logStreamNamePrefix"] = target.stream_prefix
    if token:
        params["nextToken"] = token
    pages: list[_Page] = await ctx.use(AWS).pages(
        target,
        "logs",
        "filter_log_events",
        ctx.deadline,
        max_pages=MAX_PAGES,
        keep=_tally,
        **params,
    )
    newest = max((p[1] for p in pages if p[1] is not None), default=None)
    # pages() stops after MAX_PAGES or 80 % of the run's time; the last page then has a token
    rest = pages[-1][2] if pages else (token or "")
    delay = max((p[3] for p in pages if p[3] is not None), default=None)
    return _Read(sum(p[0] for p in pages), newest, len(pages), rest, delay)


async def _log_groups(
    target: LogsTarget, ctx: ProbeContext
) -> tuple[dict[str, list[str]], list[str]]:
    """entry -> the log groups it reads; and what to say of a prefix that names too many."""
    found: dict[str, list[str]] = {name: [name] for name in target.log_groups}
    notes: list[str] = []
    prefix = target.log_group_prefix
    if prefix is None:
        return found, notes
    pages = await ctx.use(AWS).pages(
        target,
        "logs",
        "describe_log_groups",
        ctx.deadline,
        max_pages=1,
        keep=lambda page: (
            [g["logGroupName"] for g in page.get("logGroups", ())],
            bool(page.get("nextToken")),
        ),
        logGroupNamePrefix=prefix,
        limit=MAX_LOG_GROUPS,
    )
    names, more = pages[0] if pages else ([], False)
    found[prefix] = [n for n in names if n not in target.log_groups]
    if not found[prefix]:
        raise AwsCallError(
            AwsProblem.NOT_FOUND,
            "DescribeLogGroups",
            f"no log group's name starts with {prefix}"
            + (" but those listed in log_groups" if names else ""),
        )
    if more:
        notes.append(
            f"more than {MAX_LOG_GROUPS} log groups start with {prefix}: the first "
            f"{MAX_LOG_GROUPS} by name are read"
        )
    return found, notes


def _result(
    target: LogsTarget, state: LogsState, run: _Run, now: int, notes: list[str]
) -> ProbeResult:
    assert state.started is not None
    patterns = [name for name, _ in target.all_patterns()]
    samples: list[Sample] = []
    for entry in target.entries():
        cursors = [state.cursors[(entry, name)] for name in patterns]
        for name, cursor in zip(patterns, cursors, strict=True):
            samples.append(MATCHES(cursor.total, entry, name))
            samples.append(CATCH_UP(cursor.catch_up, entry, name))
            if cursor.newest is not None:
                samples.append(LAST_MATCH(cursor.newest / 1000, entry, name))
        samples.append(WINDOW_END(min(c.counted_to for c in cursors) / 1000, entry))
        samples.append(COUNTED_SINCE(state.started / 1000, entry))
        samples.append(TRUNCATED(state.truncated[entry], entry))

    counted = [w.start for w in run.windows.values() if not w.catch_up]
    if counted:
        kept = Counter({k: n for k, n in run.counts.items() if not run.windows[k].catch_up})
        state.recent.append((min(counted), kept))
    findings: list[Finding] = []
    for name in patterns:
        for entry in target.entries():
            where = target.shown(entry)
            window = run.windows.get((entry, name))
            count = run.counts[(entry, name)]
            if window is not None and window.catch_up and count:
                span = _span(state.started - window.start)
                seen = f"{count} `{name}` in {where} in the {span} before counting began"
                findings.append(Finding(Health.DEGRADED, seen))
            total = sum(counts[(entry, name)] for _, counts in state.recent)
            if total:
                since = min(start for start, _ in state.recent)
                seen = f"{total} `{name}` in {where} in the last {_span(now - since)}"
                findings.append(Finding(Health.DEGRADED, seen, SIGNAL_ALERTS.get(name, "")))

    said = _truncation(target, run) + notes
    read = [w.start for w in run.windows.values()]
    entries = target.entries()
    where = target.shown(entries[0]) if len(entries) == 1 else f"{len(entries)} log groups"
    plural = "" if len(patterns) == 1 else "s"
    if read:
        healthy = f"no match of {len(patterns)} pattern{plural} in {where} in the last "
        healthy += _span(now - min(read))
    else:
        ends = min(c.counted_to for c in state.cursors.values())
        healthy = f"nothing read this run; {where} counted up to {_span(now - ends)} ago"
    verdict, lines = judged(findings, "; ".join([healthy, *said]))
    if findings and said:
        verdict = replace(verdict, why=f"{verdict.why}; {'; '.join(said)}")
    return ProbeResult.ok(
        tuple(samples),
        verdict=verdict,
        evidence=(*_evidence(target, run), *lines),
    )


def _truncation(target: LogsTarget, run: _Run) -> list[str]:
    said = []
    if run.carried:
        why = " and ".join(sorted(run.reasons)) or "page cap"
        said.append(
            f"window truncated ({why}): {run.carried} "
            f"quer{'y' if run.carried == 1 else 'ies'} carried to the next run"
        )
    for entry, ms in run.skipped.items():
        said.append(
            f"skipped {_span(ms)} of {target.shown(entry)} older than max_catch_up "
            f"({format_duration(target.max_catch_up)})"
        )
    return said


def _evidence(target: LogsTarget, run: _Run) -> list[tuple[str, str]]:
    """The windows read and every pattern's count, per entry (the first EVIDENCE_ENTRIES
    of them, so a target's evidence stays short): never a message."""
    lines = []
    patterns = [name for name, _ in target.all_patterns()]
    entries = target.entries()
    if len(entries) > EVIDENCE_ENTRIES:
        lines.append(("log groups", f"the first {EVIDENCE_ENTRIES} of {len(entries)} below"))
    for entry in entries[:EVIDENCE_ENTRIES]:
        windows = [run.windows[(entry, n)] for n in patterns if (entry, n) in run.windows]
        where = target.shown(entry)
        if not windows:
            lines.append(("window", f"{where}: nothing read this run"))
            continue
        start, end = min(w.start for w in windows), max(w.end for w in windows)
        catch_up = " (catch-up, before counting began)" if any(w.catch_up for w in windows) else ""
        lines.append(("window", f"{where}: {_clock(start)} to {_clock(end)} UTC{catch_up}"))
        counts = ", ".join(f"{n} {run.counts[(entry, n)]}" for n in patterns)
        lines.append(("matches", f"{where}: {counts}"))
        if entry in run.delays:  # what the ingestion_lag must cover, as far as matches show it
            late = format_duration(max(0, round(run.delays[entry] / 1000)))
            lag = format_duration(target.ingestion_lag)
            said = f"{where}: matches reached CloudWatch up to {late} after their timestamp"
            lines.append(("ingestion", f"{said} (ingestion_lag {lag})"))
    return lines


def _span(ms: float) -> str:
    return format_duration(max(1, round(ms / 1000)))


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


# The ECS area: the log groups are the ECS services' own (the awslogs driver's /ecs/...), and
# what they say (a dead Redis pool, an exhausted DB pool, errors after a deploy) is about the
# service, so the on-call reads it beside the service's row. "CloudWatch metrics" is for
# metrics; the core has no area of its own for logs, and none is added for one kind.
KIND = ProbeKind(
    "logs",
    LogsTarget,
    probe,
    METRICS,
    Reason,
    "CloudWatch Logs: matches of named filter patterns per log group",
    state=LogsState,
    resources=(AWS,),
    area=Area.ECS,
)
