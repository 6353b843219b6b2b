"""The first interval that is not done, found again from what an earlier pass found."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from headwater.state import StateStore
from headwater.state.runs import GapHints
from headwater.state.tables import intervals

HOUR = timedelta(hours=1)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore.open(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    try:
        yield store
    finally:
        store.close()


def _record(state: StateStore, hours: range, status: str = "done") -> None:
    rows = [
        {"pipeline": "p", "start": T0 + h * HOUR, "end": T0 + (h + 1) * HOUR, "version": "v",
         "status": status, "run_id": 1, "done_at": T0, "reason": None}
        for h in hours
    ]  # fmt: skip
    with state.engine.begin() as db:
        db.execute(intervals.delete().where(intervals.c.start.in_([r["start"] for r in rows])))
        db.execute(intervals.insert(), rows)


def test_the_gap_found_from_a_hint_is_the_gap_found_from_the_start(state: StateStore) -> None:
    hints: GapHints = {}

    def both() -> datetime:
        walked = state.runs.first_gap("p", T0)
        hinted = state.runs.first_gap("p", T0, hints)
        assert hinted == walked
        return hinted

    assert both() == T0  # nothing done
    _record(state, range(0, 48))
    assert both() == T0 + 48 * HOUR
    assert hints == {("p", T0): (T0 + 48 * HOUR, 48)}
    _record(state, range(48, 50))  # the next hours ran
    assert both() == T0 + 50 * HOUR
    assert hints == {("p", T0): (T0 + 50 * HOUR, 50)}
    _record(state, range(51, 53))  # one after a hole: the hole is the gap
    assert both() == T0 + 50 * HOUR
    # Late events re-opened an hour before the gap: seen, though the hint said done.
    _record(state, range(20, 21), status="stale")
    assert both() == T0 + 20 * HOUR
    _record(state, range(20, 21))
    _record(state, range(50, 51))
    assert both() == T0 + 53 * HOUR
    # A recorded hour deleted (a full refresh, an apply): seen too.
    with state.engine.begin() as db:
        db.execute(intervals.delete().where(intervals.c.start == T0 + 3 * HOUR))
    assert both() == T0 + 3 * HOUR
    assert hints[("p", T0)] == (T0 + 3 * HOUR, 3)
