"""Setting a project up: ``init``, its sources and its read-API consumers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headwater.cli import scaffold
from headwater.cli.context import options
from headwater.cli.output import console
from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.core.names import check_name, is_identifier
from headwater.core.secrets import stored_form


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the project in.")] = Path("."),
    source: Annotated[str, typer.Option(help="Name of the first source.")] = "web",
    example: Annotated[
        str | None,
        typer.Option(
            help="Copy a whole example project instead: churn (events, features, a model "
            "trained by a script, a scoring pipeline, predictions served).",
        ),
    ] = None,
) -> None:
    """Create a project with one source, ready for `headwater up`.

    Example: headwater init analytics && cd analytics && headwater up
    Example: headwater init churn --example churn && cat churn/README.md
    """
    check_name("source", source)
    if example is not None:
        _init_example(directory, example, source)
        return
    key = scaffold.init_project(directory, source=source)
    examples = sorted(name.removesuffix(".sql") for name in scaffold.EXAMPLE_PIPELINES)
    token = scaffold.add_consumer(directory / "headwater.toml", "example", examples)
    admin = scaffold.add_admin(directory / "headwater.toml", "admin")
    console.print(f"Created a Headwater project in [bold]{directory.resolve()}[/bold]")
    console.print(f"Source [bold]{source}[/bold] write key: [bold green]{key}[/bold green]")
    console.print(f"Read API consumer [bold]example[/bold] token: [bold green]{token}[/bold green]")
    _print_admin(admin)
    console.print(f"Next: cd {directory} && headwater up")


def _init_example(directory: Path, example: str, source: str) -> None:
    """The example project, with a source and a read-API consumer of every pipeline."""
    key = scaffold.init_example(directory, example, source=source)
    project = load_project(directory)  # the copy must load; fail loudly now if not
    pipelines = sorted(p.stem for p in project.pipelines_dir.glob("*.sql"))
    token = scaffold.add_consumer(project.file, "product", pipelines)
    admin = scaffold.add_admin(project.file, "admin")
    load_project(directory)
    console.print(f"Created the {example} example in [bold]{directory.resolve()}[/bold]")
    console.print(f"Source [bold]{source}[/bold] write key: [bold green]{key}[/bold green]")
    console.print(f"Read API consumer [bold]product[/bold] token: [bold green]{token}[/bold green]")
    _print_admin(admin)
    console.print(f"Next: cd {directory} and follow README.md (from `headwater up`)")


def _print_admin(token: str) -> None:
    console.print(
        f"Admin [bold]admin[/bold] token (signs in to the dashboard at the server's /): "
        f"[bold green]{token}[/bold green]"
    )
    console.print("[dim]Only their hashes are stored; keep them now.[/dim]")


def sources_add(name: Annotated[str, typer.Argument(help="Name of the new source.")]) -> None:
    """Create a source and print its new write key once.

    Example: headwater sources add backend
    """
    check_name("source", name)
    project = options.project()
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


def sources_list() -> None:
    """List sources and how each key is stored."""
    project = options.project()
    for name, source in project.settings.sources.items():
        form = stored_form(source.write_key)
        kind = "key in an environment variable" if form == "environment" else "key stored hashed"
        console.print(f"{name}\t{kind}")


def consumers_add(
    name: Annotated[str, typer.Argument(help="Name of the consuming service.")],
    datasets: Annotated[str, typer.Option(help="Comma-separated datasets it may read.")],
) -> None:
    """Create a consumer of the read API and print its token once.

    Example: headwater consumers add recommender --datasets daily_active_users
    """
    check_name("consumer", name)
    project = options.project()
    if name in project.settings.consumers:
        raise ConfigError(f"consumer {name!r} already exists", hint="choose another name")
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    bad = [d for d in names if not is_identifier(d)]
    if not names or bad:
        raise ConfigError(
            f"dataset names must be table names, got {bad or datasets!r}",
            hint="e.g. --datasets daily_active_users,hourly_event_counts",
        )
    token = scaffold.add_consumer(project.file, name, names)
    load_project(project.root)
    console.print(f"Consumer [bold]{name}[/bold] token: [bold green]{token}[/bold green]")
    console.print(
        "[dim]Only its hash is stored; keep the token now. Send it as "
        "`Authorization: Bearer <token>` to /api/v1/.[/dim]"
    )


def consumers_list() -> None:
    """List consumers and the datasets each may read."""
    project = options.project()
    for name, consumer in project.settings.consumers.items():
        console.print(f"{name}\t{', '.join(consumer.datasets)}")


def admins_add(name: Annotated[str, typer.Argument(help="Name of the new admin.")]) -> None:
    """Create an admin and print its token once: it signs in to the dashboard and may
    erase people through the API.

    Example: headwater admins add alice
    """
    check_name("admin", name)
    project = options.project()
    if name in project.settings.admins:
        raise ConfigError(f"admin {name!r} already exists", hint="choose another name")
    token = scaffold.add_admin(project.file, name)
    load_project(project.root)
    console.print(f"Admin [bold]{name}[/bold] token: [bold green]{token}[/bold green]")
    console.print(
        "[dim]Only its hash is stored; keep the token now. It signs in at the dashboard "
        "(http://HOST:PORT/) and is sent as `Authorization: Bearer <token>` to admin APIs.[/dim]"
    )


def admins_end_sessions() -> None:
    """Sign every admin out of the dashboard (within seconds): its sessions' signing secret
    is replaced. Removing an admin, or giving them a new token, ends only theirs.

    Example: headwater admins end-sessions
    """
    from headwater.cli.context import operation

    operation("end_sessions", {})
    console.print("Every dashboard session has ended; admins sign in again with their token.")


def admins_list() -> None:
    """List admins and how each token is stored."""
    project = options.project()
    for name, admin in project.settings.admins.items():
        in_environment = stored_form(admin.token) == "environment"
        kind = "token in an environment variable" if in_environment else "token stored hashed"
        console.print(f"{name}\t{kind}")
