"""Every error Headwater raises says in its type whether trying again can help.

A caller retries on ``TransientError`` alone (the runner, the scheduler, the
deliverer, the collector's 503); an error that is neither would be treated as
terminal by one and transient by another.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import headwater
from headwater.core.errors import HeadwaterError, TerminalError, TransientError
from headwater.deliver.errors import DeliveryError

PACKAGE = Path(headwater.__file__).parent
#: Bases that only name what their subclasses share; never raised themselves.
ABSTRACT = {HeadwaterError, TransientError, TerminalError, DeliveryError}


def _all_errors() -> set[type[HeadwaterError]]:
    for info in pkgutil.walk_packages(headwater.__path__, "headwater."):
        if not info.name.startswith(("headwater.state.migrations", "headwater.__main__")):
            importlib.import_module(info.name)
    found: set[type[HeadwaterError]] = set()
    stack: list[type[HeadwaterError]] = [HeadwaterError]
    while stack:
        for child in stack.pop().__subclasses__():
            if child.__module__.startswith("headwater.") and child not in found:
                found.add(child)
                stack.append(child)
    return found


def test_every_error_is_transient_or_terminal_and_not_both() -> None:
    errors = _all_errors() - ABSTRACT
    assert len(errors) > 20  # the walk found the package's errors
    neither = sorted(
        e.__qualname__ for e in errors if not issubclass(e, TransientError | TerminalError)
    )
    both = sorted(
        e.__qualname__
        for e in errors
        if issubclass(e, TransientError) and issubclass(e, TerminalError)
    )
    assert neither == [], neither
    assert both == [], both


def test_no_abstract_error_is_raised() -> None:
    names = {cls.__name__ for cls in ABSTRACT}
    raised = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id in names:
                    raised.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {func.id}")
    assert raised == [], raised
