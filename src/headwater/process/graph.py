"""The pipelines of a project as a graph: names are edges, order is topological."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headwater.process.definition import BUILTIN_TABLES, Pipeline, load_file
from headwater.process.errors import GraphError, PipelineError
from headwater.process.models import ModelCatalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Broken:
    """A pipeline file that does not load, or a pipeline that reads one (``blocked_by``).

    It does not run; every other pipeline does. ``last_good`` is the pipeline as it
    loaded before the file broke (in this process), so what it published is still served.
    """

    name: str
    path: Path
    error: PipelineError
    blocked_by: str | None = None
    last_good: Pipeline | None = None


@dataclass(frozen=True)
class Graph:
    """Pipelines by name, in an order where every input comes before its readers; and the
    pipelines that do not load, apart, so one broken file stops only itself and its readers."""

    pipelines: dict[str, Pipeline]
    order: tuple[str, ...]
    broken: dict[str, Broken] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            if name in self.broken:
                raise self.broken[name].error from None
            raise PipelineError(
                f"no pipeline named {name!r}", hint=_suggest(name, self.pipelines)
            ) from None

    def __iter__(self) -> Iterator[Pipeline]:
        return (self.pipelines[name] for name in self.order)

    def __len__(self) -> int:
        return len(self.order)

    def upstream(self, name: str) -> list[str]:
        """Pipelines ``name`` reads, directly or not, in run order."""
        wanted: set[str] = set()
        stack = [name]
        while stack:
            for parent in self.pipelines[stack.pop()].inputs - BUILTIN_TABLES:
                if parent not in wanted:
                    wanted.add(parent)
                    stack.append(parent)
        return [n for n in self.order if n in wanted]

    def downstream(self, name: str) -> list[str]:
        """Pipelines that read ``name``, directly or not, in run order."""
        found: set[str] = {name}
        for candidate in self.order:
            if self.pipelines[candidate].inputs & found:
                found.add(candidate)
        found.discard(name)
        return [n for n in self.order if n in found]

    def outputs(self) -> dict[str, Pipeline]:
        """Every pipeline whose output can be read: those that load, and the last good
        version of those that broke since."""
        found = {b.name: b.last_good for b in self.broken.values() if b.last_good is not None}
        found.update(self.pipelines)
        return found


def pipeline_files(folder: Path) -> list[Path]:
    """The pipeline files of ``folder`` (``_``-prefixed files are helpers, not pipelines)."""
    if not folder.is_dir():
        return []
    files = sorted([*folder.glob("*.sql"), *folder.glob("*.py")])
    return [path for path in files if not path.name.startswith("_")]


Check = Callable[[Pipeline], None]


def load_graph(
    folder: Path,
    dialect: str,
    engine_dialect: str | None = None,
    *,
    check: Check | None = None,
    previous: Graph | None = None,
    models: ModelCatalog | None = None,
) -> Graph:
    """Load every pipeline in ``folder`` and check their references; a file that fails
    is set apart with its error (and so is every pipeline that reads it). ``models``
    resolves the models pipelines score with (a model that does not load sets its
    pipelines apart)."""
    pipelines: dict[str, Pipeline] = {}
    failed: dict[str, tuple[Path, PipelineError]] = {}
    for path in pipeline_files(folder):
        name = path.stem
        try:
            pipeline = load_file(path, dialect, engine_dialect, models=models)
            if check is not None:
                check(pipeline)
        except (PipelineError, OSError) as exc:
            if name in pipelines or name in failed:
                failed[name] = (path, _twice(name, path, pipelines, failed))
                pipelines.pop(name, None)
            elif isinstance(exc, PipelineError):
                failed[name] = (path, exc)
            continue  # (an OSError: the file went away as it was read)
        if name in pipelines or name in failed:
            failed[name] = (path, _twice(name, path, pipelines, failed))
            pipelines.pop(name, None)
            continue
        pipelines[name] = pipeline
    return build(pipelines.values(), failed, previous)


def _twice(
    name: str,
    path: Path,
    pipelines: dict[str, Pipeline],
    failed: dict[str, tuple[Path, PipelineError]],
) -> PipelineError:
    """Two files (``x.sql`` and ``x.py``) for one pipeline name."""
    first = pipelines[name].path if name in pipelines else failed[name][0]
    return PipelineError(
        f"two pipelines are named {name}",
        path=str(path),
        hint=f"rename one of {first.name} and {path.name}",
    )


class GraphLoader:
    """A folder's graph, parsed again only when a file changed, or ``version`` did (the
    project's settings, which ``check`` may read), or a model's artifact did."""

    def __init__(self, *, log_broken: bool = True) -> None:
        """``log_broken``: log a pipeline that does not load, once per change of its error
        (a second loader of the same files leaves that to the first)."""
        self._cached: tuple[object, Graph] | None = None
        self._log_broken = log_broken

    def load(
        self,
        folder: Path,
        dialect: str,
        engine_dialect: str | None = None,
        *,
        version: object = None,
        check: Check | None = None,
        models: ModelCatalog | None = None,
    ) -> Graph:
        files = _stamps(pipeline_files(folder))
        artifacts = models.stamp() if models is not None else None
        stamp = (folder, dialect, engine_dialect, version, files, artifacts)
        if self._cached is None or self._cached[0] != stamp:
            previous = self._cached[1] if self._cached is not None else None
            graph = load_graph(
                folder, dialect, engine_dialect, check=check, previous=previous, models=models
            )
            for name, broken in graph.broken.items() if self._log_broken else ():
                was = previous.broken.get(name) if previous is not None else None
                if was is None or str(was.error) != str(broken.error):
                    log.error("pipeline %s does not load: %s", name, broken.error)
            self._cached = (stamp, graph)
        return self._cached[1]


def _stamps(files: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """Each file's name, modification time and size (a file deleted meanwhile: none)."""
    found = []
    for path in files:
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        found.append((path.name, info.st_mtime_ns, info.st_size))
    return tuple(found)


