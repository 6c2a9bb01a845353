"""SQS queues: depth (visible, in flight, delayed), redrive posture, and the dead-letter queue.

What a runbook checks when worker jobs are stuck (`aws sqs get-queue-attributes ...
ApproximateNumberOfMessages`) and the fix it names: a dead-letter queue.
The age of the oldest message is CloudWatch's alone (ApproximateAgeOfOldestMessage): the
`cloudwatch` kind's `sqs_queues` measures it.

Per run: one GetQueueAttributes per queue and per dead-letter queue (SQS has no batch form).
Queue URLs are resolved once (GetQueueUrl) and kept; the dead-letter queue is found from the
queue's RedrivePolicy each run, so adding or changing one needs no config change.

With `canary:` (opt-in, and IAM actions of its own: docs/iam-policy-canaries.json), each run
also sends a message to a queue of its own, receives it and deletes it, as the application
enqueues jobs: a role or key policy that stops SendMessage pages before jobs are lost.

The verdict mirrors alert_rules/sqs.rules.yml with its thresholds. SqsJobsStuck reads 15
minutes of depth and CloudWatch's deletions; this kind keeps 15 minutes of its own runs'
depths instead, and takes "no message in flight in any of them" for "none deleted".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from stackprobe.contract import (
    Area,
    Health,
    MetricSpec,
    ProbeContext,
    ProbeKind,
    ProbeResult,
    Sample,
)
from stackprobe.probes._aws import (
    AwsState,
    Finding,
    Reason,
    gather_all,
    judged,
    measured,
    measured_result,
)
from stackprobe.probes._aws_api import AWS, AwsCallError, AwsProblem, AwsTarget
from stackprobe.probes._canary import (
    NOT_RECEIVED,
    CanaryMismatch,
    CanaryRun,
    canary_specs,
    done_line,
    failed_line,
    run_canary,
)
from stackprobe.probes.cloudwatch import CloudWatchTarget
from stackprobe.target import TargetConfig

ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",
    "QueueArn",
]
STUCK_WINDOW = 900.0  # SqsJobsStuck: deriv(visible[15m]) and no deletion in 15m
CANARY_BODY = "stackprobe write canary "
# Another canary's message (a second replica's) is hidden this long after a receive takes it;
# one older than LEFTOVER_SECONDS is a failed run's, and is deleted.
CANARY_HIDE_SECONDS = 2
LEFTOVER_SECONDS = 300.0


class SqsCanary(BaseModel):
    """The queue the write canary sends to: one of its own, never a queue workers read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str = Field(min_length=1)


