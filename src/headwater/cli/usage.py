"""A mistyped command or option: a usage error that names the nearest one (exit code 2).

Typer carries its own copy of click in recent releases (``typer._click``) and
uses click itself in older ones; the usage errors are that copy's classes.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

try:
    from typer._click import exceptions as _exceptions
except ImportError:  # typer before it carried click: click's own
    from click import exceptions as _exceptions  # type: ignore[no-redef]

UsageError: type[Exception] = _exceptions.UsageError
ClickException: type[Exception] = _exceptions.ClickException

_NO_SUCH_COMMAND = re.compile(r"No such command '(?P<name>[^']*)'")
#: Typer's own suggestion, which the fix below replaces with one that shows the command.
_DID_YOU_MEAN = re.compile(r"\.?\s*(?:Did you mean .*|\(Possible options: .*\))$", re.S)


def describe(exc: Any) -> tuple[str, str]:
    """The sentence and the fix for a usage error."""
    message = _DID_YOU_MEAN.sub("", str(exc.format_message())).rstrip().rstrip(".")
    return message, _suggestion(exc, message)


def _suggestion(exc: Any, message: str) -> str:
    """The nearest command or option to the one mistyped, else where to look."""
    context = exc.ctx
    where = context.command_path if context is not None else "headwater"
    if isinstance(exc, _exceptions.NoSuchOption):
        near = difflib.get_close_matches(exc.option_name, exc.possibilities or [], n=1)
        if near:
            return f"did you mean {near[0]}? (`{where} --help` lists the options)"
    match = _NO_SUCH_COMMAND.search(message)
    command = context.command if context is not None else None
    if match is not None and command is not None and hasattr(command, "list_commands"):
        names = list(command.list_commands(context))
        near = difflib.get_close_matches(match.group("name"), names, n=1, cutoff=0.5)
        if near:
            return f"did you mean `{where} {near[0]}`? (`{where} --help` lists the commands)"
        return f"one of: {', '.join(names)}"
    return f"`{where} --help` shows how to use it"
