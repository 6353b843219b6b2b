"""What ``headwater.toml`` may hold: its tables as typed settings, composed from each
stage's own settings.

Each stage keeps its settings beside its code (``collect/settings.py``,
``store/settings.py``, ...); this module only puts them together into the
file's shape. msgspec decodes the file into these frozen structs with
``forbid_unknown_fields``, so a typo is an error, never a silent default.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from headwater.collect.settings import CollectorSettings, SourceSettings
from headwater.config.server import ServerSettings
from headwater.deliver.settings import DeliverySettings, FilesSink, PostgresSink, Sink, WebhookSink
from headwater.process.models.settings import ModelSettings
from headwater.process.settings import PipelinesSettings
from headwater.serve.settings import AdminSettings, ApiSettings, ConsumerSettings
from headwater.store.settings import RetentionSettings, StoreSettings, WarehouseSettings

FILENAME = "headwater.toml"


class ProjectSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``[project]`` table."""

    name: str = "headwater"
    """Shown in logs and metrics."""

    data_dir: str = ".headwater"
    """Folder for the store, the metadata and runtime files, relative to ``headwater.toml``."""

    dialect: Literal["bigquery", "duckdb"] = "bigquery"
    """The SQL dialect pipelines are written in."""


class EnvironmentSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """An ``[environments.NAME]`` table: what differs when a command runs with ``--env NAME``."""

    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    """The engine of this environment (``[environments.NAME.store]``): where collectors
    write, and where pipelines run unless a warehouse is declared."""

    warehouse: WarehouseSettings | None = None
    """Where this environment's pipelines run and its events are kept
    (``[environments.NAME.warehouse]``), fed from the store by offloads; default: the store
    itself."""

    retention: RetentionSettings | None = None
    """This environment's own ``[retention]`` (``[environments.NAME.retention]``), in place
    of the top-level one: its store or warehouse is its own, and so is how long it keeps
    events. Default: the top-level ``[retention]``."""

    metadata_url: str | None = None
    """Where this environment keeps run history and delivery state (a SQLAlchemy URL or
    ``"${NAME}"``); default: beside the store (its PostgreSQL database, or SQLite in the data
    folder)."""

    protected: bool = False
    """Never migrate this environment's metadata database when a command opens it
    (``protected = true``, for production): a database behind this version's schema, or a
    new one, is refused until ``headwater --env NAME migrate`` upgrades it, after
    ``--sql`` showed what it would run. Unprotected environments migrate as they open.
    ``headwater apply`` refuses a git tree with uncommitted changes here."""

    promote_from: str | None = None
    """The environment a change must have been applied to first (``promote_from = "qa"``):
    ``headwater apply`` here refuses a git commit that was not applied there."""

    sinks: dict[str, Sink] = msgspec.field(default_factory=dict)
    """This environment's own sinks, by name (``[environments.NAME.sinks.lake]``). A files
    sink's relative ``url`` is a folder in the environment's data folder
    (``.headwater/NAME/``), so it never writes the default environment's files."""

    shared_sinks: list[str] = msgspec.field(default_factory=list)
    """Top-level ``[sinks.NAME]`` this environment writes too, the very same files, table or
    webhook as the default environment (``shared_sinks = ["lake"]``). A top-level sink
    neither shared nor redeclared here is not in this environment: pipelines that name it
    run, and their delivery to it is skipped."""


class ProjectFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole of ``headwater.toml``."""

    project: ProjectSettings = msgspec.field(default_factory=ProjectSettings)
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    collector: CollectorSettings = msgspec.field(default_factory=CollectorSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    warehouse: WarehouseSettings | None = None
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
    pipelines: PipelinesSettings = msgspec.field(default_factory=PipelinesSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    sources: dict[str, SourceSettings] = msgspec.field(default_factory=dict)
    consumers: dict[str, ConsumerSettings] = msgspec.field(default_factory=dict)
    admins: dict[str, AdminSettings] = msgspec.field(default_factory=dict)
    sinks: dict[str, Sink] = msgspec.field(default_factory=dict)
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    environments: dict[str, EnvironmentSettings] = msgspec.field(default_factory=dict)
    models: dict[str, ModelSettings] = msgspec.field(default_factory=dict)


TABLES: dict[str, type[msgspec.Struct]] = {
    "": ProjectFile,
    "project": ProjectSettings,
    "server": ServerSettings,
    "collector": CollectorSettings,
    "store": StoreSettings,
    "warehouse": WarehouseSettings,
    "retention": RetentionSettings,
    "pipelines": PipelinesSettings,
    "api": ApiSettings,
    "consumers": ConsumerSettings,
    "admins": AdminSettings,
    "sources": SourceSettings,
    "delivery": DeliverySettings,
    "environments": EnvironmentSettings,
    "models": ModelSettings,
}
SINKS: dict[str, type[msgspec.Struct]] = {
    "files": FilesSink,
    "postgres": PostgresSink,
    "webhook": WebhookSink,
}
