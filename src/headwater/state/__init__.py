"""The run state the stages share: runs, intervals, watermarks, leases and deliveries.

Not part of any one stage: pipelines record their runs here and owe their
deliveries; the deliverer works through what is owed; both hold leases here.
"""

from headwater.state.database import StateStore

__all__ = ["StateStore"]
