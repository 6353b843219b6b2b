"""Deploying an environment: ``headwater deploy render`` writes the files, ``headwater deploy
apply`` applies the Cloud Run ones through Google's APIs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from headwater.cli.context import options
from headwater.cli.output import console
from headwater.config.project import Project, load_project
from headwater.core.errors import ConfigError
from headwater.core.extras import MissingExtra

if TYPE_CHECKING:
    from headwater.runtime.deploy import DeployOptions

#: The default of --schedule (``headwater.runtime.deploy.DEFAULT_SCHEDULE``, which is not
#: imported here: the command line imports the runtime only when a command runs).
DEFAULT_SCHEDULE = "*/5 * * * *"


TargetOption = Annotated[
    str, typer.Option("--target", help="cloudrun or compose.", metavar="cloudrun|compose")
]
EnvOption = Annotated[
    str | None,
    typer.Option("--env", "-e", help="The environment to deploy (default: headwater --env)."),
]
ImageOption = Annotated[
    str | None,
    typer.Option(help="The image to run (required for cloudrun; compose builds one)."),
]
ProjectIdOption = Annotated[
    str | None,
    typer.Option("--project-id", help="Google Cloud project (default: the BigQuery one)."),
]
RegionOption = Annotated[str | None, typer.Option(help="Cloud Run region, e.g. europe-west1.")]
ScheduleOption = Annotated[
    str, typer.Option(help="Cron schedule of `run --due` on Cloud Scheduler.")
]
CloudSqlOption = Annotated[
    str | None,
    typer.Option(
        "--cloudsql-instance",
        help="PROJECT:REGION:INSTANCE of the store (default: PROJECT:REGION:headwater-ENV).",
    ),
]


def _load(
    target: str,
    environment: str | None,
    image: str | None,
    project_id: str | None,
    region: str | None,
    schedule: str,
    cloudsql_instance: str | None,
) -> tuple[Project, DeployOptions]:
    from headwater.runtime.deploy import DeployOptions

    if target not in ("cloudrun", "compose"):
        raise ConfigError(
            f"there is no deploy target {target!r}", hint="--target cloudrun or --target compose"
        )
    project = load_project(options.project_dir, environment or options.environment)
    opts = DeployOptions(
        target="cloudrun" if target == "cloudrun" else "compose",
        image=image,
        project_id=project_id,
        region=region,
        schedule=schedule,
        cloudsql_instance=cloudsql_instance,
    )
    return project, opts


def render(
    target: TargetOption,
    environment: EnvOption = None,
    image: ImageOption = None,
    project_id: ProjectIdOption = None,
    region: RegionOption = None,
    schedule: ScheduleOption = DEFAULT_SCHEDULE,
    cloudsql_instance: CloudSqlOption = None,
) -> None:
    """Write the image and the resources that run an environment into deploy/ENV/.

    Every file there is rendered again (overwritten) on each run; secrets stay
    references ("${NAME}" in headwater.toml) and are never written.

    Example: headwater deploy render --env prod --target cloudrun --image IMAGE
    --region europe-west1
    """
    from headwater.runtime import deploy

    project, opts = _load(
        target, environment, image, project_id, region, schedule, cloudsql_instance
    )
    files = deploy.render(project, opts)
    folder = project.root / "deploy" / str(project.environment)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o755 if name.endswith(".sh") else 0o644)
    removed = sorted(n for n in deploy.stale(opts.target) if (folder / n).exists())
    for name in removed:
        (folder / name).unlink()
    where = folder.relative_to(project.root)
    console.print(
        f"Wrote {len(files)} files to {escape(str(where))}/ (every one rewritten; "
        "edits made there are lost on the next render):",
        highlight=False,
    )
    for name in files:
        console.print(f"  {escape(name)}", highlight=False)
    if removed:
        console.print(
            f"Removed what --target {'compose' if opts.target == 'cloudrun' else 'cloudrun'} "
            f"wrote there: {escape(', '.join(removed))}.",
            highlight=False,
        )
    console.print(escape(deploy.LOCK_HELP), highlight=False)
    console.print(
        f"Build from {escape(str(project.root))}: "
        f"docker build -f {escape(str(where))}/Dockerfile .",
        highlight=False,
    )
    if opts.target == "cloudrun":
        console.print(
            f"Then push the image and run {escape(str(where))}/apply.sh. The services and the "
            f"job reach the Cloud SQL instance {escape(deploy.cloudsql_name(project, opts))} "
            "(--cloudsql-instance to change it).",
            highlight=False,
        )
    else:
        console.print(
            f"Then copy {escape(str(where))}/secrets.env.example to secrets.env, fill it in, and "
            f"run docker-compose -f {escape(str(where))}/compose.yaml up -d.",
            highlight=False,
        )


def apply(
    target: TargetOption,
    environment: EnvOption = None,
    image: ImageOption = None,
    project_id: ProjectIdOption = None,
    region: RegionOption = None,
    schedule: ScheduleOption = DEFAULT_SCHEDULE,
    cloudsql_instance: CloudSqlOption = None,
) -> None:
    """Create or update an environment's Cloud Run services, job and schedule.

    The resources are those deploy render writes, applied through Google's APIs
    with the application default credentials: the collector, the read API, the
    run --due job, its Cloud Scheduler job, then who may invoke them. Applying
    again updates what changed and leaves the rest. Service accounts and their
    roles are not created: the gcloud commands that do are printed first.

    Example: headwater deploy apply --env prod --target cloudrun --image IMAGE
    --region europe-west1
    """
    if target == "compose":
        raise ConfigError(
            "deploy apply applies to Cloud Run only; docker-compose applies the compose files",
            hint="headwater deploy render --target compose, then "
            "docker-compose -f deploy/ENV/compose.yaml up -d",
        )
    project, opts = _load(
        target, environment, image, project_id, region, schedule, cloudsql_instance
    )
    from headwater.runtime import deploy

    plan = deploy.cloudrun_plan(project, opts)
    try:
        from headwater.runtime import cloudrun
    except ImportError as exc:
        # Google's libraries share the google namespace: name the module that is missing.
        if (exc.name or "headwater").startswith("headwater"):
            raise
        raise MissingExtra("cloudrun", "headwater deploy apply", str(exc.name)) from None

    console.print(
        "Not applied here (the Cloud Run and Cloud Scheduler APIs do not manage them): the "
        "service accounts and their roles. Run these once before, as someone who may grant "
        "roles on the project (each command can run again):",
        highlight=False,
    )
    for line in deploy.account_commands(plan.gcp, plan.roles):
        console.print(f"  {escape(line)}" if line else "", highlight=False, soft_wrap=True)
    console.print("Applying:", highlight=False)
    clients = cloudrun.connect()
    for done in cloudrun.apply(plan, clients):
        console.print(f"  {done.outcome:<9} {done.kind} {escape(done.name)}", highlight=False)
    g = plan.gcp
    console.print(
        f"The collector's URL: gcloud run services describe {escape(g.name('collector'))} "
        f"--project {escape(g.project)} --region {escape(g.region)} --format 'value(status.url)'",
        highlight=False,
        soft_wrap=True,
    )


def lock(
    extras: Annotated[
        str | None,
        typer.Option(
            help="Headwater's extras the image needs, comma-separated (when writing "
            "requirements.in), e.g. bigquery,gcs."
        ),
    ] = None,
    wheel: Annotated[
        Path | None,
        typer.Option(
            help="A Headwater wheel file to install, kept in wheels/ (when your package "
            "index does not have Headwater)."
        ),
    ] = None,
) -> None:
    """Pin what the image installs into requirements.lock, every package by its hash.

    Resolves requirements.in (written first when missing) for the image: CPython 3.11 on
    Linux x86_64, whatever machine this runs on.

    Example: headwater deploy lock --extras bigquery,gcs
    """
    from headwater.runtime import lock as locking

    root = load_project(options.project_dir, options.environment).root
    wanted = [e.strip() for e in extras.split(",") if e.strip()] if extras is not None else None
    done = locking.lock(root, extras=wanted, wheel=wheel)
    if done.wrote_in:
        console.print(f"Wrote {escape(str(done.requirements_in))}.", highlight=False)
    if done.wheel is not None:
        console.print(f"Kept {escape(str(done.wheel))} for the image.", highlight=False)
    console.print(
        f"Wrote {escape(str(done.lock))}: {done.packages} packages pinned by hash, for "
        f"CPython {locking.IMAGE_PYTHON} on Linux x86_64. Commit requirements.in, "
        "requirements.lock (and wheels/), then render again: headwater deploy render.",
        highlight=False,
    )


def workflow(
    qa: Annotated[str, typer.Option(help="Planned on pull requests, applied from main.")] = "qa",
    prod: Annotated[str, typer.Option(help="Applied from a version tag (v*).")] = "prod",
    branch: Annotated[str, typer.Option(help="The main branch.")] = "main",
) -> None:
    """Write .github/workflows/headwater.yml: plan on pull requests, apply on main and tags.

    Pull requests run validate and plan --env QA (posted as a comment); a push to BRANCH
    applies QA, a tag v* applies PROD, each after migrate when the environment is
    protected. Secrets stay in GitHub: the file holds only their names.

    Example: headwater deploy workflow --qa qa --prod prod
    """
    from headwater.runtime import workflow as flow

    top = load_project(options.project_dir, None)
    file = top.written or top.settings
    for flag, env in (("--qa", qa), ("--prod", prod)):
        if env not in file.environments:
            raise ConfigError(
                f"there is no environment {env!r} to plan and apply",
                path=str(top.file),
                hint=f"declare [environments.{env}] in headwater.toml, or name another "
                f"environment with {flag} NAME",
            )
    stages = [flow.stage(load_project(options.project_dir, env)) for env in (qa, prod)]
    root = top.root
    path = root / flow.PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(flow.render(*stages, branch=branch), encoding="utf-8")
    console.print(f"Wrote {escape(str(path))} (rewritten on each run).", highlight=False)
    for stage in stages:
        names = ", ".join([*stage.secrets, *stage.promoted]) or "none"
        console.print(
            f"GitHub environment {escape(stage.name)}: secrets {escape(names)}; variables "
            f"{', '.join(flow.VARIABLES)}.",
            highlight=False,
        )
