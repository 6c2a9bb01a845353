"""Redis probe: is Redis up, how fast does it answer, and how close is it to its limits.

A restarted or overloaded Redis leaves applications holding dead pooled connections
("transport closed") and failing their readiness checks; this probe shows the server's side
of it. Metric names follow redis_exporter's.

What it does differently from redis_exporter, on purpose:
- One connection per target, kept open between runs: redis_exporter opens one per scrape.
- Two commands per run, PING (timed) and one INFO for just the sections it reads; with
  `keys:` (job queues), one pipeline more for all of them.
- Its own small client on hiredis (probes/_resp.py), not redis-py: no retries, and every
  socket operation has the target's timeout (redis-py's defaults retry for about 4 s and wait
  forever on a frozen server, past any run's deadline), for a sixth of redis-py's memory.
- Connection errors are counted by reason in `stackprobe_redis_connection_errors_total`,
  never put in a label as raw text. A connection the server closed since the last run (a
  restart: the "transport closed" family) is counted, replaced, and the run retried once.

Beside the samples, each run gives the console a verdict with the thresholds of
alert_rules/redis.rules.yml, naming the alert that pages on it, and its evidence: the server's
version and role, how the connection was come by, the commands' durations, clients against
maxclients, memory and keys.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, field_validator

import stackprobe.probes._resp as _resp
from stackprobe.contract import (
    EVIDENCE_VALUE_MAX,
    Area,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
    Verdict,
)
from stackprobe.probes._kept import KeptConnection, one_line
from stackprobe.probes._tls import TLSConfig
from stackprobe.secrets import SecretRef, StrOrSecret, credential_free_url, reveal, unresolved
from stackprobe.target import TargetConfig

# The INFO sections read; one command either way. Older servers (before 7.0) take only one
# section per INFO, so for them the probe asks for everything, once per run all the same.
# `replication` is for the evidence: the role, which a failover changes under a kept connection.
INFO_SECTIONS = ("server", "clients", "memory", "stats", "replication", "keyspace")


class Reason(StrEnum):
    """Why a Redis probe failed; also the `reason` of stackprobe_redis_connection_errors."""

    CONNECTION_CLOSED = "connection_closed"  # the "transport closed" family: closed or reset
    CONNECTION_REFUSED = "connection_refused"
    TOO_MANY_CLIENTS = "too_many_clients"  # "max number of clients reached": maxclients
    TIMEOUT = "timeout"  # no connection or answer within the deadline (a frozen server)
    AUTH_FAILED = "auth_failed"  # wrong password, unknown ACL user, or no password sent
    TLS = "tls"
    DNS = "dns"
    LOADING = "loading"  # the server is loading its dataset and answers nothing else
    OTHER = "other"


# The verdict's thresholds: those of alert_rules/redis.rules.yml, so console and pager agree.
TOO_MANY_CLIENTS = 0.9  # RedisTooManyClients: redis_connected_clients / maxclients > 0.9
CONNECTION_ERRORS = 3  # RedisConnectionErrors: increase(...[5m]) >= 3
CONNECTION_ERRORS_SECONDS = 300.0  # RedisConnectionErrors: the [5m] of its increase()
DOWN_SECONDS = 60.0  # RedisDown: its `for: 1m`
# RedisConnectionErrors: the reasons it counts.
CONNECTION_ERROR_REASONS = (Reason.CONNECTION_CLOSED, Reason.TIMEOUT)
# StackprobeCannotMeasure: failures of stackprobe's own access; RedisDown pages on the rest.
CANNOT_MEASURE = frozenset({"auth_failed", "tls", "dns", "other"})
# The key types `keys:` measures, and the command that counts each one's items: the shapes of
# Celery and RQ queues (lists), BullMQ's (lists and sorted sets), Redis Streams and sets.
KEY_LENGTHS = {"list": "LLEN", "zset": "ZCARD", "stream": "XLEN", "set": "SCARD"}
KEYS_MAX = 100  # `keys:` entries: redis_key_size is one series each


class RedisTarget(TargetConfig):
    kind: Literal["redis"] = "redis"
    url: StrOrSecret
    username: str | None = None
    password: SecretRef | None = None
    tls: TLSConfig = TLSConfig()
    # Keys whose length to export (job queues: `celery`, `rq:queue:default`,
    # `bull:emails:wait`), in the URL's database; one pipeline for all of them per run.
    keys: tuple[str, ...] = Field(default=(), max_length=KEYS_MAX)
    # The server's maxclients, for one whose INFO leaves it out and whose CONFIG is blocked
    # (ElastiCache before Redis 7): RedisTooManyClients needs it.
    maxclients: int | None = Field(default=None, ge=1)

    @field_validator("keys")
    @classmethod
    def _each_key_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        twice = sorted({key for key in value if value.count(key) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} listed twice; list each key once")
        if any(not key for key in value):
            raise ValueError("an empty key; give each key's full name, e.g. celery")
        return value

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | SecretRef) -> str | SecretRef:
        checked = credential_free_url(
            value,
            "url",
            ("redis://", "rediss://"),
            "redis:// or rediss://, e.g. redis://cache:6379/0",
            carries=frozenset({"username", "password"}),
            fix="the URL carries credentials; give them as username: NAME and password: "
            "{from_env: VARIABLE}, or give the whole url as {from_env: VARIABLE}",
        )
        if not unresolved(checked):
            _resp.parse_url(reveal(checked))  # InvalidURL, a ValueError, never repeats it
        return checked

    def describe(self) -> str:
        if isinstance(self.url, SecretRef):
            return f"redis <url from {self.url.source()}>"
        return f"redis {self.url}"


REDIS_UP = MetricSpec("redis_up", "1 if the probe could PING and read INFO, else 0.")
REDIS_PING_SECONDS = MetricSpec(
    "stackprobe_redis_ping_duration_seconds", "Seconds the PING took, round trip."
)
REDIS_CONNECTED_CLIENTS = MetricSpec("redis_connected_clients", "INFO connected_clients.")
REDIS_BLOCKED_CLIENTS = MetricSpec("redis_blocked_clients", "INFO blocked_clients.")
REDIS_MAXCLIENTS = MetricSpec("redis_config_maxclients", "The server's maxclients.")
REDIS_REJECTED = MetricSpec(
    "redis_rejected_connections",
    "Connections the server refused because of maxclients, since it started.",
    type="counter",
)
REDIS_MEMORY_USED = MetricSpec("redis_memory_used_bytes", "INFO used_memory.")
REDIS_MEMORY_MAX = MetricSpec("redis_memory_max_bytes", "INFO maxmemory; 0 means no limit.")
REDIS_EVICTED = MetricSpec(
    "redis_evicted_keys", "Keys evicted because of maxmemory, since start.", type="counter"
)
REDIS_HITS = MetricSpec("redis_keyspace_hits", "Successful key lookups.", type="counter")
REDIS_MISSES = MetricSpec("redis_keyspace_misses", "Failed key lookups.", type="counter")
REDIS_DB_KEYS = MetricSpec("redis_db_keys", "Keys per database (db0 always present).", ("db",))
REDIS_UPTIME = MetricSpec("redis_uptime_in_seconds", "Seconds since the server started.")
REDIS_INSTANCE_INFO = MetricSpec(
    "redis_instance_info",
    "1, labelled with the server's role (master or slave), version and mode.",
    ("role", "redis_version", "redis_mode"),
)
REDIS_CONNECTED_SLAVES = MetricSpec(
    "redis_connected_slaves", "INFO connected_slaves: replicas attached to this server."
)
REDIS_MASTER_REPL_OFFSET = MetricSpec(
    "redis_master_repl_offset",
    "INFO master_repl_offset: the replication stream's position, in bytes, on this server.",
)
REDIS_SLAVE_OFFSET = MetricSpec(
    "redis_connected_slave_offset_bytes",
    "Each attached replica's position in the replication stream, as it last acknowledged it.",
    ("slave_ip", "slave_port", "slave_state"),
)
REDIS_SLAVE_LAG = MetricSpec(
    "redis_connected_slave_lag_seconds",
    "Seconds since each attached replica last acknowledged (a healthy one does every second).",
    ("slave_ip", "slave_port", "slave_state"),
)
REDIS_MASTER_LINK_UP = MetricSpec(
    "redis_master_link_up",
    "On a replica, 1 if its link to its master is up (master_link_status), else 0.",
    ("master_host", "master_port"),
)
REDIS_MASTER_LAST_IO = MetricSpec(
    "redis_master_last_io_seconds_ago",
    "On a replica, seconds since it last heard from its master; -1 while the link is down.",
    ("master_host", "master_port"),
)
REDIS_MASTER_SYNC = MetricSpec(
    "redis_master_sync_in_progress",
    "On a replica, 1 while it loads a full copy of its master's dataset.",
    ("master_host", "master_port"),
)
REDIS_SLAVE_REPL_OFFSET = MetricSpec(
    "redis_slave_repl_offset",
    "On a replica, its position in its master's replication stream.",
    ("master_host", "master_port"),
)
REDIS_CONNECTION_ERRORS = MetricSpec(
    "stackprobe_redis_connection_errors",
    "Connection errors the probe met, by reason, since stackprobe started.",
    ("reason",),
    type="counter",
)
REDIS_KEY_SIZE = MetricSpec(
    "redis_key_size",
    "Items in each key `keys:` lists (LLEN, ZCARD, XLEN or SCARD by its type); 0 when the key "
    "does not exist, as an emptied Celery or RQ queue is deleted.",
    ("db", "key"),
)
REDIS_CONNECTS = MetricSpec(
    "stackprobe_redis_connects",
    "Connections the probe has opened (one per target, again after errors).",
    type="counter",
)

METRICS = (
    REDIS_UP,
    REDIS_PING_SECONDS,
    REDIS_CONNECTED_CLIENTS,
    REDIS_BLOCKED_CLIENTS,
    REDIS_MAXCLIENTS,
    REDIS_REJECTED,
    REDIS_MEMORY_USED,
    REDIS_MEMORY_MAX,
    REDIS_EVICTED,
    REDIS_HITS,
    REDIS_MISSES,
    REDIS_DB_KEYS,
    REDIS_UPTIME,
    REDIS_KEY_SIZE,
    REDIS_INSTANCE_INFO,
    REDIS_CONNECTED_SLAVES,
    REDIS_MASTER_REPL_OFFSET,
    REDIS_SLAVE_OFFSET,
    REDIS_SLAVE_LAG,
    REDIS_MASTER_LINK_UP,
    REDIS_MASTER_LAST_IO,
    REDIS_MASTER_SYNC,
    REDIS_SLAVE_REPL_OFFSET,
    REDIS_CONNECTION_ERRORS,
    REDIS_CONNECTS,
)


class RedisState(KeptConnection[_resp.Connection, Reason]):
    """The target's kept connection, and what it learnt of the server."""

    def __init__(self, target: RedisTarget) -> None:
        super().__init__()
        self.multi_section_info = True
        self.maxclients: int | None = None
        self.client_name: str | None = "stackprobe"  # dropped if the ACL forbids SETNAME
        self.idle_timeout = 0.0  # the server's `timeout`, when the probe may read it
        self.described = ("target", target.describe())
        self.info_seconds = 0.0
        self.keys_seconds = 0.0
        self.key_types: dict[str, str] = {}  # what each of `keys:` was last run
        self.db = 0  # the URL's database, which `keys:` are read in

    async def close(self, connection: _resp.Connection, graceful: bool) -> None:
        # The same either way: Redis has no goodbye, closing the client only closes its socket.
        await connection.aclose()


