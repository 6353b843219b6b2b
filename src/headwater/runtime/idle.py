"""A due pass that found nothing to do, remembered until something could change that.

``headwater run --due`` from cron mostly finds nothing due, and a pass that opens the
store and the metadata, loads every pipeline and asks the planner costs most of a second,
nearly all of it imports. When a pass here ran nothing, delivered nothing and found every
pipeline loading, its answer is kept in ``idle.json`` in the data folder with:

- ``until``: the first moment anything could fall due by time alone: a pipeline's next
  schedule tick (every interval ends on one), or an owed delivery's next attempt;
- ``stamp``: what the answer was computed from: headwater.toml, every file of the
  pipelines folder and of the data folder (the store, the metadata and their logs; their
  modes too, which a pass would tighten), the environment and Headwater's version.

The next pass before ``until`` with the same stamp, while no other process has the store
open, gives the same answer without opening anything. Any write to the store or the
metadata (events, a run, ``migrate``, ``apply``), any edited file and any later moment
make a whole pass again. It is kept only where this process is the one writer it can
see: the embedded store with its metadata beside it, no warehouse, no Python pipeline
(whose imports no stamp covers), and no lease held by another process (whose end would
change what is due).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater import __version__
from headwater.core import jsonio
from headwater.core.clock import parse_utc, utc_now

if TYPE_CHECKING:
    from headwater.config.project import Project
    from headwater.runtime.workspace import Workspace

FILENAME = "idle.json"


def recall(project: Project, args: dict[str, Any]) -> Any | None:
    """The answer of the last due pass here when nothing it depends on has changed since,
    and nothing can have fallen due; else ``None``."""
    if not _eligible(project):
        return None
    try:
        memo = jsonio.loads((project.data_dir / FILENAME).read_bytes())
        at, until = parse_utc(memo["at"]), parse_utc(memo["until"])
        if memo["args"] != args or memo["stamp"] != _stamp(project):
            return None
    except (OSError, ValueError, KeyError, TypeError, jsonio.JSONDecodeError):
        return None
    now = utc_now()
    if not at <= now < until or _in_use(project.data_dir / project.settings.store.path):
        return None
    return memo["answer"]


def until(workspace: Workspace, answer: dict[str, Any]) -> datetime | None:
    """Until when ``answer`` (of a due pass just made) stands, or ``None`` when it is not
    one to remember: it ran, failed or delivered something, or a pipeline does not load."""
    from headwater.process.graph import pipeline_files
    from headwater.process.schedule import following
    from headwater.state.tables import leases

    project = workspace.project
    parts = ("runs", "failures", "deliveries", "broken", "offload", "retention")
    if not _eligible(project) or any(answer.get(part) for part in parts):
        return None
    if any(path.suffix != ".sql" for path in pipeline_files(project.pipelines_dir)):
        return None
    graph = workspace.graph()
    if graph.broken:
        return None
    now = utc_now()
    import sqlalchemy as sa

    with workspace.state.engine.connect() as db:
        held = db.execute(sa.select(sa.func.max(leases.c.expires_at))).scalar()
    if isinstance(held, datetime) and held > now:
        return None  # another process is at work: what it leaves changes what is due
    moments = [following(p.header.schedule, now) for p in graph]
    owed = workspace.state.deliveries.next_due()
    if owed is not None:
        moments.append(owed)
    return min(moments, default=None)


def remember(project: Project, args: dict[str, Any], answer: Any, until: datetime) -> None:
    """Keep ``answer`` until ``until``; stamped now, after the pass closed its files."""
    if until <= utc_now():
        return
    memo = {
        "at": utc_now().isoformat(),
        "until": until.isoformat(),
        "args": args,
        "stamp": _stamp(project),
        "answer": answer,
    }
    path = project.data_dir / FILENAME
    tmp = path.with_suffix(".tmp")
    # The pass itself succeeded: a memo that cannot be written only costs the next pass.
    with contextlib.suppress(OSError):
        tmp.write_bytes(jsonio.dumps(memo))
        os.replace(tmp, path)


def _eligible(project: Project) -> bool:
    settings = project.settings
    return (
        settings.store.engine == "duckdb"
        and settings.warehouse is None
        and not settings.pipelines.metadata_url
    )


def _stamp(project: Project) -> list[object]:
    """What a due pass reads, as names, sizes, modification times and modes."""
    data = project.data_dir
    files: list[object] = [
        __version__,
        project.environment,
        _stat(project.file),
        # The folder's mode (a pass tightens it), not its times: this file's own writes
        # change those.
        _mode(data),
    ]
    for folder, pattern in ((project.pipelines_dir, "**/*"), (data, "*")):
        for path in sorted(folder.glob(pattern)):
            if path.name not in (FILENAME, f"{Path(FILENAME).stem}.tmp"):
                files.append([str(path.relative_to(folder)), _stat(path)])
    store = data / project.settings.store.path
    if store.parent.resolve() != data.resolve():
        files += [_stat(store), _stat(Path(f"{store}.wal"))]
    return files


def _in_use(store: Path) -> bool:
    """Whether another process has the store open (DuckDB locks its file): then a pass
    says so, as it did before anything was remembered."""
    try:
        with store.open("rb") as file:
            fcntl.lockf(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.lockf(file, fcntl.LOCK_UN)
    except OSError:
        return True
    return False


def _mode(path: Path) -> int | None:
    try:
        return path.stat().st_mode
    except OSError:
        return None


def _stat(path: Path) -> list[int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return [info.st_mtime_ns, info.st_size, info.st_mode, info.st_ino]
