"""DNS probe: does the site's name still resolve, and how fast (the `dig` of a site outage).

One query per run
sent straight to a name server with dnspython, as blackbox_exporter's dns prober does, so the
response code and the answer, authority and additional counts are reported as the server gave
them rather than hidden behind a stub resolver's exceptions.

Defaults worth knowing:
- `server` defaults to the first name server in /etc/resolv.conf, read at each run.
- Success needs a response code in `valid_rcodes` (NOERROR) and at least `min_answers` (1)
  answer records of the asked type: a NOERROR with an empty answer means "the site does not
  resolve" to the person running `dig`, and so it does here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from enum import StrEnum
from itertools import islice
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from stackprobe.contract import (
    Area,
    Evidence,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
    Verdict,
)
from stackprobe.probes._ip import PROBE_IP_ADDR_HASH, PROBE_IP_PROTOCOL, Addressing, IpProtocol
from stackprobe.target import Regex, TargetConfig

# dnspython is imported by the first dns target the config loads (its checks read record
# types and codes), so a config without one never loads it.
if TYPE_CHECKING:
    import dns.message
    import dns.rdata
    import dns.rrset


class Reason(StrEnum):
    """Why a DNS probe failed; the label values of `stackprobe_probe_failure_reason`."""

    TIMEOUT = "timeout"  # no response within the deadline (UDP loss, server down, firewall)
    CONNECT_REFUSED = "connect_refused"  # nothing listens on the server's port
    NXDOMAIN = "nxdomain"  # the name does not exist
    SERVFAIL = "servfail"  # the server could not answer (broken delegation, DNSSEC)
    REFUSED = "refused"  # the server refuses to answer this client or zone
    UNEXPECTED_RCODE = "unexpected_rcode"  # any other response code outside valid_rcodes
    NO_ANSWER = "no_answer"  # fewer than min_answers records of the asked type
    RECORD_MISMATCH = "record_mismatch"  # a validate_*_rrs rule: the name resolves wrongly
    INVALID_RESPONSE = "invalid_response"  # a response that does not parse
    OTHER = "other"


class RecordChecks(BaseModel):
    """blackbox_exporter's `validate_answer_rrs` (and authority, additional): regexps
    searched in each record as `dig` and Go's DNS library print it, tab-separated
    (`www.example.com.\t300\tIN\tA\t192.0.2.1`), so blackbox's patterns work unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_if_matches_regexp: tuple[Regex, ...] = ()  # any record matches any
    # despite its name, blackbox_exporter fails unless every record matches each of these
    fail_if_all_match_regexp: tuple[Regex, ...] = ()
    fail_if_not_matches_regexp: tuple[Regex, ...] = ()  # a record does not match one
    fail_if_none_matches_regexp: tuple[Regex, ...] = ()  # no record matches one

    def failure(self, records: list[str]) -> str:
        """Why the records fail these checks, or ""; in blackbox_exporter's order."""
        if not records and (self.fail_if_not_matches_regexp or self.fail_if_none_matches_regexp):
            return "no record, and a match is required"
        for record in records:
            for pattern in self.fail_if_matches_regexp:
                if pattern.search(record):
                    return f"{_shown(record)} matches {pattern.pattern!r}"
            for pattern in self.fail_if_not_matches_regexp:
                if not pattern.search(record):
                    return f"{_shown(record)} does not match {pattern.pattern!r}"
        for pattern in self.fail_if_all_match_regexp:
            for record in records:
                if not pattern.search(record):
                    return (
                        f"{_shown(record)} does not match {pattern.pattern!r} "
                        "(fail_if_all_match_regexp: every record must match)"
                    )
        for pattern in self.fail_if_none_matches_regexp:
            if not any(pattern.search(record) for record in records):
                return f"no record matches {pattern.pattern!r}"
        return ""


def _shown(record: str) -> str:
    return record.replace("\t", " ")[:EVIDENCE_RECORD_MAX]


