"""What every command shares: the options given before it, and how it reaches the project.

An operation runs in the server when one owns the store (the embedded DuckDB
file has one owner), and here otherwise, with the same code either way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape

from headwater.cli.output import console
from headwater.config.project import Project, load_project
from headwater.core import logs
from headwater.core.errors import HeadwaterError, TerminalError
from headwater.core.logs import LogFormat


class Options:
    """``--project``, ``--env``, ``--debug`` and the log format, as given."""

    project_dir: Path | None = None
    environment: str | None = None
    debug: bool = False
    log_format: LogFormat = "text"

    def project(self) -> Project:
        return load_project(self.project_dir, self.environment)


options = Options()


def operation(op: str, args: dict[str, Any], *, progress: bool = False, as_is: bool = False) -> Any:
    """Run operation ``op`` of the runtime's table in the server when one runs, else here
    (``as_is``: with the metadata database at its revision, not migrated: to read it)."""
    with session(progress=progress, as_is=as_is) as call:
        return call(op, args)


Call = Callable[[str, dict[str, Any]], Any]


@contextlib.contextmanager
def session(*, progress: bool = False, as_is: bool = False) -> Iterator[Call]:
    """Operations asked one after another of one server, or of one workspace opened here
    once, at the first that needs it: a command that shows several answers (``status``)
    pays for opening the store and the metadata once."""
    from headwater.runtime.client import find_server

    project = options.project()
    shown: list[str] = []
    opened: list[Any] = []  # the workspace, once one is opened here
    with _progress_bar(progress, shown) as report:
        client = find_server(project.data_dir)

        def call(op: str, args: dict[str, Any]) -> Any:
            try:
                if client is not None:
                    return client.call(op, args, report)
                from headwater.runtime import idle

                if op == "due" and (answer := idle.recall(project, args)) is not None:
                    return answer  # nothing changed and nothing fell due since the last pass
                # Only a command that runs here needs the stages: one that asks the server
                # imports none of them.
                from headwater.runtime import operations
                from headwater.runtime.workspace import Workspace

                if not opened:
                    opened.append(Workspace.open(project, as_is=as_is))
                workspace = opened[0]
                answer = operations.call(workspace, op, args, report)
                if op == "due" and (until := idle.until(workspace, answer)) is not None:
                    # Stamped once the files are closed: what the next pass reads is what
                    # this one left.
                    workspace.close()
                    opened.clear()
                    idle.remember(project, args, answer, until)
                return answer
            except HeadwaterError as exc:
                if isinstance(exc, TerminalError) and "\n" in exc.message and exc.message in shown:
                    raise ShownAbove(exc) from exc
                raise

        try:
            yield call
        finally:
            if client is not None:
                client.close()
            for workspace in opened:
                workspace.close()


class ShownAbove(TerminalError):
    """A failure the progress lines printed whole (a pipeline's traceback) as it happened,
    said again in its first line: once is enough."""

    def __init__(self, shown: HeadwaterError) -> None:
        first = shown.message.split("\n", 1)[0]
        super().__init__(f"{first} (shown above)", hint=shown.hint)


@contextlib.contextmanager
def _progress_bar(
    show: bool, shown: list[str]
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with (
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=False,
        ) as bar,
        # Text logs share the screen with these lines; JSON lines are for a collector, whole.
        logs.without(_run_failed) if options.log_format == "text" else contextlib.nullcontext(),
    ):  # fmt: skip
        task = bar.add_task("starting", total=None)

        def report(step: dict[str, Any]) -> None:
            label = _label(step)
            if step.get("error"):
                shown.append(step["error"])
                console.print(
                    f"[red]failed[/red] {label}: {escape(step['error'])}", highlight=False
                )
            bar.update(task, description=label, completed=step["done"], total=step["total"])

        yield report


def _run_failed(record: logging.LogRecord) -> bool:
    """The runner's line for a run that failed for good: the progress lines print it."""
    return record.name == "headwater.process.runner" and logs.field(record, "outcome") == "failed"


def _label(step: dict[str, Any]) -> str:
    """A pipeline run's interval, or an export or import's table and day."""
    if "interval" in step:
        return f"{step['pipeline']} {step['interval']['start'][:16]}"
    return f"{step.get('table', '')} {step.get('day', '')}".strip()
