"""What ``headwater deploy render`` writes: a container image and the resources that run it.

Pure functions from a loaded :class:`~headwater.config.project.Project` to file contents
(``{file name: text}``); nothing here touches the network or the disk. Two targets:

- ``cloudrun``: the GCP topology of docs/engines.md. The collector and the read API as
  Cloud Run services, ``run --due`` as a Cloud Run job started by Cloud Scheduler, one
  service account per part with the least roles, and ``apply.sh`` with the ``gcloud``
  commands. The services and the job are rendered twice: as the Knative YAML that
  ``gcloud run services replace`` / ``gcloud run jobs replace`` take, and as the Cloud Run
  Admin API v2 JSON (``*.v2.json``) of the same resources, for the REST API or
  infrastructure code.
- ``compose``: PostgreSQL, two collectors behind one nginx port, the read API and a loop
  running ``run --due`` every minute.

Secret values never appear: every ``"${NAME}"`` of the environment's settings becomes a
Secret Manager reference (Cloud Run) or a line of an env file the user fills in (compose).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from headwater.config.project import Project
from headwater.core.errors import ConfigError
from headwater.core.secrets import is_environment_reference, reference_name
from headwater.deliver.settings import FilesSink, PostgresSink, WebhookSink
from headwater.runtime.lock import IMAGE_PYTHON, WHEELS

Target = Literal["cloudrun", "compose"]

#: Requests one collector instance takes at once, and its memory. benchmarks/ingest.py
#: measures one collector process: it keeps up with far more concurrent small batches than
#: 80 on one vCPU, and its queue of 100,000 events ([collector] queue_max_events) at about
#: 1 KB each fits in 512 MiB beside the interpreter. Raise both together.
COLLECTOR_CONCURRENCY = 80
COLLECTOR_MEMORY = "512Mi"
#: The read API: lookups by key in a PostgreSQL sink.
API_CONCURRENCY = 80
API_MEMORY = "512Mi"
#: The job writes one interval's Parquet to the temporary folder, which on Cloud Run is
#: memory: size it for the largest offload (the ``bytes`` of the offload's log line).
JOB_MEMORY = "2Gi"
JOB_TIMEOUT_SECONDS = 3600
PORT = 8080
DEFAULT_SCHEDULE = "*/5 * * * *"
_HEALTH = (
    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/healthz', timeout=4)"
)

_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,16}$")
_SECRETISH = re.compile(r"token|secret|password|key|credential", re.IGNORECASE)

LOCK_HELP = (
    "The image installs requirements.lock, every package pinned by its hash. Write it with\n"
    "  headwater deploy lock --extras bigquery,gcs\n"
    "beside headwater.toml (it writes requirements.in first when missing; add your\n"
    "pipelines' packages there and lock again)."
)


@dataclass(frozen=True)
class DeployOptions:
    target: Target
    image: str | None = None
    project_id: str | None = None
    region: str | None = None
    schedule: str = DEFAULT_SCHEDULE
    cloudsql_instance: str | None = None


@dataclass(frozen=True)
class Secrets:
    """The environment variables each part needs, by the part that reads them."""

    collector: list[str] = field(default_factory=list)
    api: list[str] = field(default_factory=list)
    job: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return sorted({*self.collector, *self.api, *self.job})


#: What each target writes besides the Dockerfile: rendering one removes the other's,
#: so deploy/ENV/ never holds a compose file beside Cloud Run services it does not match.
TARGET_FILES = {
    "cloudrun": frozenset({
        "collector.service.yaml", "api.service.yaml", "due.job.yaml",
        "collector.service.v2.json", "api.service.v2.json", "due.job.v2.json",
        "scheduler.job.json", "service-accounts.yaml", "apply.sh",
    }),
    "compose": frozenset({"compose.yaml", "nginx.conf", "secrets.env.example"}),
}  # fmt: skip


def stale(target: str) -> frozenset[str]:
    """The files another target wrote, which rendering ``target`` removes."""
    return frozenset().union(*(f for t, f in TARGET_FILES.items() if t != target))


def render(project: Project, opts: DeployOptions) -> dict[str, str]:
    """Every file of ``deploy/<env>/`` for ``opts.target``, by name."""
    env = _environment(project)
    _check_store(project)
    secrets = find_secrets(project)
    files = {
        "Dockerfile": dockerfile(project, env),
        "Dockerfile.dockerignore": DOCKERIGNORE,
    }
    if opts.target == "cloudrun":
        files |= cloudrun(project, env, secrets, opts)
    else:
        files |= compose(project, env, secrets, opts)
    return files


def _environment(project: Project) -> str:
    env = project.environment
    if env is None:
        raise ConfigError(
            "deploy render needs an environment",
            hint="add [environments.prod.store] to headwater.toml and pass --env prod",
        )
    if not _ENV_NAME.match(env):
        raise ConfigError(
            f"environment {env!r} cannot name cloud resources",
            hint="use lowercase letters, digits and '-', at most 17 characters (e.g. prod)",
        )
    return env


def _check_store(project: Project) -> None:
    store = project.settings.store
    if store.engine != "postgres":
        can = "takes one collector process only" if store.can_collect else "cannot take collectors"
        raise ConfigError(
            f"environment {project.environment!r} has a {store.engine} [store], which {can}: "
            "deployed collectors run as several processes",
            path=str(project.file),
            hint=f'set [environments.{project.environment}.store] engine = "postgres", '
            'url = "${DATABASE_URL}" (the hot store), and put '
            f"{store.engine} in [environments.{project.environment}.warehouse]"
            if store.engine in ("bigquery", "spark")
            else f'set [environments.{project.environment}.store] engine = "postgres", '
            'url = "${DATABASE_URL}"',
        )


def _reference(value: str | None, where: str, found: list[str], *, url: bool = False) -> None:
    """Add the name of a ``"${NAME}"`` to ``found``; refuse a secret written in clear."""
    if value is None:
        return
    name = reference_name(value)
    if name is not None:
        if name not in found:
            found.append(name)
        return
    clear = False
    if url:
        try:
            clear = bool(urlsplit(value).password)
        except ValueError:
            clear = False
    else:
        clear = True
    if clear:
        raise ConfigError(
            f"{where} holds a secret in plain text, which would be baked into the deployment",
            hint='keep it in an environment variable and write "${NAME}" there; '
            "the rendered files then read it from Secret Manager",
        )


def metadata_secrets(project: Project) -> list[str]:
    """The names the environment's metadata database is reached by: its ``metadata_url``'s,
    else its store's (the metadata lives beside a PostgreSQL store)."""
    url = project.settings.pipelines.metadata_url
    if url is None:
        return store_secrets(project)
    found: list[str] = []
    _reference(url, f"[environments.{project.environment}] metadata_url", found, url=True)
    return found


