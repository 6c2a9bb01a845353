"""Write canaries: a few calls that write one small thing, read it back and remove it, as the
application does with an upload or a job, so a role, a bucket policy or a key policy that
stops writes shows before users meet it ("Access Denied", "S3 upload failed": VivaCampo
Scenario 2). Opt-in, with IAM actions of their own (docs/iam-policy-canaries.json); the s3
and sqs kinds run them.

Each step is timed; the first that fails ends the canary, says why (an AWS problem, or what
came back was not what was written), and a cleanup step runs when something was written.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from stackprobe.contract import EVIDENCE_VALUE_MAX, MetricSpec, Sample
from stackprobe.probes._aws_api import AwsCallError

# Beside the AWS problems (probes/_aws_api.py AwsProblem): AWS answered, but not with what
# was written.
WRONG_CONTENT = "wrong_content"  # the object read back is not the one written
NOT_RECEIVED = "not_received"  # the message sent did not come back within the run

Step = tuple[str, Callable[[], Awaitable[None]]]


class CanaryMismatch(Exception):
    """A step AWS answered that did not give back what the canary wrote."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CanaryRun:
    """One canary: each step that worked and its seconds, and the step that failed, why."""

    seconds: tuple[tuple[str, float], ...]
    step: str = ""  # the step that failed; "" when every one worked
    reason: str = ""  # an AwsProblem value, WRONG_CONTENT or NOT_RECEIVED
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.step


async def run_canary(
    steps: Sequence[Step], cleanup: Callable[[], Awaitable[None]] | None = None
) -> CanaryRun:
    """The steps in order until one fails; then `cleanup`, whose own failure changes
    nothing (what it leaves is one small object or message, under the canary's name)."""
    seconds: list[tuple[str, float]] = []
    for name, step in steps:
        started = time.perf_counter()
        try:
            await step()
        except AwsCallError as exc:
            failed = CanaryRun(tuple(seconds), name, exc.problem.value, str(exc))
        except CanaryMismatch as exc:
            failed = CanaryRun(tuple(seconds), name, exc.reason, str(exc))
        else:
            seconds.append((name, time.perf_counter() - started))
            continue
        if cleanup is not None:
            with contextlib.suppress(AwsCallError):
                await cleanup()
        return failed
    return CanaryRun(tuple(seconds))


@dataclass(frozen=True, slots=True)
class CanarySpecs:
    """A kind's three canary families, labelled by what it writes to (`bucket`, `queue`)."""

    success: MetricSpec
    seconds: MetricSpec
    failure: MetricSpec

    def samples(self, run: CanaryRun, where: str) -> list[Sample]:
        found = [self.success(1 if run.ok else 0, where)]
        found += [self.seconds(s, where, step) for step, s in run.seconds]
        if not run.ok:
            found.append(self.failure(1, where, run.step, run.reason))
        return found


def canary_specs(kind: str, label: str, what: str) -> CanarySpecs:
    """The families of a kind's canary: `stackprobe_<kind>_canary_*`."""
    return CanarySpecs(
        MetricSpec(
            f"stackprobe_{kind}_canary_success",
            f"1 if the write canary's every step worked on the {label}: {what}; else 0.",
            (label,),
        ),
        MetricSpec(
            f"stackprobe_{kind}_canary_step_seconds",
            "Seconds each step of the write canary took, for the steps that worked.",
            (label, "step"),
        ),
        MetricSpec(
            f"stackprobe_{kind}_canary_failure",
            "1 for the step that failed and why (an AWS problem, wrong_content or "
            "not_received); absent while the canary works.",
            (label, "step", "reason"),
        ),
    )


def done_line(where: str, run: CanaryRun) -> str:
    """A canary that worked, each step's time, for the evidence."""
    return f"{where}: " + ", ".join(f"{step} {s * 1000:.0f} ms" for step, s in run.seconds)


def failed_line(where: str, run: CanaryRun) -> str:
    """The canary's failure in one line, for the verdict and the evidence."""
    return f"{where}: write canary's {run.step} failed ({run.reason}): {run.detail}"[
        :EVIDENCE_VALUE_MAX
    ]
