"""Instructions per http probe run, counted by valgrind: a figure that does not move with the
machine's noise, to compare two versions of the probe path.

CPU seconds on these shared 2-core machines move by 10-30 % from one run to the next, more
than most single changes save. This runs one process twice under cachegrind (no cache
simulation, the instruction count only), once with N runs and once with N + 1,000, each run
as the scheduler makes it (the probe against the bench's loopback nginx, then the exposition's
rendering of its samples, 200 targets at a time), and prints the difference per run: startup,
imports and the first runs cancel out. Repeated, it agrees to 0.1 %. Compare a change with
`git stash` around two invocations.

    .venv/bin/python bench/instructions.py              # about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from http_vs_blackbox import nginx, target_url
from processes import ROOT

BATCH = 200


async def _runs(base: str, count: int) -> None:
    """`count` runs of BATCH targets, as the scheduler makes them (in this process)."""
    from prometheus_client import CollectorRegistry

    from stackprobe.app import all_metric_specs
    from stackprobe.exposition import Exposition
    from stackprobe.probes import KINDS
    from stackprobe.probes._http_clients import HttpClients
    from stackprobe.results import ResultStore
    from tests.support.probing import ProbeRunner, make_target

    http = HttpClients(256)
    exposition = Exposition(all_metric_specs(KINDS), ResultStore(), CollectorRegistry())
    targets = [
        make_target({"name": f"t{i}", "kind": "http", "url": target_url(base, i)})
        for i in range(BATCH)
    ]
    runners = [ProbeRunner(target, http=http) for target in targets]

    async def one(runner: ProbeRunner) -> None:
        started = time.time()
        result = await runner.run()
        if not result.success:
            raise RuntimeError(f"{runner.target.name}: {result.detail}")
        exposition.put(exposition.render(runner.target, result, started, 0.01))

    for _ in range(count // BATCH):
        await asyncio.gather(*(one(runner) for runner in runners))
    await http.aclose()


def _instructions(base: str, count: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("valgrind is not installed: run scripts/setup.sh --bench")
    done = subprocess.run(
        [
            valgrind,
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--inner",
            base,
            str(count),
        ],
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        sys.exit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", nargs=2, metavar=("BASE", "RUNS"), help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=400, help="runs before the measured 1,000")
    args = parser.parse_args()
    if args.inner:
        import uvloop

        sys.path.insert(0, str(ROOT))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_runs(args.inner[0], int(args.inner[1])))
        return 0
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as base:
        short = _instructions(base, args.runs)
        long = _instructions(base, args.runs + 1000)
    print(f"instructions per http run: {(long - short) / 1000 / 1e6:.3f} M")
    return 0


if __name__ == "__main__":
    sys.exit(main())
