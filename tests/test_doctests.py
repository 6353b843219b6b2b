"""The examples in the package's docstrings run, so they stay true: every module's."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import headwater

#: Alembic's environment runs migrations when imported; it has no examples.
SKIPPED = ("headwater.state.migrations",)
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(headwater.__path__, "headwater.")
    if not info.name.startswith(SKIPPED) and info.name != "headwater.__main__"
)


def test_the_package_has_examples() -> None:
    with_examples = [name for name in MODULES if _examples(name)]
    # A floor, not a count: modules gain examples; losing most of them is a regression.
    assert len(with_examples) >= 18, with_examples


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def _examples(name: str) -> bool:
    finder = doctest.DocTestFinder()
    return any(test.examples for test in finder.find(importlib.import_module(name)))
