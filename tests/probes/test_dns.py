"""The dns probe against a real resolver on loopback (dnsmasq) and small real UDP peers."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rrset
import pytest

from stackprobe.config import ConfigError
from stackprobe.contract import Health, Verdict
from stackprobe.probes.dns import Reason
from tests.support.polling import wait_until
from tests.support.probing import RunProbe, make_target, samples_by_name
from tests.support.processes import free_port, require_binary


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[str]:
    """dnsmasq serving a `.test` zone: site.test has one A record, multi.test two, many.test
    six."""
    binary = require_binary("dnsmasq")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--local=/test/",
            "--host-record=site.test,127.0.0.10",
            "--host-record=multi.test,127.0.0.11",
            "--host-record=multi.test,127.0.0.12",
            *(f"--host-record=many.test,127.0.0.{20 + i}" for i in range(6)),
            "--log-facility=-",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def listening() -> bool:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if process.poll() is not None:
            pytest.fail(
                f"dnsmasq exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        return False

    wait_until(listening, 10, what=f"dnsmasq on port {port}", interval=0.05)
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    if process.stderr:
        process.stderr.close()


SOA = "ns.test. admin.test. 1 3600 600 86400 60"


class _Responder(asyncio.DatagramProtocol):
    """Answers every query with a fixed response code, or with bytes that are not DNS, or
    (`truncate`) with an empty answer flagged TC, which sends the client on to TCP; `soa`
    adds the zone's SOA in the authority section, as an authoritative server does."""

    def __init__(
        self,
        rcode: int | None,
        truncate: bool = False,
        soa: bool = False,
        answer: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.rcode = rcode
        self.truncate = truncate
        self.soa = soa
        self.answer = answer  # (type, record) for the asked name, whatever type was asked
        self.classes: list[str] = []  # each query's class, as asked
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.rcode is None:
            self.transport.sendto(b"\x00\x01garbage", addr)
            return
        query = dns.message.from_wire(data)
        self.classes.append(dns.rdataclass.to_text(query.question[0].rdclass))
        response = dns.message.make_response(query)
        response.set_rcode(self.rcode)
        name = response.question[0].name
        for rdtype, record in self.answer:
            response.answer.append(dns.rrset.from_text(name, 300, "IN", rdtype, record))
        if self.soa:
            response.authority.append(dns.rrset.from_text("test.", 300, "IN", "SOA", SOA))
        if self.truncate:  # late, so the TCP retry only has part of the deadline left
            response.flags |= dns.flags.TC
            asyncio.get_running_loop().call_later(
                0.6, self.transport.sendto, response.to_wire(), addr
            )
            return
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def responder() -> AsyncIterator[dict[str, str]]:
    loop = asyncio.get_running_loop()
    endpoints: dict[str, str] = {}
    transports = []
    for name, rcode, soa in (
        ("servfail", dns.rcode.SERVFAIL, False),
        ("garbage", None, False),
        ("nxdomain-soa", dns.rcode.NXDOMAIN, True),
    ):
        transport, _ = await loop.create_datagram_endpoint(
            lambda rcode=rcode, soa=soa: _Responder(rcode, soa=soa), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        endpoints[name] = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    blackhole.bind(("127.0.0.1", 0))
    endpoints["blackhole"] = f"127.0.0.1:{blackhole.getsockname()[1]}"
    # Truncated over UDP, and TCP on the same port accepts nothing: a firewalled TCP 53.
    # TCP first: its port space is the crowded one (every test connection takes a port).
    tcp_listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = tcp_listener.getsockname()[1]
    tcp_filler = socket.create_connection(("127.0.0.1", port))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Responder(dns.rcode.NOERROR, truncate=True), local_addr=("127.0.0.1", port)
    )
    transports.append(transport)
    endpoints["truncated-then-tcp-dropped"] = f"127.0.0.1:{port}"
    yield endpoints
    for sock in (blackhole, tcp_filler, tcp_listener):
        sock.close()
    for transport in transports:
        transport.close()


def target(server: str, **extra: Any) -> Any:
    raw = {
        "name": "d",
        "kind": "dns",
        "query": "site.test",
        "server": server,
        "timeout": "1s",
        **extra,
    }
    return make_target(raw)


async def test_resolving_name_exports_blackbox_names(dnsmasq: str, run_probe: RunProbe) -> None:
    result = await run_probe(target(dnsmasq, query="multi.test"))

    assert result.success, result.detail
    found = samples_by_name(result)
    assert found["probe_dns_answer_rrs"] == {(): 2.0}
    assert found["probe_dns_query_succeeded"] == {(): 1.0}
    assert found["stackprobe_dns_rcode"] == {(): 0.0}
    assert 0 < found["probe_dns_lookup_time_seconds"][()] < 1
    assert set(found) == {
        "probe_dns_lookup_time_seconds",
        "probe_dns_answer_rrs",
        "probe_dns_authority_rrs",
        "probe_dns_additional_rrs",
        "probe_dns_query_succeeded",
        "stackprobe_dns_rcode",
        "probe_dns_duration_seconds",
        "probe_ip_protocol",
        "probe_ip_addr_hash",
    }
    assert set(found["probe_dns_duration_seconds"]) == {("resolve",), ("connect",), ("request",)}
    assert found["probe_ip_protocol"] == {(): 4.0}


async def test_any_counts_every_answer_record_as_blackbox_does(run_probe: RunProbe) -> None:
    """An ANY query is answered with records of other types: each counts for min_answers."""
    loop = asyncio.get_running_loop()
    answer = (("A", "192.0.2.1"), ("AAAA", "2001:db8::1"))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Responder(dns.rcode.NOERROR, answer=answer), local_addr=("127.0.0.1", 0)
    )
    try:
        server = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
        result = await run_probe(target(server, record_type="ANY"))
        strict = await run_probe(target(server, record_type="ANY", min_answers=3))
    finally:
        transport.close()

    assert result.success, result.detail
    assert samples_by_name(result)["probe_dns_answer_rrs"] == {(): 2.0}
    assert (strict.success, strict.reason) == (False, Reason.NO_ANSWER)
    assert strict.detail == "site.test ANY: 2 answer(s), min_answers is 3"


