"""The redis probe against real redis-server processes that the tests kill, freeze and restart."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trustme

from stackprobe.contract import Health, ProbeResult, Verdict
from stackprobe.probes import KINDS
from stackprobe.probes.redis import Reason
from tests.support.datastores import RedisServer
from tests.support.polling import wait_until_async
from tests.support.probing import (
    ProbeRunner,
    checked_evidence,
    make_target,
    samples_by_name,
    verdict,
)
from tests.support.processes import free_port

PASSWORD = "CANARY-redis-4b8e2c"


@pytest.fixture
async def runner() -> AsyncIterator[Callable[..., ProbeRunner]]:
    """Runners that keep their state across runs, closed when the test ends."""
    async with AsyncExitStack() as stack:

        def make(url: str, password: str | None = None, **extra: Any) -> ProbeRunner:
            raw: dict[str, Any] = {
                "name": "cache",
                "kind": "redis",
                "url": url,
                "timeout": "1s",
                **extra,
            }
            if password is not None:
                raw["password"] = {"from_env": "REDIS_PASSWORD"}
            made = ProbeRunner(make_target(raw, {"REDIS_PASSWORD": password or ""}))
            stack.push_async_callback(made.aclose)
            return made

        yield make


@pytest.fixture
def server() -> Iterator[RedisServer]:
    running = RedisServer().start()
    yield running
    running.stop()


async def run_against(
    runner: Any, serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]
) -> ProbeResult:
    """One run against a server of the test's own (`serve`) on a free loopback port."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result: ProbeResult = await runner(f"redis://127.0.0.1:{port}/0").run()
        return result
    finally:
        server.close()


def errors(result: ProbeResult) -> dict[str, float]:
    found = samples_by_name(result)["stackprobe_redis_connection_errors"]
    return {labels[0]: value for labels, value in found.items() if value}


def stats(server: RedisServer, section: str) -> dict[str, str]:
    lines = server.cli("INFO", section).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))


async def test_healthy_server_exports_redis_exporter_names(
    server: RedisServer, runner: Any
) -> None:
    server.cli("SET", "a", "1")
    server.cli("-n", "3", "SET", "b", "2")
    server.cli("GET", "a")
    server.cli("GET", "missing")

    result = await runner(server.url(), keys=["celery"]).run()

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found["redis_up"] == {(): 1}
    assert found["redis_key_size"] == {("db0", "celery"): 0}
    assert found["redis_db_keys"] == {("db0",): 1, ("db3",): 1}
    # 10000 unless the open-file limit lowered it: the server's own figure either way
    assert found["redis_config_maxclients"] == {
        (): int(server.cli("CONFIG", "GET", "maxclients").split()[1])
    }
    assert found["redis_connected_clients"][()] >= 1
    assert found["redis_keyspace_hits"] == {(): 1} and found["redis_keyspace_misses"] == {(): 1}
    assert found["redis_memory_used_bytes"][()] > 0 and found["redis_uptime_in_seconds"][()] >= 0
    assert 0 < found["stackprobe_redis_ping_duration_seconds"][()] < 1
    assert set(found["stackprobe_redis_connection_errors"]) == {(r.value,) for r in Reason}
    # all but what a replica reports, and a master about replicas it has
    replicas = {
        "redis_connected_slave_offset_bytes",
        "redis_connected_slave_lag_seconds",
        "redis_master_link_up",
        "redis_master_last_io_seconds_ago",
        "redis_master_sync_in_progress",
        "redis_slave_repl_offset",
    }
    assert set(found) == {spec.name for spec in KINDS["redis"].metrics} - replicas
    assert found["redis_connected_slaves"] == {(): 0}


