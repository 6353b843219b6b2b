"""The pipelines of a project as a graph: names are edges, order is topological."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from headwater.process.definition import BUILTIN_TABLES, Pipeline, load_file
from headwater.process.errors import GraphError, PipelineError


@dataclass(frozen=True)
class Graph:
    """Pipelines by name, in an order where every input comes before its readers."""

    pipelines: dict[str, Pipeline]
    order: tuple[str, ...]

    def __getitem__(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
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


def pipeline_files(folder: Path) -> list[Path]:
    """The pipeline files of ``folder`` (``_``-prefixed files are helpers, not pipelines)."""
    if not folder.is_dir():
        return []
    files = sorted([*folder.glob("*.sql"), *folder.glob("*.py")])
    return [path for path in files if not path.name.startswith("_")]


def load_graph(folder: Path, dialect: str) -> Graph:
    """Load every pipeline in ``folder`` and check their references."""
    pipelines: dict[str, Pipeline] = {}
    for path in pipeline_files(folder):
        pipeline = load_file(path, dialect)
        if pipeline.name in pipelines:
            raise PipelineError(
                f"two pipelines are named {pipeline.name}",
                path=str(path),
                hint=f"rename one of {pipelines[pipeline.name].path.name} and {path.name}",
            )
        pipelines[pipeline.name] = pipeline
    return build(pipelines.values())


class GraphLoader:
    """A folder's graph, parsed again only when a file changed, or ``version`` did (the
    project's settings, which ``check`` may read)."""

    def __init__(self) -> None:
        self._cached: tuple[object, Graph] | None = None

    def load(
        self,
        folder: Path,
        dialect: str,
        *,
        version: object = None,
        check: Callable[[Graph], None] | None = None,
    ) -> Graph:
        files = pipeline_files(folder)
        stamp = (
            folder,
            dialect,
            version,
            tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files),
        )
        if self._cached is None or self._cached[0] != stamp:
            graph = load_graph(folder, dialect)
            if check is not None:
                check(graph)
            self._cached = (stamp, graph)
        return self._cached[1]


def build(pipelines: Iterable[Pipeline]) -> Graph:
    by_name = {p.name: p for p in pipelines}
    known = set(by_name) | BUILTIN_TABLES
    for pipeline in by_name.values():
        for name in sorted(pipeline.inputs - known):
            raise GraphError(
                f"reads {name!r}, which is neither a table nor a pipeline",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint=_suggest(name, known),
            )
    return Graph(by_name, tuple(_order(by_name)))


def _order(pipelines: dict[str, Pipeline]) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}  # "visiting" or "done"

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name) :], name]
            raise GraphError(
                f"pipelines read each other in a cycle: {' -> '.join(cycle)}",
                path=str(pipelines[name].path),
                hint="break the cycle: a pipeline cannot read its own output, even indirectly",
            )
        state[name] = "visiting"
        for parent in sorted(pipelines[name].inputs - BUILTIN_TABLES):
            visit(parent, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(pipelines):
        visit(name, [])
    return order


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known names: {', '.join(sorted(known))}"