def find_secrets(project: Project) -> Secrets:
    """Each ``"${NAME}"`` of the environment's settings, for the parts that read it."""
    s = project.settings
    env = project.environment
    base = store_secrets(project)
    _reference(s.pipelines.metadata_url, f"[environments.{env}] metadata_url", base, url=True)
    warehouse: list[str] = []
    if s.warehouse is not None:
        _reference(s.warehouse.url, f"[environments.{env}.warehouse] url", warehouse, url=True)
        for key, value in s.warehouse.spark_conf.items():
            if _SECRETISH.search(key) or is_environment_reference(value):
                _reference(value, f"[environments.{env}.warehouse] spark_conf {key}", warehouse)
    sinks: list[str] = []
    served: list[str] = []
    for name, sink in sorted(s.sinks.items()):
        where = f"[sinks.{name}]"
        if isinstance(sink, PostgresSink):
            _reference(sink.url, f"{where} url", sinks, url=True)
            if sink.serve:
                _reference(sink.url, f"{where} url", served, url=True)
        elif isinstance(sink, WebhookSink):
            if is_environment_reference(sink.url):
                _reference(sink.url, f"{where} url", sinks)
            _reference(sink.secret, f"{where} secret", sinks)
        elif isinstance(sink, FilesSink):
            if is_environment_reference(sink.url):
                _reference(sink.url, f"{where} url", sinks)
            for key, value in sorted(sink.storage_options.items()):
                if _SECRETISH.search(key) or is_environment_reference(value):
                    _reference(value, f"{where} storage_options {key}", sinks)
    keys: list[str] = []
    for name, source in sorted(s.sources.items()):
        if is_environment_reference(source.write_key):
            _reference(source.write_key, f"[sources.{name}] write_key", keys)
    tokens: list[str] = []
    for name, consumer in sorted(s.consumers.items()):
        if is_environment_reference(consumer.token):
            _reference(consumer.token, f"[consumers.{name}] token", tokens)
    return Secrets(
        collector=_unique(base + keys),
        api=_unique(base + warehouse + served + tokens),
        job=_unique(base + warehouse + sinks),
    )


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