async def test_a_healthy_server_is_ok_with_its_evidence(server: RedisServer, runner: Any) -> None:
    server.cli("SET", "a", "1")
    server.cli("-n", "3", "SET", "b", "2")
    probe_runner = runner(server.url())

    first, second = await probe_runner.run(), await probe_runner.run()

    assert first.success and second.success, first.detail
    assert first.health() == second.health() == Verdict(Health.OK)
    shown, again = checked_evidence(first), checked_evidence(second)
    version = stats(server, "server")["redis_version"]
    maxclients = server.cli("CONFIG", "GET", "maxclients").split()[1]
    clients = int(samples_by_name(second)["redis_connected_clients"][()])
    assert shown["target"] == f"redis {server.url()}"
    assert shown["server"] == f"Redis {version}, role master"
    assert re.fullmatch(r"new: connected in \d+\.\d ms", shown["connection"])
    assert again["connection"] == "reused: kept from an earlier run"
    assert re.fullmatch(r"PING \d+\.\d ms, INFO \d+\.\d ms", again["commands"])
    assert again["clients"] == f"{clients} connected of maxclients {maxclients}, 0 blocked"
    assert re.fullmatch(r"\S+ used, maxmemory none", again["memory"])
    assert again["keys"] == "db0 1, db3 1"
    assert "errors" not in again


async def test_two_commands_and_no_new_connection_per_run(server: RedisServer, runner: Any) -> None:
    """The floor: PING and INFO each run, on the connection the first run opened."""
    probe_runner = runner(server.url())
    assert (await probe_runner.run()).success  # connects: HELLO-free, names itself
    before_cmds = stats(server, "commandstats")
    before_conns = int(stats(server, "stats")["total_connections_received"])

    results = [await probe_runner.run() for _ in range(3)]

    after_cmds = stats(server, "commandstats")
    after_conns = int(stats(server, "stats")["total_connections_received"])

    def calls(table: dict[str, str], command: str) -> int:
        return int(table.get(f"cmdstat_{command}", "calls=0").split(",")[0].split("=")[1])

    delta = {
        name.removeprefix("cmdstat_"): calls(after_cmds, name.removeprefix("cmdstat_"))
        - calls(before_cmds, name.removeprefix("cmdstat_"))
        for name in after_cmds
    }
    assert all(r.success for r in results)
    # Ours: 3 PING and 3 INFO. The test's own: the first INFO commandstats, counted in the
    # second snapshot, and one INFO stats before and after.
    assert {k: v for k, v in delta.items() if v} == {"ping": 3, "info": 3 + 2}
    assert after_conns - before_conns == 2  # the test's own redis-cli calls, none of ours
    assert samples_by_name(results[-1])["stackprobe_redis_connects"] == {(): 1}


async def test_killed_then_restarted(server: RedisServer, runner: Any) -> None:
    probe_runner = runner(server.url())
    assert (await probe_runner.run()).success
    server.kill()

    down = await probe_runner.run()
    server.start()
    await asyncio.sleep(1.1)  # past the first reconnect pause
    back = await probe_runner.run()

    assert (down.success, down.reason) == (False, Reason.CONNECTION_REFUSED), down.detail
    assert samples_by_name(down)["redis_up"] == {(): 0}
    assert verdict(down) == (
        Health.FAILING,
        "connection refused: Redis is down or not listening",
        "RedisDown",
    )
    assert checked_evidence(down)["connection"] == "new: the attempt failed"
    assert checked_evidence(down)["error"] == down.detail
    assert back.success, back.detail
    # The kept connection died with the server ("transport closed"), then connects were refused.
    assert errors(back) == {"connection_closed": 1, "connection_refused": 1}


async def test_restarted_between_runs_is_recovered_within_the_run(
    server: RedisServer, runner: Any
) -> None:
    probe_runner = runner(server.url())
    assert (await probe_runner.run()).success
    server.kill()
    server.start()

    result = await probe_runner.run()

    assert result.success, result.detail
    assert errors(result) == {"connection_closed": 1}
    assert samples_by_name(result)["stackprobe_redis_connects"] == {(): 2}
    assert verdict(result) == (Health.OK, "", "")  # one failover is no alert
    assert re.fullmatch(
        r"new, replacing the kept one the server closed: \d+\.\d ms",
        checked_evidence(result)["connection"],
    )
    assert checked_evidence(result)["errors"] == "1 closed or timed out in the last 5m"


