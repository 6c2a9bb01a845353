"""Bytes as a person reads them (1.4 GiB), for the evidence and verdicts of the kinds that
speak of sizes: a bucket's, the WAL a replication slot keeps."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """Whole bytes under a KiB, one decimal above, in binary units up to TiB."""
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"