def build(
    pipelines: Iterable[Pipeline],
    failed: Mapping[str, tuple[Path, PipelineError]] | None = None,
    previous: Graph | None = None,
) -> Graph:
    """The graph of ``pipelines``; those with unknown inputs, in a cycle, or reading a
    pipeline that failed are set apart in ``broken``."""
    by_name = {p.name: p for p in pipelines}
    apart: dict[str, Broken] = {}

    def set_apart(name: str, path: Path, error: PipelineError, blocked_by: str | None) -> None:
        last = previous.outputs().get(name) if previous is not None else None
        apart[name] = Broken(name, path, error, blocked_by, last)
        by_name.pop(name, None)

    for name, (path, error) in (failed or {}).items():
        set_apart(name, path, error, None)
    known = set(by_name) | set(apart) | BUILTIN_TABLES
    for pipeline in list(by_name.values()):
        for name in sorted(pipeline.inputs - known):
            error = GraphError(
                f"reads {name!r}, which is neither a table nor a pipeline",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint=_suggest(name, known),
            )
            set_apart(pipeline.name, pipeline.path, error, None)
            break
    for cycle in cycles(by_name):
        for name in [n for n in cycle[:-1] if n in by_name]:
            error = GraphError(
                f"pipelines read each other in a cycle: {' -> '.join(cycle)}",
                pipeline=name,
                path=str(by_name[name].path),
                hint="break the cycle: a pipeline cannot read its own output, even indirectly",
            )
            set_apart(name, by_name[name].path, error, None)
    # Readers of a pipeline set apart wait for it, and so do their readers.
    changed = True
    while changed:
        changed = False
        for pipeline in list(by_name.values()):
            waiting = sorted(pipeline.inputs & set(apart))
            if waiting:
                cause = apart[waiting[0]].blocked_by or waiting[0]
                error = PipelineError(
                    f"reads {waiting[0]!r}, which does not load",
                    pipeline=pipeline.name,
                    path=str(pipeline.path),
                    hint=f"fix {apart[cause].path.name}; this pipeline runs again once it loads",
                )
                set_apart(pipeline.name, pipeline.path, error, cause)
                changed = True
    return Graph(by_name, tuple(ordered(by_name)), apart)


def cycles(pipelines: Mapping[str, Pipeline]) -> list[list[str]]:
    """Each cycle found in a depth-first walk, as a path that ends where it starts."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}  # "visiting" or "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycles.append([*path[path.index(name) :], name])
            return
        state[name] = "visiting"
        for parent in sorted(pipelines[name].inputs - BUILTIN_TABLES):
            if parent in pipelines:
                visit(parent, [*path, name])
        state[name] = "done"

    for name in sorted(pipelines):
        visit(name, [])
    return cycles


def ordered(pipelines: Mapping[str, Pipeline]) -> list[str]:
    """Every pipeline after what it reads (``pipelines`` hold no cycle)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for parent in sorted(pipelines[name].inputs - BUILTIN_TABLES):
            if parent in pipelines:
                visit(parent)
        order.append(name)

    for name in sorted(pipelines):
        visit(name)
    return order


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known names: {', '.join(sorted(known))}"
