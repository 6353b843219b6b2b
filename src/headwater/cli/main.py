"""``headwater``: the command line, one verb per job.

Every command is registered in :data:`COMMANDS`, one visible table. Errors
print as one sentence and the fix; ``--debug`` shows the traceback. A
mistyped command or option is a usage error (exit code 2) that names the
nearest command or option.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from headwater import __version__
from headwater.cli import usage
from headwater.cli.context import options
from headwater.cli.output import console, print_error
from headwater.core import logs
from headwater.core.errors import HeadwaterError

app = typer.Typer(
    name="headwater",
    help="Collect, store, process and deliver your services' event data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sources = typer.Typer(help="Producers of events and their write keys.", no_args_is_help=True)
consumers = typer.Typer(help="Services that read datasets through the API.", no_args_is_help=True)
admins = typer.Typer(
    help="People who sign in to the dashboard and use admin APIs.", no_args_is_help=True
)
deployment = typer.Typer(
    help="Files that deploy an environment, and applying them.", no_args_is_help=True
)
failed = typer.Typer(
    help="Events the collector refused: grouped by why, fixed and replayed.",
    invoke_without_command=True,
)

#: (group, command name, module of headwater.cli, function): every command of
#: ``headwater``, in the order of ``--help``.
COMMANDS: tuple[tuple[typer.Typer, str, str, str], ...] = (
    (app, "init", "setup", "init"),
    (app, "up", "serving", "up"),
    (app, "serve", "serving", "serve_stage"),
    (app, "query", "data", "query"),
    (app, "traffic", "data", "traffic"),
    (app, "run", "pipelines", "run"),
    (app, "backfill", "pipelines", "backfill"),
    (app, "status", "pipelines", "status"),
    (app, "pipelines", "pipelines", "pipelines"),
    (app, "render", "pipelines", "render"),
    (app, "validate", "pipelines", "validate"),
    (app, "models", "models", "models"),
    (app, "replay", "delivery", "replay"),
    (failed, "replay", "failed", "replay"),
    (app, "erase", "governance", "erase"),
    (app, "export", "data", "export"),
    (app, "import", "data", "import_"),
    (app, "migrate", "migrate", "migrate"),
    (app, "plan", "changes", "plan"),
    (app, "apply", "changes", "apply"),
    (sources, "add", "setup", "sources_add"),
    (sources, "list", "setup", "sources_list"),
    (consumers, "add", "setup", "consumers_add"),
    (consumers, "list", "setup", "consumers_list"),
    (admins, "add", "setup", "admins_add"),
    (admins, "list", "setup", "admins_list"),
    (admins, "end-sessions", "setup", "admins_end_sessions"),
    (deployment, "render", "deploy", "render"),
    (deployment, "apply", "deploy", "apply"),
    (deployment, "lock", "deploy", "lock"),
    (deployment, "workflow", "deploy", "workflow"),
)
GROUPS: tuple[tuple[typer.Typer, str], ...] = (
    (failed, "failed"),
    (sources, "sources"),
    (consumers, "consumers"),
    (admins, "admins"),
    (deployment, "deploy"),
)
#: A group that does something itself (``headwater failed`` lists): its module and function.
CALLBACKS: dict[str, tuple[str, str]] = {"failed": ("failed", "failed")}
#: The options before a command that take a value (``--project DIR``).
_VALUED = frozenset({"--project", "-p", "--env", "-e", "--log-format"})


def register(argv: Sequence[str] | None = None) -> None:
    """Add the commands to :data:`app`: only the one ``argv`` names (or its group's),
    when it names one, else every one. A command's module, and the adapters typer builds
    for each parameter, cost a short command a fifth of its start."""
    if app.registered_commands or app.registered_groups:
        return
    chosen = _named(argv)
    for group, name, module, function in COMMANDS:
        owner = next((n for g, n in GROUPS if g is group), name)
        if chosen is None or owner == chosen:
            command = getattr(importlib.import_module(f"headwater.cli.{module}"), function)
            group.command(name)(command)
    for group, name in GROUPS:
        if chosen is None or name == chosen:
            if name in CALLBACKS:
                module, function = CALLBACKS[name]
                callback = getattr(importlib.import_module(f"headwater.cli.{module}"), function)
                group.callback()(callback)
            app.add_typer(group, name=name)


def _named(argv: Sequence[str] | None) -> str | None:
    """The command (or group) ``argv`` names after the options before it, if it is one."""
    if argv is None:
        return None
    known = {name for group, name, _, _ in COMMANDS if group is app} | {n for _, n in GROUPS}
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in known else None
        elif word in ("--help", "--version"):
            return None
    return None


def _version(value: bool) -> None:
    if value:
        console.print(f"headwater {__version__}")
        raise typer.Exit


#: Commands that run until stopped: their log is the record of what they do, so it says
#: every run and delivery; a command that ends prints its own summary instead.
SERVERS = frozenset({"up", "serve"})


@app.callback()
def _main(
    ctx: typer.Context,
    project: Annotated[
        Path | None,
        typer.Option(
            "--project", "-p", help="Project folder (default: the nearest with headwater.toml)."
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            envvar="HEADWATER_ENV",
            help="Environment from \\[environments.NAME] in headwater.toml (default: the "
            "top-level settings).",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            envvar=logs.FORMAT_VARIABLE,
            help="Log lines on stderr: json or text (default: text on a terminal, else json).",
            metavar="json|text",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    options.project_dir = project
    options.environment = environment
    options.debug = debug
    fmt = logs.choose_format(log_format, sys.stderr)
    options.log_format = fmt
    # JSON lines go to a collector, which keeps every run and delivery; on a terminal a
    # command's own summary says what it did, and only servers log each step.
    verbose = fmt == "json" or ctx.invoked_subcommand in SERVERS
    logs.configure(fmt, level=logging.INFO if verbose else logging.WARNING, debug=debug)


def main() -> None:
    """Entry point of the ``headwater`` console script."""
    # Everything Headwater writes (the store, the metadata, server.json, exported files) is
    # its owner's alone: write keys' hashes, events and tokens' grants are not for others.
    os.umask(0o077)
    code: object = 0
    try:
        register(sys.argv[1:])
        # Outside standalone mode a command's typer.Exit comes back as its exit code.
        code = app(standalone_mode=False, prog_name="headwater")
    except HeadwaterError as exc:
        if options.debug:
            raise
        print_error(exc.message, exc.hint)
        _exit(1)
    except usage.UsageError as exc:
        print_error(*usage.describe(exc))
        _exit(2)
    except typer.Exit as exc:
        _exit(exc.exit_code)
    except typer.Abort:
        print_error("aborted", None)
        _exit(130)
    except Exception as exc:  # the last line of defence: one sentence, not a traceback
        if options.debug or os.environ.get("HEADWATER_DEBUG"):
            raise
        if isinstance(exc, usage.ClickException):
            print_error(str(exc), "run again with --debug for details")
            _exit(1)
        print_error(f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for details")
        _exit(2)
    _exit(code if isinstance(code, int) else 0)


def _exit(code: int) -> None:
    """Exit without tearing the interpreter down.

    Every command closes its store and joins its threads before it returns, so
    what is left is module garbage collection, which costs a short command a
    tenth of a second.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    processes = sys.modules.get("multiprocessing.util")
    if processes is not None:
        # What atexit would run for multiprocessing: stop the collector's validating
        # workers' fork server and remove its folder from TMPDIR.
        processes._exit_function()
    os._exit(code)


__all__ = ["COMMANDS", "app", "main", "register"]