async def probe(target: RedisTarget, ctx: ProbeContext) -> ProbeResult:
    state: RedisState = ctx.state
    return await state.run(
        target,
        ctx,
        lambda: _cycle(target, state),
        ok=lambda result: _ok(target, state, *result),
        failed=lambda reason, detail: _failed(state, reason, detail),
        classify=classify,
        detail=lambda reason, exc: _detail(reason, exc, target),
    )


async def _cycle(
    target: RedisTarget, state: RedisState
) -> tuple[float, dict[str, Any], dict[str, int | str]]:
    """PING and INFO on the kept connection or a new one; a kept one the server closed counts
    by its reason, unless the server's own idle timeout closed it."""
    return await state.use(
        lambda: _client(target, state),
        lambda client: _commands(client, state, target.keys),
        closed=_closed,
        counted=lambda exc: None if _idle_timed_out(state) else classify(exc),
    )


def _closed(exc: BaseException) -> bool:
    """A connection error, not the server refusing the probe (a password, loading: replies)."""
    return isinstance(exc, _resp.RedisConnectionError | ConnectionError)


def _idle_timed_out(state: RedisState) -> bool:
    """Whether the server's own idle timeout explains a closed connection: that is expected,
    not an error. Otherwise it was a restart, a proxy, the network."""
    idle = asyncio.get_running_loop().time() - state.last_used
    return 0 < state.idle_timeout <= idle


