"""Which address the http kind connects to: the name resolved once per connection and timed
as the resolve phase, `preferred_ip_protocol`'s addresses first, the next address tried
only when one fails at once, and `probe_ip_protocol` saying which was used."""

from __future__ import annotations

from typing import Any

from stackprobe.probes.http import Reason
from tests.support.blackbox_peers import HttpPeer, Reply, dual_stack_name
from tests.support.probing import RunProbe, make_target, samples_by_name


def target(url: str, **keys: Any) -> Any:
    return make_target({"name": "a", "kind": "http", "url": url, "timeout": "2s", **keys})


async def test_a_refused_address_passes_to_the_next_of_the_other_family(
    run_probe: RunProbe,
) -> None:
    """The server listens on 127.0.0.1 only: ::1, preferred, refuses, and 127.0.0.1 answers;
    without the fallback, the refusal is the run's."""
    name = dual_stack_name()
    async with HttpPeer(lambda _: Reply()) as server:
        url = server.url.replace("127.0.0.1", name)
        fell_back = await run_probe(target(url, preferred_ip_protocol="ip6"))
        refused = await run_probe(
            target(url, preferred_ip_protocol="ip6", ip_protocol_fallback=False)
        )
        ip4 = await run_probe(target(url, preferred_ip_protocol="ip4"))

    assert fell_back.success, fell_back.detail
    assert samples_by_name(fell_back)["probe_ip_protocol"] == {(): 4.0}
    assert (refused.success, refused.reason) == (False, Reason.CONNECT_REFUSED)
    assert samples_by_name(refused)["probe_ip_protocol"] == {(): 0.0}
    assert "probe_ip_addr_hash" not in samples_by_name(refused)
    assert ip4.success and samples_by_name(ip4)["probe_ip_protocol"] == {(): 4.0}


async def test_no_address_of_the_family_asked_for_fails_with_dns_and_says_so(
    run_probe: RunProbe,
) -> None:
    async with HttpPeer(lambda _: Reply()) as server:
        result = await run_probe(
            target(server.url, preferred_ip_protocol="ip6", ip_protocol_fallback=False)
        )

    assert (result.success, result.reason) == (False, Reason.DNS)
    assert "no ip6 address, and ip_protocol_fallback is off" in result.detail


async def test_a_name_is_resolved_in_its_own_phase_and_an_address_is_not(
    run_probe: RunProbe,
) -> None:
    name = dual_stack_name()
    async with HttpPeer(lambda _: Reply()) as server:
        by_name = await run_probe(target(server.url.replace("127.0.0.1", name)))
        by_address = await run_probe(target(server.url))

    named = samples_by_name(by_name)["probe_http_duration_seconds"]
    addressed = samples_by_name(by_address)["probe_http_duration_seconds"]
    assert named[("resolve",)] > 0 and addressed[("resolve",)] == 0
    hashes = {samples_by_name(r)["probe_ip_addr_hash"][()] for r in (by_name, by_address)}
    assert len(hashes) == 1  # the same address, 127.0.0.1, both times


async def test_a_host_label_over_63_characters_is_dns_not_an_internal_error(
    run_probe: RunProbe,
) -> None:
    result = await run_probe(target(f"http://{'a' * 64}.invalid/health"))

    assert (result.success, result.reason) == (False, Reason.DNS)
    assert "is not a valid host name" in result.detail


async def test_no_fallback_without_a_preference_is_ipv6_only_as_in_blackbox(
    run_probe: RunProbe,
) -> None:
    async with HttpPeer(lambda _: Reply()) as server:
        result = await run_probe(target(server.url, ip_protocol_fallback=False))

    assert (result.success, result.reason) == (False, Reason.DNS)
    assert "no ip6 address" in result.detail