async def test_a_server_that_keeps_closing_connections_degrades(
    server: RedisServer, runner: Any
) -> None:
    """RedisConnectionErrors: three connections closed within five minutes."""
    probe_runner = runner(server.url())
    assert (await probe_runner.run()).success
    results = []
    for _ in range(3):
        server.kill()
        server.start()
        results.append(await probe_runner.run())

    assert all(r.success for r in results), [r.detail for r in results]
    assert [verdict(r) for r in results[:2]] == [(Health.OK, "", "")] * 2
    assert verdict(results[2]) == (
        Health.DEGRADED,
        "3 connections closed or timed out in the last 5m",
        "RedisConnectionErrors",
    )


async def test_a_frozen_server_times_out_within_the_deadline(
    server: RedisServer, runner: Any
) -> None:
    probe_runner = runner(server.url())
    assert (await probe_runner.run()).success
    server.signal(signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        frozen = await probe_runner.run()
        took = loop.time() - started
        # as if it had not answered for RedisDown's minute: down now
        probe_runner.state.last_used = loop.time() - 61
        down = await probe_runner.run()
    finally:
        server.signal(signal.SIGCONT)
    await asyncio.sleep(1.1)
    thawed = await probe_runner.run()

    assert frozen.reason == Reason.TIMEOUT and took < 1.2, (frozen.detail, took)
    # a minute before RedisDown's `for:` is over, a timeout after an answer is a server
    # dropping clients, not yet a server down
    health, why, alert = verdict(frozen)
    assert (health, alert) == (Health.DEGRADED, "RedisConnectionErrors")
    assert re.fullmatch(
        r"no connection or answer within 1s \(1 in the last 5m; it answered [01]s ago\)", why
    ), why
    assert verdict(down)[::2] == (Health.FAILING, "RedisDown")
    assert verdict(down)[1].startswith("no connection or answer within 1s"), verdict(down)
    assert checked_evidence(frozen)["connection"] == "reused: kept from an earlier run"
    assert thawed.success, thawed.detail


async def test_passwords_and_acl_users(runner: Any) -> None:
    protected = RedisServer("--requirepass", PASSWORD).start()
    try:
        protected.cli(
            "ACL",
            "SETUSER",
            "probe",
            "on",
            f">{PASSWORD}",
            "+ping",
            "+info",
            "+client",
            password=PASSWORD,
        )
        right = await runner(protected.url(), PASSWORD).run()
        acl = await runner(protected.url(), PASSWORD, username="probe").run()
        protected.cli(
            "ACL", "SETUSER", "minimal", "on", f">{PASSWORD}", "+ping", "+info", password=PASSWORD
        )
        minimal = await runner(protected.url(), PASSWORD, username="minimal").run()
        wrong = await runner(protected.url(), "CANARY-wrong").run()
        missing = await runner(protected.url()).run()
    finally:
        protected.stop()

    assert right.success and acl.success, (right.detail, acl.detail)
    assert minimal.success, minimal.detail  # no +client|setname: it goes on unnamed
    assert (wrong.reason, missing.reason) == (Reason.AUTH_FAILED, Reason.AUTH_FAILED)
    for result in (right, acl, minimal, wrong, missing):
        checked_evidence(result)  # no canary anywhere
    for result in (wrong, missing):
        health, why, alert = verdict(result)
        assert (health, alert) == (Health.FAILING, "StackprobeCannotMeasure")
        assert why.startswith("stackprobe's own login is refused: "), why


async def test_a_url_given_as_a_secret_is_never_shown(runner: Any) -> None:
    protected = RedisServer("--requirepass", PASSWORD).start()
    try:
        results = []
        for password in (PASSWORD, "CANARY-wrong"):
            raw = {"name": "cache", "kind": "redis", "url": {"from_env": "URL"}, "timeout": "1s"}
            url = f"redis://:{password}@127.0.0.1:{protected.port}/0"
            async with ProbeRunner(make_target(raw, {"URL": url})) as probe_runner:
                results.append(await probe_runner.run())
    finally:
        protected.stop()

    right, wrong = results
    assert right.success, right.detail
    assert (
        checked_evidence(right)["target"]
        == checked_evidence(wrong)["target"]
        == "redis <url from env URL>"
    )
    assert verdict(wrong)[::2] == (Health.FAILING, "StackprobeCannotMeasure")


async def test_rediss_with_a_private_ca(runner: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = RedisServer(
        "--tls-port",
        str(free_port()),
        "--tls-cert-file",
        str(tmp_path / "cert.pem"),
        "--tls-key-file",
        str(tmp_path / "key.pem"),
        "--tls-ca-cert-file",
        str(tmp_path / "ca.pem"),
        "--tls-auth-clients",
        "no",
    ).start()
    try:
        trusted = await runner(tls.url("rediss"), tls={"ca_file": str(tmp_path / "ca.pem")}).run()
        untrusted = await runner(tls.url("rediss")).run()
    finally:
        tls.stop()

    assert trusted.success, trusted.detail
    assert untrusted.reason == Reason.TLS, untrusted.detail
    assert verdict(untrusted)[::2] == (Health.FAILING, "StackprobeCannotMeasure")


async def test_refused_from_the_start(runner: Any) -> None:
    probe_runner = runner(f"redis://127.0.0.1:{free_port()}/0")
    result = await probe_runner.run()
    paused = await probe_runner.run()  # within the reconnect pause: no attempt

    assert result.reason == Reason.CONNECTION_REFUSED
    assert errors(result) == {"connection_refused": 1}
    assert verdict(paused) == verdict(result)
    assert checked_evidence(paused)["connection"] == (
        "none: waiting out the reconnect pause after the last failure"
    )


async def test_maxclients_reached_is_too_many_clients(runner: Any) -> None:
    import socket as sockets

    full = RedisServer("--maxclients", "1").start()

    async def take_the_one_slot() -> sockets.socket | None:
        """Refused while the start-up check's own connection is still there."""
        holder = sockets.create_connection(("127.0.0.1", full.port))
        holder.sendall(b"PING\r\n")
        if holder.recv(64) == b"+PONG\r\n":
            return holder
        holder.close()
        return None

    try:
        holder = await wait_until_async(
            take_the_one_slot, 2.5, what="the server's one client slot", interval=0.05
        )
        with holder:
            result = await runner(full.url()).run()
    finally:
        full.stop()

    assert result.reason == Reason.TOO_MANY_CLIENTS, result.detail
    assert errors(result) == {"too_many_clients": 1}
    assert verdict(result) == (
        Health.FAILING,
        "max number of clients reached: maxclients is full",
        "RedisDown",
    )


async def test_clients_near_maxclients_degrade_then_fail(runner: Any) -> None:
    """RedisTooManyClients: over 90 % of maxclients connected, stackprobe's own included."""
    near_full = RedisServer("--maxclients", "20").start()
    holders: list[socket.socket] = []

    async def connected(expected: int) -> bool:
        """What the server counts, asked on a held connection: the start-up check's own
        connection may linger a moment."""
        holders[0].sendall(b"INFO clients\r\n")
        reply = holders[0].recv(4096).decode()
        found = re.search(r"connected_clients:(\d+)", reply)
        return found is not None and int(found.group(1)) == expected

    def hold() -> None:
        holder = socket.create_connection(("127.0.0.1", near_full.port))
        holder.sendall(b"PING\r\n")
        assert holder.recv(64) == b"+PONG\r\n"
        holders.append(holder)

    try:
        for _ in range(18):
            hold()
        await wait_until_async(lambda: connected(18), 2.5, what="18 clients", interval=0.05)
        probe_runner = runner(near_full.url())
        near = await probe_runner.run()  # 19 of 20
        hold()
        full = await probe_runner.run()  # 20 of 20
    finally:
        for holder in holders:
            holder.close()
        near_full.stop()

    assert verdict(near) == (
        Health.DEGRADED,
        "clients 95 % of maxclients (19 of 20)",
        "RedisTooManyClients",
    )
    assert checked_evidence(near)["clients"] == "19 connected of maxclients 20, 0 blocked"
    assert verdict(full) == (
        Health.FAILING,
        "clients 100 % of maxclients (20 of 20)",
        "RedisTooManyClients",
    )


async def test_a_server_loading_its_dataset_is_loading(runner: Any) -> None:
    """A peer answering every command as Redis does while it loads an RDB or AOF."""

    async def loading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1024):
            writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")
            await writer.drain()
        writer.close()

    result = await run_against(runner, loading)

    assert result.reason == Reason.LOADING, result.detail
    assert errors(result) == {"loading": 1}
    assert verdict(result) == (
        Health.FAILING,
        "Redis is loading its dataset and answers nothing else",
        "RedisDown",
    )


async def test_the_servers_own_idle_timeout_is_no_error(runner: Any) -> None:
    """With `timeout 1`, Redis closes the idle connection between runs; that is expected,
    so it is reconnected without counting a connection_closed."""
    idle = RedisServer("--timeout", "1").start()
    try:
        probe_runner = runner(idle.url())
        assert (await probe_runner.run()).success
        await asyncio.sleep(3)  # the server's cron closes idle clients within a couple of s
        result = await probe_runner.run()
    finally:
        idle.stop()

    assert result.success, result.detail
    assert errors(result) == {}
    assert samples_by_name(result)["stackprobe_redis_connects"] == {(): 2}


def test_multi_address_refusal_is_refused() -> None:
    """asyncio's "Multiple exceptions" OSError for a host with two addresses, both refusing:
    text only, no structured causes, under the client's connection error."""
    from stackprobe.probes._resp import RedisConnectionError
    from stackprobe.probes.redis import classify

    exc = RedisConnectionError("Error connecting to localhost:6379")
    exc.__cause__ = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('::1', 6379, 0, 0), "
        "[Errno 111] Connect call failed ('127.0.0.1', 6379)"
    )
    assert classify(exc) == Reason.CONNECTION_REFUSED
    exc.__cause__ = None
    assert classify(exc) == Reason.CONNECTION_CLOSED


