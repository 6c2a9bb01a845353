"""stackprobe's memory and file descriptors against hostile HTTP targets, beside blackbox_exporter.

Reported: 2,000 http targets pointed at a server that hangs after sending its headers took
stackprobe's RSS from 130 to 165 MiB in two minutes. This runs that, and the other ways a
target can hold a prober's resources, for a window long enough to tell growth from warm-up:

- hostile servers on loopback, in a process of their own (this script with `--serve`):
  `hang` sends the headers of a 200 (Content-Length 1024) and then nothing; `trickle` sends
  the headers and one body byte a second; `refuse` is a closed port; `reset` reads the
  request and answers with a TCP RST; `tls` accepts the connection and never answers the
  ClientHello;
- a real `stackprobe run` with N http targets spread over those behaviours (15 s interval,
  5 s timeout, the defaults otherwise), its RSS (VmRSS) and open fds (/proc/PID/fd) sampled
  every 10 s, its /metrics scraped every second as Prometheus asks (OpenMetrics, gzip);
- if `prometheus-blackbox-exporter` is installed (`scripts/setup.sh --bench`), blackbox
  probing the same targets at the same rate through /probe, driven from a process of its
  own (this script with `--drive`), its RSS and fds sampled beside stackprobe's.

It prints a table (time, RSS, fds, /metrics p99 of the scrapes since the previous row,
blackbox's RSS and fds), the failure reasons per behaviour (each must fail the way it is
built to), and the verdict: RSS and fd growth from the end of the warm-up (minute 2) to the
end of the window. Exit 1 if stackprobe's RSS rises more than 16 KiB a target from ready
(every target has a result) to its highest, or is higher at its highest in the last two
minutes than at its highest in the two minutes after the warm-up by more than 5 MiB (RSS is
a sawtooth with the full garbage collections), or its fds rise more than 5 % above their
level after the warm-up at any sample (a leak that a garbage collection closes now and then
is a sawtooth too, not a slope), or a behaviour fails for another reason than its own.

    make bench-hostile                                       # 2,000 targets, 10 minutes
    .venv/bin/python bench/hostile_targets.py --window 60    # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import httpx
import yaml
from processes import (
    PROMETHEUS_ACCEPT,
    free_port,
    percentile,
    rss_mib,
    stackprobe_run,
    start_blackbox,
    wait_http,
)
from prometheus_client.parser import text_string_to_metric_families

BEHAVIOURS = ("hang", "trickle", "refuse", "reset", "tls")
# The reason each behaviour must fail with: anything else means the bench is not measuring
# what it says it is (a pool timeout, say, would hold no connection at all).
EXPECTED_REASON = {
    "hang": "timeout",
    "trickle": "timeout",
    "refuse": "connect_refused",
    "reset": "connection_closed",
    "tls": "timeout",
}
SAMPLE_EVERY = 10.0
SCRAPE_EVERY = 1.0
WARM_UP = 120.0  # RSS grows while every target runs for the first few times: not counted
RSS_BOUND_MIB = 5.0
# What RSS may gain from ready (every target has a result) to its highest: the connections in
# flight (about 400 at 2,000 targets), and on Python 3.11 each closed connection's asyncio
# transport, a reference cycle there, until a full garbage collection frees it. Measured at
# 2,000 targets: +28 MiB; +94 MiB while every run also left its request, headers and body in
# a cycle (tests/probes/test_http.py, test_a_run_leaves_nothing_for_the_garbage_collector).
WARM_UP_KIB_PER_TARGET = 16
RSS_SPAN = 120.0  # RSS is judged by its highest sample over this long (see `high_water`)
FD_BOUND = 0.05
HANG_SECONDS = 3600  # how long a hostile connection is held at most, if the prober never leaves


# --- the hostile servers (`--serve`): their own process, so they cost stackprobe nothing ---


async def _request_head(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return False
    return True


async def _until_gone(reader: asyncio.StreamReader, seconds: float = HANG_SECONDS) -> None:
    """Until the prober hangs up (EOF or a reset), reading and dropping whatever it sends."""
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await _request_head(reader):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n\r\n"
        )
        await _until_gone(reader)
    writer.close()


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await _request_head(reader):
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {HANG_SECONDS}\r\n\r\n".encode()
        )
        gone = asyncio.ensure_future(_until_gone(reader))
        try:
            for _ in range(HANG_SECONDS):
                if gone.done() or writer.is_closing():
                    break
                writer.write(b" ")
                await asyncio.wait({gone}, timeout=1.0)
        finally:
            gone.cancel()
    writer.close()


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _request_head(reader)
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _tls_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _until_gone(reader)  # the ClientHello arrives and is never answered
    writer.close()


async def serve() -> None:
    """Start every hostile server, print their ports as JSON, serve until stdin closes."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports: dict[str, int] = {}
    servers = []
    for name, handler in (
        ("hang", _hang),
        ("trickle", _trickle),
        ("reset", _reset),
        ("tls", _tls_stall),
    ):
        server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=4096)
        servers.append(server)
        ports[name] = int(server.sockets[0].getsockname()[1])
    ports["refuse"] = free_port()  # nothing listens there
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


