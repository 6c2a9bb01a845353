"""blackbox_exporter's body checks where a server makes them hard: a brotli body larger
than one decoding step, JSON that CEL cannot take, a header check behind a failed status."""

from __future__ import annotations

import json
import os
from typing import Any

import brotli

from stackprobe.probes.http import Reason
from tests.support.blackbox_peers import HttpPeer, Reply
from tests.support.probing import RunProbe, make_target, samples_by_name


def target(url: str, **keys: Any) -> Any:
    return make_target({"name": "c", "kind": "http", "url": url, "timeout": "3s", **keys})


async def test_a_br_body_larger_than_one_decoding_step_is_read_whole(run_probe: RunProbe) -> None:
    """brotli hands its output out in steps (about 32 KiB past the limit of each call):
    every step is asked for, the body is not cut at the first."""
    data = os.urandom(150_000) + bytes(150_000)
    reply = Reply(headers=(("Content-Encoding", "br"),), body=brotli.compress(data, quality=1))
    async with HttpPeer(lambda _: reply) as server:
        result = await run_probe(target(server.url, compression="br", body_format="text"))

    assert result.success, result.detail
    assert samples_by_name(result)["probe_http_uncompressed_body_length"] == {(): 300_000.0}


async def test_json_cel_cannot_take_fails_the_check_not_the_prober(run_probe: RunProbe) -> None:
    """A number past 64 bits and a document nested past the interpreter's depth: the CEL
    check fails with why (body_mismatch), never an internal error."""
    deep = ("[" * 900 + "]" * 900).encode()
    for body in (json.dumps({"status": 18446744073709551616}).encode(), deep):
        async with HttpPeer(lambda _, body=body: Reply(body=body)) as server:
            result = await run_probe(
                target(server.url, fail_if_body_json_not_matches_cel="body.status == 'ok'")
            )
        assert (result.success, result.reason) == (False, Reason.BODY_MISMATCH), result.detail
        assert samples_by_name(result)["probe_failed_due_to_cel"] == {(): 1.0}


async def test_a_header_check_behind_a_failed_status_is_not_the_failure(
    run_probe: RunProbe,
) -> None:
    """The status is judged first, as in blackbox: a 503 whose header also mismatches fails
    with http_status, and probe_failed_due_to_regex stays 0."""
    reply = Reply(503, headers=(("Content-Type", "text/html"),))
    check = [{"header": "Content-Type", "regexp": "json"}]
    async with HttpPeer(lambda _: reply) as server:
        result = await run_probe(target(server.url, fail_if_header_not_matches=check))

    assert result.reason == Reason.HTTP_STATUS
    assert samples_by_name(result)["probe_failed_due_to_regex"] == {(): 0.0}