async def test_queue_keys_by_type_in_one_round_trip(server: RedisServer, runner: Any) -> None:
    """Celery's and RQ's lists, BullMQ's sorted set, a stream, a set; a queue emptied (so
    deleted) is 0; a string is no queue and has no sample. Once the types are known, one
    round trip a run on the kept connection, and no command the server refuses."""
    server.cli("-n", "2", "RPUSH", "celery", "a", "b", "c")
    server.cli("-n", "2", "RPUSH", "rq:queue:default", "j1")
    server.cli("-n", "2", "ZADD", "bull:emails:delayed", "1", "x", "2", "y")
    server.cli("-n", "2", "XADD", "events", "*", "k", "v")
    server.cli("-n", "2", "SADD", "rq:queues", "rq:queue:default")
    server.cli("-n", "2", "SET", "config", "not-a-queue")
    keys = ["celery", "rq:queue:default", "bull:emails:delayed", "events", "rq:queues"]
    probe_runner = runner(server.url().removesuffix("/0") + "/2", keys=[*keys, "emptied", "config"])
    first = await probe_runner.run()  # connects, and learns the types
    assert first.success, first.detail
    before = stats(server, "commandstats")
    errors_before = stats(server, "stats")["total_error_replies"]
    connections = int(stats(server, "stats")["total_connections_received"])

    result = await probe_runner.run()

    assert result.success, result.detail
    assert samples_by_name(result)["redis_key_size"] == samples_by_name(first)["redis_key_size"]
    assert samples_by_name(result)["redis_key_size"] == {
        ("db2", "celery"): 3,
        ("db2", "rq:queue:default"): 1,
        ("db2", "bull:emails:delayed"): 2,
        ("db2", "events"): 1,
        ("db2", "rq:queues"): 1,
        ("db2", "emptied"): 0,
    }
    evidence = dict(result.evidence)
    assert evidence["queues"].startswith("celery 3, rq:queue:default 1, bull:emails:delayed 2")
    assert evidence["queues not read"] == "config: a string, not a list, set, sorted set or stream"
    after = stats(server, "commandstats")
    calls = {
        name: int(after[f"cmdstat_{name}"].split(",")[0].split("=")[1])
        - int(before.get(f"cmdstat_{name}", "calls=0").split(",")[0].split("=")[1])
        for name in ("type", "llen", "zcard", "xlen", "scard", "ping")
    }
    assert calls == {"type": 7, "llen": 3, "zcard": 1, "xlen": 1, "scard": 1, "ping": 1}
    # no WRONGTYPE: only the test's own INFO calls happened beside the probe's
    assert stats(server, "stats")["total_error_replies"] == errors_before
    # on the kept connection: none of its own (the three since are the test's INFO calls),
    # and one client named stackprobe
    assert int(stats(server, "stats")["total_connections_received"]) == connections + 3
    listed = server.cli("CLIENT", "LIST").splitlines()
    assert sum(" name=stackprobe " in f" {line} " for line in listed) == 1


