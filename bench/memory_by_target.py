"""Where the memory per target goes: N http targets (default 1,000) on the bench's loopback
nginx, stackprobe run in a child (the runtime venv's, as the benchmarks run it) with
tracemalloc started after its imports, and after two intervals the allocation sites that
grew most, in bytes and objects per target.

    .venv/bin/python bench/memory_by_target.py                 # 1,000 targets, 40 s
    .venv/bin/python bench/memory_by_target.py --targets 5000 --group filename

Not a benchmark: it prints no floor and compares nothing. tracemalloc sees Python's own
allocations only (not a C library's), and one frame per allocation keeps the probes on time;
the RSS it prints is inflated by tracemalloc's own bookkeeping.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def child(config: str, port: int, seconds: float, targets: int, group: str, top: int) -> None:
    """In the measured interpreter: import, start tracing, run, report, exit."""
    import stackprobe.cli
    from stackprobe.probes import KINDS

    KINDS["http"]  # the kind's modules, imported before the first snapshot
    tracemalloc.start(1)
    start = tracemalloc.take_snapshot()

    def report() -> None:
        time.sleep(seconds)
        gc.collect()
        grown = tracemalloc.take_snapshot().compare_to(start, group)
        print(f"# {targets} http targets, {seconds:g} s after the start")
        print(f"{'bytes/target':>12} {'objects/target':>14}  where")
        for stat in grown[:top]:
            where = stat.traceback[0]
            name = where.filename.split("site-packages/")[-1].split("/stackprobe/")[-1]
            line = f":{where.lineno}" if group == "lineno" else ""
            print(
                f"{stat.size_diff / targets:12.0f} {stat.count_diff / targets:14.1f}  {name}{line}"
            )
        traced = sum(stat.size_diff for stat in grown)
        print(f"{traced / targets:12.0f} {'':14}  in all")
        sys.stdout.flush()
        os._exit(0)

    threading.Thread(target=report, daemon=True).start()
    sys.argv = ["stackprobe", "run", "--config", config, "--listen", f"127.0.0.1:{port}"]
    sys.argv += ["--log-level", "error"]
    stackprobe.cli.main()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--group", choices=("lineno", "filename"), default="lineno")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.seconds, args.targets, args.group, args.top)
        return 0
    sys.path.insert(0, str(ROOT / "bench"))
    from http_vs_blackbox import nginx, target_url
    from processes import free_port, runtime_python

    python = runtime_python()
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as base:
        config = Path(tmp) / "stackprobe.yml"
        targets = [
            {"name": f"t{i:05d}", "kind": "http", "url": target_url(base, i)}
            for i in range(args.targets)
        ]
        document = {
            "defaults": {"interval": "15s", "timeout": "5s"},
            "http_client": {"max_connections": 1024},
            "targets": targets,
        }
        config.write_text(yaml.safe_dump(document))
        command = [str(python), __file__, "--child", str(config), str(free_port())]
        command += ["--targets", str(args.targets), "--seconds", str(args.seconds)]
        command += ["--group", args.group, "--top", str(args.top)]
        return subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
