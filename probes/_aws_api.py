"""The AWS client factory every AWS kind shares (the `aws:` resource): one boto3 client per
(service, region, role), blocking calls in one bounded thread pool, every API call counted by
outcome.

botocore does what it already does well: the credential chain, assume-role with refresh
(`AssumeRoleCredentialFetcher`), retries with backoff (`standard` or `adaptive` mode), and
timeouts. What is added here is what an exporter needs on top: a deadline per probe run, an
outcome per attempt (ok, throttled, denied, error) as a metric, and errors that say which IAM
action is missing instead of a traceback.

botocore is imported when the first client is made, so a config without an AWS target never
loads it (about 8 MiB).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from stackprobe._version import __version__
from stackprobe.durations import Duration
from stackprobe.resource import ResourceEnv, Shared
from stackprobe.secrets import StrOrSecret, reveal
from stackprobe.target import TargetConfig

if TYPE_CHECKING:
    import botocore.session
    from botocore.credentials import AssumeRoleCredentialFetcher, CredentialProvider

# botocore's own list (botocore.retries.standard), so "throttled" means what its retry mode
# treats as throttling.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthFailure",
    }
)
# What the config names is not there (an S3 bucket without lifecycle rules is not this).
NOT_FOUND_CODES = frozenset(
    {
        "ClusterNotFoundException",
        "ServiceNotFoundException",
        "LoadBalancerNotFound",
        "TargetGroupNotFound",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NoSuchBucket",
        # CloudWatch Logs: a log group (FilterLogEvents) that is not there
        "ResourceNotFoundException",
    }
)
# The credentials themselves were refused: a wrong key, an expired session.
CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
    }
)

# IAM actions whose name is not `<prefix>:<Operation>`.
_IAM_ACTIONS = {
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "HeadBucket"): "s3:ListBucket",
    ("s3", "GetBucketLifecycleConfiguration"): "s3:GetLifecycleConfiguration",
}
# boto3's service name -> the IAM prefix of its actions
_IAM_PREFIXES = {"elbv2": "elasticloadbalancing"}


AMBIENT_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def ambient_secrets(environ: Mapping[str, str]) -> set[str]:
    """The AWS credentials botocore may read from the environment: never in config, so the
    redactor learns them here."""
    return {environ[name] for name in AMBIENT_CREDENTIALS if len(environ.get(name, "")) >= 8}


def iam_action(service: str, operation: str) -> str:
    """The IAM action an API operation needs, as a policy names it (`service` as boto3 names
    it, `operation` as the API does: elbv2, DescribeTargetHealth)."""
    if (service, operation) in _IAM_ACTIONS:
        return _IAM_ACTIONS[(service, operation)]
    return f"{_IAM_PREFIXES.get(service, service)}:{operation}"


class AwsProblem(StrEnum):
    """Why a run of an AWS kind failed: a call AWS refused or never answered, or a resource
    the config names that is not there. The failure reasons of every AWS kind."""

    THROTTLED = "throttled"  # still throttled after the retry mode's retries
    ACCESS_DENIED = "access_denied"  # the role lacks an IAM action; the detail names it
    CREDENTIALS = "credentials"  # none found, or AWS refused them (expired, wrong key)
    TIMEOUT = "timeout"  # no answer within the run's deadline or the read timeout
    UNREACHABLE = "unreachable"  # the endpoint could not be connected to
    NOT_FOUND = "not_found"  # a cluster, service, balancer, queue, bucket or log group is missing
    API_ERROR = "api_error"  # any other error AWS returned


class AwsCallError(Exception):
    """One failed API call, already classified; `str()` is a sentence safe to log."""

    def __init__(self, problem: AwsProblem, operation: str, message: str, code: str = "") -> None:
        super().__init__(message)
        self.problem = problem
        self.operation = operation
        self.code = code  # AWS's error code, when AWS answered with one


@dataclass(frozen=True, slots=True)
class AwsCall:
    """One API call a probe run made, as its evidence shows it: retries are inside it."""

    action: str  # as an IAM policy names it: ecs:DescribeServices
    outcome: str  # ok, throttled, denied or error (the metric's outcomes)
    ms: float  # from handing it to the thread pool to its answer, queueing included
    pages: int | None = None  # pages fetched, for a paginated call that succeeded
    code: str = ""  # AWS's error code, or the problem when AWS sent none


# The calls of the probe run in whose task context the AWS calls are made: `measured()` in
# probes/_aws.py sets a fresh list for each run, and the run's child tasks share it (a task
# copies its context, and with it the same list). None outside such a run: nothing recorded.
RUN_CALLS: ContextVar[list[AwsCall] | None] = ContextVar("stackprobe_aws_run_calls", default=None)


class AwsSettings(BaseModel):
    """The `aws:` section: how stackprobe talks to AWS, for every AWS target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Used by targets that set none; without either, botocore's chain (AWS_REGION, profile).
    region: str | None = None
    # Threads running blocking boto3 calls; more queue, each run within its own deadline.
    max_workers: int = Field(8, ge=1, le=64)
    retry_mode: Literal["standard", "adaptive"] = "standard"
    # Attempts per call, the first included: 2 means one retry, with the mode's backoff.
    max_attempts: int = Field(2, ge=1, le=10)
    connect_timeout: Duration = 3.0
    read_timeout: Duration = 10.0
    # One endpoint for every service: LocalStack or a moto server. For VPC endpoints, which
    # are per service, use botocore's AWS_ENDPOINT_URL_<SERVICE> variables instead.
    endpoint_url: str | None = None