async def test_a_key_that_changes_type_is_read_again_in_the_same_run(
    server: RedisServer, runner: Any
) -> None:
    server.cli("RPUSH", "jobs", "a")
    probe_runner = runner(server.url(), keys=["jobs"])
    assert samples_by_name(await probe_runner.run())["redis_key_size"] == {("db0", "jobs"): 1}
    server.cli("DEL", "jobs")
    server.cli("ZADD", "jobs", "1", "x", "2", "y")

    result = await probe_runner.run()

    assert samples_by_name(result)["redis_key_size"] == {("db0", "jobs"): 2}


async def test_keys_the_acl_keeps_from_stackprobe_leave_the_rest_measured(
    server: RedisServer, runner: Any
) -> None:
    server.cli("ACL", "SETUSER", "probe", "on", ">probe-pw", "+ping", "+info", "~*")
    server.cli("RPUSH", "celery", "a")

    result = await runner(server.url(), "probe-pw", username="probe", keys=["celery"]).run()

    assert result.success, result.detail
    assert "redis_key_size" not in samples_by_name(result)
    assert samples_by_name(result)["redis_up"] == {(): 1}
    assert verdict(result)[:2] == (
        Health.DEGRADED,
        "1 of `keys:` not read: "
        + ("celery: NoPermissionError: this user has no permissions to run the 'type' command"),
    )
    assert dict(result.evidence)["queues not read"] == (
        "celery: NoPermissionError: this user has no permissions to run the 'type' command"
    )


