"""``headwater deploy render``: the files that deploy an environment, checked without a cloud.

Nothing is deployed and no network is used. What stands in for the cloud:

- Cloud Run: the rendered ``*.v2.json`` files are parsed into the Cloud Run Admin API v2
  messages of ``google-cloud-run`` (``run_v2.Service``, ``run_v2.Job``) with unknown
  fields refused, so a misspelt or misplaced field fails. The Knative YAML that
  ``gcloud run services replace`` / ``gcloud run jobs replace`` take has no message class
  in that library: it is parsed as YAML and checked field by field, and checked to say
  the same as the v2 form (image, command, secrets, Cloud SQL). ``gcloud`` itself never
  runs; ``apply.sh`` is checked as text.
- Cloud Scheduler: ``scheduler.job.json`` is parsed into ``google.cloud.scheduler_v1.Job``.
- compose: ``docker-compose config`` (Debian's docker-compose) validates the file; no
  container starts.
- the Dockerfile: read line by line; no image is built.

Fake secret values sit in the environment of the command, and every rendered file is
searched for them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.cloud import run_v2, scheduler_v1

from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.runtime import deploy
from tests.conftest import dockerfile_instructions, run_cli

FAKE = {
    "DATABASE_URL": "postgresql://hw:fake-store-password-41@/hw?host=/cloudsql/x",
    "METADATA_URL": "postgresql://hw:fake-metadata-password-42@/hw",
    "RECS_DATABASE_URL": "postgresql://recs:fake-recs-password-43@db/recs",
    "HOOK_SECRET": "fake-hook-secret-44",
    "WEB_WRITE_KEY": "hw_wk_fake-write-key-45",
}

PROJECT = """
[sources.web]
write_key = "${WEB_WRITE_KEY}"

[environments.prod]
metadata_url = "${METADATA_URL}"

[environments.prod.store]
engine = "postgres"
url = "${DATABASE_URL}"

[environments.prod.warehouse]
engine = "bigquery"
project = "acme-analytics"
location = "EU"

[environments.prod.sinks.recs]
type = "postgres"
url = "${RECS_DATABASE_URL}"
serve = true

[environments.prod.sinks.lake]
type = "files"
url = "gs://acme-lake/headwater"

[environments.prod.sinks.hook]
type = "webhook"
url = "https://hooks.example.com/in"
secret = "${HOOK_SECRET}"

[environments.plain.store]
engine = "postgres"
url = "${DATABASE_URL}"

[environments.bq.store]
engine = "bigquery"
project = "acme-analytics"

[environments.solo.store]
engine = "duckdb"

[environments.leaky.store]
engine = "postgres"
url = "${DATABASE_URL}"

