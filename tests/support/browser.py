"""Headless Chromium, as a person sees a page: the DOM after its scripts ran, and a
screenshot. Debian's `chromium`, started the way this machine's closed network needs."""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
from pathlib import Path

from tests.support.processes import require_binary

# Where screenshots go when a run wants to keep them (CI artifacts, a person looking);
# otherwise into the test's own temporary folder.
SCREENSHOTS_ENV = "STACKPROBE_SCREENSHOTS"
WINDOW = (1400, 1600)


def _chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    binary = require_binary("chromium")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def dom(url: str) -> str:
    """The page's DOM once loaded and its scripts ran, serialized."""
    done = _chromium("--dump-dom", url)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise AssertionError(f"chromium could not load {url}: {done.stderr[-2000:]}")
    return done.stdout


def screenshot(url: str, name: str, fallback_dir: Path) -> Path:
    """A PNG of the page at WINDOW's size; returns where it is."""
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or fallback_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    path.unlink(missing_ok=True)
    done = _chromium(f"--screenshot={path}", url)
    if not path.exists():
        raise AssertionError(f"chromium wrote no screenshot of {url}: {done.stderr[-2000:]}")
    return path


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header, so a test can tell a page from an empty file."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise AssertionError(f"{path} is not a PNG")
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)