async def test_query_succeeded_means_a_response_arrived_as_in_blackbox(
    responder: dict[str, str], run_probe: RunProbe
) -> None:
    """blackbox_exporter's dashboards read probe_dns_query_succeeded as "the server
    answered": a SERVFAIL is an answer (the run still fails), silence is not."""
    servfail = await run_probe(target(responder["servfail"]))
    silent = await run_probe(target(responder["blackhole"], timeout="300ms"))

    assert (servfail.success, servfail.reason) == (False, Reason.SERVFAIL)
    assert samples_by_name(servfail)["probe_dns_query_succeeded"] == {(): 1.0}
    assert samples_by_name(silent)["probe_dns_query_succeeded"] == {(): 0.0}


async def test_tcp_transport(dnsmasq: str, run_probe: RunProbe) -> None:
    result = await run_probe(target(dnsmasq, transport="tcp"))

    assert result.success, result.detail


async def test_expected_nxdomain_is_a_success(dnsmasq: str, run_probe: RunProbe) -> None:
    result = await run_probe(
        target(dnsmasq, query="gone.test", valid_rcodes=["NXDOMAIN"], min_answers=0)
    )

    assert result.success, result.detail


@pytest.mark.parametrize(
    ("server", "extra", "reason"),
    [
        ("dnsmasq", {"query": "nope.test"}, Reason.NXDOMAIN),
        ("dnsmasq", {"query": "example.com"}, Reason.REFUSED),
        ("dnsmasq", {"record_type": "AAAA"}, Reason.NO_ANSWER),
        ("dnsmasq", {"query": "multi.test", "min_answers": 3}, Reason.NO_ANSWER),
        ("servfail", {}, Reason.SERVFAIL),
        ("garbage", {}, Reason.INVALID_RESPONSE),
        ("blackhole", {}, Reason.TIMEOUT),
        ("truncated-then-tcp-dropped", {}, Reason.TIMEOUT),
        ("closed-tcp", {"transport": "tcp"}, Reason.CONNECT_REFUSED),
    ],
)
async def test_failure_reasons(
    dnsmasq: str,
    responder: dict[str, str],
    run_probe: RunProbe,
    server: str,
    extra: dict[str, Any],
    reason: Reason,
) -> None:
    servers = {"dnsmasq": dnsmasq, "closed-tcp": f"127.0.0.1:{free_port()}", **responder}
    loop = asyncio.get_running_loop()
    started = loop.time()

    result = await run_probe(target(servers[server], **extra))

    assert (result.success, result.reason) == (False, reason), result.detail
    assert loop.time() - started < 1.5
    assert "probe_dns_query_succeeded" in samples_by_name(result)


