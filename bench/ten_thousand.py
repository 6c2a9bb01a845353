"""10,000 http targets in one process: on time, and flat in memory and file descriptors.

stackprobe probes 10,000 targets on the bench's loopback nginx at a 15 s interval (667 runs a
second) for a 10-minute window after a one-minute warm-up, scraped once per interval as
Prometheus scrapes it (OpenMetrics, gzip). Every 30 s a row prints its RSS, open fds, the runs
that started more than 1 s late so far, and the last scrape's latency. Then blackbox_exporter
probes the same 10,000 targets at the same rate for a shorter window (driven through /probe
as in bench/http_vs_blackbox.py), and both print side by side: CPU per 1,000 probes, RSS and
fds. The floors (issue 19): no run starts more than 1 s late; RSS at its highest in the last
two minutes at most 5 MiB above its highest in the first two; the fewest fds open in the last
two minutes no more than the most in the first two (the count at an instant is mostly the
probes in flight, a few dozen up or down; a leak raises its floor).

    make bench-10k                                  # about 14 minutes
    .venv/bin/python bench/ten_thousand.py --window 120 --blackbox-window 30
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from http_vs_blackbox import (
    INTERVAL,
    cpu_seconds,
    late,
    nginx,
    run_blackbox,
    stackprobe_totals,
    target_url,
)
from processes import PROMETHEUS_ACCEPT, floors, free_port, rss_mib, stackprobe_run, wait_http

TARGETS = 10_000
WARM_UP = 60.0
ROW_EVERY = 30.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=600.0, help="seconds measured")
    parser.add_argument("--blackbox-window", type=float, default=120.0)
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs  {TARGETS} targets  "
        f"interval {INTERVAL:g}s  window {args.window:g}s  python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as base:
        config = Path(tmp) / "stackprobe.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "defaults": {"interval": f"{INTERVAL:g}s", "timeout": "5s"},
                    "http_client": {"max_connections": 1024},
                    "targets": [
                        {"name": f"t{i:05d}", "kind": "http", "url": target_url(base, i)}
                        for i in range(TARGETS)
                    ],
                }
            )
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            stackprobe_run(config, port, "--log-level", "warning"),
            stderr=(Path(tmp) / "stackprobe.log").open("w"),
        )
        rows: list[tuple[float, float, int, int, float]] = []
        try:
            wait_http(url + "/-/ready", timeout=120)
            time.sleep(WARM_UP)
            runs0, lag0 = stackprobe_totals(url)
            cpu0, started = cpu_seconds(process.pid), time.monotonic()
            client = httpx.Client(headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
            print(f"\n{'s':>6}{'RSS MiB':>10}{'fds':>7}{'late':>7}{'scrape ms':>11}")
            next_row = 0.0
            scrape_ms = 0.0
            while (elapsed := time.monotonic() - started) <= args.window:
                t0 = time.perf_counter()
                client.get(url + "/metrics", timeout=30).raise_for_status()
                scrape_ms = (time.perf_counter() - t0) * 1000
                if elapsed >= next_row:
                    _, lag = stackprobe_totals(url)
                    behind = late({le: n - lag0.get(le, 0) for le, n in lag.items()})
                    row = (elapsed, rss_mib(process.pid)[0], fds(process.pid), behind, scrape_ms)
                    rows.append(row)
                    print(f"{row[0]:>6.0f}{row[1]:>10.1f}{row[2]:>7}{row[3]:>7}{row[4]:>11.1f}")
                    next_row += ROW_EVERY
                time.sleep(INTERVAL)
            cpu = cpu_seconds(process.pid) - cpu0
            runs1, lag1 = stackprobe_totals(url)
            probes = runs1 - runs0
            behind = late({le: n - lag0.get(le, 0) for le, n in lag1.items()})
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        bb = run_blackbox(base, TARGETS, args.blackbox_window, Path(tmp))

    first = [row for row in rows if row[0] <= 120]
    last = [row for row in rows if row[0] >= rows[-1][0] - 120]
    rss_rise = max(r[1] for r in last) - max(r[1] for r in first)
    fd_first = max(r[2] for r in first)
    fd_last = min(r[2] for r in last)
    print(f"\n{'':28}{'stackprobe':>14}{'blackbox':>14}")
    print(f"{'probes measured':28}{probes:>14.0f}{bb.probes:>14}")
    sp_cpu = cpu / probes * 1000
    print(
        f"{'CPU s per 1,000 probes':28}{sp_cpu:>14.3f}{bb.cpu_per_1000:>14.3f}"
        f"   ratio {sp_cpu / bb.cpu_per_1000:.2f}"
    )
    print(f"{'RSS MiB start / end':28}{f'{rows[0][1]:.1f} / {rows[-1][1]:.1f}':>14}{bb.rss:>14.1f}")
    print(f"{'fds start / end':28}{f'{rows[0][2]} / {rows[-1][2]}':>14}")
    print(f"{'runs started > 1 s late':28}{f'{behind} of {probes:.0f}':>14}")
    verdicts = [
        ("no run starts > 1 s late", behind == 0, f"{behind} late"),
        ("RSS flat (last 2 min vs first 2)", rss_rise <= 5, f"{rss_rise:+.1f} MiB"),
        (
            "fds flat (last 2 min's fewest vs first 2's most)",
            fd_last <= fd_first,
            f"{fd_first} -> {fd_last}",
        ),
    ]
    return floors(verdicts)


if __name__ == "__main__":
    sys.exit(main())