def test_keys_are_listed_once_and_bounded() -> None:
    base = {"name": "cache", "kind": "redis", "url": "redis://127.0.0.1:6379/0"}
    with pytest.raises(Exception, match="celery listed twice"):
        make_target({**base, "keys": ["celery", "celery"]})
    with pytest.raises(Exception, match="at most 100"):
        make_target({**base, "keys": [f"q{i}" for i in range(101)]})


async def test_maxclients_given_where_info_and_config_say_nothing() -> None:
    """ElastiCache before Redis 7: INFO has no maxclients and CONFIG is blocked (the probe
    then keeps -1). The setting stands in, so the verdict and RedisTooManyClients see the
    limit; where INFO has a figure, the server's own wins. Redis 7 always reports it, so
    the older server's answer is given here as the client parses it."""
    from stackprobe.probes.redis import RedisState, _ok

    def run(info: dict[str, Any], config_get: int = -1, **extra: Any) -> ProbeResult:
        target = make_target(
            {"name": "cache", "kind": "redis", "url": "redis://127.0.0.1:6379/0", **extra}
        )
        state = RedisState(target)  # type: ignore[arg-type]
        state.maxclients = config_get  # what CONFIG GET maxclients said; -1: refused
        return _ok(target, state, 0.001, info, {})  # type: ignore[arg-type]

    old_info = {"redis_version": "6.2.6", "connected_clients": 950}
    blind = run(old_info)
    assert "redis_config_maxclients" not in samples_by_name(blind)
    assert blind.verdict is None
    told = run(old_info, maxclients=1000)
    assert samples_by_name(told)["redis_config_maxclients"] == {(): 1000}
    assert told.verdict is not None and told.verdict.alert == "RedisTooManyClients"
    assert "95 % of maxclients (950 of 1000)" in told.verdict.why
    assert dict(told.evidence)["clients"].startswith(
        "950 connected of maxclients 1000 (configured)"
    )
    own = run({**old_info, "maxclients": 4000}, maxclients=1000)
    assert samples_by_name(own)["redis_config_maxclients"] == {(): 4000}
    assert own.verdict is None
    assert "(configured)" not in dict(own.evidence)["clients"]
    asked = run(old_info, config_get=2000, maxclients=1000)  # CONFIG answered: it wins
    assert samples_by_name(asked)["redis_config_maxclients"] == {(): 2000}


