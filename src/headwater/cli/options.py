"""Options several commands share, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

Host = Annotated[str | None, typer.Option(help="Address to bind (default from headwater.toml).")]
Port = Annotated[int | None, typer.Option(help="Port (default from headwater.toml; 0 picks one).")]
Start = Annotated[str | None, typer.Option(help="First interval (ISO date or time, UTC).")]
End = Annotated[str | None, typer.Option(help="End of the last interval (exclusive).")]