def target_url(behaviour: str, port: int, i: int) -> str:
    scheme = "https" if behaviour == "tls" else "http"
    return f"{scheme}://127.0.0.1:{port}/health/ready?target={i}"


def targets(ports: dict[str, int], behaviours: list[str], n: int) -> list[tuple[str, str]]:
    """(name, url) of N targets, round-robin over the behaviours; a name starts with its
    behaviour, so the reasons can be grouped by it."""
    return [
        (f"{b}-{i:05d}", target_url(b, ports[b], i))
        for i in range(n)
        for b in [behaviours[i % len(behaviours)]]
    ]


@contextmanager
def hostile_servers(workdir: Path) -> Iterator[dict[str, int]]:
    log = (workdir / "hostile.log").open("w")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line:
            sys.exit(f"the hostile servers did not start: see {workdir}/hostile.log")
        yield json.loads(line)
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


# --- blackbox_exporter's driver (`--drive`): what Prometheus would do, in its own process ---


async def drive(bb: str, urls: list[str], interval: float, probe_timeout: float) -> None:
    """Probe every URL once per interval through /probe, evenly spread, until stdin closes;
    then print how many probes were made, by outcome. aiohttp, not httpx: httpcore's pool
    walks every queued request on each change, and with hundreds of /probe requests waiting
    on hanging targets the driver fell behind and never caught up (measured)."""
    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, sys.stdin.read)
    done = Counter[str]()
    tasks: set[asyncio.Task[None]] = set()
    # Kept-alive connections, as many as probes in flight, as Prometheus holds them.
    connector = aiohttp.TCPConnector(limit=0)
    limit = aiohttp.ClientTimeout(total=probe_timeout + 5)
    async with aiohttp.ClientSession(connector=connector, timeout=limit) as session:

        async def one(url: str) -> None:
            params = {"module": "http", "target": url}
            try:
                async with session.get(f"{bb}/probe", params=params) as response:
                    await response.read()
                    done["ok" if response.status == 200 else str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                done[type(exc).__name__] += 1

        start, k = loop.time(), 0
        while True:
            due = start + k * interval / len(urls)
            await asyncio.wait({stop}, timeout=max(0.0, due - loop.time()))
            if stop.done():
                break
            task = asyncio.create_task(one(urls[k % len(urls)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        await asyncio.gather(*tasks)
    print(json.dumps(done), flush=True)


@contextmanager
def blackbox(
    workdir: Path, urls: list[str], interval: float, timeout: float
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[str]]]:
    module = {
        "prober": "http",
        "timeout": f"{timeout:g}s",
        "http": {"preferred_ip_protocol": "ip4", "tls_config": {"insecure_skip_verify": True}},
    }
    process, bb = start_blackbox(module, workdir / "blackbox.log")
    (workdir / "urls.json").write_text(json.dumps(urls))
    driver: subprocess.Popen[str] | None = None
    try:
        driver = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--drive",
                bb,
                str(workdir / "urls.json"),
                f"--interval={interval}",
                f"--timeout={timeout}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(workdir / "driver.log").open("w"),
            text=True,
        )
        yield process, driver
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
        process.terminate()
        process.wait(timeout=30)


# --- measuring ---


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Row:
    t: float
    rss: float
    fds: int
    p50_ms: float
    p99_ms: float
    bb_rss: float | None = None
    bb_fds: int | None = None


@dataclass
class Run:
    rows: list[Row] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)
    runs: float = 0.0
    skipped: float = 0.0
    peak_rss: float = 0.0
    bb_peak_rss: float | None = None
    bb_probes: dict[str, int] = field(default_factory=dict)


def scrape_timed(client: httpx.Client, url: str) -> float:
    """Seconds until the compressed body has arrived, as a Prometheus scrape would see it."""
    t0 = time.perf_counter()
    with client.stream("GET", url, timeout=10) as response:
        response.raise_for_status()
        for _ in response.iter_raw():
            pass
    return time.perf_counter() - t0


def outcome(text: str) -> tuple[dict[str, Counter[str]], float, float]:
    """(failure reasons by behaviour, runs finished, runs skipped) from stackprobe's /metrics."""
    reasons: dict[str, Counter[str]] = {}
    runs = skipped = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name == "stackprobe_probe_failure_reason" and s.value == 1:
                behaviour = s.labels["target"].split("-", 1)[0]
                reasons.setdefault(behaviour, Counter())[s.labels["reason"]] += 1
            elif family.name == "stackprobe_probe_runs" and s.name.endswith("_total"):
                runs += s.value
            elif family.name == "stackprobe_probe_runs_skipped" and s.name.endswith("_total"):
                skipped += s.value
    return reasons, runs, skipped


def measure(
    process: subprocess.Popen[bytes],
    url: str,
    window: float,
    bb: subprocess.Popen[bytes] | None,
) -> Run:
    run = Run()
    client = httpx.Client(headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    _, runs0, skipped0 = outcome(httpx.get(url + "/metrics", timeout=30).text)
    start = time.monotonic()
    next_sample = start
    since_row: list[float] = []
    print(f"{'t s':>6}{'RSS MiB':>10}{'fds':>7}{'p50 ms':>9}{'p99 ms':>9}", end="")
    print(f"{'bb RSS MiB':>13}{'bb fds':>8}" if bb is not None else "", flush=True)
    while True:
        now = time.monotonic()
        if now >= next_sample:
            for name, proc in (("stackprobe", process), ("blackbox", bb)):
                if proc is not None and proc.poll() is not None:
                    sys.exit(f"{name} exited with {proc.returncode} mid-run")
            rss, peak = rss_mib(process.pid)
            run.peak_rss = max(run.peak_rss, peak)
            row = Row(
                now - start,
                rss,
                open_fds(process.pid),
                percentile(since_row, 0.5) * 1000,
                percentile(since_row, 0.99) * 1000,
            )
            line = f"{row.t:>6.0f}{row.rss:>10.1f}{row.fds:>7}{row.p50_ms:>9.1f}{row.p99_ms:>9.1f}"
            if bb is not None:
                row.bb_rss, bb_peak = rss_mib(bb.pid)
                run.bb_peak_rss = max(run.bb_peak_rss or 0.0, bb_peak)
                row.bb_fds = open_fds(bb.pid)
                line += f"{row.bb_rss:>13.1f}{row.bb_fds:>8}"
            print(line, flush=True)
            run.rows.append(row)
            since_row = []
            if now - start >= window:
                break
            next_sample += SAMPLE_EVERY
        latency = scrape_timed(client, url + "/metrics")
        since_row.append(latency)
        run.latencies.append(latency)
        time.sleep(max(0.0, min(SCRAPE_EVERY - latency, next_sample - time.monotonic())))
    run.reasons, runs1, skipped1 = outcome(httpx.get(url + "/metrics", timeout=30).text)
    run.runs, run.skipped = runs1 - runs0, skipped1 - skipped0
    client.close()
    return run


def first_level(rows: list[Row], value: str, warm_up: float) -> float:
    """The level at the end of the warm-up: the highest of three samples, since the probes in
    flight (and so the open connections) differ by a few dozen from one sample to the next."""
    return float(max([getattr(r, value) for r in rows if r.t >= warm_up][:3]))


def high_water(rows: list[Row], value: str, warm_up: float) -> tuple[float, float, float]:
    """(span, the highest sample in the first `span` seconds after the warm-up, the highest in
    the last `span` seconds). RSS is a sawtooth, a few MiB deep, whose period is that of the
    full garbage collections (~2 minutes here), so where a single sample falls in it says
    little; the tops of the teeth stay put unless something grows."""
    end = rows[-1].t
    span = min(RSS_SPAN, (end - warm_up) / 2)
    first = [getattr(r, value) for r in rows if warm_up <= r.t <= warm_up + span]
    last = [getattr(r, value) for r in rows if r.t >= end - span]
    return span, float(max(first)), float(max(last))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--window", type=float, default=600.0, help="seconds measured")
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--behaviours", nargs="+", choices=BEHAVIOURS, default=list(BEHAVIOURS))
    parser.add_argument("--no-blackbox", action="store_true", help="stackprobe alone")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--drive", nargs=2, metavar=("URL", "URLS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve())
        return 0
    if args.drive:
        urls = json.loads(Path(args.drive[1]).read_text())
        asyncio.run(drive(args.drive[0], urls, args.interval, args.timeout))
        return 0

    warm_up = min(WARM_UP, args.window / 2)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs  {args.targets} targets "
        f"({', '.join(args.behaviours)})  interval {args.interval:g}s  timeout "
        f"{args.timeout:g}s  window {args.window:g}s  warm-up {warm_up:g}s  "
        f"python {sys.version.split()[0]}"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        hostile_servers(Path(tmp)) as ports,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        chosen = targets(ports, args.behaviours, args.targets)
        config = {
            "defaults": {"interval": f"{args.interval:g}s", "timeout": f"{args.timeout:g}s"},
            "targets": [{"name": name, "kind": "http", "url": url} for name, url in chosen],
        }
        path = workdir / "stackprobe.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log: IO[str] = stack.enter_context((workdir / "stackprobe.log").open("w"))
        process = subprocess.Popen(stackprobe_run(path, port, "--log-level", "warning"), stderr=log)
        stack.callback(process.wait, 30)
        stack.callback(process.send_signal, signal.SIGTERM)
        wait_http(url + "/-/ready", timeout=60)
        bb: subprocess.Popen[bytes] | None = None
        driver: subprocess.Popen[str] | None = None
        if not args.no_blackbox:
            bb, driver = stack.enter_context(
                blackbox(workdir, [u for _, u in chosen], args.interval, args.timeout)
            )
        run = measure(process, url, args.window, bb)
        if driver is not None:
            try:
                out, _ = driver.communicate(timeout=args.timeout + 30)
                run.bb_probes = json.loads(out or "{}")
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()
                print("blackbox's driver did not finish its last probes; its count is lost")

    print("\n## failure reasons by behaviour (last run of each target)")
    reasons_ok = True
    for behaviour in args.behaviours:
        found = run.reasons.get(behaviour, Counter())
        want = EXPECTED_REASON[behaviour]
        ok = set(found) == {want}
        reasons_ok = reasons_ok and ok
        shown = ", ".join(f"{r} {n}" for r, n in found.most_common()) or "none failed"
        print(f"{'ok  ' if ok else 'BAD '}{behaviour:8} {shown}   (want {want})")
    window = run.rows[-1].t
    print(
        f"\nstackprobe: {run.runs:.0f} runs ({run.runs / window:.1f}/s), {run.skipped:.0f} "
        f"skipped; /metrics p50 {percentile(run.latencies, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(run.latencies, 0.99) * 1000:.1f} ms over {len(run.latencies)} scrapes; "
        f"peak RSS {run.peak_rss:.1f} MiB"
    )
    if run.bb_probes:
        total = sum(run.bb_probes.values())
        print(
            f"blackbox:   {total} probes ({total / window:.1f}/s) {dict(run.bb_probes)}; "
            f"peak RSS {run.bb_peak_rss:.1f} MiB"
        )

    span, rss0, rss1 = high_water(run.rows, "rss", warm_up)
    rss_ok = rss1 - rss0 <= RSS_BOUND_MIB
    after = [r for r in run.rows if r.t >= warm_up]
    fd0, fd1 = first_level(run.rows, "fds", warm_up), after[-1].fds
    fd_peak = max(r.fds for r in after)
    fd_ok = fd_peak <= fd0 * (1 + FD_BOUND)
    print("\n## verdict")
    ready_rss, top_rss = run.rows[0].rss, max(r.rss for r in run.rows)
    warm_bound = args.targets * WARM_UP_KIB_PER_TARGET / 1024
    warm_ok = top_rss - ready_rss <= warm_bound
    print(
        f"{'PASS' if warm_ok else 'FAIL'}  RSS {ready_rss:.1f} MiB when ready, highest "
        f"{top_rss:.1f} MiB: {top_rss - ready_rss:+.1f} MiB (bound +{warm_bound:.1f} MiB, "
        f"{WARM_UP_KIB_PER_TARGET} KiB a target)"
    )
    print(
        f"{'PASS' if rss_ok else 'FAIL'}  RSS highest {rss0:.1f} MiB in t={warm_up:g}-"
        f"{warm_up + span:.0f}s, {rss1:.1f} MiB in t={window - span:.0f}-{window:.0f}s: "
        f"{rss1 - rss0:+.1f} MiB ({(rss1 - rss0) / rss0:+.1%}; bound +{RSS_BOUND_MIB:g} MiB)"
    )
    print(
        f"{'PASS' if fd_ok else 'FAIL'}  fds {fd0:.0f} after the warm-up (highest of 3), "
        f"{fd1} at the end, highest {fd_peak} ({(fd_peak - fd0) / max(fd0, 1):+.1%}; "
        f"bound +{FD_BOUND:.0%} at every sample)"
    )
    if bb is not None:
        _, b0, b1 = high_water(run.rows, "bb_rss", warm_up)
        f0 = first_level(run.rows, "bb_fds", warm_up)
        f_peak = max(r.bb_fds or 0 for r in after)
        print(
            f"      blackbox beside it: RSS highest {b0:.1f} -> {b1:.1f} MiB ({b1 - b0:+.1f}), "
            f"fds {f0:.0f} after the warm-up, highest {f_peak}"
        )
    print(f"{'PASS' if reasons_ok else 'FAIL'}  every behaviour failed with its own reason")
    return 0 if warm_ok and rss_ok and fd_ok and reasons_ok else 1


if __name__ == "__main__":
    sys.exit(main())