async def test_a_replica_and_its_master_report_replication(runner: Any) -> None:
    """A real master and replica: each one's side of the link under redis_exporter's names,
    then the master killed: the replica's link goes down, and its row degrades."""
    master = RedisServer().start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(master.port)).start()
    try:
        on_master, on_replica = runner(master.url()), runner(replica.url())
        master.cli("SET", "job", "x" * 1000)

        async def synced() -> bool:
            found = samples_by_name(await on_replica.run())
            return found["redis_master_link_up"] == {("127.0.0.1", str(master.port)): 1} and (
                found["redis_slave_repl_offset"][("127.0.0.1", str(master.port))]
                >= int(stats(master, "replication")["master_repl_offset"])
            )

        async def online() -> bool:
            """The master marks the replica online a moment after the replica's link is up
            (at its first acknowledgement): wait_bgsave until then."""
            found = samples_by_name(await on_master.run())
            return [state for *_, state in found["redis_connected_slave_offset_bytes"]] == [
                "online"
            ]

        await wait_until_async(synced, 10, what="the replica in sync")
        await wait_until_async(online, 10, what="the master to see its replica online")
        from_master = await on_master.run()
        found = samples_by_name(from_master)
        assert found["redis_connected_slaves"] == {(): 1}
        assert list(found["redis_instance_info"]) == [
            ("master", stats(master, "server")["redis_version"], "standalone")
        ]
        (slave,) = found["redis_connected_slave_offset_bytes"]
        assert slave == ("127.0.0.1", str(replica.port), "online")
        assert found["redis_connected_slave_lag_seconds"][slave] <= 1
        assert found["redis_master_repl_offset"][()] >= 1000
        assert "redis_master_link_up" not in found
        assert checked_evidence(from_master)["replication"].startswith(
            f"master, 1 replicas: 127.0.0.1:{replica.port} online, "
        )
        healthy = await on_replica.run()
        assert healthy.health() == Verdict(Health.OK)
        assert checked_evidence(healthy)["replication"] == (
            f"replica of 127.0.0.1:{master.port}, link up"
        )
        assert samples_by_name(healthy)["redis_instance_info"].keys() == {
            ("slave", stats(replica, "server")["redis_version"], "standalone")
        }

        master.kill()

        async def link_down() -> bool:
            found = samples_by_name(await on_replica.run())
            return found["redis_master_link_up"] == {("127.0.0.1", str(master.port)): 0}

        await wait_until_async(link_down, 10, what="the replica seeing its master gone")
        lost = await on_replica.run()
    finally:
        replica.stop()
        master.stop()
    health, why, alert = verdict(lost)
    assert (health, alert) == (Health.DEGRADED, "RedisReplicaLinkDown")
    assert re.fullmatch(rf"replica of 127\.0\.0\.1:{master.port}: link down for \d+s", why), why
    assert samples_by_name(lost)["redis_master_last_io_seconds_ago"] == {
        ("127.0.0.1", str(master.port)): -1
    }


async def test_a_peer_that_is_not_redis_fails_clearly(runner: Any) -> None:
    """An HTTP server on the port: its answer is no RESP, so the run fails at once with a
    protocol error (no hang, no crash); one that sends endless bytes is bounded too."""

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    result = await run_against(runner, http)

    assert result.reason == Reason.OTHER, result.detail
    assert result.detail.startswith("ProtocolError: the peer's reply is no RESP"), result.detail
    assert verdict(result)[::2] == (Health.FAILING, "StackprobeCannotMeasure")


