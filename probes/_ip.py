"""Which address a probe connects to: blackbox_exporter's `preferred_ip_protocol` and
`ip_protocol_fallback`, shared by the kinds that resolve a name themselves (http, dns).

The name is resolved once per connection, timed as the run's `resolve` phase, and the
addresses are tried in order: the preferred family's first, then (with the fallback) the
other's. `probe_ip_protocol` says which family the probe used, as in blackbox_exporter.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Literal

from stackprobe.contract import MetricSpec, Sample

IpProtocol = Literal["ip4", "ip6"]
_FAMILY = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6}

PROBE_IP_PROTOCOL = MetricSpec(
    "probe_ip_protocol", "IP protocol of the address probed: 4 or 6 (0 before one was chosen)."
)
PROBE_IP_ADDR_HASH = MetricSpec(
    "probe_ip_addr_hash", "A hash (CRC-32) of the address probed, to see it change."
)


class NoAddress(socket.gaierror):
    """The name resolves, but to no address of the family the target allows."""


@dataclass(slots=True)
class Addressing:
    """One run's choice of address: what the target asks for, and what was found. Kept
    across a redirect chain, so the resolve time is summed and the address is the last."""

    preferred: IpProtocol | None = None
    fallback: bool = True
    resolve_seconds: float = 0.0
    address: str | None = None

    async def candidates(self, host: str, port: int) -> list[str]:
        """The addresses to try, in order; raises socket.gaierror when there is none. Only
        a lookup is timed: an address literal takes no resolve time."""
        literal = _literal(host)
        if literal is not None:
            return self._ordered([literal])
        started = time.perf_counter()
        try:
            return self._ordered(await _lookup(host, port))
        finally:
            self.resolve_seconds += time.perf_counter() - started

    def _ordered(self, found: list[tuple[int, str]]) -> list[str]:
        # no fallback without a preference means IPv6 only, blackbox_exporter's default
        preferred = self.preferred or (None if self.fallback else "ip6")
        if preferred is None:
            return [address for _, address in found]
        family = _FAMILY[preferred]
        first = [address for af, address in found if af == family]
        rest = [address for af, address in found if af != family] if self.fallback else []
        if not first and not rest:
            raise NoAddress(
                socket.EAI_ADDRFAMILY, f"no {preferred} address, and ip_protocol_fallback is off"
            )
        return first + rest

    def samples(self) -> tuple[Sample, ...]:
        """probe_ip_protocol and, once connected, probe_ip_addr_hash."""
        if self.address is None:
            return (PROBE_IP_PROTOCOL(0),)
        # an address chosen here is IPv6 exactly when it has colons: no second parse
        return (
            PROBE_IP_PROTOCOL(6 if ":" in self.address else 4),
            PROBE_IP_ADDR_HASH(zlib.crc32(self.address.encode())),
        )


def _literal(host: str) -> tuple[int, str] | None:
    """An address literal as (family, address), None for a name."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return (socket.AF_INET6 if literal.version == 6 else socket.AF_INET), literal.compressed


async def _lookup(host: str, port: int) -> list[tuple[int, str]]:
    """The name's addresses in the resolver's order, without repeats."""
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        # in the loop's executor, as asyncio's own getaddrinfo does: uvloop's would queue
        # every lookup on libuv's four threads, so a slow resolver would hold up the rest
        infos = await asyncio.get_running_loop().run_in_executor(None, lookup)
    except UnicodeError:  # the idna codec's verdict on a label over 63 characters, or empty
        raise socket.gaierror(
            socket.EAI_NONAME, f"{host[:80]!r} is not a valid host name"
        ) from None
    found: list[tuple[int, str]] = []
    for family, *_, sockaddr in infos:
        entry = (int(family), str(sockaddr[0]))
        if entry not in found:
            found.append(entry)
    return found