class DnsTarget(TargetConfig):
    kind: Literal["dns"] = "dns"
    query: str
    record_type: str = "A"
    server: str | None = None
    transport: Literal["udp", "tcp"] = "udp"
    valid_rcodes: tuple[str, ...] = ("NOERROR",)
    min_answers: int = Field(1, ge=0)
    recursion_desired: bool = True
    query_class: str = "IN"
    validate_answer_rrs: RecordChecks | None = None
    validate_authority_rrs: RecordChecks | None = None
    validate_additional_rrs: RecordChecks | None = None
    # Which address of a server given by name to ask, as blackbox_exporter's keys.
    preferred_ip_protocol: IpProtocol | None = None
    ip_protocol_fallback: bool = True

    @field_validator("query_class")
    @classmethod
    def _known_class(cls, value: str) -> str:
        import dns.exception
        import dns.rdataclass

        try:
            dns.rdataclass.from_text(value.upper())
        except dns.exception.DNSException:
            raise PydanticCustomError(
                "dns_class", "{found} is not a DNS class; use IN, CH or HS", {"found": repr(value)}
            ) from None
        return value.upper()

    @field_validator("query")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        import dns.exception
        import dns.name

        try:
            dns.name.from_text(value)
        except dns.exception.DNSException as exc:
            raise PydanticCustomError(
                "dns_name",
                "{name} is not a valid DNS name: {error}",
                {"name": repr(value), "error": str(exc)},
            ) from None
        return value

    @field_validator("record_type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        import dns.exception
        import dns.rdatatype

        try:
            dns.rdatatype.from_text(value.upper())
        except dns.exception.DNSException:
            raise PydanticCustomError(
                "dns_type",
                "{found} is not a DNS record type; use A, AAAA, CNAME, MX, TXT, ...",
                {"found": repr(value)},
            ) from None
        return value.upper()

    @field_validator("valid_rcodes")
    @classmethod
    def _known_rcodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import dns.exception
        import dns.rcode

        for code in value:
            try:
                dns.rcode.from_text(code.upper())
            except dns.exception.DNSException:
                raise PydanticCustomError(
                    "dns_rcode",
                    "{found} is not a DNS response code; use NOERROR, NXDOMAIN, ...",
                    {"found": repr(code), "entry": value.index(code)},
                ) from None
        return tuple(code.upper() for code in value)

    @field_validator("server")
    @classmethod
    def _ip_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            _split_server(value)
        return value

    def describe(self) -> str:
        return f"{self.record_type} {self.query} @ {self.server or 'resolv.conf'}"


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*\.?$")


def _split_server(text: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353`, `ns1.example.com` or
    `localhost:5353` -> (address or name, port). A name is resolved at each run."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(port)
        # digits and dots are an address (a mistyped one is an error, not a name to look up)
        if not _HOST_NAME.match(host) or re.fullmatch(r"[\d.]+", host):
            ipaddress.ip_address(host)
    except ValueError:
        raise PydanticCustomError(
            "dns_server",
            "server {found} must be an IP address or a host name with an optional port, like "
            "10.0.0.2, 10.0.0.2:5353, [fd00::2]:53 or ns1.example.com:53",
            {"found": repr(text)},
        ) from None
    return host, number


PROBE_DNS_LOOKUP_TIME_SECONDS = MetricSpec(
    "probe_dns_lookup_time_seconds", "Seconds from sending the query to its response."
)
PROBE_DNS_DURATION_SECONDS = MetricSpec(
    "probe_dns_duration_seconds",
    "Seconds per phase: resolve (the server's name), connect (TCP; opening the socket for "
    "UDP), request (the query and its response).",
    ("phase",),
)
PROBE_DNS_ANSWER_RRS = MetricSpec("probe_dns_answer_rrs", "Records in the answer section.")
PROBE_DNS_AUTHORITY_RRS = MetricSpec("probe_dns_authority_rrs", "Records in the authority section.")
PROBE_DNS_ADDITIONAL_RRS = MetricSpec(
    "probe_dns_additional_rrs", "Records in the additional section."
)
PROBE_DNS_QUERY_SUCCEEDED = MetricSpec(
    "probe_dns_query_succeeded",
    "1 if a response arrived, whatever its code (blackbox_exporter's meaning; valid_rcodes "
    "decides probe_success).",
)
PROBE_DNS_SERIAL = MetricSpec(
    "probe_dns_serial", "The zone's serial, from the answer's SOA record (record_type SOA)."
)
PROBE_DNS_RCODE = MetricSpec(
    "stackprobe_dns_rcode",
    "Numeric DNS response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN), -1 when no response arrived.",
)

METRICS = (
    PROBE_DNS_LOOKUP_TIME_SECONDS,
    PROBE_DNS_DURATION_SECONDS,
    PROBE_DNS_ANSWER_RRS,
    PROBE_DNS_AUTHORITY_RRS,
    PROBE_DNS_ADDITIONAL_RRS,
    PROBE_DNS_QUERY_SUCCEEDED,
    PROBE_DNS_RCODE,
    PROBE_DNS_SERIAL,
    PROBE_IP_PROTOCOL,
    PROBE_IP_ADDR_HASH,
)

# DnsNotResolving: probe_success == 0 of a dns target, whatever the reason.
NOT_RESOLVING_ALERT = "DnsNotResolving"
EVIDENCE_RECORDS = 4  # answer records shown at most; the count says how many there were
EVIDENCE_RECORD_MAX = 200  # characters of one record (a TXT record can hold kilobytes)

# The response codes with a reason of their own (NXDOMAIN 3, SERVFAIL 2, REFUSED 5).
_RCODE_REASONS = {3: Reason.NXDOMAIN, 2: Reason.SERVFAIL, 5: Reason.REFUSED}


async def probe(target: DnsTarget, ctx: ProbeContext) -> ProbeResult:
    import dns.exception
    import dns.flags
    import dns.message
    import dns.resolver

    try:
        host, port = _where(target)
    except (dns.resolver.NoResolverConfiguration, IndexError, OSError):
        return _failed(
            Reason.OTHER,
            "no server given and /etc/resolv.conf names none",
            (("query", f"{target.query} {target.record_type} @ resolv.conf: names no server"),),
        )
    query = dns.message.make_query(target.query, target.record_type, target.query_class)
    if not target.recursion_desired:
        query.flags &= ~dns.flags.RD
    asked = (
        ("query", f"{target.query} {target.record_type} @ {host}:{port} over {target.transport}"),
    )
    run = _Run(Addressing(target.preferred_ip_protocol, target.ip_protocol_fallback))
    try:
        async with asyncio.timeout_at(ctx.deadline):
            response, tcp = await _ask(target, query, host, port, ctx, run)
    except (dns.exception.Timeout, TimeoutError):
        detail = f"no response from {host}:{port} within {target.timeout:g}s"
        return _failed(Reason.TIMEOUT, detail, asked, run)
    except ConnectionRefusedError:
        return _failed(Reason.CONNECT_REFUSED, f"{host}:{port} refused the query", asked, run)
    except socket.gaierror as exc:
        detail = f"cannot resolve the server {host}: {exc.strerror or exc}"
        return _failed(Reason.OTHER, detail, asked, run)
    except dns.exception.DNSException as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return _failed(Reason.INVALID_RESPONSE, detail, asked, run)
    except OSError as exc:
        return _failed(Reason.OTHER, f"{type(exc).__name__}: {exc}", asked, run)
    if tcp and target.transport == "udp":
        asked = (("query", f"{asked[0][1]}, again over tcp (the answer was truncated)"),)
    return _judge(target, response, run, asked)


class _Run:
    """One run's address and phase timings, kept apart so a failure still reports them."""

    __slots__ = ("addressing", "connect", "request")

    def __init__(self, addressing: Addressing) -> None:
        self.addressing = addressing
        self.connect = 0.0
        self.request = 0.0

    def samples(self) -> tuple[Sample, ...]:
        return (
            PROBE_DNS_DURATION_SECONDS(self.addressing.resolve_seconds, "resolve"),
            PROBE_DNS_DURATION_SECONDS(self.connect, "connect"),
            PROBE_DNS_DURATION_SECONDS(self.request, "request"),
            *self.addressing.samples(),
        )


async def _ask(
    target: DnsTarget,
    query: dns.message.Message,
    host: str,
    port: int,
    ctx: ProbeContext,
    run: _Run,
) -> tuple[dns.message.Message, bool]:
    """The query sent to the server's first address of the preferred family, over a socket
    opened here so that connecting is timed apart from the exchange, as in
    blackbox_exporter. dnspython gives a TCP retry after a truncated UDP answer the rest of
    the run's time."""
    import dns.asyncbackend
    import dns.asyncquery

    address = run.addressing.address = (await run.addressing.candidates(host, port))[0]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    tcp = target.transport == "tcp"
    backend = dns.asyncbackend.get_backend("asyncio")
    started = time.perf_counter()
    sock = await backend.make_socket(  # type: ignore[no-untyped-call]
        family,
        socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM,
        destination=(address, port) if tcp else None,
        timeout=ctx.remaining(),
    )
    async with sock:
        run.connect = time.perf_counter() - started
        started = time.perf_counter()
        try:
            if tcp:
                response = await dns.asyncquery.tcp(
                    query,
                    address,
                    ctx.remaining(),
                    port,
                    sock=sock,
                )
            else:
                response, tcp = await dns.asyncquery.udp_with_fallback(
                    query,
                    address,
                    ctx.remaining(),
                    port,
                    udp_sock=sock,
                )
        finally:
            run.request = time.perf_counter() - started
    return response, tcp


def _failed(
    reason: Reason, detail: str, evidence: Evidence, run: _Run | None = None
) -> ProbeResult:
    """A run that got no usable response: the name does not resolve, for the pager too."""
    return ProbeResult.failed(
        reason,
        detail,
        _samples() + (run.samples() if run is not None else ()),
        verdict=Verdict(Health.FAILING, detail, NOT_RESOLVING_ALERT),
        evidence=evidence,
    )


def _where(target: DnsTarget) -> tuple[str, int]:
    import dns.resolver

    if target.server is not None:
        return _split_server(target.server)
    return str(dns.resolver.Resolver().nameservers[0]), 53


def _judge(
    target: DnsTarget, response: dns.message.Message, run: _Run, asked: Evidence
) -> ProbeResult:
    import dns.rcode
    import dns.rdatatype

    elapsed = run.request
    rcode = response.rcode()
    rdtype = dns.rdatatype.from_text(target.record_type)
    answers = sum(
        len(rrset)
        for rrset in response.answer
        if rrset.rdtype == rdtype or rdtype == dns.rdatatype.ANY  # ANY asks for every type
    )
    rcode_text = dns.rcode.to_text(rcode)
    valid = rcode_text in target.valid_rcodes
    serials = [
        rdata.serial
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.SOA and rdtype == dns.rdatatype.SOA
        for rdata in rrset
    ]
    samples = (
        *(PROBE_DNS_SERIAL(serial) for serial in serials[-1:]),
        PROBE_DNS_LOOKUP_TIME_SECONDS(elapsed),
        PROBE_DNS_ANSWER_RRS(sum(len(rrset) for rrset in response.answer)),
        PROBE_DNS_AUTHORITY_RRS(sum(len(rrset) for rrset in response.authority)),
        PROBE_DNS_ADDITIONAL_RRS(sum(len(rrset) for rrset in response.additional)),
        PROBE_DNS_QUERY_SUCCEEDED(1),
        PROBE_DNS_RCODE(int(rcode)),
        *run.samples(),
    )
    evidence = _evidence(response, rcode_text, elapsed, asked)
    if not valid:
        reason = _RCODE_REASONS.get(rcode, Reason.UNEXPECTED_RCODE)
        detail = f"{target.query} {target.record_type}: {rcode_text}"
        return ProbeResult.failed(
            reason,
            detail,
            samples,
            verdict=Verdict(Health.FAILING, detail, NOT_RESOLVING_ALERT),
            evidence=evidence,
        )
    if answers < target.min_answers:
        detail = (
            f"{target.query} {target.record_type}: {answers} answer(s), "
            f"min_answers is {target.min_answers}"
        )
        return ProbeResult.failed(
            Reason.NO_ANSWER,
            detail,
            samples,
            verdict=Verdict(Health.FAILING, detail, NOT_RESOLVING_ALERT),
            evidence=evidence,
        )
    for section, checks in (
        ("answer", target.validate_answer_rrs),
        ("authority", target.validate_authority_rrs),
        ("additional", target.validate_additional_rrs),
    ):
        if checks is None:
            continue
        why = checks.failure(_records(getattr(response, section)))
        if why:
            detail = f"{target.query} {target.record_type}: {section} {why}"
            return ProbeResult.failed(
                Reason.RECORD_MISMATCH,
                detail,
                samples,
                verdict=Verdict(Health.FAILING, detail, NOT_RESOLVING_ALERT),
                evidence=evidence,
            )
    return ProbeResult.ok(samples, evidence=evidence)


def _records(section: list[dns.rrset.RRset]) -> list[str]:
    """Each record as Go's DNS library prints it: name, TTL, class, type, data, tab-separated."""
    import dns.rdataclass
    import dns.rdatatype

    return [
        "\t".join(
            (
                rrset.name.to_text(),
                str(rrset.ttl),
                dns.rdataclass.to_text(rrset.rdclass),
                dns.rdatatype.to_text(rrset.rdtype),
                rdata.to_text(),
            )
        )
        for rrset in section
        for rdata in rrset
    ]


def _evidence(
    response: dns.message.Message, rcode: str, elapsed: float, asked: Evidence
) -> Evidence:
    """What `dig` would show: the response code and the first few answer records, and with
    no answer the authority's first record (the SOA says which zone answered). Records past
    the first few are counted, not formatted."""
    evidence = [*asked, ("rcode", f"{rcode} in {elapsed * 1000:.1f} ms")]
    total = sum(len(rrset) for rrset in response.answer)
    records = ((rrset, rdata) for rrset in response.answer for rdata in rrset)
    evidence += (("answer", _record(*record)) for record in islice(records, EVIDENCE_RECORDS))
    if total > EVIDENCE_RECORDS:
        evidence.append(("answer", f"and {total - EVIDENCE_RECORDS} more"))
    if not total and response.authority:
        rrset = response.authority[0]
        evidence.append(("authority", _record(rrset, next(iter(rrset)))))
    return tuple(evidence)


def _record(rrset: dns.rrset.RRset, rdata: dns.rdata.Rdata) -> str:
    """One record as dig prints it: `site.test. 0 IN A 127.0.0.10`."""
    import dns.rdataclass
    import dns.rdatatype

    kind = f"{dns.rdataclass.to_text(rrset.rdclass)} {dns.rdatatype.to_text(rrset.rdtype)}"
    return f"{rrset.name} {rrset.ttl} {kind} {rdata.to_text()}"[:EVIDENCE_RECORD_MAX]


def _samples() -> tuple[Sample, ...]:
    """Samples for a run that got no response, so the series never go absent."""
    return (
        PROBE_DNS_LOOKUP_TIME_SECONDS(0),
        PROBE_DNS_ANSWER_RRS(0),
        PROBE_DNS_AUTHORITY_RRS(0),
        PROBE_DNS_ADDITIONAL_RRS(0),
        PROBE_DNS_QUERY_SUCCEEDED(0),
        PROBE_DNS_RCODE(-1),
    )


KIND = ProbeKind(
    "dns",
    DnsTarget,
    probe,
    METRICS,
    Reason,
    "One DNS query to a name server: response code, answers, lookup time",
    area=Area.SITE,
    replicas=2,
)