async def test_a_tls_peer_that_never_answers_the_close_loses_its_socket_at_the_timeout(
    tmp_path: Path,
) -> None:
    """A server that stops reading after its reply never answers the client's close_notify:
    the connection waits its timeout for it, then drops the socket, rather than leaving it
    open for the event loop's own TLS shutdown timeout (30 s)."""
    from stackprobe.probes import _resp

    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async def frozen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"PING\r\n")
        writer.write(b"+PONG\r\n")
        writer.transport.pause_reading()  # the close_notify is never read, so never answered
        await asyncio.sleep(30)

    server = await asyncio.start_server(frozen, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    fds = len(os.listdir("/proc/self/fd"))
    try:
        address = _resp.parse_url(f"rediss://127.0.0.1:{port}/0")
        connection = await _resp.connect(address, seconds=0.5, tls=client_tls)
        assert await connection.execute("PING") == b"PONG"
        started = time.monotonic()
        await connection.aclose()
        closed_in = time.monotonic() - started
        await asyncio.sleep(0.1)  # the loop closes an aborted socket on its next turn
        assert len(os.listdir("/proc/self/fd")) == fds
        assert 0.4 < closed_in < 1.5, closed_in
    finally:
        server.close()


def test_error_replies_keep_redis_pys_classes_and_texts() -> None:
    from stackprobe.probes import _resp

    cases = {
        "WRONGPASS invalid username-password pair": (_resp.AuthenticationError, "invalid"),
        "NOAUTH Authentication required.": (_resp.AuthenticationError, "Authentication"),
        "NOPERM this user has no permissions": (_resp.NoPermissionError, "this user"),
        "LOADING Redis is loading": (_resp.BusyLoadingError, "Redis is loading"),
        "ERR max number of clients reached": (_resp.MaxClientsError, "max number"),
        "ERR unknown command 'X'": (_resp.ResponseError, "unknown command 'X'"),
        "WRONGTYPE Operation against a key": (_resp.ResponseError, "WRONGTYPE Operation"),
    }
    for text, (cls, start) in cases.items():
        exc = _resp.error_reply(text)
        assert type(exc) is cls and str(exc).startswith(start), (text, exc)


def test_info_is_parsed_as_redis_py_parses_it() -> None:
    from stackprobe.probes._resp import parse_info

    text = (
        "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:12\r\n"
        "mem_fragmentation_ratio:1.25\r\nrole:master\r\n\r\n# Keyspace\r\n"
        "db0:keys=1,expires=0,avg_ttl=0\r\n"
        "slave0:ip=10.0.0.2,port=6380,state=online,offset=42,lag=0\r\n"
        "cmdstat_host:calls=1,usec=2\r\nlist:a,b\r\n"
    )
    assert parse_info(text.encode()) == {
        "redis_version": "7.0.15",
        "uptime_in_seconds": 12,
        "mem_fragmentation_ratio": 1.25,
        "role": "master",
        "db0": {"keys": 1, "expires": 0, "avg_ttl": 0},
        "slave0": {"ip": "10.0.0.2", "port": 6380, "state": "online", "offset": 42, "lag": 0},
        "cmdstat_host": {"calls": 1, "usec": 2},
        "list": ["a", "b"],
    }


def test_urls_are_read_as_redis_py_read_them_and_never_repeated() -> None:
    from stackprobe.probes._resp import InvalidURL, parse_url

    given = parse_url(f"rediss://probe:{PASSWORD.replace('-', '%2D')}@cache:6380/4")
    assert (given.host, given.port, given.db, given.tls) == ("cache", 6380, 4, True)
    assert (given.username, given.password) == ("probe", PASSWORD)
    assert PASSWORD not in repr(given)
    bare = parse_url("redis://")
    assert (bare.host, bare.port, bare.db, bare.tls, bare.password) == (
        "localhost",
        6379,
        0,
        False,
        None,
    )
    assert parse_url("redis://cache?db=2").db == 2
    for url in (f"redis://:{PASSWORD}@cache:99999/0", f"redis://:{PASSWORD}@c/0?ssl=x"):
        with pytest.raises(InvalidURL) as refused:
            parse_url(url)
        assert PASSWORD not in str(refused.value)
