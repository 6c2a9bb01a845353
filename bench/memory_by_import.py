"""Where a process's memory goes before it probes anything: the RSS after each step of the
import chain of `stackprobe run`, each step in a fresh interpreter's order, then the modules a
config's kinds add (the kind table imports only those a config names, probes/__init__.py).

    .venv/bin/python bench/memory_by_import.py                  # the built-in config's chain
    .venv/bin/python bench/memory_by_import.py postgres redis   # and those kinds' modules

Not a benchmark: it compares nothing and holds no floor. A step's figure is what it added on
top of the steps above it (shared libraries included), so reordering the steps moves figures
between them; the total is the cost of the whole chain.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

# Libraries first, in the order stackprobe's own modules import them, then stackprobe's.
CHAIN = (
    "asyncio",
    "ssl",
    "uvloop",
    "structlog",
    "yaml",
    "pydantic",
    "pydantic.main",
    "prometheus_client",
    "stackprobe.secrets",
    "stackprobe.config",
    "stackprobe.app",
    "stackprobe.server",
    "stackprobe.cli",
)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def measure(steps: list[str]) -> None:
    start = previous = rss_mib()
    print(f"{'interpreter':40} {start:6.1f} MiB")
    for step in steps:
        if step.startswith("kind:"):
            from stackprobe.probes import KINDS

            KINDS[step[5:]]  # the table imports the kind's module, as a config naming it does
        else:
            importlib.import_module(step)
        now = rss_mib()
        print(f"{step:40} {now:6.1f} MiB  +{now - previous:4.1f}")
        previous = now
    print(f"{'total':40} {previous:6.1f} MiB  ({len(sys.modules)} modules)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=["http"], help="kinds a config names")
    parser.add_argument("--dev", action="store_true", help="measure this venv, not the runtime one")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = [*CHAIN]
    for kind in args.kinds:
        if kind == "http":  # its libraries apart from its module, to see each
            steps += ["httpcore", "httpx"]
        steps.append(f"kind:{kind}")
    if args.child:
        measure(steps)
        return 0
    # A fresh interpreter: this script's own imports (argparse, subprocess) are not counted
    # apart, but they are few and come before the first figure. The runtime venv's, as the
    # other benchmarks measure (bench/processes.py), when scripts/setup.sh --bench made it.
    from processes import RUNTIME_PYTHON  # not in the child: it runs without the tests' tools

    python = str(RUNTIME_PYTHON) if RUNTIME_PYTHON.exists() and not args.dev else sys.executable
    print(f"# {python}")
    return subprocess.call([python, __file__, "--child", *args.kinds])


if __name__ == "__main__":
    sys.exit(main())