class SqsTarget(AwsTarget):
    kind: Literal["sqs"] = "sqs"
    # Queue names (in the target's region and account) or queue URLs.
    queues: tuple[str, ...] = Field(min_length=1)
    # Opt-in: send, receive and delete one message on this queue each run.
    canary: SqsCanary | None = None

    @field_validator("queues")
    @classmethod
    def _one_entry_per_queue_name(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """A queue is labelled by its name, so a name and its URL, or two accounts' queues
        of one name, would emit the same series twice."""
        seen: dict[str, str] = {}
        for queue in value:
            name = _queue_name(queue)
            if name in seen:
                raise PydanticCustomError(
                    "duplicate_entry",
                    "{first} and {second} are both queue {name}: the `queue` label would repeat; "
                    "list each queue once, or use a target per account",
                    {"first": seen[name], "second": queue, "name": name},
                )
            seen[name] = queue
        return value

    @model_validator(mode="after")
    def _canary_queue_of_its_own(self) -> SqsTarget:
        """Each receive of the canary takes up to 10 messages: on a workers' queue it would
        count a receive against real jobs and send them to the dead-letter queue."""
        if self.canary is not None and _queue_name(self.canary.queue) in {
            _queue_name(q) for q in self.queues
        }:
            raise ValueError(
                f"canary.queue {self.canary.queue} is one of `queues`: the canary needs a queue "
                "of its own that no worker reads (e.g. stackprobe-canary)"
            )
        return self

    def describe(self) -> str:
        return f"sqs {', '.join(self.queues)}"


def advice(target: SqsTarget, targets: Sequence[TargetConfig]) -> list[str]:
    """SqsJobsStuck fires on a growing queue only when no message was deleted, and deletions
    are CloudWatch's alone: without them the rule has nothing to join."""
    watched = {q for t in targets if isinstance(t, CloudWatchTarget) for q in t.sqs_queues}
    return [
        f"SqsJobsStuck cannot fire for queue {name}: no cloudwatch target lists it under "
        f"sqs_queues (the rule needs its NumberOfMessagesDeleted); add it there"
        for name in map(_queue_name, target.queues)
        if name not in watched
    ]


_Q = ("queue",)
VISIBLE = MetricSpec(
    "aws_sqs_messages_visible", "ApproximateNumberOfMessages: waiting to be received.", _Q
)
IN_FLIGHT = MetricSpec(
    "aws_sqs_messages_in_flight",
    "ApproximateNumberOfMessagesNotVisible: received, not yet deleted.",
    _Q,
)
DELAYED = MetricSpec(
    "aws_sqs_messages_delayed", "ApproximateNumberOfMessagesDelayed: not yet visible.", _Q
)
REDRIVE = MetricSpec(
    "aws_sqs_redrive_policy", "1 if the queue sends failing messages to a dead-letter queue.", _Q
)
MAX_RECEIVES = MetricSpec(
    "aws_sqs_max_receive_count",
    "Receives before a message moves to the dead-letter queue (only with a redrive policy).",
    _Q,
)
DLQ_VISIBLE = MetricSpec(
    "aws_sqs_dead_letter_messages_visible",
    "Messages waiting in the queue's dead-letter queue: jobs that failed every retry.",
    (*_Q, "dead_letter_queue"),
)

DLQ_EXISTS = MetricSpec(
    "aws_sqs_dead_letter_queue_exists",
    "1 if the dead-letter queue the redrive policy names exists, 0 if it was deleted.",
    (*_Q, "dead_letter_queue"),
)

CANARY = canary_specs("sqs", "queue", "send, receive and delete a message")

METRICS = (
    VISIBLE,
    IN_FLIGHT,
    DELAYED,
    REDRIVE,
    MAX_RECEIVES,
    DLQ_VISIBLE,
    DLQ_EXISTS,
    CANARY.success,
    CANARY.seconds,
    CANARY.failure,
)


async def probe(target: SqsTarget, ctx: ProbeContext) -> ProbeResult:
    return await measured(ctx, lambda: _measure(target, ctx))


def _queue_name(queue: str) -> str:
    return queue.rstrip("/").rsplit("/", 1)[-1]


async def _measure(target: SqsTarget, ctx: ProbeContext) -> ProbeResult:
    state: AwsState = ctx.state if ctx.state is not None else AwsState()
    urls: dict[str, str] = state.cache.setdefault("urls", {})
    try:
        answers = await gather_all(
            _attributes(target, ctx, urls, queue, ATTRIBUTES) for queue in target.queues
        )
    except AwsCallError as exc:
        if exc.problem is AwsProblem.NOT_FOUND:
            urls.clear()  # a queue re-created under the same name gets a new URL
        raise
    samples: list[Sample] = []
    dead_letter: list[tuple[str, str, str]] = []  # (queue, dlq name, owner account)
    depths: list[tuple[str, int, int]] = []  # (queue, visible, in flight)
    no_redrive: list[str] = []
    for queue, attributes in zip(target.queues, answers, strict=True):
        name = _queue_name(queue)
        visible = int(attributes.get("ApproximateNumberOfMessages", 0))
        in_flight = int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))
        samples.append(VISIBLE(visible, name))
        samples.append(IN_FLIGHT(in_flight, name))
        samples.append(DELAYED(int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)), name))
        depths.append((name, visible, in_flight))
        policy = json.loads(attributes.get("RedrivePolicy") or "{}")
        arn = str(policy.get("deadLetterTargetArn", ""))
        samples.append(REDRIVE(1 if arn else 0, name))
        if arn:
            samples.append(MAX_RECEIVES(int(policy.get("maxReceiveCount", 0)), name))
            parts = arn.split(":")
            dead_letter.append((name, parts[-1], parts[-2]))
        else:
            no_redrive.append(name)
    dlq_answers = await gather_all(
        _dead_letter_depth(target, ctx, urls, dlq, owner) for _, dlq, owner in dead_letter
    )
    failing = _stuck(state, depths)
    degraded: list[Finding] = []
    gone = []
    for (name, dlq, _), depth in zip(dead_letter, dlq_answers, strict=True):
        samples.append(DLQ_EXISTS(0 if depth is None else 1, name, dlq))
        if depth is None:
            gone.append(f"{name} -> {dlq}")
            # SqsDeadLetterQueueMissing: aws_sqs_dead_letter_queue_exists == 0
            seen = f"{name}: its dead-letter queue {dlq} does not exist"
            degraded.append(Finding(Health.DEGRADED, seen, "SqsDeadLetterQueueMissing"))
        else:
            samples.append(DLQ_VISIBLE(depth, name, dlq))
            if depth > 0:  # SqsDeadLetterMessages: aws_sqs_dead_letter_messages_visible > 0
                seen = f"{dlq}: {depth} messages that failed in {name}"
                degraded.append(Finding(Health.DEGRADED, seen, "SqsDeadLetterMessages"))
    for name in no_redrive:  # SqsNoRedrivePolicy: aws_sqs_redrive_policy == 0
        seen = f"{name}: no dead-letter queue (no redrive policy)"
        degraded.append(Finding(Health.DEGRADED, seen, "SqsNoRedrivePolicy"))
    canary: CanaryRun | None = None
    if target.canary is not None:
        canary = await _canary(target, ctx, urls, target.canary.queue)
        where = _queue_name(target.canary.queue)
        samples += CANARY.samples(canary, where)
        if not canary.ok:  # SqsWriteCanaryFailing: stackprobe_sqs_canary_success == 0
            seen = failed_line(where, canary)
            failing.append(Finding(Health.FAILING, seen, "SqsWriteCanaryFailing"))
    verdict, evidence = judged(
        failing + degraded,
        f"queues: {len(depths)}; messages waiting {sum(d[1] for d in depths)}, "
        f"in flight {sum(d[2] for d in depths)}",
    )
    if canary is not None and canary.ok and target.canary is not None:
        evidence += (("canary", done_line(_queue_name(target.canary.queue), canary)),)
    said = f"the dead-letter queue of a redrive policy does not exist: {', '.join(gone)}"
    return measured_result(samples, verdict, evidence, said if gone else "")


