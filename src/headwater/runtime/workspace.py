"""A project's parts in one process, built from its settings and wired together.

Every stage takes its own settings and the parts it works with; this is the
one place that reads the whole project to build them: the engine, the run
state, the pipeline service, the deliverer. The CLI, the server and the
control socket all work through a :class:`Workspace`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa

from headwater.collect.suppress import Suppression
from headwater.collect.validate import Validator
from headwater.config.project import Project
from headwater.config.watch import ProjectWatch
from headwater.core.clock import parse_duration, utc_now
from headwater.core.errors import ConfigError
from headwater.core.secrets import environment_value
from headwater.core.types import Output
from headwater.deliver.deliverer import Deliverer, DeliveryResult
from headwater.deliver.replay import ReplayResult, replay
from headwater.deliver.settings import PostgresSink
from headwater.deliver.targets import Sinks
from headwater.process import render, status
from headwater.process.definition import Pipeline
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph, GraphLoader
from headwater.process.models import ModelCatalog
from headwater.process.retention import Retainer, Retention, RetentionResult
from headwater.process.runner import RunResult
from headwater.process.service import PipelineService, ProgressFn
from headwater.process.status import PipelineStatus
from headwater.runtime import failed
from headwater.runtime.failed import Choice, Commit
from headwater.state import StateStore
from headwater.state.database import MetadataDatabase, SchemaBehind
from headwater.state.leases import Lease, Waiting
from headwater.state.offload import Offloader, OffloadResult
from headwater.store.engine import Cost, Engine, collectors_floor
from headwater.store.open import open_engine


def private_folder(folder: Path) -> Path:
    """``folder``, made or kept owner-only (0700) with the files directly in it (0600).

    The data folder holds the events, the run state and the server's address: a folder
    made by an older version, or under a looser umask, is tightened when opened.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid == os.getuid():
        folder.chmod(0o700)
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink() and entry.stat().st_mode & 0o077:
                entry.chmod(0o600)
    return folder


#: The lease a replay of dead letters holds.
REPLAY_LEASE = "replay:dead-letters"


def engine_for(project: Project, *, read_only: bool = False) -> Engine:
    """The store of ``project``'s environment: where its collectors write."""
    private_folder(project.data_dir)
    window = parse_duration(project.settings.collector.dedupe_window)
    return open_engine(
        project.settings.store, project.data_dir, dedupe_window=window, read_only=read_only
    )


def has_warehouse(project: Project) -> bool:
    """Whether ``project``'s environment runs its pipelines on a warehouse fed by offloads
    from its store, rather than on the store itself."""
    return project.pipelines_store is not project.settings.store


def warehouse_for(project: Project, *, read_only: bool = False) -> Engine:
    """The warehouse of ``project``'s environment (see :func:`has_warehouse`); ``read_only``
    applies to an embedded file."""
    warehouse = project.settings.warehouse
    assert warehouse is not None
    private_folder(project.data_dir)
    window = parse_duration(project.settings.collector.dedupe_window)
    hourly = parse_duration(warehouse.offload_interval) == timedelta(hours=1)
    partition: Literal["HOUR", "DAY"] = "HOUR" if hourly else "DAY"
    return open_engine(
        warehouse,
        project.data_dir,
        dedupe_window=window,
        read_only=read_only,
        partition=partition,
    )


def state_for(project: Project, *, as_is: bool = False) -> StateStore:
    """The run state of ``project``'s environment: ``metadata_url`` when set, else beside the
    store (SQLite in the data folder, or the PostgreSQL store's database).

    Migrated as it opens, unless the environment is protected: then a database behind
    this version's schema is refused (:class:`SchemaBehind`) until ``headwater migrate``.
    ``as_is``: opened at its revision, migrated or not (to read it: ``headwater plan``)."""
    metadata = metadata_for(project)
    try:
        return metadata.open(migrate=not project.protected, as_is=as_is)
    except SchemaBehind as exc:
        raise SchemaBehind(exc.found, exc.needed, project.environment) from None


def metadata_for(project: Project) -> MetadataDatabase:
    """The metadata database of ``project``'s environment, not opened yet (see
    :func:`state_for`)."""
    url = project.settings.pipelines.metadata_url
    if url:
        return MetadataDatabase.at_url(environment_value(url, where="metadata_url"))
    store = project.settings.store
    if store.engine == "postgres":
        conninfo = environment_value(store.url or "", where="[store] url")
        return MetadataDatabase.beside_postgres(conninfo, f"{store.schema}_metadata")
    return MetadataDatabase.in_folder(private_folder(project.data_dir))


