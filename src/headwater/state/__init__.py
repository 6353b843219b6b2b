"""The run state the stages share: runs, intervals, watermarks, leases and deliveries.

Not part of any one stage: pipelines record their runs here and owe their
deliveries; the deliverer works through what is owed; both hold leases here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from headwater.state.database import StateStore

__all__ = ["StateStore"]


def __getattr__(name: str) -> object:
    # Looked up when first asked for: importing one module of the run state (its errors,
    # say) does not import SQLAlchemy.
    if name == "StateStore":
        from headwater.state.database import StateStore

        return StateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