_ROLE_ARN = r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$"


class AwsAccess(BaseModel):
    """Where and as whom to call AWS: what every AWS target has, and ECS task discovery too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str | None = None
    role_arn: str | None = Field(None, pattern=_ROLE_ARN)
    external_id: StrOrSecret | None = None

    @field_validator("region")
    @classmethod
    def _region_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("-", "").isalnum():
            raise PydanticCustomError(
                "aws_region", "{found} is not an AWS region; use e.g. eu-west-1", {"found": value}
            )
        return value


class AwsTarget(TargetConfig, AwsAccess):
    """A target of an AWS kind: the base keys and `AwsAccess`."""

    def shard_group(self) -> str | None:
        """One account (by its role) and region: the calls that share a throttle bucket."""
        return f"aws:{self.role_arn or 'default'}:{self.region or 'default'}"


@dataclass(frozen=True, slots=True)
class _ClientKey:
    service: str
    region: str | None
    role_arn: str | None
    external_id: str | None


@cache
def _assumed_role() -> Callable[[AssumeRoleCredentialFetcher], CredentialProvider]:
    """The provider class, defined on first use (its base is botocore's)."""
    from botocore.credentials import CredentialProvider, DeferredRefreshableCredentials

    class AssumedRole(CredentialProvider):
        """botocore's own assume-role fetcher, refreshed before expiry, as a session's only
        credential provider (so nothing else in the chain is consulted for this role)."""

        METHOD = "stackprobe-assume-role"

        def __init__(self, fetcher: AssumeRoleCredentialFetcher) -> None:
            super().__init__()
            self._fetcher = fetcher

        def load(self) -> DeferredRefreshableCredentials:
            return DeferredRefreshableCredentials(self._fetcher.fetch_credentials, self.METHOD)

    return AssumedRole


_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class AwsMetrics:
    """The call accounting, in stackprobe's own registry: registered once per process and
    carried over to the clients a reload builds, so the counters never restart."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = Counter(
            "stackprobe_aws_api_calls",
            "AWS API requests sent, retries included, by service, operation and outcome (ok, "
            "throttled, denied or error).",
            ["service", "operation", "outcome"],
            registry=registry,
        )
        self.call_duration = Histogram(
            "stackprobe_aws_api_call_duration_seconds",
            "Seconds each AWS API request took, by service and operation.",
            ["service", "operation"],
            buckets=_CALL_BUCKETS,
            registry=registry,
        )


class AwsClients:
    """Clients, the thread pool and the call accounting, for one `aws:` setting."""

    def __init__(self, settings: AwsSettings, metrics: AwsMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(settings.max_workers, thread_name_prefix="stackprobe-aws")
        # botocore sessions are not thread-safe: every client is created under this lock,
        # including the STS client a credential refresh creates in a worker thread
        self._lock = threading.RLock()
        self._started: tuple[botocore.session.Session, Any] | None = None  # session, config
        self._sessions: dict[tuple[str | None, str | None], botocore.session.Session] = {}
        self._clients: dict[_ClientKey, Any] = {}
        # service -> boto3's operation names -> the API's (describe_db_instances ->
        # DescribeDBInstances), from the clients' own models as they are made
        self._api_names: dict[str, Mapping[str, str]] = {}

    def _botocore(self) -> tuple[botocore.session.Session, Any]:
        """The base session and the clients' config, made (and botocore imported) on the
        first client; under the lock."""
        if self._started is None:
            import botocore.session
            from botocore.config import Config as BotoConfig

            config = BotoConfig(
                connect_timeout=self.settings.connect_timeout,
                read_timeout=self.settings.read_timeout,
                retries={
                    "mode": self.settings.retry_mode,
                    "total_max_attempts": self.settings.max_attempts,
                },
                max_pool_connections=self.settings.max_workers,
                user_agent_extra=f"stackprobe/{__version__}",
            )
            self._started = (botocore.session.Session(), config)
        return self._started

    def client(self, target: AwsAccess, service: str) -> Any:
        """The client for this target's region and role; built once, then shared (blocking)."""
        external_id = target.external_id
        key = _ClientKey(
            service,
            target.region or self.settings.region,
            target.role_arn,
            None if external_id is None else reveal(external_id),
        )
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                session = self._session(key.role_arn, key.external_id, key.region)
                found = self._clients[key] = self._create(session, service, key.region)
            return found

    def _session(
        self, role_arn: str | None, external_id: str | None, region: str | None
    ) -> botocore.session.Session:
        import botocore.session
        from botocore.credentials import AssumeRoleCredentialFetcher, CredentialResolver
        from botocore.exceptions import NoCredentialsError

        base, _ = self._botocore()
        if role_arn is None:
            return base
        found = self._sessions.get((role_arn, external_id))
        if found is None:
            extra: dict[str, Any] = {"RoleSessionName": "stackprobe"}
            if external_id:
                extra["ExternalId"] = external_id
            source = base.get_credentials()
            if source is None:  # not cached: the next run looks again (a metadata blip)
                raise NoCredentialsError()
            fetcher = AssumeRoleCredentialFetcher(
                client_creator=lambda service, **_: self._sts(service, region),
                source_credentials=source,
                role_arn=role_arn,
                extra_args=extra,
            )
            found = botocore.session.Session()
            found.register_component(
                "credential_provider", CredentialResolver([_assumed_role()(fetcher)])
            )
            self._sessions[(role_arn, external_id)] = found
        return found

    def _sts(self, service: str, region: str | None) -> Any:
        with self._lock:
            return self._create(self._botocore()[0], service, region)

    def _create(self, session: botocore.session.Session, service: str, region: str | None) -> Any:
        client = session.create_client(
            service,
            region_name=region,
            endpoint_url=self.settings.endpoint_url,
            config=self._botocore()[1],
        )
        self._api_names.setdefault(service, dict(client.meta.method_to_api_mapping))
        events = client.meta.events
        events.register("request-created", _stamp_attempt)
        events.register("needs-retry", self._count_attempt)
        return client

    def _count_attempt(
        self,
        response: tuple[Any, Mapping[str, Any]] | None,
        operation: Any,
        caught_exception: Exception | None,
        request_dict: Mapping[str, Any],
        **_: Any,
    ) -> None:
        """One attempt of one call ended: count its outcome. Returns None, so botocore's own
        retry handler alone decides whether to retry."""
        service = operation.service_model.service_name
        started = request_dict.get("context", {}).get("stackprobe_attempt_started")
        if started is not None:
            self.metrics.call_duration.labels(service, operation.name).observe(
                time.perf_counter() - started
            )
        self.metrics.calls.labels(service, operation.name, _outcome(response)).inc()
        return None

    async def call(
        self,
        target: AwsAccess,
        service: str,
        operation: str,
        deadline: float,
        *,
        keep: Callable[[dict[str, Any]], Any] | None = None,
        **params: Any,
    ) -> Any:
        """One API call (`operation` as boto3 names it, e.g. describe_services): its answer,
        or what `keep` makes of it in the worker thread (an object's body is read there, not
        on the event loop)."""

        def run() -> Any:
            result: dict[str, Any] = getattr(self.client(target, service), operation)(**params)
            return keep(result) if keep is not None else result

        return await self._run(service, operation, deadline, run, paged=False)

    async def pages(
        self,
        target: AwsAccess,
        service: str,
        operation: str,
        deadline: float,
        *,
        max_pages: int | None = None,
        keep: Callable[[dict[str, Any]], Any] | None = None,
        **params: Any,
    ) -> list[Any]:
        """Every page of a paginated call, fetched with botocore's paginator in one job.

        `keep` reduces each page as it arrives (a listing of a million objects is then never
        held whole). A caller that can use part of a listing says how much with `max_pages`:
        paging then also stops once 80 % of the run's time is spent, so a huge listing returns
        what it has (its last page still says IsTruncated) instead of timing out with nothing.
        Without it the listing is whole or the call fails (past the deadline, as a timeout):
        a discovery missing its last page would silently miss resources."""
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        started = time.monotonic()
        stop_at, ends_at = started + 0.8 * remaining, started + remaining

        def run() -> list[Any]:
            paginator = self.client(target, service).get_paginator(operation)
            found: list[Any] = []
            for page in paginator.paginate(**params):
                found.append(keep(page) if keep is not None else page)
                now = time.monotonic()
                if max_pages is not None and (len(found) >= max_pages or now > stop_at):
                    break
                if max_pages is None and now > ends_at:
                    # the run has given up on it: no more pages for nobody (the thread would
                    # otherwise page on to the end of the listing)
                    raise self._late(service, operation)
            return found

        pages: list[Any] = await self._run(service, operation, deadline, run, paged=True)
        return pages

    async def _run(
        self,
        service: str,
        operation: str,
        deadline: float,
        job: Callable[[], Any],
        *,
        paged: bool,
    ) -> Any:
        calls = RUN_CALLS.get()
        started = time.perf_counter()
        try:
            result = await self._in_pool(service, operation, deadline, job)
        except AwsCallError as exc:
            if calls is not None:
                outcome = _call_outcome(exc.problem)
                ms = (time.perf_counter() - started) * 1000
                code = exc.code or str(exc.problem)
                action = iam_action(service, self._api(service, operation))
                calls.append(AwsCall(action, outcome, ms, None, code))
            raise
        if calls is not None:
            ms = (time.perf_counter() - started) * 1000
            pages = len(result) if paged else None
            action = iam_action(service, self._api(service, operation))
            calls.append(AwsCall(action, "ok", ms, pages))
        return result

    async def _in_pool(
        self, service: str, operation: str, deadline: float, job: Callable[[], Any]
    ) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._pool, _classified, job, service, operation, lambda: self._api(service, operation)
        )
        try:
            async with asyncio.timeout_at(deadline):
                return await future
        except TimeoutError:
            raise self._late(service, operation) from None

    def _late(self, service: str, operation: str) -> AwsCallError:
        """A call still running at the run's deadline, whichever side sees it first: the run
        waiting for it, or the thread of a listing about to ask for one more page."""
        return AwsCallError(
            AwsProblem.TIMEOUT,
            operation,
            f"{service} {self._api(service, operation)} did not finish before the run's deadline",
        )

    def _api(self, service: str, operation: str) -> str:
        """The API's name of a boto3 operation, as the service's model spells it
        (describe_db_instances -> DescribeDBInstances): from its clients, or, when a call
        failed before one was made (no credentials, no region), from the model itself."""
        names = self._api_names.get(service)
        if names is None:
            from botocore import xform_name

            try:
                with self._lock:
                    model = self._botocore()[0].get_service_model(service)
                names = {xform_name(name): name for name in model.operation_names}
            except Exception:  # an unknown service: its own name, in CamelCase
                names = {}
            self._api_names.setdefault(service, names)
        return names.get(operation) or "".join(part.title() for part in operation.split("_"))

    def shutdown(self) -> None:
        """Stop taking calls; threads finish the calls they are in (each within its timeouts)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def aclose(self) -> None:
        self.shutdown()


def _open(settings: AwsSettings, env: ResourceEnv, previous: AwsClients | None) -> AwsClients:
    """Clients and their credentials are kept while the `aws:` settings hold."""
    if previous is None:
        return AwsClients(settings, AwsMetrics(env.registry))
    if previous.settings == settings:
        return previous
    return AwsClients(settings, previous.metrics)


AWS = Shared("aws", AwsSettings, _open, ambient_secrets)


def _stamp_attempt(request: Any, **_: Any) -> None:
    request.context["stackprobe_attempt_started"] = time.perf_counter()


def _outcome(response: tuple[Any, Mapping[str, Any]] | None) -> str:
    if response is None:
        return "error"  # no response at all: a connection or read failure
    http, parsed = response
    if http.status_code < 300:
        return "ok"
    code = parsed.get("Error", {}).get("Code", "")
    if code in THROTTLING_CODES or http.status_code == 429:
        return "throttled"
    if code in DENIED_CODES:
        return "denied"
    return "error"


def _call_outcome(problem: AwsProblem) -> str:
    """A failed call's outcome, in the call metric's words."""
    if problem is AwsProblem.THROTTLED:
        return "throttled"
    return "denied" if problem is AwsProblem.ACCESS_DENIED else "error"


def _classified(
    job: Callable[[], Any], service: str, operation: str, api: Callable[[], str]
) -> Any:
    """Run one job in a worker thread, turning botocore's exceptions into `AwsCallError`.
    `api` names the operation as the API does, once the job has made its client."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return job()
    except (ClientError, BotoCoreError) as exc:
        raise _error(exc, service, operation, f"{service} {api()}") from None