# -- the image -------------------------------------------------------------------------


DOCKERIGNORE = """\
# Rendered by `headwater deploy render`. BuildKit reads <Dockerfile>.dockerignore beside the
# Dockerfile given with -f: docker build -f deploy/ENV/Dockerfile .
.headwater/
.venv/
.git/
deploy/
**/__pycache__/
*.pyc
.env
*.env
"""


def dockerfile(project: Project, env: str) -> str:
    folder = project.settings.pipelines.folder.strip("/")
    models = (
        "COPY --chown=root:root models/ ./models/\n" if (project.root / "models").is_dir() else ""
    )
    # requirements.lock finds Headwater's wheel there when no package index has it.
    wheels = f"COPY {WHEELS}/ ./{WHEELS}/\n" if (project.root / WHEELS).is_dir() else ""
    data = project.settings.project.data_dir.strip("/")
    lock = "\n".join(f"# {line}" for line in LOCK_HELP.splitlines())
    return f"""\
# Rendered by `headwater deploy render --env {env}`: rendered again (overwritten) each time.
# Build from the project folder: docker build -f deploy/{env}/Dockerfile -t IMAGE .
#
{lock}
#
# No secret is in this image: the store's URL, sink secrets and write keys come from the
# environment at run time ("${{NAME}}" in headwater.toml).
FROM python:{IMAGE_PYTHON}-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 headwater \\
 && useradd --system --uid 10001 --gid headwater --home-dir /app --no-create-home headwater

WORKDIR /app
COPY requirements.lock ./
{wheels}RUN pip install --no-cache-dir --require-hashes -r requirements.lock

COPY --chown=root:root headwater.toml ./
COPY --chown=root:root {folder}/ ./{folder}/
{models}RUN mkdir -p /app/{data} && chown headwater:headwater /app/{data}

USER headwater:headwater
EXPOSE {PORT}
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \\
  CMD ["python", "-c", "{_HEALTH}"]
ENTRYPOINT ["headwater"]
CMD ["--env", "{env}", "serve", "collector", "--host", "0.0.0.0", "--port", "{PORT}"]
"""


# -- Cloud Run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Gcp:
    env: str
    project: str
    region: str
    image: str
    cloudsql: str

    def account(self, part: str) -> str:
        return f"hw-{self.env}-{part}@{self.project}.iam.gserviceaccount.com"

    def name(self, part: str) -> str:
        return f"headwater-{self.env}-{part}"


def _gcp(project: Project, env: str, opts: DeployOptions) -> _Gcp:
    if not opts.image:
        raise ConfigError(
            "--image is missing: Cloud Run runs an image from a registry",
            hint=f"build and push deploy/{env}/Dockerfile, then pass --image "
            "REGION-docker.pkg.dev/PROJECT/REPOSITORY/headwater:TAG",
        )
    warehouse = project.settings.warehouse
    project_id = opts.project_id or (
        warehouse.project if warehouse is not None and warehouse.engine == "bigquery" else None
    )
    if not project_id:
        raise ConfigError(
            "the Google Cloud project is unknown",
            hint="pass --project-id PROJECT (or set project in the BigQuery [warehouse])",
        )
    if not opts.region:
        raise ConfigError(
            "the Cloud Run region is missing", hint="pass --region, e.g. --region europe-west1"
        )
    cloudsql = opts.cloudsql_instance or f"{project_id}:{opts.region}:headwater-{env}"
    return _Gcp(env, project_id, opts.region, opts.image, cloudsql)