async def _client(target: RedisTarget, state: RedisState) -> _resp.Connection:
    """The kept connection, or a new one: authenticated, named (unless the ACL forbids it),
    in the URL's database, within the target's timeout, and never retried here."""
    if state.connection is not None:
        return state.connection
    address = _resp.parse_url(reveal(target.url))
    connection = await _resp.connect(
        address,
        seconds=target.timeout,
        tls=target.tls.ssl_context() if address.tls else None,
        server_hostname=target.tls.server_name,
        username=target.username,
        password=target.password.get() if target.password else None,
        client_name=state.client_name,
    )
    state.client_name = connection.client_name  # None once the ACL has refused SETNAME
    state.adopt(connection)
    state.db = address.db
    try:  # asked once per connection; an ACL without +config simply leaves it unknown
        timeout = _resp.config_pairs(await connection.execute("CONFIG", "GET", "timeout"))
        state.idle_timeout = float(timeout.get("timeout") or 0)
    except (_resp.ResponseError, ValueError):
        state.idle_timeout = 0.0
    return connection


async def _commands(
    connection: _resp.Connection, state: RedisState, keys: tuple[str, ...]
) -> tuple[float, dict[str, Any], dict[str, int | str]]:
    started = time.perf_counter()
    await connection.execute("PING")
    ping = time.perf_counter() - started
    started += ping
    if state.multi_section_info:
        try:
            reply = await connection.execute("INFO", *INFO_SECTIONS)
        except _resp.ResponseError:  # before Redis 7.0: one section per INFO
            state.multi_section_info = False
            reply = await connection.execute("INFO", "everything")
    else:
        reply = await connection.execute("INFO", "everything")
    info = _resp.parse_info(reply)
    if "maxclients" not in info and state.maxclients is None:
        try:  # older servers leave maxclients out of INFO; asked once per connection
            config = _resp.config_pairs(await connection.execute("CONFIG", "GET", "maxclients"))
            state.maxclients = int(config["maxclients"] or -1)
        except (_resp.ResponseError, KeyError, ValueError):
            state.maxclients = -1
    state.info_seconds = time.perf_counter() - started
    sizes = await _key_sizes(connection, keys, state.key_types) if keys else {}
    state.keys_seconds = time.perf_counter() - started - state.info_seconds
    return ping, info, sizes