async def _canary(
    target: SqsTarget, ctx: ProbeContext, urls: dict[str, str], queue: str
) -> CanaryRun:
    """SendMessage, ReceiveMessage (long polling, until the message comes back) and
    DeleteMessage of one message with a token of its own. Another replica's canary message
    a receive takes is hidden for two seconds only; a failed run's, five minutes old, is
    deleted."""
    aws = ctx.use(AWS)
    token = uuid.uuid4().hex
    body = f"{CANARY_BODY}{target.name} {token}"
    url = ""
    receipt = ""

    async def send() -> None:
        nonlocal url
        url = await _queue_url(target, ctx, urls, queue)
        params: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
        if url.endswith(".fifo"):
            # a group of its own: a shared one would hold this message behind any earlier
            # run's left in flight, as FIFO delivers a group in order
            params.update(MessageGroupId=token, MessageDeduplicationId=token)
        await aws.call(target, "sqs", "send_message", ctx.deadline, **params)

    async def receive() -> None:
        nonlocal receipt
        loop = asyncio.get_running_loop()
        while True:
            left = ctx.deadline - loop.time()
            answer = await aws.call(
                target,
                "sqs",
                "receive_message",
                ctx.deadline,
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1 if left >= 2.5 else 0,
                VisibilityTimeout=CANARY_HIDE_SECONDS,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
            for message in answer.get("Messages", ()):
                text = str(message.get("Body", ""))
                if text == body:
                    receipt = str(message["ReceiptHandle"])
                elif text.startswith(CANARY_BODY) and _age(message) > LEFTOVER_SECONDS:
                    # a failed run's: tidying it up is no step of this canary's
                    with contextlib.suppress(AwsCallError):
                        await aws.call(
                            target,
                            "sqs",
                            "delete_message",
                            ctx.deadline,
                            QueueUrl=url,
                            ReceiptHandle=message["ReceiptHandle"],
                        )
            if receipt:
                return
            if ctx.deadline - loop.time() < 0.5:  # another try would outlast the run
                raise CanaryMismatch(
                    NOT_RECEIVED, f"the message sent to {_queue_name(queue)} did not come back"
                )

    async def delete() -> None:
        await aws.call(
            target, "sqs", "delete_message", ctx.deadline, QueueUrl=url, ReceiptHandle=receipt
        )

    return await run_canary([("send", send), ("receive", receive), ("delete", delete)])


def _age(message: dict[str, Any]) -> float:
    sent = message.get("Attributes", {}).get("SentTimestamp")
    return time.time() - int(sent) / 1000 if sent else 0.0


def _stuck(state: AwsState, depths: Sequence[tuple[str, int, int]]) -> list[Finding]:
    """SqsJobsStuck, from the depths of this target's runs in the last STUCK_WINDOW: the
    queue holds messages, more than the window's oldest run saw, and no run saw one in
    flight (the rule's deriv > 0, visible > 0, and no deletion in 15 minutes)."""
    now = time.monotonic()
    # queue -> (when, visible, in flight) of the runs in the last STUCK_WINDOW
    history: dict[str, deque[tuple[float, int, int]]] = state.cache.setdefault("depths", {})
    found = []
    for name, visible, in_flight in depths:
        runs = history.setdefault(name, deque())
        while runs and now - runs[0][0] > STUCK_WINDOW:
            runs.popleft()
        growing = bool(runs) and visible > 0 and visible > runs[0][1]
        taken = [when for when, _, seen in runs if seen]
        if growing and in_flight == 0 and not taken:
            seen = (
                f"{name}: queue growing ({runs[0][1]} to {visible} waiting) and nothing in "
                "flight: no worker is taking jobs"
            )
            found.append(Finding(Health.FAILING, seen, "SqsJobsStuck"))
        elif growing and in_flight == 0 and runs[-1][2] == 0:
            # Two runs in a row with nothing taken while the queue grows: said at once,
            # where the rule waits its window and its `for:` before it pages.
            seen = (
                f"{name}: queue growing ({runs[0][1]} to {visible} waiting) and nothing in "
                f"flight for {now - taken[-1]:.0f}s: workers may have stopped (SqsJobsStuck "
                "pages after 15 minutes of it)"
            )
            found.append(Finding(Health.DEGRADED, seen, "SqsJobsStuck"))
        runs.append((now, visible, in_flight))
    return found


async def _dead_letter_depth(
    target: SqsTarget, ctx: ProbeContext, urls: dict[str, str], dlq: str, owner: str
) -> int | None:
    """Messages in a dead-letter queue, or None when the policy names one that is gone."""
    try:
        answer = await _attributes(target, ctx, urls, dlq, ["ApproximateNumberOfMessages"], owner)
    except AwsCallError as exc:
        if exc.problem is AwsProblem.NOT_FOUND:
            urls.pop(dlq, None)
            return None
        raise
    return int(answer.get("ApproximateNumberOfMessages", 0))


async def _attributes(
    target: SqsTarget,
    ctx: ProbeContext,
    urls: dict[str, str],
    queue: str,
    names: list[str],
    owner: str | None = None,
) -> dict[str, Any]:
    url = await _queue_url(target, ctx, urls, queue, owner)
    answer = await ctx.use(AWS).call(
        target, "sqs", "get_queue_attributes", ctx.deadline, QueueUrl=url, AttributeNames=names
    )
    attributes: dict[str, Any] = answer.get("Attributes", {})
    return attributes


async def _queue_url(
    target: SqsTarget,
    ctx: ProbeContext,
    urls: dict[str, str],
    queue: str,
    owner: str | None = None,
) -> str:
    """A queue's URL: given as one, kept from an earlier run, or asked of GetQueueUrl once."""
    url = queue if queue.startswith("https://") else urls.get(queue)
    if url is None:
        params: dict[str, Any] = {"QueueName": queue}
        if owner:
            params["QueueOwnerAWSAccountId"] = owner
        found = await ctx.use(AWS).call(target, "sqs", "get_queue_url", ctx.deadline, **params)
        url = urls[queue] = str(found["QueueUrl"])
    return url


KIND = ProbeKind(
    "sqs",
    SqsTarget,
    probe,
    METRICS,
    Reason,
    "SQS depth, redrive posture and dead-letter queue depth",
    state=AwsState,
    advice=advice,
    resources=(AWS,),
    area=Area.QUEUES_STORAGE,
)