def cloudsql_name(project: Project, opts: DeployOptions) -> str:
    """The Cloud SQL instance the services and the job connect to."""
    return _gcp(project, _environment(project), opts).cloudsql


def _args(env: str, *command: str) -> list[str]:
    return ["--env", env, *command]


def _serve(env: str, stage: str) -> list[str]:
    # Inside a container: the platform's network reaches it only through the published port.
    return _args(env, "serve", stage, "--host", "0.0.0.0", "--port", str(PORT))  # noqa: S104


def _knative_env(names: list[str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "HEADWATER_LOG_FORMAT", "value": "json"}]
    return env + [
        {"name": n, "valueFrom": {"secretKeyRef": {"name": n, "key": "latest"}}} for n in names
    ]


def _v2_env(g: _Gcp, names: list[str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "HEADWATER_LOG_FORMAT", "value": "json"}]
    return env + [
        {
            "name": n,
            "valueSource": {
                "secretKeyRef": {"secret": f"projects/{g.project}/secrets/{n}", "version": "latest"}
            },
        }
        for n in names
    ]


def _probes() -> dict[str, Any]:
    return {
        "startupProbe": {
            "httpGet": {"path": "/readyz", "port": PORT},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": PORT},
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


@dataclass(frozen=True)
class ServiceSpec:
    """What differs between the collector's service and the read API's."""

    args: list[str]
    secrets: list[str]
    concurrency: int
    memory: str
    #: CPU allocated between requests (the collector publishes its floor every second).
    always_cpu: bool


def knative_service(g: _Gcp, part: str, spec: ServiceSpec) -> dict[str, Any]:
    """A service for ``gcloud run services replace``."""
    args, secrets, concurrency = spec.args, spec.secrets, spec.concurrency
    memory, always_cpu = spec.memory, spec.always_cpu
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": g.name(part),
            "labels": {"cloud.googleapis.com/location": g.region},
        },
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "autoscaling.knative.dev/minScale": "0",
                        "run.googleapis.com/cloudsql-instances": g.cloudsql,
                        "run.googleapis.com/cpu-throttling": "false" if always_cpu else "true",
                        "run.googleapis.com/startup-cpu-boost": "true",
                    }
                },
                "spec": {
                    "containerConcurrency": concurrency,
                    "serviceAccountName": g.account(part),
                    "containers": [
                        {
                            "image": g.image,
                            "command": ["headwater"],
                            "args": args,
                            "ports": [{"name": "http1", "containerPort": PORT}],
                            "env": _knative_env(secrets),
                            "resources": {"limits": {"cpu": "1", "memory": memory}},
                            **_probes(),
                        }
                    ],
                },
            }
        },
    }


def v2_service(g: _Gcp, part: str, spec: ServiceSpec) -> dict[str, Any]:
    """The same service as a Cloud Run Admin API v2 ``Service``."""
    args, secrets, concurrency = spec.args, spec.secrets, spec.concurrency
    memory, always_cpu = spec.memory, spec.always_cpu
    return {
        "labels": {"headwater-environment": g.env},
        "template": {
            "serviceAccount": g.account(part),
            "scaling": {"minInstanceCount": 0},
            "maxInstanceRequestConcurrency": concurrency,
            "containers": [
                {
                    "image": g.image,
                    "command": ["headwater"],
                    "args": args,
                    "ports": [{"name": "http1", "containerPort": PORT}],
                    "env": _v2_env(g, secrets),
                    "resources": {
                        "limits": {"cpu": "1", "memory": memory},
                        "cpuIdle": not always_cpu,
                        "startupCpuBoost": True,
                    },
                    "volumeMounts": [{"name": "cloudsql", "mountPath": "/cloudsql"}],
                    **_probes(),
                }
            ],
            "volumes": [{"name": "cloudsql", "cloudSqlInstance": {"instances": [g.cloudsql]}}],
        },
    }


