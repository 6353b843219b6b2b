"""The pipelines' dependency graph laid out in layers, for an SVG drawn on the server.

A node's layer is one more than the deepest of what it reads (the built-in
tables are layer 0), so every edge goes left to right; within a layer nodes
keep the graph's run order. No script lays anything out in the browser: the
page is an ``<svg>`` whose nodes are links, reached with the Tab key.

>>> pipelines = [{"name": "daily", "inputs": ["events"]}, {"name": "weekly", "inputs": ["daily"]}]
>>> [(n.name, n.layer) for n in layout(pipelines).nodes]
[('events', 0), ('daily', 1), ('weekly', 2)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from headwater.process.definition import BUILTIN_TABLES

#: Geometry in SVG user units; the SVG scales down to the screen by its viewBox.
NODE_WIDTH = 170
NODE_HEIGHT = 40
COLUMN = 230
ROW = 64
MARGIN = 12


@dataclass(frozen=True)
class Node:
    name: str
    layer: int
    row: int
    x: int
    y: int
    #: A built-in table (``events``, ``failed_events``), not a pipeline.
    builtin: bool
    #: What the page says of it (its state, for the label and the colour).
    state: str = ""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    #: A cubic path from the right side of ``source`` to the left side of ``target``.
    path: str


@dataclass(frozen=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layout(
    pipelines: Iterable[Mapping[str, Any]], states: Mapping[str, str] | None = None
) -> Layout:
    """Layers for ``pipelines`` (rows of the ``list`` operation: ``name`` and ``inputs``,
    in run order); ``states`` names each pipeline's state for its label."""
    rows = list(pipelines)
    states = states or {}
    inputs = {str(r["name"]): [str(i) for i in r["inputs"]] for r in rows}
    builtins = sorted({i for names in inputs.values() for i in names if i in BUILTIN_TABLES})
    layers: dict[str, int] = dict.fromkeys(builtins, 0)

    def layer_of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in layers:
            return layers[name]
        if name in seen or name not in inputs:  # a cycle or an unknown input: no deeper
            return 0
        found = 1 + max((layer_of(i, seen | {name}) for i in inputs[name]), default=0)
        layers[name] = found
        return found

    for name in inputs:
        layer_of(name)
    nodes: list[Node] = []
    count: dict[int, int] = {}
    for name in [*builtins, *inputs]:
        layer = layers[name]
        row = count.get(layer, 0)
        count[layer] = row + 1
        nodes.append(
            Node(
                name=name,
                layer=layer,
                row=row,
                x=MARGIN + layer * COLUMN,
                y=MARGIN + row * ROW,
                builtin=name in BUILTIN_TABLES,
                state=states.get(name, ""),
            )
        )
    at = {n.name: n for n in nodes}
    edges = [
        Edge(source, target, _path(at[source], at[target]))
        for target, names in inputs.items()
        for source in names
        if source in at
    ]
    width = MARGIN * 2 + max((n.x for n in nodes), default=0) + NODE_WIDTH
    height = MARGIN * 2 + max((n.y for n in nodes), default=0) + NODE_HEIGHT
    return Layout(nodes, edges, width, height)


def _path(source: Node, target: Node) -> str:
    x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
    x2, y2 = target.x, target.y + NODE_HEIGHT // 2
    bend = (x2 - x1) // 2
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