async def _key_sizes(
    connection: _resp.Connection, keys: tuple[str, ...], types: dict[str, str]
) -> dict[str, int | str]:
    """Each key's length, in one round trip on the kept connection: TYPE, and the length
    command of the type the key had last run (LLEN at first: queues are lists most often;
    none for a key last seen as a string or a hash). Only a key whose type changed takes a
    second round trip, so the server logs no WRONGTYPE run after run. A key that does not
    exist is 0. A key of another type, or one the ACL keeps from stackprobe, says why
    instead, and the run goes on: the server's own health is still measured."""
    asked = {key: KEY_LENGTHS.get(types.get(key, "list")) for key in keys}
    commands = [("TYPE", key) for key in keys]
    commands += [(length, key) for key, length in asked.items() if length]
    replies = await connection.pipeline(commands)
    measured = [key for key, length in asked.items() if length]
    lengths = dict(zip(measured, replies[len(keys) :], strict=True))
    sizes: dict[str, int | str] = {}
    again: list[str] = []
    for key, answer in zip(keys, replies[: len(keys)], strict=True):
        if isinstance(answer, Exception):
            sizes[key] = one_line(answer)
            continue
        kind = answer.decode() if isinstance(answer, bytes) else str(answer)
        length: Any = lengths.get(key)
        if kind == "none":
            sizes[key] = 0
        elif kind not in KEY_LENGTHS:
            types[key] = kind
            sizes[key] = f"a {kind}, not a list, set, sorted set or stream"
        elif KEY_LENGTHS[kind] == asked[key] and not isinstance(length, Exception):
            sizes[key] = int(length)
        else:
            types[key] = kind
            again.append(key)
    if again:
        replies = await connection.pipeline([(KEY_LENGTHS[types[key]], key) for key in again])
        for key, reply in zip(again, replies, strict=True):
            sizes[key] = one_line(reply) if isinstance(reply, Exception) else int(reply)
    return {key: sizes[key] for key in keys}


