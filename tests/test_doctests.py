"""The examples in the package's docstrings run, so they stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "headwater.core.clock",
    "headwater.core.jsonio",
    "headwater.core.secrets",
    "headwater.core.types",
    "headwater.collect.validate",
    "headwater.store.duckdb",
    "headwater.store.schema",
    "headwater.process.header",
    "headwater.process.schedule",
    "headwater.process.sql",
    "headwater.deliver.guard",
    "headwater.deliver.webhook",
    "headwater.store.pgarrow",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples left; drop it from the list"
    assert result.failed == 0