async def test_rcode_failure_detail_names_query_and_code(dnsmasq: str, run_probe: RunProbe) -> None:
    result = await run_probe(target(dnsmasq, query="nope.test"))

    assert result.detail == "nope.test A: NXDOMAIN"
    assert samples_by_name(result)["stackprobe_dns_rcode"] == {(): 3.0}


# The console's verdict and evidence (exporter/contract.py: Verdict, Evidence).


def shown(result: Any, label: str) -> list[str]:
    return [value for name, value in result.evidence if name == label]


async def test_a_resolving_name_is_ok_and_shows_query_rcode_and_answers(
    dnsmasq: str, run_probe: RunProbe
) -> None:
    result = await run_probe(target(dnsmasq, query="multi.test"))

    assert result.health() == Verdict(Health.OK)
    assert shown(result, "query") == [f"multi.test A @ {dnsmasq} over udp"]
    [rcode] = shown(result, "rcode")
    assert rcode.startswith("NOERROR in ") and rcode.endswith(" ms")
    assert sorted(shown(result, "answer")) == [
        "multi.test. 0 IN A 127.0.0.11",
        "multi.test. 0 IN A 127.0.0.12",
    ]


async def test_answers_past_the_first_four_are_counted_not_shown(
    dnsmasq: str, run_probe: RunProbe
) -> None:
    result = await run_probe(target(dnsmasq, query="many.test"))

    answers = shown(result, "answer")
    assert len(answers) == 5 and answers[-1] == "and 2 more"
    assert all(line.startswith("many.test. 0 IN A 127.0.0.2") for line in answers[:4])


@pytest.mark.parametrize(
    ("server", "extra", "why", "rcode"),
    [
        ("dnsmasq", {"query": "nope.test"}, "nope.test A: NXDOMAIN", "NXDOMAIN"),
        (
            "dnsmasq",
            {"record_type": "AAAA"},
            "site.test AAAA: 0 answer(s), min_answers is 1",
            "NOERROR",
        ),
        ("servfail", {}, "site.test A: SERVFAIL", "SERVFAIL"),
        ("blackhole", {}, "no response from {server} within 1s", None),
    ],
)
async def test_a_name_that_does_not_resolve_pages_dns_not_resolving(
    dnsmasq: str,
    responder: dict[str, str],
    run_probe: RunProbe,
    server: str,
    extra: dict[str, Any],
    why: str,
    rcode: str | None,
) -> None:
    address = {"dnsmasq": dnsmasq, **responder}[server]
    query = f"{extra.get('query', 'site.test')} {extra.get('record_type', 'A')}"

    result = await run_probe(target(address, **extra))

    assert result.health() == Verdict(Health.FAILING, why.format(server=address), "DnsNotResolving")
    assert shown(result, "query") == [f"{query} @ {address} over udp"]
    assert [line.split(" in ")[0] for line in shown(result, "rcode")] == ([rcode] if rcode else [])
    assert shown(result, "answer") == []


async def test_an_expected_nxdomain_is_ok(dnsmasq: str, run_probe: RunProbe) -> None:
    result = await run_probe(
        target(dnsmasq, query="gone.test", valid_rcodes=["NXDOMAIN"], min_answers=0)
    )

    assert result.health() == Verdict(Health.OK)
    assert shown(result, "rcode")[0].startswith("NXDOMAIN in ")