def _ok(
    target: RedisTarget,
    state: RedisState,
    ping: float,
    info: dict[str, Any],
    sizes: dict[str, int | str],
) -> ProbeResult:
    """The samples, the verdict of RedisTooManyClients, RedisConnectionErrors and
    RedisReplicaLinkDown, and the evidence: what the server says it is, its clients, its
    replication and keys."""
    maxclients = info.get("maxclients", state.maxclients)
    configured = (maxclients is None or maxclients < 0) and target.maxclients is not None
    if configured:
        maxclients = target.maxclients
    clients = info.get("connected_clients", 0)
    samples = [
        REDIS_UP(1),
        REDIS_PING_SECONDS(ping),
        REDIS_CONNECTED_CLIENTS(clients),
        REDIS_BLOCKED_CLIENTS(info.get("blocked_clients", 0)),
        REDIS_REJECTED(info.get("rejected_connections", 0)),
        REDIS_MEMORY_USED(info.get("used_memory", 0)),
        REDIS_MEMORY_MAX(info.get("maxmemory", 0)),
        REDIS_EVICTED(info.get("evicted_keys", 0)),
        REDIS_HITS(info.get("keyspace_hits", 0)),
        REDIS_MISSES(info.get("keyspace_misses", 0)),
        REDIS_UPTIME(info.get("uptime_in_seconds", 0)),
    ]
    limit: int = maxclients if maxclients is not None and maxclients > 0 else 0
    if maxclients is not None and maxclients >= 0:
        samples.append(REDIS_MAXCLIENTS(maxclients))
    keys = {"db0": 0, **{db: v.get("keys", 0) for db, v in info.items() if _is_db(db, v)}}
    samples.extend(REDIS_DB_KEYS(count, db) for db, count in keys.items())
    samples.extend(
        REDIS_KEY_SIZE(size, f"db{state.db}", key)
        for key, size in sizes.items()
        if isinstance(size, int)
    )
    samples += _state_samples(state)
    replication, link_down = _replication(info, samples)
    lengths = ", ".join(f"{k} {v}" for k, v in sizes.items() if isinstance(v, int))
    unread = "; ".join(f"{k}: {v}" for k, v in sizes.items() if isinstance(v, str))

    errors = state.errors_within(CONNECTION_ERROR_REASONS, CONNECTION_ERRORS_SECONDS)
    evidence = (
        state.described,
        ("server", f"Redis {info.get('redis_version', '?')}, role {info.get('role', '?')}"),
        state.via,
        ("commands", f"PING {ping * 1000:.1f} ms, INFO {state.info_seconds * 1000:.1f} ms"),
        (
            "clients",
            f"{clients} connected of maxclients {limit or 'unknown'}"
            f"{' (configured)' if configured else ''}, "
            f"{info.get('blocked_clients', 0)} blocked",
        ),
        ("memory", f"{info.get('used_memory_human', '?')} used, maxmemory {_maxmemory(info)}"),
        ("replication", replication),
        ("keys", ", ".join(f"{db} {count}" for db, count in keys.items())[:EVIDENCE_VALUE_MAX]),
        *(
            (("queues", f"{lengths} ({state.keys_seconds * 1000:.1f} ms)"[:EVIDENCE_VALUE_MAX]),)
            if lengths
            else ()
        ),
        *((("queues not read", unread[:EVIDENCE_VALUE_MAX]),) if unread else ()),
        *((("errors", f"{errors} closed or timed out in the last 5m"),) if errors else ()),
    )
    verdict = None
    if limit and clients > TOO_MANY_CLIENTS * limit:
        verdict = Verdict(
            Health.FAILING if clients >= limit else Health.DEGRADED,
            f"clients {clients * 100 // limit} % of maxclients ({clients} of {limit})",
            "RedisTooManyClients",
        )
    elif errors >= CONNECTION_ERRORS:
        verdict = Verdict(
            Health.DEGRADED,
            f"{errors} connections closed or timed out in the last 5m",
            "RedisConnectionErrors",
        )
    elif link_down:
        verdict = Verdict(Health.DEGRADED, link_down, "RedisReplicaLinkDown")
    elif unread:
        count = sum(1 for size in sizes.values() if isinstance(size, str))
        verdict = Verdict(Health.DEGRADED, f"{count} of `keys:` not read: {unread}")
    return ProbeResult.ok(tuple(samples), verdict=verdict, evidence=evidence)