def knative_job(g: _Gcp, env: str, secrets: list[str]) -> dict[str, Any]:
    """The ``run --due`` job for ``gcloud run jobs replace``."""
    return {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Job",
        "metadata": {
            "name": g.name("due"),
            "labels": {"cloud.googleapis.com/location": g.region},
        },
        "spec": {
            "template": {
                "metadata": {"annotations": {"run.googleapis.com/cloudsql-instances": g.cloudsql}},
                "spec": {
                    "parallelism": 1,
                    "taskCount": 1,
                    "template": {
                        "spec": {
                            "serviceAccountName": g.account("due"),
                            "maxRetries": 0,
                            "timeoutSeconds": str(JOB_TIMEOUT_SECONDS),
                            "containers": [
                                {
                                    "image": g.image,
                                    "command": ["headwater"],
                                    "args": _args(env, "run", "--due"),
                                    "env": _knative_env(secrets),
                                    "resources": {"limits": {"cpu": "1", "memory": JOB_MEMORY}},
                                }
                            ],
                        }
                    },
                },
            }
        },
    }


def v2_job(g: _Gcp, env: str, secrets: list[str]) -> dict[str, Any]:
    """The same job as a Cloud Run Admin API v2 ``Job``."""
    return {
        "labels": {"headwater-environment": g.env},
        "template": {
            "parallelism": 1,
            "taskCount": 1,
            "template": {
                "serviceAccount": g.account("due"),
                "maxRetries": 0,
                "timeout": f"{JOB_TIMEOUT_SECONDS}s",
                "containers": [
                    {
                        "image": g.image,
                        "command": ["headwater"],
                        "args": _args(env, "run", "--due"),
                        "env": _v2_env(g, secrets),
                        "resources": {"limits": {"cpu": "1", "memory": JOB_MEMORY}},
                        "volumeMounts": [{"name": "cloudsql", "mountPath": "/cloudsql"}],
                    }
                ],
                "volumes": [{"name": "cloudsql", "cloudSqlInstance": {"instances": [g.cloudsql]}}],
            },
        },
    }


def _run_uri(g: _Gcp) -> str:
    return (
        f"https://run.googleapis.com/v2/projects/{g.project}/locations/{g.region}"
        f"/jobs/{g.name('due')}:run"
    )


def scheduler_job(g: _Gcp, schedule: str) -> dict[str, Any]:
    """A Cloud Scheduler ``Job`` that starts the Cloud Run job through its ``:run`` method."""
    return {
        "name": f"projects/{g.project}/locations/{g.region}/jobs/{g.name('due')}",
        "description": f"headwater --env {g.env} run --due",
        "schedule": schedule,
        "timeZone": "Etc/UTC",
        "httpTarget": {
            "uri": _run_uri(g),
            "httpMethod": "POST",
            "oauthToken": {
                "serviceAccountEmail": g.account("scheduler"),
                "scope": "https://www.googleapis.com/auth/cloud-platform",
            },
        },
    }


def _buckets(project: Project) -> list[str]:
    found = []
    for sink in project.settings.sinks.values():
        if isinstance(sink, FilesSink) and sink.url.startswith("gs://"):
            found.append(sink.url[5:].split("/", 1)[0])
    warehouse = project.settings.warehouse
    if (
        warehouse is not None
        and warehouse.engine == "spark"
        and warehouse.warehouse.startswith("gs://")
    ):
        found.append(warehouse.warehouse[5:].split("/", 1)[0])
    return sorted(set(found))


def accounts(project: Project, g: _Gcp, secrets: Secrets) -> dict[str, Any]:
    """Each service account, its project roles, and what else it may touch."""
    warehouse = project.settings.warehouse
    bigquery = ["roles/bigquery.jobUser", "roles/bigquery.dataEditor"]
    on_bq = warehouse is not None and warehouse.engine == "bigquery"
    buckets = _buckets(project)

    def one(part: str, roles: list[str], names: list[str], **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"email": g.account(part), "project_roles": roles}
        if names:
            entry["secrets"] = {"role": "roles/secretmanager.secretAccessor", "names": names}
        return entry | extra

    due_extra: dict[str, Any] = {}
    if buckets:
        due_extra["buckets"] = {"role": "roles/storage.objectAdmin", "names": buckets}
    return {
        "collector": one("collector", ["roles/cloudsql.client"], secrets.collector),
        "api": one("api", ["roles/cloudsql.client", *(bigquery if on_bq else [])], secrets.api),
        "due": one(
            "due", ["roles/cloudsql.client", *(bigquery if on_bq else [])], secrets.job, **due_extra
        ),
        "scheduler": one(
            "scheduler", [], [], job={"role": "roles/run.invoker", "name": g.name("due")}
        ),
    }


