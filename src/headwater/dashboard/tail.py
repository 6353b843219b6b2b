"""Committed events handed to live viewers: a bounded fan-out that never slows ingest.

The writer calls :meth:`Fanout.publish` from its thread right after a commit,
with the Arrow table of the events that commit stored. With nobody watching it
returns at once. Otherwise each viewer gets a reference to the same table (no
copy) through its event loop; a viewer whose queue is full loses that commit's
events and is told how many it missed. The table is turned into rows by the
viewer, never by the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass, field

import pyarrow as pa

from headwater.store.dedupe import Mask

log = logging.getLogger(__name__)

#: Commits a viewer may have waiting before newer ones are dropped for it.
QUEUE_COMMITS = 64
#: Viewers at once; one more is refused rather than let the fan-out grow without bound.
MAX_VIEWERS = 32


@dataclass(eq=False)
class Viewer:
    """One open live page: the commits it has not shown yet."""

    loop: asyncio.AbstractEventLoop
    #: Commits to show; ``None`` ends the stream (the process is stopping).
    queue: asyncio.Queue[pa.Table | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_COMMITS)
    )
    #: Events dropped because this viewer was behind.
    dropped: int = 0

    def offer(self, events: pa.Table) -> None:
        """On the viewer's loop: queue the commit, or count it as dropped."""
        try:
            self.queue.put_nowait(events)
        except asyncio.QueueFull:
            self.dropped += events.num_rows

    def end(self) -> None:
        """On the viewer's loop: end its stream after what it has queued."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class TooManyViewers(Exception):
    """No room for another viewer, or the process is stopping."""


class Fanout:
    """The viewers of the live tail, and the commits handed to them."""

    def __init__(self, max_viewers: int = MAX_VIEWERS) -> None:
        self._viewers: list[Viewer] = []
        self._lock = threading.Lock()
        self._max = max_viewers
        self._closed = False

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def subscribe(self) -> Viewer:
        """A viewer on the running loop; :class:`TooManyViewers` when full."""
        viewer = Viewer(asyncio.get_running_loop())
        with self._lock:
            if self._closed or len(self._viewers) >= self._max:
                raise TooManyViewers
            self._viewers = [*self._viewers, viewer]
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        with self._lock:
            self._viewers = [v for v in self._viewers if v is not viewer]

    def close(self) -> None:
        """End every stream (a stopping server must not wait for open pages)."""
        with self._lock:
            self._closed = True
            viewers, self._viewers = self._viewers, []
        for viewer in viewers:
            with contextlib.suppress(RuntimeError):
                viewer.loop.call_soon_threadsafe(viewer.end)

    def publish(self, events: pa.Table, stored: Mask) -> None:
        """From the writer's thread, after a commit: hand the ``stored`` rows of ``events``
        to every viewer."""
        viewers = self._viewers  # replaced, never changed in place: no lock needed here
        if not viewers:
            return
        events = events.filter(pa.array(stored))
        if events.num_rows == 0:
            return
        for viewer in viewers:
            try:
                viewer.loop.call_soon_threadsafe(viewer.offer, events)
            except RuntimeError:  # its loop has closed: the page is gone
                self.unsubscribe(viewer)
