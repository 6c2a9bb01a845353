"""Where stackprobe's CPU goes on the http probe path: N http targets on the bench's loopback
nginx, sampled with py-spy, printed as the busiest functions (self) and the layers (cumulative).

    .venv/bin/python bench/profile_http.py                       # 1,000 targets, 30 s
    .venv/bin/python bench/profile_http.py --targets 5000 --seconds 60

The figures are samples of the main thread (waiting in the selector left out), so a share
is a share of stackprobe's own CPU. Not a benchmark: it prints no floor and compares nothing.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from http_vs_blackbox import cpu_seconds, nginx, target_url
from processes import stackprobe_run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.processes import free_port

# The layers worth a line in the cumulative table, by where their code lives.
LAYERS = ("stackprobe/", "httpx/", "httpcore/", "h11/", "anyio/", "prometheus_client/")


def frame(raw: str) -> str:
    """`name (path/file.py:line)` as `name (path/file.py)`, so lines of one function add up."""
    name, _, where = raw.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rate", type=int, default=250, help="samples a second")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp, nginx(Path(tmp)) as base:
        config = Path(tmp) / "stackprobe.yml"
        targets = [
            {"name": f"t{i:05d}", "kind": "http", "url": target_url(base, i)}
            for i in range(args.targets)
        ]
        config.write_text(
            yaml.safe_dump(
                {
                    "defaults": {"interval": "15s", "timeout": "5s"},
                    "http_client": {"max_connections": 1024},
                    "targets": targets,
                }
            )
        )
        process = subprocess.Popen(stackprobe_run(config, free_port(), "--log-level", "warning"))
        try:
            time.sleep(20)  # past the first interval: every target in its slot
            started = cpu_seconds(process.pid)
            raw = Path(tmp) / "profile.txt"
            subprocess.run(
                [
                    *(spy, "record", "-p", str(process.pid), "-d", str(args.seconds)),
                    *("-r", str(args.rate), "--format", "raw", "-o", str(raw)),
                ],
                check=True,
                capture_output=True,
            )
            cpu = cpu_seconds(process.pid) - started
            lines = raw.read_text().splitlines()
        finally:
            process.terminate()
            process.wait()
    own: collections.Counter[str] = collections.Counter()
    layered: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        frames = [frame(f) for f in stack.split(";")]
        if frames[-1].startswith("EpollSelector.select"):
            continue  # waiting, not working
        busy += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            if any(layer in name for layer in LAYERS):
                layered[name] += int(count)
    print(f"# {args.targets} http targets, {args.seconds} s: {cpu:.2f} CPU-s, {busy} busy samples")
    print("\n## self (the function on top of the stack)")
    for name, count in own.most_common(20):
        print(f"{count:6} {100 * count / busy:5.1f} %  {name}")
    print("\n## cumulative (stackprobe and the HTTP and exposition layers)")
    for name, count in layered.most_common(40):
        print(f"{count:6} {100 * count / busy:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
