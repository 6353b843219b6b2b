"""``headwater deploy apply --target cloudrun``: the resources ``deploy render`` writes, sent
through Google's client libraries instead of ``gcloud``.

The resources come from :func:`headwater.runtime.deploy.cloudrun_plan`, the same functions
that write ``*.v2.json`` and ``scheduler.job.json``; here they are parsed into the
libraries' messages (unknown fields refused) and applied in order: the collector's service,
the read API's, the ``run --due`` job, its Cloud Scheduler job, then who may invoke them
(:func:`headwater.runtime.deploy.invokers`). Each resource is read first: created when it is
missing, left alone when what it holds already says what the plan says, updated otherwise,
so applying twice changes nothing the second time.

Service accounts and their roles on the project, secrets and buckets are not applied here:
the Cloud Run and Cloud Scheduler libraries do not manage them. ``deploy apply`` prints the
``gcloud`` commands that do (:func:`headwater.runtime.deploy.account_commands`).

The clients are passed in (:class:`Clients`, duck-typed), so what talks to Google is chosen
by the caller: :func:`connect` builds the real ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from google.api_core import exceptions
from google.cloud import run_v2, scheduler_v1
from google.iam.v1 import iam_policy_pb2, policy_pb2

from headwater.core.errors import ConfigError, TerminalError, TransientError
from headwater.runtime.deploy import CloudRun, Invoker, invokers

#: Seconds a call may take, and a service's or job's change until it is ready: a revision
#: that is not serving after ten minutes is failing its startup probe, not slow.
CALL_TIMEOUT = 60.0
OPERATION_TIMEOUT = 600.0

Outcome = Literal["created", "updated", "unchanged", "granted"]
Kind = Literal["service", "job", "schedule", "invoker"]
M = TypeVar("M", run_v2.Service, run_v2.Job, scheduler_v1.Job)


class Operation(Protocol):
    """A long-running operation (``google.api_core.operation.Operation``)."""

    def result(self, timeout: float) -> object: ...


class IamApi(Protocol):
    def get_iam_policy(
        self, request: iam_policy_pb2.GetIamPolicyRequest, *, timeout: float
    ) -> policy_pb2.Policy: ...

    def set_iam_policy(
        self, request: iam_policy_pb2.SetIamPolicyRequest, *, timeout: float
    ) -> policy_pb2.Policy: ...


class ServicesApi(IamApi, Protocol):
    """What is used of ``run_v2.ServicesClient``."""

    def get_service(
        self, request: run_v2.GetServiceRequest, *, timeout: float
    ) -> run_v2.Service: ...

    def create_service(
        self, request: run_v2.CreateServiceRequest, *, timeout: float
    ) -> Operation: ...

    def update_service(
        self, request: run_v2.UpdateServiceRequest, *, timeout: float
    ) -> Operation: ...


class JobsApi(IamApi, Protocol):
    """What is used of ``run_v2.JobsClient``."""

    def get_job(self, request: run_v2.GetJobRequest, *, timeout: float) -> run_v2.Job: ...

    def create_job(self, request: run_v2.CreateJobRequest, *, timeout: float) -> Operation: ...

    def update_job(self, request: run_v2.UpdateJobRequest, *, timeout: float) -> Operation: ...


class SchedulerApi(Protocol):
    """What is used of ``scheduler_v1.CloudSchedulerClient``."""

    def get_job(
        self, request: scheduler_v1.GetJobRequest, *, timeout: float
    ) -> scheduler_v1.Job: ...

    def create_job(
        self, request: scheduler_v1.CreateJobRequest, *, timeout: float
    ) -> scheduler_v1.Job: ...

    def update_job(
        self, request: scheduler_v1.UpdateJobRequest, *, timeout: float
    ) -> scheduler_v1.Job: ...


@dataclass(frozen=True)
class Clients:
    services: ServicesApi
    jobs: JobsApi
    scheduler: SchedulerApi


@dataclass(frozen=True)
class Applied:
    """What applying one resource did."""

    kind: Kind
    name: str
    outcome: Outcome


class ApplyError(TerminalError):
    """Google refused a resource: the fix is a role, an API to enable or a setting."""

    def __init__(self, kind: Kind, name: str, problem: str, *, hint: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name}: {problem}", hint=hint)


class ApplyUnavailable(TransientError):
    """A resource was not ready in time, or Google did not answer: applying again resumes."""

    def __init__(self, kind: Kind, name: str, problem: str, *, hint: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name}: {problem}", hint=hint)


def connect() -> Clients:
    """The real clients, with the application default credentials."""
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return Clients(
            run_v2.ServicesClient(), run_v2.JobsClient(), scheduler_v1.CloudSchedulerClient()
        )
    except DefaultCredentialsError as exc:
        raise ConfigError(
            f"no Google credentials to apply with ({exc})",
            hint="gcloud auth application-default login, or set GOOGLE_APPLICATION_CREDENTIALS "
            "to a service account's key file",
        ) from None


def apply(plan: CloudRun, clients: Clients) -> Iterator[Applied]:
    """Apply ``plan`` in order, yielding each resource as it is done."""
    for part in plan.services:
        yield _service(plan, clients.services, part)
    yield _job(plan, clients.jobs)
    yield _schedule(plan, clients.scheduler)
    for grant in invokers(plan.gcp, plan.roles):
        api: IamApi = clients.services if grant.kind == "services" else clients.jobs
        yield _grant(plan, api, grant)


def _parent(plan: CloudRun) -> str:
    return f"projects/{plan.gcp.project}/locations/{plan.gcp.region}"


def _service(plan: CloudRun, api: ServicesApi, part: str) -> Applied:
    raw = plan.service(part)
    desired = _parse(run_v2.Service, raw)
    service_id = plan.gcp.name(part)
    name = f"{_parent(plan)}/services/{service_id}"
    with _refusals(plan, "service", name, plan.gcp.account(part)):
        return _put(
            "service",
            name,
            raw,
            desired,
            get=lambda: api.get_service(run_v2.GetServiceRequest(name=name), timeout=CALL_TIMEOUT),
            create=lambda: _wait(
                api.create_service(
                    run_v2.CreateServiceRequest(
                        parent=_parent(plan), service=desired, service_id=service_id
                    ),
                    timeout=CALL_TIMEOUT,
                )
            ),
            update=lambda: _wait(
                api.update_service(
                    run_v2.UpdateServiceRequest(
                        service=_parse(run_v2.Service, {**raw, "name": name})
                    ),
                    timeout=CALL_TIMEOUT,
                )
            ),
        )


def _job(plan: CloudRun, api: JobsApi) -> Applied:
    raw = plan.job()
    desired = _parse(run_v2.Job, raw)
    job_id = plan.gcp.name("due")
    name = f"{_parent(plan)}/jobs/{job_id}"
    with _refusals(plan, "job", name, plan.gcp.account("due")):
        return _put(
            "job",
            name,
            raw,
            desired,
            get=lambda: api.get_job(run_v2.GetJobRequest(name=name), timeout=CALL_TIMEOUT),
            create=lambda: _wait(
                api.create_job(
                    run_v2.CreateJobRequest(parent=_parent(plan), job=desired, job_id=job_id),
                    timeout=CALL_TIMEOUT,
                )
            ),
            update=lambda: _wait(
                api.update_job(
                    run_v2.UpdateJobRequest(job=_parse(run_v2.Job, {**raw, "name": name})),
                    timeout=CALL_TIMEOUT,
                )
            ),
        )


def _schedule(plan: CloudRun, api: SchedulerApi) -> Applied:
    raw = plan.scheduler_job()
    desired = _parse(scheduler_v1.Job, raw)
    name = desired.name
    # Only the fields the plan sets: Cloud Scheduler keeps its own (state, retries) as they are.
    mask = {"paths": [_snake(key) for key in raw if key != "name"]}
    with _refusals(plan, "schedule", name, plan.gcp.account("scheduler")):
        return _put(
            "schedule",
            name,
            raw,
            desired,
            get=lambda: api.get_job(scheduler_v1.GetJobRequest(name=name), timeout=CALL_TIMEOUT),
            create=lambda: api.create_job(
                scheduler_v1.CreateJobRequest(parent=_parent(plan), job=desired),
                timeout=CALL_TIMEOUT,
            ),
            update=lambda: api.update_job(
                scheduler_v1.UpdateJobRequest(job=desired, update_mask=mask),
                timeout=CALL_TIMEOUT,
            ),
        )


def _grant(plan: CloudRun, api: IamApi, grant: Invoker) -> Applied:
    """Add ``grant`` to the resource's policy, keeping every other binding; the policy's
    etag makes Google refuse the write if someone changed the policy since it was read."""
    resource = f"{_parent(plan)}/{grant.kind}/{plan.gcp.name(grant.part)}"
    what = f"{grant.role} for {grant.member} on {resource}"
    with _refusals(plan, "invoker", what, None):
        policy = api.get_iam_policy(
            iam_policy_pb2.GetIamPolicyRequest(resource=resource), timeout=CALL_TIMEOUT
        )
        plain = [b for b in policy.bindings if b.role == grant.role and not b.condition.expression]
        if any(grant.member in b.members for b in plain):
            return Applied("invoker", what, "unchanged")
        if plain:
            plain[0].members.append(grant.member)
        else:
            policy.bindings.add(role=grant.role, members=[grant.member])
        api.set_iam_policy(
            iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy),
            timeout=CALL_TIMEOUT,
        )
        return Applied("invoker", what, "granted")


def _put(
    kind: Kind,
    name: str,
    raw: dict[str, Any],
    desired: M,
    *,
    get: Callable[[], M],
    create: Callable[[], object],
    update: Callable[[], object],
) -> Applied:
    try:
        current = get()
    except exceptions.NotFound:
        create()
        return Applied(kind, name, "created")
    if _pick(raw, _plain(desired)) == _pick(raw, _plain(current)):
        return Applied(kind, name, "unchanged")
    update()
    return Applied(kind, name, "updated")


def _parse(cls: type[M], raw: dict[str, Any]) -> M:
    parsed: M = cls.from_json(json.dumps(raw), ignore_unknown_fields=False)
    return parsed


def _plain(message: run_v2.Service | run_v2.Job | scheduler_v1.Job) -> dict[str, Any]:
    """``message`` as JSON values under JSON names, defaults included: the shape of a plan."""
    plain: dict[str, Any] = type(message).to_dict(
        message,
        use_integers_for_enums=False,
        preserving_proto_field_name=False,
        always_print_fields_with_no_presence=True,
    )
    return plain


def _pick(shape: Any, value: Any) -> Any:
    """The parts of ``value`` that ``shape`` (a plan) sets: what Google adds (status, etags,
    defaults it chose) is left out, so a resource that says what the plan says compares
    equal."""
    if isinstance(shape, dict) and isinstance(value, dict):
        return {key: _pick(part, value.get(key)) for key, part in shape.items()}
    if isinstance(shape, list) and isinstance(value, list) and len(shape) == len(value):
        return [_pick(s, v) for s, v in zip(shape, value, strict=True)]
    return value


def _snake(name: str) -> str:
    return re.sub("([A-Z])", r"_\1", name).lower()


def _wait(operation: Operation) -> object:
    return operation.result(timeout=OPERATION_TIMEOUT)


_ENABLE = "gcloud services enable run.googleapis.com cloudscheduler.googleapis.com --project {p}"
#: The roles the person (or account) running ``deploy apply`` needs, by kind of resource.
_NEEDS: dict[Kind, str] = {
    "service": "roles/run.admin on project {p}, and roles/iam.serviceAccountUser on {a} "
    "(to deploy a service that runs as it)",
    "job": "roles/run.admin on project {p}, and roles/iam.serviceAccountUser on {a} "
    "(to deploy a job that runs as it)",
    "schedule": "roles/cloudscheduler.admin on project {p}, and roles/iam.serviceAccountUser "
    "on {a} (the scheduler calls the job with its tokens)",
    "invoker": "roles/run.admin on project {p} (roles/run.developer cannot change who may invoke)",
}


@contextmanager
def _refusals(plan: CloudRun, kind: Kind, name: str, account: str | None) -> Iterator[None]:
    """Google's errors as one sentence naming the resource, and the fix."""
    p = plan.gcp.project
    try:
        yield
    except exceptions.PermissionDenied as exc:
        if exc.reason == "SERVICE_DISABLED" or "has not been used" in str(exc.message):
            raise ApplyError(
                kind, name, "the API is not enabled", hint=_ENABLE.format(p=p)
            ) from None
        needs = _NEEDS[kind].format(p=p, a=account)
        missing = (
            f"; check that {account} exists (the gcloud commands printed above create it)"
            if account
            else ""
        )
        raise ApplyError(
            kind,
            name,
            f"permission denied ({exc.message})",
            hint=f"the account running deploy apply needs {needs}{missing}",
        ) from None
    except exceptions.FailedPrecondition as exc:
        hint = (
            "an organization policy (constraints/iam.allowedPolicyMemberDomains) refuses "
            f"allUsers: the project {p} needs an exception for the collector to take events "
            "from SDKs without Google credentials"
            if kind == "invoker" and "allUsers" in name
            else _looking(plan, kind, name)
        )
        raise ApplyError(kind, name, f"refused ({exc.message})", hint=hint) from None
    except exceptions.Aborted as exc:
        raise ApplyUnavailable(
            kind,
            name,
            f"changed by someone else while applying ({exc.message})",
            hint="run deploy apply again",
        ) from None
    except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, TimeoutError) as exc:
        raise ApplyUnavailable(
            kind,
            name,
            f"not ready after {OPERATION_TIMEOUT:.0f} s ({exc})"
            if isinstance(exc, TimeoutError)
            else f"Google did not answer ({exc.message})",
            hint=f"{_looking(plan, kind, name)}; then run deploy apply again, which resumes "
            "where this one stopped",
        ) from None
    except exceptions.GoogleAPICallError as exc:
        raise ApplyError(
            kind, name, f"{type(exc).__name__} ({exc.message})", hint=_looking(plan, kind, name)
        ) from None


def _looking(plan: CloudRun, kind: Kind, name: str) -> str:
    """Where to see why a resource is not as planned."""
    where = f"--project {plan.gcp.project} --region {plan.gcp.region}"
    short = name.rsplit("/", 1)[-1]
    if kind == "service":
        return f"gcloud run services describe {short} {where} says why (its revision's logs too)"
    if kind == "job":
        return f"gcloud run jobs describe {short} {where} says why"
    if kind == "schedule":
        return (
            f"gcloud scheduler jobs describe {short} --project {plan.gcp.project} "
            f"--location {plan.gcp.region} says what it holds"
        )
    return f"compare with deploy/{plan.gcp.env}/apply.sh (deploy render writes it)"
