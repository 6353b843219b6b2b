"""A value that can be rebuilt from its source, at most once a second.

Write keys and consumer tokens live in ``headwater.toml``; the server looks at
the file at most once a second, so ``headwater sources add`` and ``headwater
consumers add`` work without a restart, and a removed key stops working.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from headwater.core.errors import HeadwaterError

T = TypeVar("T")
log = logging.getLogger(__name__)

_AT_MOST_EVERY = 1.0


class Reloading(Generic[T]):
    """``value``, and :meth:`refresh` to rebuild it when ``loader`` has something new."""

    def __init__(self, value: T, loader: Callable[[], T | None] | None = None) -> None:
        self.value = value
        self._loader = loader
        self._checked = float("-inf")

    def refresh(self) -> bool:
        """Ask the loader for a new value; ``True`` when the value changed."""
        now = time.monotonic()
        if self._loader is None or now - self._checked < _AT_MOST_EVERY:
            return False
        self._checked = now
        try:
            value = self._loader()
        except (HeadwaterError, OSError) as exc:
            log.warning("kept the current settings: %s", exc)
            return False
        if value is None:
            return False
        self.value = value
        return True
