"""stackprobe next to blackbox_exporter, in one run, on the same loopback targets.

For each size (100, 1,000 and 5,000 HTTP targets at a 15 s interval) it runs, one after the
other against the same nginx:

- stackprobe with a config of N http targets, scraped the way Prometheus scrapes it (every
  15 s, OpenMetrics and gzip asked for), then scraped every 100 ms for latency;
- Debian's prometheus-blackbox-exporter driven by a scrape loop that probes each of the N
  targets once per interval through /probe, spread over the interval, as Prometheus would.

It prints, per size: CPU seconds per 1,000 probes for each (from /proc, the driver's own CPU
not counted), RSS for each, stackprobe's /metrics p50/p99 against blackbox's /probe p50/p99,
and how late stackprobe's runs started against their schedule; then both idle with their
default configs (stackprobe's built-in self-check, blackbox with one module), for the RSS a
fresh install costs; then the floors from the issue (issue 19's).

    make bench                                   # all sizes, about 6 minutes
    .venv/bin/python bench/http_vs_blackbox.py --sizes 100 1000 --window 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from processes import (
    PROMETHEUS_ACCEPT,
    binary,
    floors,
    free_port,
    percentile,
    rss_mib,
    stackprobe_run,
    start_blackbox,
    wait_http,
)
from prometheus_client.parser import text_string_to_metric_families

INTERVAL = 15.0
TIMEOUT = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BODY = '{"status":"ok","db":true,"redis":true}'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@contextmanager
def nginx(workdir: Path) -> Iterator[str]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {workdir}; proxy_temp_path {workdir}; fastcgi_temp_path {workdir};
  uwsgi_temp_path {workdir}; scgi_temp_path {workdir};
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{BODY}'; }}
  }}
}}
"""
    )
    process = subprocess.Popen([binary("nginx"), "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health/ready")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def target_url(base: str, i: int) -> str:
    return f"{base}/health/ready?target={i}"


@dataclass
class Figures:
    cpu_per_1000: float
    probes: int
    rss: float
    peak_rss: float
    p50_ms: float
    p99_ms: float
    extra: dict[str, Any]


def scrape(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def stackprobe_totals(url: str) -> tuple[float, dict[float, float]]:
    """(runs finished, lag histogram buckets) from stackprobe's own metrics."""
    families = scrape(httpx.get(url + "/metrics", timeout=30).text)
    runs = sum(s.value for s in families["stackprobe_probe_runs"] if s.name.endswith("_total"))
    buckets = {
        float(s.labels["le"]): s.value
        for s in families["stackprobe_scheduler_lag_seconds"]
        if s.name.endswith("_bucket")
    }
    return runs, buckets


def late(lag: dict[float, float]) -> int:
    """Runs that started more than 1 s after their slot, from the lag histogram's buckets."""
    return int(lag[float("inf")] - lag[1.0])


def run_stackprobe(base: str, size: int, window: float, workdir: Path) -> Figures:
    config = {
        "defaults": {"interval": "15s", "timeout": "5s"},
        "http_client": {"max_connections": 1024},
        "targets": [
            {"name": f"t{i:05d}", "kind": "http", "url": target_url(base, i)} for i in range(size)
        ],
    }
    path = workdir / f"stackprobe-{size}.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        stackprobe_run(path, port, "--log-level", "warning"),
        stderr=(workdir / f"stackprobe-{size}.log").open("w"),
    )
    try:
        wait_http(url + "/-/ready", timeout=60)
        time.sleep(INTERVAL)  # one full interval: every target in its steady-state slot
        runs0, lag0 = stackprobe_totals(url)
        cpu0, started = cpu_seconds(process.pid), time.monotonic()
        client = httpx.Client(headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
        while time.monotonic() - started < window:  # Prometheus' own pace: one scrape per 15 s
            client.get(url + "/metrics", timeout=10).raise_for_status()
            time.sleep(min(INTERVAL, max(0.0, window - (time.monotonic() - started))))
        cpu1 = cpu_seconds(process.pid)
        runs1, lag1 = stackprobe_totals(url)
        latencies = []
        end = time.monotonic() + 10
        while time.monotonic() < end:  # then fast scrapes, for the latency distribution
            t0 = time.perf_counter()
            # The compressed bytes as they arrive: inflating them is the scraper's cost, not ours.
            with client.stream("GET", url + "/metrics", timeout=10) as response:
                response.raise_for_status()
                for _ in response.iter_raw():
                    pass
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.1)
        body_bytes = len(client.get(url + "/metrics").content)
        rss, peak = rss_mib(process.pid)
        probes = int(runs1 - runs0)
        lag = {le: lag1[le] - lag0.get(le, 0) for le in lag1}
        worst = min((le for le, n in lag.items() if n == lag[float("inf")]), default=0.0)
        return Figures(
            (cpu1 - cpu0) / probes * 1000,
            probes,
            rss,
            peak,
            percentile(latencies, 0.5) * 1000,
            percentile(latencies, 0.99) * 1000,
            {
                "late_runs": late(lag),
                "lag_bound": worst,
                "runs_measured": int(lag[float("inf")]),
                "metrics_bytes": body_bytes,
                "scrapes": len(latencies),
            },
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


async def drive_blackbox(bb: str, base: str, size: int, seconds: float) -> list[float]:
    """Probe every target once per interval through /probe, evenly spread, as Prometheus would."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
    # In flight at once, below the pool's size: httpx's pool walks its whole queue on every
    # change, which at 10,000 targets stalled the driver rather than blackbox.
    in_flight = asyncio.Semaphore(200)
    async with httpx.AsyncClient(limits=limits, timeout=TIMEOUT + 5) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []

        async def one(i: int) -> None:
            async with in_flight:
                t0 = time.perf_counter()
                response = await client.get(
                    f"{bb}/probe", params={"module": "http", "target": target_url(base, i)}
                )
                latencies.append(time.perf_counter() - t0)
            if "probe_success 1" not in response.text:
                raise RuntimeError(f"blackbox probe failed: {response.text[:200]}")

        k = 0
        while True:
            due = start + k * INTERVAL / size
            if due - start >= seconds:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k % size)))
            k += 1
        await asyncio.gather(*tasks)
    return latencies


def default_rss(workdir: Path) -> tuple[float, float]:
    """RSS in MiB of stackprobe with its built-in config (it probes itself every 15 s) and of
    blackbox with one module, each after 20 s and a scrape of its /metrics."""
    port = free_port()
    command = stackprobe_run(workdir / "unused.yml", port, "--log-level", "warning")
    at = command.index("--config")
    del command[at : at + 2]  # no --config: the built-in one
    stackprobe = subprocess.Popen(command)
    blackbox, bb = start_blackbox({"prober": "http"}, workdir / "blackbox-default.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", timeout=60)
        time.sleep(20)
        for url in (f"http://127.0.0.1:{port}/metrics", f"{bb}/metrics"):
            httpx.get(url, headers={"Accept": PROMETHEUS_ACCEPT}, timeout=10).raise_for_status()
        return rss_mib(stackprobe.pid)[1], rss_mib(blackbox.pid)[1]
    finally:
        for process in (stackprobe, blackbox):
            process.terminate()
            process.wait(timeout=30)


def run_blackbox(base: str, size: int, window: float, workdir: Path) -> Figures:
    process, bb = start_blackbox(
        {"prober": "http", "timeout": "5s", "http": {"preferred_ip_protocol": "ip4"}},
        workdir / f"blackbox-{size}.log",
    )
    try:
        asyncio.run(drive_blackbox(bb, base, size, INTERVAL))  # warm-up: one interval
        cpu0 = cpu_seconds(process.pid)
        latencies = asyncio.run(drive_blackbox(bb, base, size, window))
        cpu1 = cpu_seconds(process.pid)
        rss, peak = rss_mib(process.pid)
        return Figures(
            (cpu1 - cpu0) / len(latencies) * 1000,
            len(latencies),
            rss,
            peak,
            percentile(latencies, 0.5) * 1000,
            percentile(latencies, 0.99) * 1000,
            {},
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured per run")
    parser.add_argument("--no-default", action="store_true", help="skip the default-config row")
    args = parser.parse_args()
    verdicts = []
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs  interval {INTERVAL:g}s  "
        f"window {args.window:g}s  python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as base:
        for size in args.sizes:
            sp = run_stackprobe(base, size, args.window, Path(tmp))
            bb = run_blackbox(base, size, args.window, Path(tmp))
            ratio = sp.cpu_per_1000 / bb.cpu_per_1000
            print(f"\n## {size} targets")
            print(f"{'':28}{'stackprobe':>14}{'blackbox':>14}")
            print(f"{'probes measured':28}{sp.probes:>14}{bb.probes:>14}")
            print(
                f"{'CPU s per 1,000 probes':28}{sp.cpu_per_1000:>14.3f}{bb.cpu_per_1000:>14.3f}"
                f"   ratio {ratio:.2f}"
            )
            print(
                f"{'RSS MiB (peak)':28}{f'{sp.rss:.1f} ({sp.peak_rss:.1f})':>14}"
                f"{f'{bb.rss:.1f} ({bb.peak_rss:.1f})':>14}"
            )
            print(
                f"{'scrape p50 / p99 ms':28}{f'{sp.p50_ms:.1f} / {sp.p99_ms:.1f}':>14}"
                f"{f'{bb.p50_ms:.1f} / {bb.p99_ms:.1f}':>14}   (/metrics vs /probe)"
            )
            print(f"{'/metrics body bytes':28}{sp.extra['metrics_bytes']:>14}")
            behind = f"{sp.extra['late_runs']} of {sp.extra['runs_measured']}"
            print(
                f"{'runs started > 1 s late':28}{behind:>14}"
                f"   (every run started within {sp.extra['lag_bound']:g} s of its slot)"
            )
            if size in (1000, 5000):  # issue 19's floors
                verdicts.append(
                    (f"{size}: CPU per probe <= 1.0x blackbox", ratio <= 1.0, f"{ratio:.2f}x")
                )
                bound = 10 if size == 1000 else 25
                verdicts.append(
                    (
                        f"{size}: /metrics p99 <= {bound} ms",
                        sp.p99_ms <= bound,
                        f"{sp.p99_ms:.1f} ms",
                    )
                )
            if size == 1000:
                verdicts.append(
                    ("1000: RSS <= 60 MiB", sp.peak_rss <= 60, f"{sp.peak_rss:.1f} MiB peak")
                )
            if size == 5000:
                verdicts.append(
                    (
                        "5000: no run starts > 1 s late",
                        sp.extra["late_runs"] == 0,
                        f"{sp.extra['late_runs']} late",
                    )
                )
        if not args.no_default:
            own, bb_rss = default_rss(Path(tmp))
            print("\n## default configs, idle")
            print(f"{'':28}{'stackprobe':>14}{'blackbox':>14}")
            print(f"{'RSS MiB (peak)':28}{own:>14.1f}{bb_rss:>14.1f}")
            verdicts.append(("default config: RSS <= 45 MiB", own <= 45, f"{own:.1f} MiB peak"))
    return floors(verdicts)


if __name__ == "__main__":
    sys.exit(main())
