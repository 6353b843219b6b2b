"""``headwater deploy apply --target cloudrun``, against recording clients.

Cloud Run and Cloud Scheduler cannot exist here, and no network is used. What stands in:
recording clients with the methods of ``run_v2.ServicesClient``, ``run_v2.JobsClient`` and
``scheduler_v1.CloudSchedulerClient`` that apply uses. They check that each request is the
library's own message (proto-plus, or the IAM protobuf messages), so a misspelt or
misplaced field fails where the real client would refuse it; they record every
``(method, request)`` in order, keep what was created as Google would (adding the fields
Google fills in: a URL, an etag, defaults), and answer with real messages and finished
operations. What is not tested: Google's own checks of a resource (quotas, an image that
does not exist, a revision that fails its probes) and the ``gcloud`` commands printed for
service accounts.

Through the command line, a child process runs ``headwater`` with :func:`connect` replaced
by these clients (``CHILD``), so the exit code and the printed error are the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from google.api_core import exceptions
from google.cloud import run_v2, scheduler_v1
from google.iam.v1 import iam_policy_pb2, policy_pb2

from headwater.cli import deploy as deploy_cli
from headwater.config.project import load_project
from headwater.runtime import cloudrun, deploy
from tests.conftest import HEADWATER, run_cli
from tests.test_deploy_render import FAKE, IMAGE, REGION, _project

PARENT = "projects/acme-analytics/locations/europe-west1"
COLLECTOR = f"{PARENT}/services/headwater-prod-collector"
API = f"{PARENT}/services/headwater-prod-api"
JOB = f"{PARENT}/jobs/headwater-prod-due"
M = TypeVar("M", run_v2.Service, run_v2.Job, scheduler_v1.Job)
SCHEDULER = "hw-prod-scheduler@acme-analytics.iam.gserviceaccount.com"


E = TypeVar("E", bound=exceptions.GoogleAPICallError)


def _error(kind: type[E], message: str) -> E:
    """An error as the client raises it (google.api_core's constructors are untyped)."""
    return kind(message)


class Done:
    """A long-running operation that has finished (or, with ``error``, failed)."""

    def __init__(self, value: object, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error
        self.waited: float | None = None

    def result(self, timeout: float) -> object:
        self.waited = timeout
        if self.error is not None:
            raise self.error
        return self.value


class Cloud:
    """Cloud Run and Cloud Scheduler as one recording: ``calls`` in order, ``resources`` and
    ``policies`` as they stand. ``fail`` names a method (``"scheduler.create_job"``) that
    raises ``error``; ``stuck`` one whose operation never finishes."""

    def __init__(
        self,
        fail: str | None = None,
        error: Exception | None = None,
        stuck: str | None = None,
    ) -> None:
        self.calls: list[tuple[str, object]] = []
        # By type and name: a Cloud Run job and its Cloud Scheduler job share a name.
        self.resources: dict[tuple[type, str], run_v2.Service | run_v2.Job | scheduler_v1.Job] = {}
        self.policies: dict[str, policy_pb2.Policy] = {}
        self.operations: list[Done] = []
        self.fail = fail
        self.error = error or _error(exceptions.PermissionDenied, "Permission denied on resource")
        self.stuck = stuck

    def clients(self) -> cloudrun.Clients:
        return cloudrun.Clients(Services(self), Jobs(self), Scheduler(self))

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    def record(self, method: str, request: object, kind: type) -> None:
        assert isinstance(request, kind), f"{method} got a {type(request).__name__}"
        self.calls.append((method, request))
        if method == self.fail:
            raise self.error

    def get(self, kind: type[M], name: str) -> M:
        if (kind, name) not in self.resources:
            raise _error(exceptions.NotFound, f"{name} was not found")
        stored = self.resources[kind, name]
        copy: M = kind.deserialize(kind.serialize(stored))
        return copy

    def keep(self, name: str, message: run_v2.Service | run_v2.Job | scheduler_v1.Job) -> None:
        stored = type(message).deserialize(type(message).serialize(message))
        stored.name = name
        # What Google adds: apply must see through it to say "unchanged".
        if isinstance(stored, run_v2.Service):
            stored.uri = "https://headwater-prod-collector-x.a.run.app"
            stored.etag = "e1"
            stored.template.timeout = timedelta(seconds=300)
        elif isinstance(stored, run_v2.Job):
            stored.etag = "e1"
            stored.execution_count = 3
        else:
            stored.state = scheduler_v1.Job.State.ENABLED
            stored.http_target.headers["User-Agent"] = "Google-Cloud-Scheduler"
        self.resources[type(stored), name] = stored

    def create(self, method: str, name: str, message: run_v2.Service | run_v2.Job) -> Done:
        """A Cloud Run resource created: named by its id, never by the message."""
        assert not message.name, f"{method}: a new resource is named by its id"
        self.keep(name, message)
        return self.operation(method, self.get(type(message), name))

    def update(self, method: str, message: run_v2.Service | run_v2.Job) -> Done:
        self.get(type(message), message.name)
        self.keep(message.name, message)
        return self.operation(method, message)

    def operation(self, method: str, value: object) -> Done:
        self.operations.append(Done(value, TimeoutError() if method == self.stuck else None))
        return self.operations[-1]

    def get_policy(
        self, method: str, request: iam_policy_pb2.GetIamPolicyRequest
    ) -> policy_pb2.Policy:
        self.record(method, request, iam_policy_pb2.GetIamPolicyRequest)
        policy = policy_pb2.Policy()
        policy.CopyFrom(self.policies.get(request.resource, policy_pb2.Policy(etag=b"e0")))
        return policy

    def set_policy(
        self, method: str, request: iam_policy_pb2.SetIamPolicyRequest
    ) -> policy_pb2.Policy:
        self.record(method, request, iam_policy_pb2.SetIamPolicyRequest)
        kept = policy_pb2.Policy()
        kept.CopyFrom(request.policy)
        kept.etag = request.policy.etag + b"+"
        self.policies[request.resource] = kept
        return kept


class Client:
    #: The prefix of the methods' names in the recording.
    prefix = ""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud


class Policies(Client):
    """The IAM methods the Cloud Run clients share."""

    def get_iam_policy(
        self, request: iam_policy_pb2.GetIamPolicyRequest, *, timeout: float
    ) -> policy_pb2.Policy:
        return self.cloud.get_policy(f"{self.prefix}.get_iam_policy", request)

    def set_iam_policy(
        self, request: iam_policy_pb2.SetIamPolicyRequest, *, timeout: float
    ) -> policy_pb2.Policy:
        return self.cloud.set_policy(f"{self.prefix}.set_iam_policy", request)


class Services(Policies):
    prefix = "services"

    def get_service(self, request: run_v2.GetServiceRequest, *, timeout: float) -> run_v2.Service:
        self.cloud.record("services.get_service", request, run_v2.GetServiceRequest)
        return self.cloud.get(run_v2.Service, request.name)

    def create_service(self, request: run_v2.CreateServiceRequest, *, timeout: float) -> Done:
        self.cloud.record("services.create_service", request, run_v2.CreateServiceRequest)
        name = f"{request.parent}/services/{request.service_id}"
        return self.cloud.create("services.create_service", name, request.service)

    def update_service(self, request: run_v2.UpdateServiceRequest, *, timeout: float) -> Done:
        self.cloud.record("services.update_service", request, run_v2.UpdateServiceRequest)
        return self.cloud.update("services.update_service", request.service)


class Jobs(Policies):
    prefix = "jobs"

    def get_job(self, request: run_v2.GetJobRequest, *, timeout: float) -> run_v2.Job:
        self.cloud.record("jobs.get_job", request, run_v2.GetJobRequest)
        return self.cloud.get(run_v2.Job, request.name)

    def create_job(self, request: run_v2.CreateJobRequest, *, timeout: float) -> Done:
        self.cloud.record("jobs.create_job", request, run_v2.CreateJobRequest)
        name = f"{request.parent}/jobs/{request.job_id}"
        return self.cloud.create("jobs.create_job", name, request.job)

    def update_job(self, request: run_v2.UpdateJobRequest, *, timeout: float) -> Done:
        self.cloud.record("jobs.update_job", request, run_v2.UpdateJobRequest)
        return self.cloud.update("jobs.update_job", request.job)


class Scheduler(Client):
    def get_job(self, request: scheduler_v1.GetJobRequest, *, timeout: float) -> scheduler_v1.Job:
        self.cloud.record("scheduler.get_job", request, scheduler_v1.GetJobRequest)
        return self.cloud.get(scheduler_v1.Job, request.name)

    def create_job(
        self, request: scheduler_v1.CreateJobRequest, *, timeout: float
    ) -> scheduler_v1.Job:
        self.cloud.record("scheduler.create_job", request, scheduler_v1.CreateJobRequest)
        assert request.job.name.startswith(f"{request.parent}/jobs/")
        self.cloud.keep(request.job.name, request.job)
        return self.cloud.get(scheduler_v1.Job, request.job.name)

    def update_job(
        self, request: scheduler_v1.UpdateJobRequest, *, timeout: float
    ) -> scheduler_v1.Job:
        self.cloud.record("scheduler.update_job", request, scheduler_v1.UpdateJobRequest)
        self.cloud.get(scheduler_v1.Job, request.job.name)
        self.cloud.keep(request.job.name, request.job)
        return request.job


def _plan(tmp_path: Path, **changes: str) -> deploy.CloudRun:
    root = tmp_path / "project"
    if not root.exists():
        _project(root)
    opts = {"image": IMAGE, "region": REGION, **changes}
    return deploy.cloudrun_plan(
        load_project(root, "prod"), deploy.DeployOptions("cloudrun", **opts)
    )


def _apply(plan: deploy.CloudRun, cloud: Cloud) -> list[tuple[str, str, str]]:
    return [(a.outcome, a.kind, a.name) for a in cloudrun.apply(plan, cloud.clients())]


def _requests(cloud: Cloud, method: str) -> list[object]:
    return [request for m, request in cloud.calls if m == method]


FIRST = [
    "services.get_service",
    "services.create_service",
    "services.get_service",
    "services.create_service",
    "jobs.get_job",
    "jobs.create_job",
    "scheduler.get_job",
    "scheduler.create_job",
    "services.get_iam_policy",
    "services.set_iam_policy",
    "jobs.get_iam_policy",
    "jobs.set_iam_policy",
]


def test_a_first_apply_creates_each_resource_in_order(tmp_path: Path) -> None:
    cloud = Cloud()
    done = _apply(_plan(tmp_path), cloud)
    assert cloud.methods() == FIRST
    assert [(outcome, kind) for outcome, kind, _ in done] == [
        ("created", "service"),
        ("created", "service"),
        ("created", "job"),
        ("created", "schedule"),
        ("granted", "invoker"),
        ("granted", "invoker"),
    ]
    assert [name for _, _, name in done[:4]] == [
        COLLECTOR, API, JOB, f"{PARENT}/jobs/headwater-prod-due",
    ]  # fmt: skip
    created = _requests(cloud, "services.create_service")
    assert [(r.parent, r.service_id) for r in created] == [  # type: ignore[attr-defined]
        (PARENT, "headwater-prod-collector"),
        (PARENT, "headwater-prod-api"),
    ]
    job = _requests(cloud, "jobs.create_job")[0]
    assert isinstance(job, run_v2.CreateJobRequest)
    assert (job.parent, job.job_id) == (PARENT, "headwater-prod-due")


def test_the_requests_are_what_render_writes(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    cloud = Cloud()
    _apply(plan, cloud)
    files = deploy.render(load_project(tmp_path / "project", "prod"), _options())
    sent = [
        _requests(cloud, "services.create_service")[0].service,  # type: ignore[attr-defined]
        _requests(cloud, "services.create_service")[1].service,  # type: ignore[attr-defined]
        _requests(cloud, "jobs.create_job")[0].job,  # type: ignore[attr-defined]
        _requests(cloud, "scheduler.create_job")[0].job,  # type: ignore[attr-defined]
    ]
    written = [
        run_v2.Service.from_json(files["collector.service.v2.json"]),
        run_v2.Service.from_json(files["api.service.v2.json"]),
        run_v2.Job.from_json(files["due.job.v2.json"]),
        scheduler_v1.Job.from_json(files["scheduler.job.json"]),
    ]
    assert sent == written


def _options(**changes: str) -> deploy.DeployOptions:
    return deploy.DeployOptions("cloudrun", **{"image": IMAGE, "region": REGION, **changes})


def test_a_second_apply_changes_nothing_and_a_change_updates(tmp_path: Path) -> None:
    cloud = Cloud()
    _apply(_plan(tmp_path), cloud)
    cloud.calls.clear()
    again = _apply(_plan(tmp_path), cloud)
    assert {outcome for outcome, _, _ in again} == {"unchanged"}
    assert cloud.methods() == [
        "services.get_service",
        "services.get_service",
        "jobs.get_job",
        "scheduler.get_job",
        "services.get_iam_policy",
        "jobs.get_iam_policy",
    ]
    cloud.calls.clear()
    newer = IMAGE.replace(":1", ":2")
    changed = _apply(_plan(tmp_path, image=newer, schedule="0 * * * *"), cloud)
    assert [outcome for outcome, _, _ in changed] == [
        "updated", "updated", "updated", "updated", "unchanged", "unchanged",
    ]  # fmt: skip
    assert "services.create_service" not in cloud.methods()
    assert "jobs.create_job" not in cloud.methods()
    updated = _requests(cloud, "services.update_service")
    assert [r.service.name for r in updated] == [COLLECTOR, API]  # type: ignore[attr-defined]
    assert all(
        r.service.template.containers[0].image == newer  # type: ignore[attr-defined]
        for r in updated
    )
    job = _requests(cloud, "jobs.update_job")[0]
    assert isinstance(job, run_v2.UpdateJobRequest)
    assert (job.job.name, job.job.template.template.containers[0].image) == (JOB, newer)
    schedule = _requests(cloud, "scheduler.update_job")[0]
    assert isinstance(schedule, scheduler_v1.UpdateJobRequest)
    assert schedule.job.schedule == "0 * * * *"
    # Only the fields deploy sets: Cloud Scheduler keeps its state and retries.
    assert sorted(schedule.update_mask.paths) == [
        "description", "http_target", "schedule", "time_zone",
    ]  # fmt: skip
    assert cloud.resources[run_v2.Service, COLLECTOR].template.containers[0].image == newer
    # Every operation was waited for, within the bound.
    assert len(cloud.operations) == 6  # three created, three updated
    assert {op.waited for op in cloud.operations} == {cloudrun.OPERATION_TIMEOUT}


def test_the_requests_carry_the_image_and_secret_references_never_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FAKE.items():
        monkeypatch.setenv(name, value)
    cloud = Cloud()
    _apply(_plan(tmp_path), cloud)
    for method, request in cloud.calls:
        text = str(request)
        for name, value in FAKE.items():
            secret = value.split(":")[-1].split("@")[0] if "://" in value else value
            assert secret not in text, f"{name}'s value is in {method}"
    collector, api = (r.service for r in _requests(cloud, "services.create_service"))  # type: ignore[attr-defined]
    job = _requests(cloud, "jobs.create_job")[0].job  # type: ignore[attr-defined]
    for container in (
        collector.template.containers[0],
        api.template.containers[0],
        job.template.template.containers[0],
    ):
        assert container.image == IMAGE
        refs = {e.name: e.value_source.secret_key_ref for e in container.env if e.value_source}
        assert refs
        for name, ref in refs.items():
            assert (ref.secret, ref.version) == (
                f"projects/acme-analytics/secrets/{name}",
                "latest",
            )
    assert "WEB_WRITE_KEY" in {e.name for e in collector.template.containers[0].env}
    assert "HOOK_SECRET" in {e.name for e in job.template.template.containers[0].env}
    assert collector.template.service_account.startswith("hw-prod-collector@")


def test_the_schedule_starts_the_job_with_the_scheduler_accounts_token(tmp_path: Path) -> None:
    cloud = Cloud()
    _apply(_plan(tmp_path), cloud)
    request = _requests(cloud, "scheduler.create_job")[0]
    assert isinstance(request, scheduler_v1.CreateJobRequest)
    assert request.parent == PARENT
    target = request.job.http_target
    assert target.uri == f"https://run.googleapis.com/v2/{JOB}:run"
    assert target.http_method == scheduler_v1.HttpMethod.POST
    assert target.oauth_token.service_account_email == SCHEDULER
    assert target.oauth_token.scope == "https://www.googleapis.com/auth/cloud-platform"
    assert request.job.schedule == deploy.DEFAULT_SCHEDULE == deploy_cli.DEFAULT_SCHEDULE
    assert request.job.time_zone == "Etc/UTC"


def test_invokers_join_the_policy_and_keep_what_it_held(tmp_path: Path) -> None:
    cloud = Cloud()
    developer = policy_pb2.Binding(role="roles/run.developer", members=["user:ana@acme.com"])
    cloud.policies[COLLECTOR] = policy_pb2.Policy(bindings=[developer], etag=b"e7")
    _apply(_plan(tmp_path), cloud)
    service = _requests(cloud, "services.set_iam_policy")[0]
    assert isinstance(service, iam_policy_pb2.SetIamPolicyRequest)
    assert service.resource == COLLECTOR
    # Written against the policy read: Google refuses it if someone changed it since.
    assert service.policy.etag == b"e7"
    bindings = {b.role: list(b.members) for b in service.policy.bindings}
    assert bindings == {
        "roles/run.developer": ["user:ana@acme.com"],
        "roles/run.invoker": ["allUsers"],
    }
    job = _requests(cloud, "jobs.set_iam_policy")[0]
    assert isinstance(job, iam_policy_pb2.SetIamPolicyRequest)
    assert job.resource == JOB
    assert [(b.role, list(b.members)) for b in job.policy.bindings] == [
        ("roles/run.invoker", [f"serviceAccount:{SCHEDULER}"])
    ]
    # The read API is left to its owner: no policy of it is read or written.
    assert all(getattr(r, "resource", None) != API for _, r in cloud.calls)


def test_apply_sh_grants_the_same_invokers(tmp_path: Path) -> None:
    _project(tmp_path)
    script = deploy.render(load_project(tmp_path, "prod"), _options())["apply.sh"]
    assert (
        "gcloud run services add-iam-policy-binding headwater-prod-collector --project "
        "acme-analytics --region europe-west1 --member allUsers --role roles/run.invoker"
    ) in script
    assert (
        "gcloud run jobs add-iam-policy-binding headwater-prod-due --project acme-analytics "
        f"--region europe-west1 --member serviceAccount:{SCHEDULER} --role roles/run.invoker"
    ) in script


def test_permission_denied_names_the_resource_and_the_role(tmp_path: Path) -> None:
    cloud = Cloud(fail="scheduler.create_job")
    applied = cloudrun.apply(_plan(tmp_path), cloud.clients())
    assert [next(applied).kind for _ in range(3)] == ["service", "service", "job"]
    with pytest.raises(cloudrun.ApplyError) as refused:
        next(applied)
    error = refused.value
    assert (error.kind, error.name) == ("schedule", f"{PARENT}/jobs/headwater-prod-due")
    assert "permission denied" in error.message
    assert error.hint
    assert "roles/cloudscheduler.admin on project acme-analytics" in error.hint
    assert f"roles/iam.serviceAccountUser on {SCHEDULER}" in error.hint
    assert cloud.methods()[-1] == "scheduler.create_job"
    assert "services.set_iam_policy" not in cloud.methods()


def test_a_disabled_api_says_which_to_enable(tmp_path: Path) -> None:
    disabled = _error(
        exceptions.PermissionDenied,
        "Cloud Run Admin API has not been used in project 123 before or it is disabled.",
    )
    cloud = Cloud(fail="services.get_service", error=disabled)
    with pytest.raises(cloudrun.ApplyError, match="the API is not enabled") as refused:
        list(cloudrun.apply(_plan(tmp_path), cloud.clients()))
    assert refused.value.name == COLLECTOR
    assert refused.value.hint
    assert "gcloud services enable run.googleapis.com" in refused.value.hint


def test_an_operation_that_does_not_finish_is_a_transient_error_naming_it(
    tmp_path: Path,
) -> None:
    cloud = Cloud(stuck="jobs.create_job")
    with pytest.raises(cloudrun.ApplyUnavailable, match="not ready after 600 s") as late:
        list(cloudrun.apply(_plan(tmp_path), cloud.clients()))
    assert (late.value.kind, late.value.name) == ("job", JOB)
    assert late.value.hint
    assert "gcloud run jobs describe headwater-prod-due" in late.value.hint
    assert "run deploy apply again" in late.value.hint


CHILD = """
import sys
from tests.test_deploy_apply import Cloud
from headwater.runtime import cloudrun
cloud = Cloud(fail=sys.argv[1] or None)
cloudrun.connect = cloud.clients
sys.argv = ["headwater", *sys.argv[2:]]
from headwater.cli.main import main
main()
"""


def _child(root: Path, fail: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``headwater --project ROOT ARGS`` with recording clients for Google's."""
    env = {k: v for k, v in os.environ.items() if k not in ("HEADWATER_DEBUG", "HEADWATER_ENV")}
    return subprocess.run(
        [sys.executable, "-c", CHILD, fail, "--project", str(root), *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**env, "COLUMNS": "3000"}, cwd=Path(__file__).parent.parent,
    )  # fmt: skip


APPLY = ("deploy", "apply", "--env", "prod", "--target", "cloudrun", "--image", IMAGE,
         "--region", REGION)  # fmt: skip


def test_the_command_applies_and_prints_the_account_commands_it_did_not_run(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path)
    result = _child(root, "", *APPLY)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"created   service {COLLECTOR}" in out
    assert f"created   job {JOB}" in out
    assert "granted   invoker roles/run.invoker for allUsers" in out
    plan = deploy.cloudrun_plan(load_project(root, "prod"), _options())
    commands = [line for line in deploy.account_commands(plan.gcp, plan.roles) if line]
    assert any(c.startswith("gcloud iam service-accounts describe") for c in commands)
    assert all(f"  {line}" in out for line in commands)
    assert out.index(commands[-1]) < out.index("created   service")
    # The same commands apply.sh runs.
    script = deploy.render(load_project(root, "prod"), _options())["apply.sh"]
    assert all(line in script for line in commands)


def test_permission_denied_through_the_command_exits_1_naming_resource_and_role(
    tmp_path: Path,
) -> None:
    root = _project(tmp_path)
    result = _child(root, "jobs.create_job", *APPLY)
    assert result.returncode == 1
    assert f"created   service {API}" in result.stdout
    err = result.stderr + result.stdout
    assert f"job {JOB}: permission denied" in err
    assert "roles/run.admin on project acme-analytics" in err
    assert "Traceback" not in err


def test_compose_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = _project(tmp_path)
    result = run_cli(root, "deploy", "apply", "--env", "prod", "--target", "compose", check=False)
    assert result.returncode == 1
    err = result.stderr + result.stdout
    assert "deploy apply applies to Cloud Run only" in err
    assert "docker-compose -f deploy/ENV/compose.yaml up -d" in err


def test_missing_credentials_name_the_login_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key file that does not exist: the credentials fail at once, without the network.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    root = _project(tmp_path / "project")
    result = run_cli(root, *APPLY, check=False)
    assert result.returncode == 1
    err = result.stderr + result.stdout
    assert "no Google credentials" in err
    assert "gcloud auth application-default login" in err


def test_a_missing_extra_names_it(tmp_path: Path) -> None:
    root = _project(tmp_path)
    blocked = (
        "import sys; sys.modules['google.cloud.run_v2'] = None; "
        "sys.argv = ['headwater', *sys.argv[1:]]; "
        "from headwater.cli.main import main; main()"
    )
    result = subprocess.run(
        [*HEADWATER[:1], "-c", blocked, "--project", str(root), *APPLY],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    err = result.stderr + result.stdout
    assert "headwater deploy apply needs google.cloud.run_v2" in err
    assert "pip install 'headwater[cloudrun]'" in err