def _replication(info: dict[str, Any], samples: list[Sample]) -> tuple[str, str]:
    """The role and replication figures of INFO under redis_exporter's names; the evidence
    line, and why the link to the master is down on a replica whose link is ("" if not)."""
    role = str(info.get("role", "unknown"))
    samples += [
        REDIS_INSTANCE_INFO(
            1, role, str(info.get("redis_version", "")), str(info.get("redis_mode", ""))
        ),
        REDIS_CONNECTED_SLAVES(info.get("connected_slaves", 0)),
        REDIS_MASTER_REPL_OFFSET(info.get("master_repl_offset", 0)),
    ]
    offset = info.get("master_repl_offset", 0)
    replicas = []
    for name, value in info.items():
        # slave0:ip=...,port=...,state=online,offset=...,lag=0, which redis-py parses
        if name.startswith("slave") and name[5:].isdigit() and isinstance(value, dict):
            ip, port, state = str(value.get("ip")), str(value.get("port")), str(value.get("state"))
            samples.append(REDIS_SLAVE_OFFSET(value.get("offset", 0), ip, port, state))
            if "lag" in value:  # Redis 3.0+
                samples.append(REDIS_SLAVE_LAG(value["lag"], ip, port, state))
            behind = max(0, offset - int(value.get("offset", 0)))
            replicas.append(f"{ip}:{port} {state}, {behind} bytes behind")
    if role != "slave":
        line = f"{role}, {len(replicas)} replicas" + (
            f": {'; '.join(replicas)}" if replicas else ""
        )
        return line[:EVIDENCE_VALUE_MAX], ""
    master = (str(info.get("master_host", "")), str(info.get("master_port", "")))
    up = info.get("master_link_status") == "up"
    samples += [
        REDIS_MASTER_LINK_UP(1 if up else 0, *master),
        REDIS_MASTER_LAST_IO(info.get("master_last_io_seconds_ago", -1), *master),
        REDIS_MASTER_SYNC(info.get("master_sync_in_progress", 0), *master),
        REDIS_SLAVE_REPL_OFFSET(info.get("slave_repl_offset", 0), *master),
    ]
    where = f"replica of {master[0]}:{master[1]}"
    if up:
        return f"{where}, link up", ""
    down = info.get("master_link_down_since_seconds", -1)
    # -1: it has not been up since the replica started
    since = f"down for {down}s" if isinstance(down, int) and down >= 0 else "not up since start"
    syncing = ", loading a full copy" if info.get("master_sync_in_progress") else ""
    return f"{where}, link {since}{syncing}", f"{where}: link {since}{syncing}"


def _maxmemory(info: dict[str, Any]) -> str:
    return str(info.get("maxmemory_human", "?")) if info.get("maxmemory") else "none"


