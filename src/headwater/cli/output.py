"""How results and errors look in the terminal."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Literal

import pyarrow as pa
import pyarrow.csv
from rich.console import Console
from rich.table import Table
from rich.text import Text

from headwater.core import jsonio

Format = Literal["table", "json", "csv"]

console = Console()
errors = Console(stderr=True)


def print_table(table: pa.Table, fmt: Format) -> None:
    """Print a query result as a rich table, JSON lines or CSV."""
    if fmt == "csv":
        sys.stdout.flush()
        pa.csv.write_csv(table, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    elif fmt == "json":
        for row in table.to_pylist():
            sys.stdout.write(jsonio.dumps_str(row) + "\n")
    else:
        view = Table(show_lines=False, header_style="bold")
        for name in table.column_names:
            view.add_column(name, overflow="fold")
        for row in table.to_pylist():
            view.add_row(*(_cell(value) for value in row.values()))
        console.print(view)
        rows = table.num_rows
        console.print(f"[dim]{rows} row{'s' if rows != 1 else ''}[/dim]")


def _cell(value: object) -> Text:
    # Text, not markup: a value like "[red]" must print as itself.
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, datetime):
        return Text(value.isoformat())
    return Text(str(value))


def print_error(message: str, hint: str | None) -> None:
    errors.print(f"[bold red]Error:[/bold red] {message}", highlight=False)
    if hint:
        errors.print(f"[bold]Fix:[/bold] {hint}", highlight=False)
