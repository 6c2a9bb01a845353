"""Does a reload or an attack stall /metrics? A real `stackprobe run`, scraped every 50 ms.

One stackprobe probes N http targets on a loopback nginx while two scrapers run beside it:
/metrics as Prometheus asks for it (OpenMetrics, gzip), and /-/healthy, which does no work, so
its latency is how long the event loop was busy elsewhere. Then, by SIGHUP:

- the config grows from N to M targets (the report: 1,000 to 20,000 blocked /metrics 3.5-5 s),
- M targets run for a while,
- it shrinks back to N,
- a YAML alias bomb (a few hundred bytes, 387 million values) is refused,
- 20 SIGHUPs arrive within a second (one reload runs, one waits, the rest fold into it),
- and 400 slowloris connections (a request head a line a second, never finished) and 400
  silent ones are held open against the web port, which closes them after 15 s.

It prints, per phase, /metrics and /-/healthy p50 / p99 / max (ms), how long each reload took
(SIGHUP to its log line) and how many runs timed out. A reload phase runs from the SIGHUP
until the reload's effects are over (every added target has run once and been frozen); its
"of which" line is the reload itself, SIGHUP to the log line plus a second, while the body is
still the old config's size. Past that, the body grows to M targets' (about 26 MB, ~100 ms of
the loop to join and gzip at 20,000), so those figures are the steady phase's at M, not the
reload's: compare them with it. The targets' interval is 60 s by default, since 20,000 at
15 s are more runs than a 2-core machine makes (thousands of timeouts, with or without a
reload).

    .venv/bin/python bench/reload_stall.py                     # 1,000 -> 20,000, ~4 minutes
    .venv/bin/python bench/reload_stall.py --small 1000 --large 5000 --window 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import yaml
from http_vs_blackbox import nginx, target_url
from processes import (
    PROMETHEUS_ACCEPT,
    Slowloris,
    free_port,
    percentile,
    rss_mib,
    stackprobe_run,
    wait_http,
)

TIMEOUT = 5.0
PERIOD = 0.05  # each scraper's pace
# stackprobe spreads the first runs of added targets over at least 5 s, at most 200 a second,
# and never over more than their interval; the last freeze step follows the last first run.
STARTUP_SPREAD, STARTUP_RATE = 5.0, 200.0


def settle_seconds(added: int, interval: float) -> float:
    """From a reload's log line until every added target has run once and been frozen."""
    return min(interval, max(STARTUP_SPREAD, added / STARTUP_RATE)) + TIMEOUT + 2.0


def config_text(base: str, size: int, interval: float) -> str:
    return yaml.safe_dump(
        {
            "defaults": {"interval": f"{interval:g}s", "timeout": f"{TIMEOUT:g}s"},
            "http_client": {"max_connections": 1024},
            "targets": [
                {"name": f"t{i:05d}", "kind": "http", "url": target_url(base, i)}
                for i in range(size)
            ],
        }
    )


def alias_bomb() -> str:
    """Each anchor lists the one before it nine times: 9**9 values from a few hundred bytes."""
    lines = ["  - &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  - &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
    return "targets: []\nbomb:\n" + "\n".join(lines) + "\n"


@dataclass
class Scraper:
    """GETs one path every PERIOD seconds on a thread of its own, noting (end time, seconds)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    # The compressed bytes as they arrive: inflating is the scraper's cost.
                    with client.stream("GET", self.url) as response:
                        response.raise_for_status()
                        for _ in response.iter_raw():
                            pass
                except httpx.HTTPError:
                    self.errors += 1
                t1 = time.monotonic()
                self.samples.append((t1, t1 - t0))
                self._stop.wait(max(0.0, PERIOD - (t1 - t0)))

    def between(self, start: float, end: float) -> list[float]:
        """Latencies of the requests that were in flight at any moment of [start, end]."""
        return [took for done, took in self.samples if done >= start and done - took <= end]


@contextmanager
def scraping(url: str) -> Iterator[tuple[Scraper, Scraper]]:
    metrics = Scraper(url + "/metrics", {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    healthy = Scraper(url + "/-/healthy")
    threads = [threading.Thread(target=s.run, daemon=True) for s in (metrics, healthy)]
    for thread in threads:
        thread.start()
    try:
        yield metrics, healthy
    finally:
        for scraper in (metrics, healthy):
            scraper._stop.set()
        for thread in threads:
            thread.join(timeout=60)


@contextmanager
def slowloris(port: int, trickling: int, silent: int) -> Iterator[list[int]]:
    """tests.support's Slowloris, its next line sent every second on a thread of its own,
    until the block ends; yields [how many connections stackprobe closed], filled in then."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 800 sockets and the scrapers
    attack = Slowloris(port, trickling, silent)
    done = threading.Event()

    def trickle() -> None:
        while not done.is_set():
            attack.tick(wait=1.0)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    count = [0]
    try:
        yield count
    finally:
        done.set()
        thread.join(timeout=10)
        count[0] = len(attack.closed)
        attack.close()


class Log:
    """stackprobe's JSON log, read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def wait_for(
        self, events: tuple[str, ...], timeout: float = 120
    ) -> tuple[float, dict[str, object]]:
        """When (monotonic) an event starting with one of `events` was logged, and the line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.path.open() as log:
                log.seek(self.offset)
                chunk = log.read()
            complete, _, _ = chunk.rpartition("\n")
            if complete:
                self.offset += len(complete) + 1
                for line in complete.splitlines():
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if str(record.get("event")).startswith(events):
                        return time.monotonic(), record
            time.sleep(0.01)
        sys.exit(
            f"waited {timeout:g}s for {events}; the log ends:\n{self.path.read_text()[-3000:]}"
        )

    def timeouts(self) -> list[float]:
        """When (monotonic) each run that timed out ended, from the whole log."""
        offset = time.time() - time.monotonic()
        found = []
        for line in self.path.read_text().splitlines():
            if '"timeout"' not in line:
                continue
            record = json.loads(line)
            if record.get("event") == "probe failing" and record.get("reason") == "timeout":
                when = datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))
                found.append(when.timestamp() - offset)
        return found


