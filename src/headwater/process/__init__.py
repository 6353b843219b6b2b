"""Process: pipelines as code, run by interval on a schedule.

Python pipelines import :func:`pipeline` and :class:`Context` from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headwater.process.python import Context, pipeline

__all__ = ["Context", "pipeline"]


def __getattr__(name: str) -> object:
    # Looked up when first asked for: the settings modules of this package are read by
    # every command (headwater.toml), and the Python pipelines' module imports Arrow.
    if name in __all__:
        from headwater.process import python

        return getattr(python, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
