"""Optional dependencies: a missing one names the extra that brings it.

The embedded default needs none of them; Spark, BigQuery and Cloud Storage
each come with an extra (``pip install 'headwater[spark]'``), so that a
project that does not use them does not install them.

>>> str(MissingExtra("spark", "the Spark engine", "pyspark"))
'the Spark engine needs pyspark, which is not installed'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from headwater.core.errors import ConfigError


class MissingExtra(ConfigError):
    """An optional dependency is not installed; the hint is the command that installs it."""

    def __init__(self, extra: str, what: str, module: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(
            f"{what} needs {module}, which is not installed",
            hint=f"pip install 'headwater[{extra}]'",
        )


def load(module: str, *, extra: str, what: str) -> ModuleType:
    """Import ``module`` (a Headwater module, or a library); a third-party package it needs
    that is missing becomes :class:`MissingExtra` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "headwater":
            raise
        raise MissingExtra(extra, what, missing) from None