def _is_db(name: str, value: Any) -> bool:
    return name.startswith("db") and name[2:].isdigit() and isinstance(value, dict)


def _state_samples(state: RedisState) -> list[Sample]:
    """Every reason is present from the start, so rate() sees the first error too."""
    return [
        *(REDIS_CONNECTION_ERRORS(state.errors[r], r.value) for r in Reason),
        REDIS_CONNECTS(state.connects),
    ]


def _failed(state: RedisState, reason: StrEnum, detail: str) -> ProbeResult:
    """RedisDown pages for a server that refuses, is full, closes or does not answer for its
    `for:` of a minute; StackprobeCannotMeasure for stackprobe's own access (its login, TLS,
    DNS). A closed connection or a timeout between runs that worked is a server dropping
    clients (RedisConnectionErrors), degraded, until it has not answered for that minute."""
    verdict = Verdict(
        Health.FAILING,
        _why(reason, detail),
        "StackprobeCannotMeasure" if reason in CANNOT_MEASURE else "RedisDown",
    )
    since_ok = asyncio.get_running_loop().time() - state.last_used
    if reason in CONNECTION_ERROR_REASONS and state.last_used and since_ok < DOWN_SECONDS:
        errors = state.errors_within(CONNECTION_ERROR_REASONS, CONNECTION_ERRORS_SECONDS)
        verdict = Verdict(
            Health.DEGRADED,
            f"{verdict.why} ({errors} in the last 5m; it answered {since_ok:.0f}s ago)",
            "RedisConnectionErrors",
        )
    return ProbeResult.failed(
        reason,
        detail,
        (REDIS_UP(0), *_state_samples(state)),
        verdict=verdict,
        evidence=(state.described, state.via, ("error", detail[:EVIDENCE_VALUE_MAX])),
    )


def _why(reason: StrEnum, detail: str) -> str:
    """The failure in on-call words; the server's own message where it says it best."""
    message = detail.split(": ", 1)[-1]
    if reason == Reason.TOO_MANY_CLIENTS:
        return "max number of clients reached: maxclients is full"
    if reason == Reason.CONNECTION_REFUSED:
        return "connection refused: Redis is down or not listening"
    if reason == Reason.CONNECTION_CLOSED:
        return f"connection closed by the server or the network: {message}"
    if reason == Reason.LOADING:
        return "Redis is loading its dataset and answers nothing else"
    if reason == Reason.AUTH_FAILED:
        return f"stackprobe's own login is refused: {message}"
    if reason == Reason.TIMEOUT:
        return detail
    return message


def classify(exc: BaseException) -> Reason:
    """The client's errors say what the server replied; for a connection that failed or
    closed, the socket's own error (its cause) says which."""
    if isinstance(exc, _resp.AuthenticationError):
        return Reason.AUTH_FAILED
    if isinstance(exc, _resp.BusyLoadingError):
        return Reason.LOADING
    if isinstance(exc, _resp.MaxClientsError):
        return Reason.TOO_MANY_CLIENTS
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return Reason.TLS
        if isinstance(cause, socket.gaierror):
            return Reason.DNS
        if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(cause):
            return Reason.CONNECTION_REFUSED  # one address, or asyncio's "Multiple exceptions"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, _resp.RedisConnectionError | ConnectionError):
        return Reason.CONNECTION_CLOSED
    return Reason.OTHER


def _detail(reason: Reason, exc: BaseException, target: RedisTarget) -> str:
    if reason is Reason.TIMEOUT:
        return f"no connection or answer within {target.timeout:g}s"
    if isinstance(exc, ValueError) and not isinstance(exc, _resp.InvalidURL):
        # a parser's text may hold pieces of the URL, password included; ours never does
        return f"{type(exc).__name__}: the URL could not be used; check its escaping"
    return one_line(exc)


KIND = ProbeKind(
    "redis",
    RedisTarget,
    probe,
    METRICS,
    Reason,
    "Redis up, PING latency, clients, memory and connection errors",
    state=RedisState,
    area=Area.DATABASES,
)