[environments.leaky.sinks.lake]
type = "files"
url = "gs://acme-lake/x"
storage_options = { token = "ya29.fake-clear-token-46" }
"""

IMAGE = "europe-west1-docker.pkg.dev/acme-analytics/hw/headwater:1"
REGION = "europe-west1"
INSTANCE = "acme-analytics:europe-west1:headwater-prod"


def _project(root: Path, *, models: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "headwater.toml").write_text(PROJECT, encoding="utf-8")
    (root / "pipelines").mkdir(exist_ok=True)
    if models:
        (root / "models").mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="module")
def fake_env() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def cloudrun(tmp_path_factory: pytest.TempPathFactory, fake_env: None) -> tuple[Path, str]:
    root = _project(tmp_path_factory.mktemp("cloudrun"), models=True)
    result = run_cli(
        root, "deploy", "render", "--env", "prod", "--target", "cloudrun", "--image", IMAGE,
        "--region", REGION,
    )  # fmt: skip
    return root / "deploy" / "prod", result.stdout


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory, fake_env: None) -> tuple[Path, str]:
    root = _project(tmp_path_factory.mktemp("compose"))
    result = run_cli(root, "--env", "prod", "deploy", "render", "--target", "compose")
    return root / "deploy" / "prod", result.stdout


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _secret_names(env: Any) -> dict[str, str]:
    return {e.name: e.value_source.secret_key_ref.secret for e in env if e.value_source}


def test_the_services_parse_into_cloud_run_v2_services(cloudrun: tuple[Path, str]) -> None:
    folder, _ = cloudrun
    raw = _json(folder / "collector.service.v2.json")
    collector = run_v2.Service.from_json(json.dumps(raw), ignore_unknown_fields=False)
    api = run_v2.Service.from_json(
        (folder / "api.service.v2.json").read_text(), ignore_unknown_fields=False
    )
    # Written explicitly, not left to the default.
    assert raw["template"]["scaling"]["minInstanceCount"] == 0
    assert collector.template.scaling.min_instance_count == 0
    assert collector.template.max_instance_request_concurrency == deploy.COLLECTOR_CONCURRENCY
    c = collector.template.containers[0]
    assert c.image == IMAGE
    assert [*c.command, *c.args] == [
        "headwater", "--env", "prod", "serve", "collector", "--host", "0.0.0.0", "--port", "8080",
    ]  # fmt: skip
    assert c.resources.limits["memory"] == deploy.COLLECTOR_MEMORY
    assert c.resources.cpu_idle is False  # the collector commits between requests
    assert (c.startup_probe.http_get.path, c.startup_probe.http_get.port) == ("/readyz", 8080)
    assert (c.liveness_probe.http_get.path, c.liveness_probe.http_get.port) == ("/healthz", 8080)
    assert _secret_names(c.env) == {
        n: f"projects/acme-analytics/secrets/{n}"
        for n in ("DATABASE_URL", "METADATA_URL", "WEB_WRITE_KEY")
    }
    assert all(e.value == "" for e in c.env if e.value_source)
    assert list(collector.template.volumes[0].cloud_sql_instance.instances) == [INSTANCE]
    assert c.volume_mounts[0].mount_path == "/cloudsql"
    a = api.template.containers[0]
    assert list(a.args)[2:4] == ["serve", "api"]
    assert api.template.scaling.min_instance_count == 0
    assert a.startup_probe.http_get.path == "/readyz"
    assert a.liveness_probe.http_get.path == "/healthz"
    # The API reads the served sink, not the webhook's secret nor the write keys.
    assert set(_secret_names(a.env)) == {"DATABASE_URL", "METADATA_URL", "RECS_DATABASE_URL"}
    assert collector.template.service_account.startswith("hw-prod-collector@acme-analytics.")
    assert api.template.service_account.startswith("hw-prod-api@")


def test_an_unknown_field_is_refused_by_the_parse_the_tests_rely_on() -> None:
    with pytest.raises(Exception, match="minInstances"):
        run_v2.Service.from_json(
            json.dumps({"template": {"scaling": {"minInstances": 0}}}),
            ignore_unknown_fields=False,
        )


def test_the_job_parses_into_a_cloud_run_v2_job(cloudrun: tuple[Path, str]) -> None:
    folder, _ = cloudrun
    job = run_v2.Job.from_json(
        (folder / "due.job.v2.json").read_text(), ignore_unknown_fields=False
    )
    task = job.template.template
    c = task.containers[0]
    assert [*c.command, *c.args] == ["headwater", "--env", "prod", "run", "--due"]
    assert set(_secret_names(c.env)) == {
        "DATABASE_URL", "METADATA_URL", "RECS_DATABASE_URL", "HOOK_SECRET",
    }  # fmt: skip
    assert list(task.volumes[0].cloud_sql_instance.instances) == [INSTANCE]
    assert task.service_account.startswith("hw-prod-due@")
    assert task.timeout.total_seconds() == deploy.JOB_TIMEOUT_SECONDS
    assert job.template.task_count == 1


def test_the_knative_files_for_gcloud_say_the_same(cloudrun: tuple[Path, str]) -> None:
    folder, _ = cloudrun
    service = _yaml(folder / "collector.service.yaml")
    v2 = _json(folder / "collector.service.v2.json")["template"]["containers"][0]
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    template = service["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/minScale"] == "0"
    assert notes["run.googleapis.com/cloudsql-instances"] == INSTANCE
    assert notes["run.googleapis.com/cpu-throttling"] == "false"
    assert template["spec"]["containerConcurrency"] == deploy.COLLECTOR_CONCURRENCY
    c = template["spec"]["containers"][0]
    assert (c["image"], c["command"], c["args"]) == (v2["image"], v2["command"], v2["args"])
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert refs == {
        n: {"name": n, "key": "latest"} for n in ("DATABASE_URL", "METADATA_URL", "WEB_WRITE_KEY")
    }
    job = _yaml(folder / "due.job.yaml")
    assert (job["apiVersion"], job["kind"]) == ("run.googleapis.com/v1", "Job")
    jt = job["spec"]["template"]
    assert jt["metadata"]["annotations"]["run.googleapis.com/cloudsql-instances"] == INSTANCE
    jc = jt["spec"]["template"]["spec"]["containers"][0]
    assert jc["args"] == ["--env", "prod", "run", "--due"]


def test_the_schedule_parses_into_a_scheduler_job_that_runs_the_job(
    cloudrun: tuple[Path, str],
) -> None:
    folder, _ = cloudrun
    job = scheduler_v1.Job.from_json(
        (folder / "scheduler.job.json").read_text(), ignore_unknown_fields=False
    )
    assert job.schedule == "*/5 * * * *"
    assert job.http_target.http_method == scheduler_v1.HttpMethod.POST
    assert job.http_target.uri == (
        "https://run.googleapis.com/v2/projects/acme-analytics/locations/europe-west1"
        "/jobs/headwater-prod-due:run"
    )
    assert job.http_target.oauth_token.service_account_email.startswith("hw-prod-scheduler@")
    assert job.http_target.oauth_token.scope == "https://www.googleapis.com/auth/cloud-platform"


def test_accounts_get_the_least_roles_and_apply_sh_applies_in_order(
    cloudrun: tuple[Path, str], tmp_path: Path
) -> None:
    folder, _ = cloudrun
    roles = _yaml(folder / "service-accounts.yaml")
    bq = {"roles/bigquery.jobUser", "roles/bigquery.dataEditor"}
    assert set(roles["collector"]["project_roles"]) == {"roles/cloudsql.client"}
    assert set(roles["api"]["project_roles"]) == {"roles/cloudsql.client", *bq}
    assert set(roles["due"]["project_roles"]) == {"roles/cloudsql.client", *bq}
    assert roles["due"]["buckets"] == {"role": "roles/storage.objectAdmin", "names": ["acme-lake"]}
    assert "buckets" not in roles["api"]
    assert "buckets" not in roles["collector"]
    assert roles["scheduler"]["project_roles"] == []
    assert roles["scheduler"]["job"]["role"] == "roles/run.invoker"
    assert roles["collector"]["secrets"]["role"] == "roles/secretmanager.secretAccessor"
    # Without a warehouse nor a gs:// sink: no BigQuery role, no bucket.
    plain = deploy.render(
        load_project(_project(tmp_path), "plain"),
        deploy.DeployOptions("cloudrun", image=IMAGE, project_id="p1", region=REGION),
    )
    plain_roles = yaml.safe_load(plain["service-accounts.yaml"])
    assert plain_roles["due"]["project_roles"] == ["roles/cloudsql.client"]
    assert "buckets" not in plain_roles["due"]
    assert "storage.objectAdmin" not in plain["apply.sh"]
    script = (folder / "apply.sh").read_text()
    steps = [
        "gcloud iam service-accounts create hw-prod-scheduler",
        "gcloud projects add-iam-policy-binding acme-analytics",
        "gcloud secrets add-iam-policy-binding HOOK_SECRET",
        "gcloud run services replace collector.service.yaml",
        "gcloud run services replace api.service.yaml",
        "gcloud run jobs replace due.job.yaml",
        "--role roles/run.invoker",
        "gcloud scheduler jobs create http headwater-prod-due",
    ]
    places = [script.index(step) for step in steps]
    assert places == sorted(places)
    assert "--oauth-service-account-email hw-prod-scheduler@" in script
    assert (folder / "apply.sh").stat().st_mode & 0o100
    subprocess.run(["bash", "-n", str(folder / "apply.sh")], check=True)


def test_no_secret_value_is_in_any_rendered_file(
    cloudrun: tuple[Path, str], composed: tuple[Path, str]
) -> None:
    files = [p for f, _ in (cloudrun, composed) for p in f.iterdir() if p.is_file()]
    assert len(files) >= 14
    for path in files:
        text = path.read_text(encoding="utf-8")
        for name, value in FAKE.items():
            secret = value.split(":")[-1].split("@")[0] if "://" in value else value
            assert secret not in text, f"{name}'s value is in {path.name}"
    for _, output in (cloudrun, composed):
        assert "rewritten" in output
        assert "headwater deploy lock" in output
    assert f"Cloud SQL instance {INSTANCE}" in cloudrun[1]


def _instructions(path: Path) -> list[tuple[str, str]]:
    return dockerfile_instructions(path.read_text(encoding="utf-8"))


def test_the_dockerfile_runs_as_a_user_from_hashed_dependencies(
    cloudrun: tuple[Path, str], composed: tuple[Path, str]
) -> None:
    steps = _instructions(cloudrun[0] / "Dockerfile")
    words = [w for w, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    users = [i for i, (w, _) in enumerate(steps) if w == "USER"]
    assert users
    assert all(steps[i][1].split(":")[0] not in ("root", "0") for i in users)
    start = min(i for i, w in enumerate(words) if w in ("CMD", "ENTRYPOINT"))
    assert users[-1] < start
    assert any(w == "RUN" and "pip install" in r and "--require-hashes" in r for w, r in steps)
    copies = [r.split()[-2] for w, r in steps if w == "COPY"]
    assert {"headwater.toml", "pipelines/", "models/"} <= set(copies)
    assert "HEALTHCHECK" in words
    assert any("/healthz" in r for w, r in steps if w == "HEALTHCHECK")
    envs = " ".join(r for w, r in steps if w in ("ENV", "ARG"))
    assert not any(name in envs for name in FAKE)
    # Without a models folder there is nothing to copy.
    plain = _instructions(composed[0] / "Dockerfile")
    assert not any("models/" in r for w, r in plain if w == "COPY")
    assert not any("wheels/" in r for w, r in steps + plain if w == "COPY")
    ignore = (cloudrun[0] / "Dockerfile.dockerignore").read_text().splitlines()
    assert {".headwater/", ".venv/", ".git/", "deploy/"} <= set(ignore)


def test_compose_validates_and_runs_two_collectors_behind_one_port(
    composed: tuple[Path, str],
) -> None:
    folder, _ = composed
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: apt-get install docker-compose (see .ci/run)"
    example = (folder / "secrets.env.example").read_text()
    names = [line.split("=")[0] for line in example.splitlines() if "=" in line and line[0] != "#"]
    assert set(names) == {"POSTGRES_PASSWORD", *FAKE}
    compose = [tool, "-f", str(folder / "compose.yaml")]
    # Without secrets.env compose refuses to start, naming what is missing.
    refused = subprocess.run([*compose, "config"], capture_output=True, text=True, timeout=60,
                             check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "in secrets.env" in refused.stderr, refused.stderr
    (folder / "secrets.env").write_text("".join(f"{n}=value-of-{n}\n" for n in names))
    checked = subprocess.run(
        [*compose, "--env-file", str(folder / "secrets.env"), "config"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    # Each service is given only the secrets its part reads, as on Cloud Run.
    given = {
        name: {k for k, v in (service.get("environment") or {}).items() if k in names and v}
        for name, service in yaml.safe_load(checked.stdout)["services"].items()
    }
    assert given["postgres"] == {"POSTGRES_PASSWORD"}
    assert (
        given["collector-1"]
        == given["collector-2"]
        == {"DATABASE_URL", "METADATA_URL", "WEB_WRITE_KEY"}
    )
    assert given["api"] == {"DATABASE_URL", "METADATA_URL", "RECS_DATABASE_URL"}
    assert given["runner"] == {"DATABASE_URL", "METADATA_URL", "RECS_DATABASE_URL", "HOOK_SECRET"}
    assert given["proxy"] == set()
    assert "env_file" not in checked.stdout
    doc = _yaml(folder / "compose.yaml")
    services = doc["services"]
    collectors = [n for n, s in services.items() if "collector" in s.get("command", [])]
    assert collectors == ["collector-1", "collector-2"]
    # One image, built from the rendered Dockerfile, run by every Headwater service.
    images = {n: (s["image"], s["build"]["dockerfile"]) for n, s in services.items()
              if n not in ("postgres", "proxy")}  # fmt: skip
    assert set(images.values()) == {("headwater-prod:local", "deploy/prod/Dockerfile")}
    assert set(images) == {"collector-1", "collector-2", "api", "runner"}
    assert all("ports" not in services[n] for n in collectors)
    assert services["proxy"]["ports"] == ["8080:8080"]
    nginx = (folder / "nginx.conf").read_text()
    assert "server collector-1:8080;" in nginx
    assert "server collector-2:8080;" in nginx
    runner = services["runner"]
    assert runner["entrypoint"] == ["sh", "-c"]
    assert runner["command"] == ["while true; do headwater --env prod run --due; sleep 60; done"]
    for name in (*collectors, "api", "runner"):
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["api"]["command"][2:4] == ["serve", "api"]
    pg = services["postgres"]
    assert pg["image"] == "postgres:16"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["volumes"] == ["pgdata:/var/lib/postgresql/data"]
    # The database compares text byte by byte (engines.md): made with the C locale.
    initdb = "--lc-collate=C --lc-ctype=C.UTF-8 --encoding=UTF8"
    assert pg["environment"]["POSTGRES_INITDB_ARGS"] == initdb


def test_a_store_that_cannot_take_collectors_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = _project(tmp_path)
    opts = deploy.DeployOptions("cloudrun", image=IMAGE, region=REGION)
    with pytest.raises(
        ConfigError, match="bigquery \\[store\\], which cannot take collectors"
    ) as bq:
        deploy.render(load_project(root, "bq"), opts)
    assert bq.value.hint
    assert 'engine = "postgres"' in bq.value.hint
    assert "[environments.bq.warehouse]" in bq.value.hint
    with pytest.raises(ConfigError, match="one collector process"):
        deploy.render(load_project(root, "solo"), deploy.DeployOptions("compose"))
    result = run_cli(root, "deploy", "render", "--env", "bq", "--target", "compose", check=False)
    assert result.returncode == 1
    assert "cannot take collectors" in result.stderr + result.stdout
    assert not (root / "deploy").exists()


def test_a_missing_image_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path)
    result = run_cli(
        root, "deploy", "render", "--env", "plain", "--target", "cloudrun", "--region", REGION,
        "--project-id", "p1", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--image is missing" in result.stderr + result.stdout
    assert not (root / "deploy" / "plain" / "collector.service.yaml").exists()


def test_a_secret_written_in_clear_is_refused(tmp_path: Path) -> None:
    project = load_project(_project(tmp_path), "leaky")
    with pytest.raises(ConfigError, match="storage_options token holds a secret in plain text"):
        deploy.render(project, deploy.DeployOptions("compose"))


def test_rendering_one_target_removes_what_the_other_wrote(tmp_path: Path, fake_env: None) -> None:
    """deploy/ENV/ holds one target's files: a compose file left beside Cloud Run services
    (or the reverse) would be deployed by someone reading the folder."""
    root = _project(tmp_path)
    folder = root / "deploy" / "prod"
    run_cli(root, "--env", "prod", "deploy", "render", "--target", "compose")
    assert (folder / "compose.yaml").exists()
    (folder / "notes.txt").write_text("mine", encoding="utf-8")  # not a rendered file
    out = run_cli(root, "deploy", "render", "--env", "prod", "--target", "cloudrun",
                  "--image", IMAGE, "--region", REGION).stdout  # fmt: skip
    names = {p.name for p in folder.iterdir()}
    assert not names & deploy.TARGET_FILES["compose"], names
    assert deploy.TARGET_FILES["cloudrun"] <= names
    assert "notes.txt" in names
    assert "Removed what --target compose wrote there: compose.yaml, nginx.conf" in out, out
    run_cli(root, "--env", "prod", "deploy", "render", "--target", "compose")
    names = {p.name for p in folder.iterdir()}
    assert not names & deploy.TARGET_FILES["cloudrun"], names