async def test_with_no_answer_the_authority_says_which_zone_answered(
    responder: dict[str, str], run_probe: RunProbe
) -> None:
    result = await run_probe(target(responder["nxdomain-soa"]))

    assert result.health() == Verdict(Health.FAILING, "site.test A: NXDOMAIN", "DnsNotResolving")
    assert shown(result, "authority") == [f"test. 300 IN SOA {SOA}"]


# blackbox_exporter's record checks, written as its prober tests write them


@pytest.mark.parametrize(
    ("checks", "why"),
    [
        ({"fail_if_matches_regexp": [".*127.0.0.11"]}, "matches '.*127.0.0.11'"),
        ({"fail_if_matches_regexp": [".*192.0.2.1"]}, ""),
        # fails unless every record matches, whatever its name says, as blackbox's code does
        ({"fail_if_all_match_regexp": [".*127.0.0.1"]}, ""),
        ({"fail_if_all_match_regexp": [".*127.0.0.11"]}, "does not match '.*127.0.0.11'"),
        ({"fail_if_not_matches_regexp": ["multi.test.\t\\d+\tIN\tA\t127.0.0.1[12]"]}, ""),
        ({"fail_if_not_matches_regexp": [".*127.0.0.11$"]}, "does not match '.*127.0.0.11$'"),
        ({"fail_if_none_matches_regexp": ["127.0.0.12"]}, ""),
        ({"fail_if_none_matches_regexp": ["192.0.2.1"]}, "no record matches '192.0.2.1'"),
    ],
)
async def test_answer_records_are_validated_as_blackbox_does(
    dnsmasq: str, run_probe: RunProbe, checks: dict[str, list[str]], why: str
) -> None:
    """multi.test has two A records, 127.0.0.11 and 127.0.0.12: a name resolving to the
    wrong address must fail."""
    result = await run_probe(target(dnsmasq, query="multi.test", validate_answer_rrs=checks))

    if why:
        assert (result.success, result.reason) == (False, Reason.RECORD_MISMATCH)
        assert result.detail.startswith("multi.test A: answer ") and why in result.detail
        assert result.health().alert == "DnsNotResolving"
    else:
        assert result.success, result.detail


async def test_an_empty_section_fails_a_check_that_needs_a_match(
    dnsmasq: str, run_probe: RunProbe
) -> None:
    required = {"fail_if_none_matches_regexp": ["."]}
    result = await run_probe(target(dnsmasq, query="multi.test", validate_authority_rrs=required))
    forbidden = await run_probe(
        target(
            dnsmasq, query="multi.test", validate_additional_rrs={"fail_if_matches_regexp": ["."]}
        )
    )

    assert result.detail == "multi.test A: authority no record, and a match is required"
    assert forbidden.success, forbidden.detail


async def test_soa_serial_and_query_class(run_probe: RunProbe) -> None:
    loop = asyncio.get_running_loop()
    answer = (("SOA", SOA),)
    transport, responder = await loop.create_datagram_endpoint(
        lambda: _Responder(dns.rcode.NOERROR, answer=answer), local_addr=("127.0.0.1", 0)
    )
    try:
        server = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
        soa = await run_probe(target(server, query="test", record_type="SOA"))
        chaos = await run_probe(
            target(server, query="version.bind", record_type="TXT", query_class="CH", min_answers=0)
        )
    finally:
        transport.close()

    assert soa.success, soa.detail
    assert samples_by_name(soa)["probe_dns_serial"] == {(): 1.0}
    assert chaos.success, chaos.detail
    assert "probe_dns_serial" not in samples_by_name(chaos)
    assert responder.classes == ["IN", "CH"]


def test_an_unknown_class_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a DNS class"):
        target("127.0.0.1", query_class="XX")


@pytest.mark.parametrize("server", ["10.0.0.256", "300.1.1.1:53", "10.1"])
def test_a_server_of_digits_and_dots_must_be_an_address(server: str) -> None:
    """A mistyped address is refused, not looked up as a name (glibc reads 10.1 as 10.0.0.1)."""
    with pytest.raises(ConfigError, match="must be an IP address or a host name"):
        target(server)
