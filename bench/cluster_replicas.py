"""What sharing a config costs and buys, for 1, 2 and 3 replicas: targets per replica, AWS
calls per cycle against one process probing the same targets beside them, and the seconds
until every target has its owners again after a replica is killed (members from ECS in a
moto server, as tests/e2e/test_cluster_ha.py runs them; no Prometheus needed).

    .venv/bin/python bench/cluster_replicas.py                      # 200 http, 20 queues
    .venv/bin/python bench/cluster_replicas.py --web 1000 --queues 50

Not a floor: the issue's figures are the AWS calls of N replicas equal to one process's and
coverage back within one refresh plus one probe interval; it prints both beside what it
measured, and exits 1 when either misses.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.cluster_stack import (  # noqa: E402
    INTERVAL,
    QUEUE_INTERVAL,
    REFRESH,
    TIMEOUT,
    Fleet,
    aws_calls,
    coverage,
    covered,
    start_fleet,
)

WINDOW = 20.0


def settle(fleet: Fleet, wanted: dict[str, int], limit: float = 60) -> float:
    """Seconds until every target has its owners among the live replicas, each with results."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if covered(fleet.alive, wanted):
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"the owners never settled: {coverage(fleet.alive)}")


def measure(replicas: int, web: int, queues: int) -> tuple[str, bool]:
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        fleet = start_fleet(stack, work, replicas, web=web, queues=queues)
        wanted = {name: min(n, replicas) for name, n in fleet.wanted.items()}
        settle(fleet, wanted)
        shares = [len(r.owned()) for r in fleet.replicas]
        before = (sum(aws_calls(r.address) for r in fleet.replicas), aws_calls(fleet.baseline))
        time.sleep(WINDOW)
        after = (sum(aws_calls(r.address) for r in fleet.replicas), aws_calls(fleet.baseline))
        cycles = WINDOW / QUEUE_INTERVAL
        together, single = (after[0] - before[0]) / cycles, (after[1] - before[1]) / cycles
        recovered = "-"
        ok = abs(together - single) <= queues / cycles  # one cycle more or less in the window
        if replicas > 1:
            fleet.kill_replica(fleet.replicas[0])
            now = {name: min(n, replicas - 1) for name, n in fleet.wanted.items()}
            seconds = settle(fleet, now)
            recovered = f"{seconds:.1f}"
            ok = ok and seconds <= REFRESH + INTERVAL + TIMEOUT + 1.0
        row = (
            f"{replicas:>8} {min(shares):>5}-{max(shares):<5} {together:>12.1f} {single:>12.1f}"
            f" {recovered:>12}"
        )
        return row, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web", type=int, default=200, help="http targets (2 owners each)")
    parser.add_argument("--queues", type=int, default=20, help="sqs targets (1 owner each)")
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 3])
    args = parser.parse_args()
    print(
        f"{args.web} http targets (interval {INTERVAL:g}s) and {args.queues} sqs targets "
        f"(interval {QUEUE_INTERVAL:g}s); cluster.refresh {REFRESH:g}s; AWS calls over "
        f"{WINDOW:g}s, beside one process probing the same targets"
    )
    print(
        f"{'replicas':>8} {'targets/replica':>15} {'AWS calls/cycle':>12} {'one process':>12}"
        f" {'recovery s':>12}"
    )
    verdicts = []
    for replicas in args.replicas:
        row, ok = measure(replicas, args.web, args.queues)
        print(row, flush=True)
        verdicts.append(ok)
    print(
        f"floors: N replicas' AWS calls per cycle = one process's (within one cycle's jitter); "
        f"coverage back within refresh + interval + timeout + 1s "
        f"({REFRESH + INTERVAL + TIMEOUT + 1.0:g}s): {'pass' if all(verdicts) else 'FAIL'}"
    )
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