class Workspace:
    """The engine, run state, pipelines and deliverer of one project, in one process."""

    def __init__(
        self,
        project: Project | ProjectWatch,
        engine: Engine,
        state: StateStore,
        *,
        store: Engine | None = None,
        floor: Callable[[], datetime] | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``engine`` is where pipelines run; ``store``, when another, the hot store that
        collectors write and that is offloaded into ``engine``. ``floor`` is the
        collectors' arrival floor (default: what the store's collectors published)."""
        self.watch = project if isinstance(project, ProjectWatch) else ProjectWatch(project)
        self.engine = engine
        self.store = store or engine
        self.state = state
        settings = self.project.settings
        self.offloader: Offloader | None = None
        if self.store is not engine:
            assert settings.warehouse is not None
            hot = self.store
            self.offloader = Offloader(
                hot,
                engine,
                state.offloads,
                state.leases,
                every=parse_duration(settings.warehouse.offload_interval),
                retain=parse_duration(settings.store.retain),
                floor=floor or (lambda: collectors_floor(hot, clock())),
                clock=clock,
                lease_ttl=timedelta(seconds=settings.pipelines.lease_seconds),
            )
            # On the warehouse, an interval by arrival is whole once it is offloaded.
            floor = self.offloader.arrival_floor
        #: How replayed failed events are committed: set by a server that collects (through
        #: its writer); ``None``: straight into the store.
        self.replay_commit: Commit | None = None
        self._graphs = GraphLoader()
        # The graph without the engine's dialect (which sinks each file names) has its own
        # loader: sharing one, each would set the other's cache aside and parse every file
        # again.
        self._named_sinks = GraphLoader(log_broken=False)
        self._models: tuple[Project, ModelCatalog] | None = None
        self._retention: tuple[Project, Retention] | None = None
        #: The loaded graph and project, and that graph with this environment's sinks only.
        self._here: tuple[Graph, Project, Graph] | None = None
        self.pipelines = PipelineService(
            self.graph,
            engine,
            state,
            settings.pipelines,
            settings.project.dialect,
            floor=floor,
            clock=clock,
            sleep=sleep,
            applied=state.applies.pipeline_versions,
            retention=self.retention,
        )
        self.retainer = Retainer(
            engine,
            state,
            self.graph,
            self.retention,
            clock=clock,
            lease_ttl=timedelta(seconds=settings.pipelines.lease_seconds),
        )
        self.deliverer = Deliverer(
            self.sinks,
            engine,
            state,
            self.outputs,
            lease_ttl=timedelta(seconds=settings.pipelines.lease_seconds),
            clock=clock,
        )

    @classmethod
    def open(cls, project: Project, *, as_is: bool = False) -> Workspace:
        """Open ``project``'s store (and warehouse) and run state and build the rest on
        them; ``as_is``: the metadata at its revision, not migrated (to read it)."""
        store = engine_for(project)
        try:
            warehouse = warehouse_for(project) if has_warehouse(project) else store
        except BaseException:
            store.close()
            raise
        try:
            return cls(project, warehouse, state_for(project, as_is=as_is), store=store)
        except BaseException:
            warehouse.close()
            if store is not warehouse:
                store.close()
            raise

    @property
    def project(self) -> Project:
        """The project as ``headwater.toml`` says now."""
        return self.watch.current()

    def graph(self) -> Graph:
        """The pipelines as their files are now, checked against the sinks they name, as
        they run in this environment: each names only the sinks the environment has.

        A sink the files name that this environment lacks (declared only for another
        one) is left out here, so a run owes it no delivery; :meth:`skipped_sinks` says
        which were left out.
        """
        project = self.project
        graph = self._graphs.load(
            project.pipelines_dir,
            project.settings.project.dialect,
            self.engine.dialect,
            version=project,
            check=lambda pipeline: check_sinks(pipeline, project),
            models=self.models(),
        )
        if self._here is None or self._here[0] is not graph or self._here[1] is not project:
            self._here = (graph, project, sinks_here(graph, project))
        return self._here[2]

    def skipped_sinks(self) -> dict[str, list[str]]:
        """Sinks each pipeline names that this environment lacks (their deliveries are
        skipped), by pipeline."""
        project = self.project
        elsewhere = project.sinks_elsewhere()
        graph = self._named_sinks.load(
            project.pipelines_dir,
            project.settings.project.dialect,
            version=project,
            check=lambda graph: check_sinks(graph, project),
            models=self.models(),
        )
        found = {p.name: [s for s in p.header.sinks if s in elsewhere] for p in graph}
        return {name: sinks for name, sinks in found.items() if sinks}

    def retention(self) -> Retention:
        """``[retention]`` of this environment as ``headwater.toml`` says now."""
        project = self.project
        if self._retention is None or self._retention[0] is not project:
            self._retention = (project, Retention.from_settings(project.settings.retention))
        return self._retention[1]

    def models(self) -> ModelCatalog:
        """``[models]`` of ``headwater.toml`` as it says now."""
        project = self.project
        if self._models is None or self._models[0] is not project:
            self._models = (project, ModelCatalog(project.settings.models, project.root))
        return self._models[1]

    def outputs(self) -> Mapping[str, Output]:
        """Every readable output, including the last good one of a file broken since."""
        return {name: pipeline.output for name, pipeline in self.graph().outputs().items()}

    def sinks(self) -> Sinks:
        project = self.project
        return Sinks(
            project.root,
            project.settings.sinks,
            project.settings.delivery,
            scope=project.environment or "",
        )

    # -- what commands ask for --------------------------------------------------

    def run(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        progress: ProgressFn | None = None,
        *,
        now: bool = False,
        upstream: bool = False,
    ) -> list[RunResult]:
        """Run one pipeline: the given intervals again, or what it lacks; ``now``
        refreshes a full pipeline, ``upstream`` first runs what it reads."""
        return self.pipelines.run(name, start, end, progress, now=now, upstream=upstream)

    def run_due(
        self, progress: ProgressFn | None = None, should_stop: Callable[[], bool] = bool
    ) -> list[RunResult]:
        """One scheduler pass."""
        return self.pipelines.run_due(progress, should_stop)

    def backfill(
        self, name: str, start: datetime, end: datetime, progress: ProgressFn | None = None
    ) -> list[RunResult]:
        """Fill ``[start, end)`` for a pipeline and what it reads, inputs first; resumable."""
        return self.pipelines.backfill(name, start, end, progress)

    def status(self) -> list[PipelineStatus]:
        return status.status(self.pipelines)

    def render(
        self, name: str, start: datetime | None, end: datetime | None
    ) -> tuple[str, dict[str, object]]:
        return render.render(self.pipelines, name, start, end)

    def cost(self, name: str, start: datetime | None, end: datetime | None) -> Cost | None:
        return render.cost(self.pipelines, name, start, end)

    def deliver(
        self, should_stop: Callable[[], bool] = bool, *, wait: bool = False
    ) -> list[DeliveryResult]:
        """One attempt at every delivery that is due (``wait``: also for those another
        process is making, reported as it leaves them)."""
        return self.deliverer.deliver_due(should_stop, wait=wait)

    def replay(
        self, pipeline: str | None = None, sink: str | None = None, ids: list[int] | None = None
    ) -> list[ReplayResult]:
        """Send dead letters again; whole intervals are owed again and delivered now, and
        reported as that delivery went."""
        # One replay at a time (two at once would each send every letter they both chose):
        # the next waits, then finds what the first replayed already done.
        seconds = self.project.settings.pipelines.lease_seconds
        lease = Lease(self.state.leases, REPLAY_LEASE, timedelta(seconds=seconds))
        with Waiting(lease, seconds):
            results = replay(
                self.state.deliveries,
                self.sinks(),
                self.deliverer.targets,
                pipeline=pipeline,
                sink=sink,
                ids=ids,
            )
        if not results:
            self._known_letters(pipeline, sink)
        if not any(r.status == "requeued" for r in results):
            return results
        outcome = {(d.pipeline, d.sink, d.interval.start): d for d in self.deliver()}
        final = []
        for r in results:
            done = outcome.get((r.pipeline, r.sink, r.interval.start))
            if r.status == "requeued" and done is not None:
                r = dataclasses.replace(r, status=done.status, error=done.error)
            final.append(r)
        return final

    def _known_letters(self, pipeline: str | None, sink: str | None) -> None:
        """Nothing to replay: say so when a name given is no pipeline or sink at all (a
        misspelling), rather than that none of its letters is left."""
        graph = self.graph()
        if pipeline is not None and pipeline not in {*(p.name for p in graph), *graph.broken}:
            raise ConfigError(
                f"there is no pipeline {pipeline!r}, and no dead letter of one",
                hint="`headwater replay --list` shows the dead letters and their pipelines",
            )
        if sink is not None and sink not in self.sinks().sinks:
            raise ConfigError(
                f"there is no sink {sink!r}, and no dead letter of one",
                hint="`headwater replay --list` shows the dead letters and their sinks",
            )

    def not_erased(self, table: str, rows: pa.Table) -> pa.Table:
        """``rows`` of ``events`` or ``failed_events`` without an erased person's, by the
        erasure list as it is now (an import must not bring them back)."""
        suppression = Suppression()
        suppression.replace(self.state.erasures.suppressed())
        if table == "events":
            kept, _, _ = suppression.filter(rows, None)
            assert isinstance(kept, pa.Table)
            return kept
        listed = [tuple(row.values()) for row in rows.to_pylist()]
        held, dropped = suppression.failed(listed)
        if not dropped:
            return rows
        return pa.Table.from_pylist(
            [dict(zip(rows.column_names, row, strict=True)) for row in held], schema=rows.schema
        )

    def replay_failed(self, choice: Choice, *, dry_run: bool = False) -> dict[str, Any]:
        """Validate the chosen failed events again (after their fix) and ingest what passes
        into the store collectors write (``dry_run``: only say what would pass)."""
        settings = self.project.settings
        if not dry_run and not settings.store.can_collect:
            raise ConfigError(
                f"failed events are replayed into the store collectors write; this "
                f"environment's store is {settings.store.engine}",
                hint="add --dry-run to see what would pass, or replay in the environment "
                "whose collectors wrote them",
            )
        validator = Validator(
            max_event_bytes=settings.collector.max_event_bytes,
            max_depth=settings.collector.max_depth,
        )
        commit = None if dry_run else self.replay_commit or failed.to_store(self.store)
        # The list as it is now, not a collector's copy of a few seconds ago: an erasure
        # made just before the replay holds for it. What a replay leaves out is in its
        # report, not in the list's counts of new events dropped at ingest (a failed event
        # left unreplayed is left out again by each replay).
        suppression = Suppression()
        suppression.replace(self.state.erasures.suppressed())
        return failed.replay(
            self.store, validator, commit, settings.project.dialect, choice, suppression
        )

    def offload(self, should_stop: Callable[[], bool] = bool) -> OffloadResult | None:
        """Move whole intervals of arrival into the warehouse and apply the hot store's
        retention (``None``: the pipelines run on the store itself)."""
        if self.offloader is None:
            return None
        return self.offloader.run(should_stop)

    def retain(self, should_stop: Callable[[], bool] = bool) -> RetentionResult:
        """Drop what ``[retention]`` and the pipelines' ``retain`` no longer keep from where
        pipelines run, a few bounded batches per table (a backlog takes several passes)."""
        return self.retainer.run(should_stop)

    def close(self) -> None:
        self.deliverer.close()
        self.state.close()
        self.engine.close()
        if self.store is not self.engine:
            self.store.close()


def check_sinks(pipeline: Pipeline, project: Project) -> None:
    """Every sink a pipeline names is declared in ``headwater.toml`` (in this environment or
    another), and every declaration of it can take the pipeline's output."""
    declared = project.sink_declarations()
    for name in pipeline.header.sinks:
        sinks = declared.get(name)
        if sinks is None:
            known = ", ".join(sorted(declared)) or "none yet"
            close = difflib.get_close_matches(name, sorted(declared), n=1)
            raise PipelineError(
                f"sinks names {name!r}, which is not a [sinks.{name}] table in "
                f"headwater.toml (declared: {known})",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint=f"did you mean {close[0]!r}?"
                if close
                else f'add [sinks.{name}] with type = "files", "postgres" or "webhook"',
            )
        if not pipeline.header.key and any(
            isinstance(s, PostgresSink) and not s.latest.get(pipeline.name) for s in sinks
        ):
            raise PipelineError(
                f"sink {name!r} is a PostgreSQL table, upserted by key, and this pipeline "
                "declares no key",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint='declare the output\'s key in the header: key = ["user_id"]',
            )


def sinks_here(graph: Graph, project: Project) -> Graph:
    """``graph`` with each pipeline naming only the sinks ``project``'s environment has."""
    here = project.settings.sinks
    changed = {
        p.name: dataclasses.replace(
            p,
            header=msgspec.structs.replace(
                p.header, sinks=[s for s in p.header.sinks if s in here]
            ),
        )
        for p in graph
        if any(s not in here for s in p.header.sinks)
    }
    if not changed:
        return graph
    return dataclasses.replace(graph, pipelines={**graph.pipelines, **changed})