def account_commands(g: _Gcp, roles: dict[str, Any]) -> list[str]:
    """The ``gcloud`` commands that create each service account and grant its roles (on the
    project, each secret, each bucket); each can run again without harm."""
    p = shlex.quote(g.project)
    lines = ["# Service accounts"]
    for part, entry in roles.items():
        lines.append(
            f"gcloud iam service-accounts describe {entry['email']} --project {p} >/dev/null "
            f"2>&1 || gcloud iam service-accounts create hw-{g.env}-{part} --project {p} "
            f'--display-name "Headwater {g.env} {part}"'
        )
    lines += ["", "# Roles: on the project, on each secret, on each bucket"]
    for entry in roles.values():
        member = f"serviceAccount:{entry['email']}"
        for role in entry["project_roles"]:
            lines.append(
                f"gcloud projects add-iam-policy-binding {p} --member {member} --role {role} "
                "--condition None >/dev/null"
            )
        for name in entry.get("secrets", {}).get("names", []):
            lines.append(
                f"gcloud secrets add-iam-policy-binding {name} --project {p} --member {member} "
                "--role roles/secretmanager.secretAccessor >/dev/null"
            )
        for bucket in entry.get("buckets", {}).get("names", []):
            lines.append(
                f"gcloud storage buckets add-iam-policy-binding gs://{bucket} --member {member} "
                "--role roles/storage.objectAdmin >/dev/null"
            )
    return lines


@dataclass(frozen=True)
class Invoker:
    """Who may call a service or start the job: Cloud Run's ``roles/run.invoker``."""

    kind: Literal["services", "jobs"]
    part: str
    member: str
    role: str = "roles/run.invoker"


def invokers(g: _Gcp, roles: dict[str, Any]) -> list[Invoker]:
    """The collector takes events from SDKs that carry a write key, not a Google identity, so
    everyone may reach it (the key is checked by Headwater); only the scheduler's account may
    start the job. The read API gets no binding here: Cloud Run lets in only the callers
    granted ``roles/run.invoker`` on it."""
    return [
        Invoker("services", "collector", "allUsers"),
        Invoker("jobs", "due", f"serviceAccount:{roles['scheduler']['email']}"),
    ]


