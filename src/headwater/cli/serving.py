"""Running Headwater: everything in one process (``up``), or one stage per process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape

from headwater.cli.context import options
from headwater.cli.options import Host, Port
from headwater.cli.output import console
from headwater.config.project import Project
from headwater.core.errors import ConfigError
from headwater.deliver.settings import FilesSink

#: ``headwater serve STAGE`` -> the runtime's role.
STAGES = {"collector": "collect", "api": "api"}


def up(host: Host = None, port: Port = None) -> None:
    """Start everything in one process: collector, read API, scheduler and deliveries.

    Example: headwater up --port 8787
    """
    from headwater.runtime.server import serve

    project = options.project()
    serve(project, host=host, port=port, on_ready=_ready(project, "collector, read API, pipelines"))
    console.print("Headwater stopped; every acknowledged event is committed.")


def serve_stage(
    stage: Annotated[str, typer.Argument(help="collector or api.", metavar="collector|api")],
    host: Host = None,
    port: Port = None,
) -> None:
    """Run one stage as its own process (for containers): the collector or the read API.

    Pipelines and deliveries run from `headwater run --due` (e.g. under cron).
    Several collectors may share a PostgreSQL store, behind a load balancer.

    Example: headwater --env prod serve collector --port 8080
    """
    from headwater.runtime.server import serve

    if stage not in STAGES:
        raise ConfigError(
            f"there is no stage {stage!r}",
            hint="headwater serve collector | headwater serve api (headwater up runs all)",
        )
    project = options.project()
    doing = "collector" if stage == "collector" else "read API"
    roles = frozenset({STAGES[stage]})
    serve(project, host=host, port=port, on_ready=_ready(project, doing), roles=roles)
    console.print("Headwater stopped; every acknowledged event is committed.")


def _print_sinks(project: Project) -> None:
    """In an environment, which sinks it shares with the default one, and which it lacks
    (pipelines that name those run, and their deliveries there are skipped)."""
    if project.environment:
        chosen = project.settings.environments[project.environment]
        for name, sink in project.settings.sinks.items():
            if name in chosen.shared_sinks:
                whose = "shared with the default environment (the same destination)"
            else:
                whose = "this environment's own"
            if isinstance(sink, FilesSink):
                whose += f": {escape(sink.url)}"
            console.print(f"  sink    [bold]{escape(name)}[/bold]  {whose}", highlight=False)
    elsewhere = project.sinks_elsewhere()
    if elsewhere:
        table = f"[environments.{project.environment}.sinks]"
        fix = escape(
            f"declare them under {table} or list them in shared_sinks"
            if project.environment
            else "declare them under [sinks]"
        )
        console.print(
            f"  [yellow]sinks   {', '.join(sorted(elsewhere))}: not in this environment"
            f"[/yellow]; pipelines naming them run without delivering there ({fix})",
            highlight=False,
        )


def _ready(project: Project, doing: str) -> Callable[[Any], None]:
    def ready(where: Any) -> None:
        from headwater.runtime.workspace import has_warehouse

        console.print(f"[bold green]Headwater is up[/bold green] at [bold]{where.url}[/bold]")
        console.print(f"  runs    {doing}")
        store = project.settings.store
        if store.engine == "duckdb":
            console.print(f"  store   {project.store_path}")
        else:
            console.print(f"  store   {store.engine}, schema {store.schema}")
        warehouse = project.settings.warehouse
        if warehouse is not None and has_warehouse(project):
            console.print(
                f"  warehouse {warehouse.engine}: pipelines run there; events are offloaded "
                f"every {warehouse.offload_interval} of arrival, kept here {store.retain}"
            )
        for name in project.settings.sources:
            console.print(f"  source  [bold]{name}[/bold]  (write key stored hashed)")
        _print_sinks(project)
        console.print(
            "  send    curl -u $WRITE_KEY: -H 'Content-Type: application/json' "
            f'-d \'{{"userId":"u1","event":"Signed Up"}}\' {where.url}/v1/track'
        )
        console.print('  query   headwater query "SELECT * FROM events"')
        console.print("[dim]Ctrl-C to stop; in-flight events are committed first.[/dim]")
        console.file.flush()  # a log file is block-buffered: the lines must be there now

    return ready