def _error(exc: Exception, service: str, operation: str, name: str) -> AwsCallError:
    """What a botocore exception means for a run, saying how to fix it."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        op = exc.operation_name
        message = (error.get("Message") or "")[:300]
        if code in THROTTLING_CODES:
            return AwsCallError(
                AwsProblem.THROTTLED,
                op,
                f"AWS throttled {name} ({code}) through every retry; the next run tries again",
            )
        if code in DENIED_CODES and op == "AssumeRole":
            # A refused AssumeRole surfaces from whichever call needed the credentials.
            return AwsCallError(
                AwsProblem.ACCESS_DENIED,
                op,
                f"AWS denied AssumeRole ({code}) for {name}: the identity stackprobe runs as "
                "needs sts:AssumeRole on the role, and the role's trust policy must name that "
                "identity (and the ExternalId, when it asks for one)",
            )
        if code in DENIED_CODES:
            action = iam_action(service, op)
            return AwsCallError(
                AwsProblem.ACCESS_DENIED,
                op,
                f"AWS denied {name} ({code}): grant the IAM action {action} to the role "
                "stackprobe runs as (docs/iam-policy.json lists every action it needs)",
            )
        if code in CREDENTIAL_CODES:
            return AwsCallError(
                AwsProblem.CREDENTIALS,
                op,
                f"AWS refused the credentials for {name} ({code}): {message}",
            )
        problem = AwsProblem.NOT_FOUND if code in NOT_FOUND_CODES else AwsProblem.API_ERROR
        return AwsCallError(problem, op, f"{name} failed: {code}: {message}", code)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AwsCallError(
            AwsProblem.CREDENTIALS,
            operation,
            f"no AWS credentials for {name}: give the task a role, or set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        )
    if isinstance(exc, CredentialRetrievalError):  # the task role's or an assumed role's fetch
        return AwsCallError(
            AwsProblem.CREDENTIALS, operation, f"cannot fetch AWS credentials for {name}: {exc}"
        )
    if isinstance(exc, NoRegionError):
        return AwsCallError(
            AwsProblem.API_ERROR,
            operation,
            f"no AWS region for {name}: set region: on the target or in aws:, or AWS_REGION",
        )
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):
        return AwsCallError(AwsProblem.TIMEOUT, operation, f"{name} timed out: {exc}")
    if isinstance(exc, EndpointConnectionError):
        return AwsCallError(AwsProblem.UNREACHABLE, operation, f"{name}: {exc}")
    return AwsCallError(AwsProblem.API_ERROR, operation, f"{name}: {exc}")