@dataclass
class Phase:
    name: str
    start: float
    end: float
    note: str = ""


def figures(values: list[float]) -> str:
    if not values:
        return f"{'-':>22}"
    ms = [v * 1000 for v in values]
    return f"{percentile(ms, 0.5):>6.1f} {percentile(ms, 0.99):>7.1f} {max(ms):>7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000, help="targets before and after")
    parser.add_argument("--large", type=int, default=20000, help="targets reloaded to")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of each steady phase")
    parser.add_argument(
        "--interval",
        type=float,
        default=60.0,
        help="the targets' interval (at 15 s, 20,000 targets are more than 2 cores probe)",
    )
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs  interval {args.interval:g}s  "
        f"python {sys.version.split()[0]}  {args.small:,} -> {args.large:,} -> {args.small:,} "
        "targets, then an alias bomb"
    )
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as base:
        workdir = Path(tmp)
        small = config_text(base, args.small, args.interval)
        large = config_text(base, args.large, args.interval)
        path = workdir / "stackprobe.yml"
        path.write_text(small)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = workdir / "stackprobe.log"
        process = subprocess.Popen(
            stackprobe_run(path, port, "--log-format", "json", "--log-level", "info"),
            stderr=log_path.open("w"),
        )
        log = Log(log_path)
        try:
            wait_http(url + "/-/ready", timeout=60)
            time.sleep(settle_seconds(args.small, args.interval))  # first runs done, frozen
            with scraping(url) as (metrics, healthy):

                def steady(name: str) -> None:
                    start = time.monotonic()
                    time.sleep(args.window)
                    phases.append(Phase(name, start, time.monotonic()))

                def reload(name: str, text: str, settle: float, wanted: str) -> None:
                    path.write_text(text)
                    start = time.monotonic()
                    process.send_signal(signal.SIGHUP)
                    done, record = log.wait_for(("config reloaded", "config reload failed"))
                    if not str(record["event"]).startswith(wanted):
                        sys.exit(f"{name}: expected {wanted!r}, the log says {record}")
                    time.sleep(max(0.0, done + settle - time.monotonic()))
                    note = f"reload took {done - start:.2f} s"
                    phases.append(Phase(name, start, time.monotonic(), note))
                    if settle > 2.0:
                        phases.append(Phase("  of which to reloaded +1s", start, done + 1.0))

                steady(f"before ({args.small:,})")
                grow = settle_seconds(args.large - args.small, args.interval)
                reload(f"reload to {args.large:,}", large, grow, "config reloaded")
                steady(f"steady ({args.large:,})")
                rss = rss_mib(process.pid)
                reload(f"reload to {args.small:,}", small, settle_seconds(0, 0), "config reloaded")
                steady(f"after ({args.small:,})")
                reload("alias bomb", alias_bomb(), 2.0, "config reload failed")
                path.write_text(small)
                steady(f"after the bomb ({args.small:,})")

                start = time.monotonic()
                for _ in range(20):
                    process.send_signal(signal.SIGHUP)
                    time.sleep(0.05)
                log.wait_for(("config reloaded",))
                time.sleep(2.0)  # the one queued behind it, if any
                phases.append(Phase("20 SIGHUPs in 1 s", start, time.monotonic()))

                start = time.monotonic()
                with slowloris(port, 400, 400) as closed:
                    time.sleep(max(args.window, 20.0))  # past the 15 s idle limit
                note = f"{closed[0]} of 800 closed by stackprobe"
                phases.append(Phase("400 slowloris + 400 idle", start, time.monotonic(), note))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        timeouts = log.timeouts()
    print(f"\npeak RSS at {args.large:,} targets: {rss[1]:.0f} MiB")
    print(f"scrape errors: /metrics {metrics.errors}, /-/healthy {healthy.errors}")
    print(
        f"\n{'phase':26}{'seconds':>8}{'scrapes':>8}  {'/metrics p50 p99 max ms':>22}"
        f"  {'/-/healthy p50 p99 max':>22}{'timeouts':>10}"
    )
    for phase in phases:
        scrapes = metrics.between(phase.start, phase.end)
        print(
            f"{phase.name:26}{phase.end - phase.start:>8.1f}{len(scrapes):>8}  "
            f"{figures(scrapes)}  {figures(healthy.between(phase.start, phase.end))}"
            f"{sum(phase.start <= t <= phase.end for t in timeouts):>10}  {phase.note}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
