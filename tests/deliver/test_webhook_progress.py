"""A webhook delivery records its progress every few batches, and a retry resends only
what was not recorded, with the same idempotency keys."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.deliver.webhook import WebhookTarget
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import Project
from tests.deliver.receiver import Receiver

T0 = datetime(2026, 11, 2, tzinfo=UTC)
ROWS = 70  # one row a batch: 70 batches


@pytest.fixture
def hooked(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Workspace, Receiver, list[timedelta]]]:
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    with Receiver("s3cret") as receiver:
        project.configure(
            f'[sinks.hook]\ntype = "webhook"\nurl = "{receiver.url()}"\n'
            'secret = "${HOOK_SECRET}"\nbatch_rows = 1\nmax_attempts = 5\n'
            '[delivery]\nallow_hosts = ["localhost"]\n'
        )
        (project.root / "pipelines" / "names.sql").write_text(
            '/* headwater\nschedule = "@hourly"\nkind = "incremental"\ntime_column = "hour"\n'
            'sinks = ["hook"]\nkey = ["user_id"] */\n'
            "SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, user_id FROM events\n"
            "WHERE received_at >= @start AND received_at < @end\n"
        )
        engine = DuckDBEngine.open(tmp_path / "store.duckdb")
        state = StateStore.in_folder(tmp_path / "state")
        ahead = [timedelta(0)]  # the real clock, moved on by a test
        workspace = Workspace(
            load_project(project.root), engine, state, clock=lambda: datetime.now(UTC) + ahead[0]
        )
        try:
            events = pa.Table.from_pylist(
                [
                    {"message_id": f"m{i}", "source": "web", "type": "track", "event": "E",
                     "user_id": f"u{i:03d}", "timestamp": T0 + timedelta(seconds=i),
                     "received_at": T0 + timedelta(seconds=i)}
                    for i in range(ROWS)
                ],
                schema=schema.EVENTS,
            )  # fmt: skip
            engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
            assert len(workspace.run("names", T0, T0 + timedelta(hours=1))) == 1
            yield workspace, receiver, ahead
        finally:
            workspace.close()


def _falling_over_at(call: int, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the ``call``-th POST fail as a crash would; the real ``send``, to put back."""
    send = WebhookTarget.send
    calls = [0]

    def crashing(self: WebhookTarget, payload: bytes, key: str) -> object:
        calls[0] += 1
        if calls[0] == call:
            raise RuntimeError("the process fell over")
        return send(self, payload, key)

    monkeypatch.setattr(WebhookTarget, "send", crashing)
    return send


def test_progress_is_recorded_every_few_batches(
    hooked: tuple[Workspace, Receiver, list[timedelta]], monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace, receiver, _ = hooked
    log = workspace.state.deliveries
    records: list[int] = []
    progress = log.progress
    monkeypatch.setattr(
        log,
        "progress",
        lambda d, h, done, *a, **k: records.append(done) or progress(d, h, done, *a, **k),
    )
    [result] = workspace.deliver()
    assert (result.status, result.rows) == ("delivered", ROWS)
    assert records[-1] == ROWS
    assert len(records) < ROWS // 2, records  # not one a batch
    assert len(receiver.rows()) == ROWS
    [delivery] = log.all("names")
    assert (delivery.status, delivery.batches_done, delivery.rows_delivered) == (
        "delivered", ROWS, ROWS,
    )  # fmt: skip


def test_a_retry_resends_what_was_not_recorded_with_the_same_keys(
    hooked: tuple[Workspace, Receiver, list[timedelta]], monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace, receiver, ahead = hooked
    send = _falling_over_at(41, monkeypatch)
    [first] = workspace.deliver()
    assert first.status == "failed"
    [delivery] = workspace.state.deliveries.all("names")
    recorded = delivery.batches_done
    assert 0 < recorded <= 40
    monkeypatch.setattr(WebhookTarget, "send", send)
    ahead[0] = timedelta(hours=1)  # past the backoff
    [again] = workspace.deliver()
    assert again.status == "delivered"
    batches = [r.payload["batch"] for r in receiver.snapshot() if r.payload]
    assert sorted(set(batches)) == list(range(ROWS))
    # Only what was sent after the last record went twice, each time with its own key.
    assert sorted(b for b in set(batches) if batches.count(b) > 1) == list(range(recorded, 40))
    assert all(len(keys) == 1 for keys in receiver.keys_by_batch().values())
    assert len(receiver.rows()) == ROWS


def test_a_resumed_delivery_keeps_its_batches_when_batch_rows_changes(
    hooked: tuple[Workspace, Receiver, list[timedelta]],
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sink's batch_rows changes between a delivery's attempts (the server picks up an
    # edited headwater.toml): the resumed delivery still cuts its rows as it began, so no
    # row falls between the old batches and the new, and a key never names two bodies.
    workspace, receiver, ahead = hooked
    send = _falling_over_at(41, monkeypatch)
    [first] = workspace.deliver()
    assert first.status == "failed"
    toml = project.root / "headwater.toml"
    toml.write_text(toml.read_text().replace("batch_rows = 1\n", "batch_rows = 7\n"))
    reloaded = workspace.watch.current(fresh=True)
    assert reloaded.settings.sinks["hook"].batch_rows == 7  # type: ignore[union-attr]
    monkeypatch.setattr(WebhookTarget, "send", send)
    ahead[0] = timedelta(hours=1)  # past the backoff
    [again] = workspace.deliver()
    assert again.status == "delivered"
    assert sorted({r["user_id"] for r in receiver.rows()}) == [f"u{i:03d}" for i in range(ROWS)]
    bodies: dict[str, set[bytes]] = {}
    for request in receiver.snapshot():
        if request.payload:
            bodies.setdefault(request.key or "", set()).add(request.body)
            assert len(request.payload["rows"]) == 1
            assert request.payload["batches"] == ROWS
    assert all(len(seen) == 1 for seen in bodies.values())
    assert len(bodies) == ROWS