def apply_script(g: _Gcp, roles: dict[str, Any], schedule: str) -> str:
    # Values given on the command line are quoted for the shell, never pasted as they are.
    p, r = shlex.quote(g.project), shlex.quote(g.region)
    lines = [
        "#!/usr/bin/env bash",
        f"# Rendered by `headwater deploy render --env {g.env} --target cloudrun`: rendered",
        "# again (overwritten) each time. Applies the files beside it, in order. Create the",
        "# secrets first (gcloud secrets create NAME --data-file=-) and the Cloud SQL",
        f"# instance {g.cloudsql}; the store's URL then reaches it through",
        "# /cloudsql/INSTANCE (postgresql://USER:PASSWORD@/DB?host=/cloudsql/INSTANCE).",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "",
        *account_commands(g, roles),
    ]
    scheduler = roles["scheduler"]["email"]
    lines += [
        "",
        "# Services and the job, and who may call them",
        f"gcloud run services replace collector.service.yaml --project {p} --region {r}",
        f"gcloud run services replace api.service.yaml --project {p} --region {r}",
        f"gcloud run jobs replace due.job.yaml --project {p} --region {r}",
    ]
    for grant in invokers(g, roles):
        lines.append(
            f"gcloud run {grant.kind} add-iam-policy-binding {g.name(grant.part)} --project {p} "
            f"--region {r} --member {grant.member} --role {grant.role} >/dev/null"
        )
    lines += [
        "",
        "# The schedule (created once; delete it to change it)",
        f"gcloud scheduler jobs describe {g.name('due')} --project {p} --location {r} "
        f">/dev/null 2>&1 || gcloud scheduler jobs create http {g.name('due')} --project {p} "
        f"--location {r} --schedule {shlex.quote(schedule)} --time-zone Etc/UTC "
        f"--uri {shlex.quote(_run_uri(g))} "
        f"--http-method POST --oauth-service-account-email {scheduler} "
        "--oauth-token-scope https://www.googleapis.com/auth/cloud-platform",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class CloudRun:
    """An environment's Cloud Run resources before any format: what ``render`` writes as
    files and ``apply`` sends to Google's APIs."""

    gcp: _Gcp
    #: The collector's and the read API's services, by part.
    services: dict[str, ServiceSpec]
    #: The secrets the ``run --due`` job reads.
    job_secrets: list[str]
    #: Each service account, its roles (:func:`accounts`).
    roles: dict[str, Any]
    schedule: str

    def service(self, part: str) -> dict[str, Any]:
        return v2_service(self.gcp, part, self.services[part])

    def job(self) -> dict[str, Any]:
        return v2_job(self.gcp, self.gcp.env, self.job_secrets)

    def scheduler_job(self) -> dict[str, Any]:
        return scheduler_job(self.gcp, self.schedule)


def cloudrun_plan(project: Project, opts: DeployOptions) -> CloudRun:
    """The Cloud Run resources of ``project``'s environment, checked as ``render`` checks."""
    env = _environment(project)
    _check_store(project)
    return _plan(project, env, find_secrets(project), opts)


def _plan(project: Project, env: str, secrets: Secrets, opts: DeployOptions) -> CloudRun:
    g = _gcp(project, env, opts)
    collector = ServiceSpec(
        _serve(env, "collector"),
        secrets.collector,
        COLLECTOR_CONCURRENCY,
        COLLECTOR_MEMORY,
        always_cpu=True,
    )
    api = ServiceSpec(
        _serve(env, "api"), secrets.api, API_CONCURRENCY, API_MEMORY, always_cpu=False
    )
    roles = accounts(project, g, secrets)
    return CloudRun(g, {"collector": collector, "api": api}, secrets.job, roles, opts.schedule)


def cloudrun(project: Project, env: str, secrets: Secrets, opts: DeployOptions) -> dict[str, str]:
    plan = _plan(project, env, secrets, opts)
    g, specs = plan.gcp, plan.services
    return {
        "collector.service.yaml": to_yaml(knative_service(g, "collector", specs["collector"])),
        "api.service.yaml": to_yaml(knative_service(g, "api", specs["api"])),
        "due.job.yaml": to_yaml(knative_job(g, env, plan.job_secrets)),
        "collector.service.v2.json": _json(plan.service("collector")),
        "api.service.v2.json": _json(plan.service("api")),
        "due.job.v2.json": _json(plan.job()),
        "scheduler.job.json": _json(plan.scheduler_job()),
        "service-accounts.yaml": to_yaml(plan.roles),
        "apply.sh": apply_script(g, plan.roles, plan.schedule),
    }


# -- compose -----------------------------------------------------------------------------


NGINX = f"""\
# Rendered by `headwater deploy render --target compose`: round-robin over the collectors.
upstream collectors {{
    server collector-1:{PORT};
    server collector-2:{PORT};
}}
server {{
    listen {PORT};
    client_max_body_size 1m;
    location / {{
        proxy_pass http://collectors;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_next_upstream error timeout;
    }}
}}
"""


def compose(project: Project, env: str, secrets: Secrets, opts: DeployOptions) -> dict[str, str]:
    image: dict[str, Any] = (
        {"image": opts.image}
        if opts.image
        else {
            "image": f"headwater-{env}:local",
            "build": {"context": "../..", "dockerfile": f"deploy/{env}/Dockerfile"},
        }
    )
    healthy = {"postgres": {"condition": "service_healthy"}}
    common: dict[str, Any] = {
        **image,
        "depends_on": healthy,
        "healthcheck": {
            "test": ["CMD", "python", "-c", _HEALTH],
            "interval": "10s",
            "timeout": "5s",
            "retries": 5,
            "start_period": "30s",
        },
        "restart": "unless-stopped",
    }
    # Each service is given only the secrets its part reads (as on Cloud Run), by name
    # from secrets.env, which compose reads for that (`--env-file secrets.env`).
    collector = {**common, "environment": _environment_of(secrets.collector)}
    services: dict[str, Any] = {
        "postgres": {
            "image": "postgres:16",
            "environment": {
                "POSTGRES_USER": "headwater",
                "POSTGRES_DB": "headwater",
                # Text compared byte by byte, as BigQuery and DuckDB compare it (engines.md;
                # the image's default en_US.utf8 orders 'a' before 'B'), and cased as
                # Unicode (under the C ctype LOWER('Ü') stays 'Ü').
                "POSTGRES_INITDB_ARGS": "--lc-collate=C --lc-ctype=C.UTF-8 --encoding=UTF8",
                **_passed(["POSTGRES_PASSWORD"]),
            },
            "volumes": ["pgdata:/var/lib/postgresql/data"],
            "healthcheck": {
                "test": ["CMD-SHELL", "pg_isready -U headwater -d headwater"],
                "interval": "5s",
                "timeout": "5s",
                "retries": 20,
            },
            "restart": "unless-stopped",
        },
        "collector-1": {**collector, "command": _serve(env, "collector")},
        "collector-2": {**collector, "command": _serve(env, "collector")},
        "proxy": {
            "image": "nginx:1.27-alpine",
            "ports": [f"{PORT}:{PORT}"],
            "volumes": ["./nginx.conf:/etc/nginx/conf.d/default.conf:ro"],
            "depends_on": {
                "collector-1": {"condition": "service_healthy"},
                "collector-2": {"condition": "service_healthy"},
            },
            "restart": "unless-stopped",
        },
        "api": {
            **common,
            "environment": _environment_of(secrets.api),
            "command": _serve(env, "api"),
            "ports": [f"{PORT + 1}:{PORT}"],
        },
        "runner": {
            **common,
            "environment": _environment_of(secrets.job),
            "entrypoint": ["sh", "-c"],
            "command": [f"while true; do headwater --env {env} run --due; sleep 60; done"],
            "healthcheck": {"disable": True},
        },
    }
    doc = {"services": services, "volumes": {"pgdata": {}}}
    header = (
        f"# Rendered by `headwater deploy render --env {env} --target compose`: rendered again\n"
        "# (overwritten) each time. Copy secrets.env.example to secrets.env and fill it in,\n"
        "# then: docker compose --env-file secrets.env up -d (each service gets only the\n"
        f"# secrets it reads). Collectors answer on :{PORT} (nginx, round-robin), the read\n"
        f"# API on :{PORT + 1}.\n"
    )
    example = [
        "# Copy to secrets.env, fill it in and keep it out of git. Rendered again each time;",
        "# secrets.env itself is never written by headwater.",
        "POSTGRES_PASSWORD=",
    ]
    store = store_secrets(project)
    for name in secrets.all:
        if name in store:
            example.append(
                "# the compose PostgreSQL: postgresql://headwater:PASSWORD@postgres:5432/headwater"
            )
        example.append(f"{name}=")
    return {
        "compose.yaml": header + to_yaml(doc),
        "nginx.conf": NGINX,
        "secrets.env.example": "\n".join(example) + "\n",
    }


def _passed(names: list[str]) -> dict[str, str]:
    """``NAME: ${NAME}`` for each name: compose fills it from secrets.env, and refuses to
    start, naming it, when it is not there."""
    return {n: "${%s:?set %s in secrets.env}" % (n, n) for n in names}  # noqa: UP031


def _environment_of(names: list[str]) -> dict[str, str]:
    return {"HEADWATER_LOG_FORMAT": "json", **_passed(names)}


def store_secrets(project: Project) -> list[str]:
    """The names the environment's store URL is read from."""
    found: list[str] = []
    where = f"[environments.{project.environment}.store] url"
    _reference(project.settings.store.url, where, found, url=True)
    return found


# -- formats -----------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block YAML whose strings of several lines are literal blocks (``|``), as written."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def to_yaml(value: Any) -> str:
    """Block YAML, keys in the order given.

    >>> print(to_yaml({"run": "echo a\\necho b\\n", "on": ["push"]}), end="")
    run: |
      echo a
      echo b
    'on':
    - push
    """
    return str(yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         width=100))  # fmt: skip
