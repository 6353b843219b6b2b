"""Process: pipelines as code, run by interval on a schedule.

Python pipelines import :func:`pipeline` and :class:`Context` from here.
"""

from headwater.process.python import Context, pipeline

__all__ = ["Context", "pipeline"]
