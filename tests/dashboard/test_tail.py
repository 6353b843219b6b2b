"""The live tail's fan-out: bounded per viewer, nothing done while nobody watches, and
every stream ended when the server stops."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pyarrow as pa
import pytest

from headwater.dashboard.tail import QUEUE_COMMITS, Fanout, TooManyViewers


def _commit(n: int, first: int = 0) -> pa.Table:
    return pa.table({"message_id": [f"m{first + i}" for i in range(n)]})


def _publish_from_writer_thread(fanout: Fanout, table: pa.Table, stored: np.ndarray) -> None:
    thread = threading.Thread(target=fanout.publish, args=(table, stored))
    thread.start()
    thread.join()


def test_viewers_get_only_stored_events_and_a_slow_one_loses_commits_not_the_writer() -> None:
    async def scenario() -> None:
        fanout = Fanout()
        fast, slow = fanout.subscribe(), fanout.subscribe()
        commit = _commit(3)
        _publish_from_writer_thread(fanout, commit, np.array([True, False, True]))
        await asyncio.sleep(0.05)
        shown = fast.queue.get_nowait()
        assert shown is not None
        assert shown.column("message_id").to_pylist() == ["m0", "m2"]  # m1 was a duplicate
        # The slow viewer reads nothing while many commits arrive: its queue stays bounded,
        # and it is told how many events it missed.
        for i in range(QUEUE_COMMITS + 10):
            fanout.publish(_commit(2, first=10 * i), np.ones(2, dtype=np.bool_))
        await asyncio.sleep(0.05)
        assert slow.queue.qsize() == QUEUE_COMMITS
        assert slow.dropped == (QUEUE_COMMITS + 11) * 2 - QUEUE_COMMITS * 2
        fanout.unsubscribe(fast)
        fanout.unsubscribe(slow)
        assert fanout.viewers == 0

    asyncio.run(scenario())


def test_nothing_is_done_while_nobody_watches() -> None:
    fanout = Fanout()
    # A mask of the wrong length would fail any filtering: nobody watches, so none is done.
    fanout.publish(_commit(3), np.array([True]))


def test_closing_ends_every_stream_and_refuses_new_viewers() -> None:
    async def scenario() -> None:
        fanout = Fanout(max_viewers=1)
        viewer = fanout.subscribe()
        with pytest.raises(TooManyViewers):
            fanout.subscribe()
        for i in range(QUEUE_COMMITS):
            fanout.publish(_commit(1, first=i), np.ones(1, dtype=np.bool_))
        await asyncio.sleep(0.05)
        fanout.close()
        await asyncio.sleep(0.05)
        items = [viewer.queue.get_nowait() for _ in range(viewer.queue.qsize())]
        assert items[-1] is None  # even from a full queue, the end arrives
        with pytest.raises(TooManyViewers):
            fanout.subscribe()

    asyncio.run(scenario())
