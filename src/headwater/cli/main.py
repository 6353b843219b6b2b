"""``headwater``: init, up, query, sources.

Errors print as one sentence and the fix; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from headwater import __version__
from headwater.cli import scaffold
from headwater.cli.output import Format, console, print_error, print_table
from headwater.config.project import SOURCE_NAME, Project, load_project
from headwater.core.errors import ConfigError, HeadwaterError
from headwater.core.secrets import stored_form

app = typer.Typer(
    name="headwater",
    help="Collect, store, process and deliver your services' event data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sources_app = typer.Typer(help="Producers of events and their write keys.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")


class _State:
    project_dir: Path | None = None
    debug: bool = False

    def project(self) -> Project:
        return load_project(self.project_dir)


state = _State()


def _version(value: bool) -> None:
    if value:
        console.print(f"headwater {__version__}")
        raise typer.Exit


@app.callback()
def _main(
    project: Annotated[
        Path | None,
        typer.Option(
            "--project", "-p", help="Project folder (default: the nearest with headwater.toml)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state.project_dir = project
    state.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the project in.")] = Path("."),
    source: Annotated[str, typer.Option(help="Name of the first source.")] = "web",
) -> None:
    """Create a project with one source, ready for `headwater up`.

    Example: headwater init analytics && cd analytics && headwater up
    """
    _check_source_name(source)
    key = scaffold.init_project(directory, source=source)
    console.print(f"Created a Headwater project in [bold]{directory.resolve()}[/bold]")
    console.print(f"Source [bold]{source}[/bold] write key: [bold green]{key}[/bold green]")
    console.print(
        "[dim]Only its hash is stored; keep the key now. A running server accepts it at once.[/dim]"
    )
    console.print(f"Next: cd {directory} && headwater up")


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default from headwater.toml).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default from headwater.toml; 0 picks one).")
    ] = None,
) -> None:
    """Start the collector and the scheduler on the embedded store.

    Example: headwater up --port 8787
    """
    from headwater.runtime.server import Listening, serve

    project = state.project()

    def ready(where: Listening) -> None:
        console.print(f"[bold green]Headwater is up[/bold green] at [bold]{where.url}[/bold]")
        console.print(f"  store   {project.store_path}")
        for name in project.settings.sources:
            console.print(f"  source  [bold]{name}[/bold]  (write key stored hashed)")
        console.print(
            "  send    curl -u $WRITE_KEY: -H 'Content-Type: application/json' "
            f'-d \'{{"userId":"u1","event":"Signed Up"}}\' {where.url}/v1/track'
        )
        console.print('  query   headwater query "SELECT * FROM events"')
        console.print("[dim]Ctrl-C to stop; in-flight events are committed first.[/dim]")

    serve(project, host=host, port=port, on_ready=ready)
    console.print("Headwater stopped; every acknowledged event is committed.")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One SELECT statement.")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
) -> None:
    """Run a read-only SQL query on the store.

    Example: headwater query "SELECT event, count(*) FROM events GROUP BY 1"
    """
    from headwater.runtime.control import find_server
    from headwater.store.duckdb import DuckDBEngine

    project = state.project()
    client = find_server(project.data_dir)
    if client is not None:
        try:
            result = client.query(sql)
        finally:
            client.close()
    else:
        engine = DuckDBEngine.open(project.store_path, project.settings.store, read_only=True)
        try:
            result = engine.query(sql)
        finally:
            engine.close()
    print_table(result, fmt)


@sources_app.command("add")
def sources_add(name: Annotated[str, typer.Argument(help="Name of the new source.")]) -> None:
    """Create a source and print its new write key once.

    Example: headwater sources add backend
    """
    _check_source_name(name)
    project = state.project()
    if name in project.settings.sources:
        raise ConfigError(
            f"source {name!r} already exists", hint="choose another name for the new source"
        )
    key = scaffold.add_source(project.file, name)
    load_project(project.root)  # the file must still load; fail loudly now if not
    console.print(f"Source [bold]{name}[/bold] write key: [bold green]{key}[/bold green]")
    console.print(
        "[dim]Only its hash is stored; keep the key now. A running server accepts it at once.[/dim]"
    )


@sources_app.command("list")
def sources_list() -> None:
    """List sources and how each key is stored."""
    project = state.project()
    for name, source in project.settings.sources.items():
        form = stored_form(source.write_key)
        kind = "key in an environment variable" if form == "environment" else "key stored hashed"
        console.print(f"{name}\t{kind}")


def _check_source_name(name: str) -> None:
    if not SOURCE_NAME.match(name):
        raise ConfigError(
            f"source name {name!r} is not allowed",
            hint="use lower-case letters, digits, '-' and '_', starting with a letter",
        )


def main() -> None:
    """Entry point of the ``headwater`` console script."""
    try:
        app(standalone_mode=False)
    except HeadwaterError as exc:
        if state.debug:
            raise
        print_error(exc.message, exc.hint)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print_error("aborted", None)
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one sentence, not a traceback
        if state.debug or os.environ.get("HEADWATER_DEBUG"):
            raise
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        print_error(f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for details")
        sys.exit(2)
