"""How results and errors look in the terminal."""

from __future__ import annotations

import sys
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from rich.console import Console
from rich.text import Text

from headwater.core import jsonio

if TYPE_CHECKING:
    import pyarrow as pa

#: ``json``: one JSON array (as ``bq`` and DuckDB's CLI print it); ``jsonl``: one object
#: per line, for streaming into other tools.
Format = Literal["table", "json", "jsonl", "csv"]

# soft_wrap: a sentence is never cut into lines when stdout is not a terminal.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def print_table(table: pa.Table, fmt: Format) -> None:
    """Print a query result as a rich table, a JSON array, JSON lines or CSV."""
    # Imported here: only commands that print rows need Arrow's compute and CSV modules.
    import pyarrow.csv
    from rich.table import Table

    if fmt == "csv":
        sys.stdout.flush()
        pyarrow.csv.write_csv(table, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    elif fmt == "json":
        sys.stdout.write(jsonio.dumps_str(_displayable(table).to_pylist()) + "\n")
    elif fmt == "jsonl":
        for row in _displayable(table).to_pylist():
            sys.stdout.write(jsonio.dumps_str(row) + "\n")
    else:
        table = _displayable(table)
        view = Table(show_lines=False, header_style="bold")
        for name in table.column_names:
            view.add_column(name, overflow="fold")
        for row in table.to_pylist():
            view.add_row(*(_cell(value) for value in row.values()))
        console.print(view)
        rows = table.num_rows
        console.print(f"[dim]{rows} row{'s' if rows != 1 else ''}[/dim]")


_ISO = defaultdict(
    lambda: "%Y-%m-%dT%H:%M:%S%z",
    {None: "%Y-%m-%dT%H:%M:%S", "UTC": "%Y-%m-%dT%H:%M:%SZ", "Etc/UTC": "%Y-%m-%dT%H:%M:%SZ"},
)


def _displayable(table: pa.Table) -> pa.Table:
    """Timestamps as ISO text: engines hold years that Python's datetime cannot."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [
        pc.strftime(column, format=_ISO[column.type.tz])
        if pa.types.is_timestamp(column.type)
        else column
        for column in table.columns
    ]
    return pa.Table.from_arrays(columns, names=table.column_names)


def _cell(value: object) -> Text:
    # Text, not markup: a value like "[red]" must print as itself.
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, datetime):
        return Text(value.isoformat())
    return Text(str(value))


def print_error(message: str, hint: str | None) -> None:
    # Text, not markup: messages quote TOML tables like [sources.web].
    errors.print(Text.assemble(("Error: ", "bold red"), message), highlight=False)
    if hint:
        errors.print(Text.assemble(("Fix: ", "bold"), hint), highlight=False)
