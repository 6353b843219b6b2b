"""Load ``headwater.toml`` strictly into typed settings.

An unknown key is an error that names the table and the allowed keys: a typo
must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

from headwater.collect.settings import CollectorSettings, SourceSettings
from headwater.core.clock import parse_duration
from headwater.core.errors import ConfigError
from headwater.core.secrets import KeyHash, is_environment_reference, stored_form
from headwater.deliver.settings import (
    DeliverySettings,
    FilesSink,
    PostgresSink,
    Sink,
    WebhookSink,
)
from headwater.process.settings import PipelinesSettings
from headwater.runtime.settings import ServerSettings
from headwater.serve.settings import ApiSettings, ConsumerSettings
from headwater.store.settings import StoreSettings

FILENAME = "headwater.toml"
SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


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
    """The engine of this environment (``[environments.NAME.store]``)."""

    metadata_url: str | None = None
    """Where this environment keeps run history and delivery state (a SQLAlchemy URL or
    ``"${NAME}"``); default: beside the store (its PostgreSQL database, or SQLite in the data
    folder)."""

    sinks: dict[str, Sink] = msgspec.field(default_factory=dict)
    """Sinks that differ in this environment, by name (``[environments.NAME.sinks.lake]``):
    each replaces the top-level sink of that name."""


class ProjectFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole of ``headwater.toml``."""

    project: ProjectSettings = msgspec.field(default_factory=ProjectSettings)
    server: ServerSettings = msgspec.field(default_factory=ServerSettings)
    collector: CollectorSettings = msgspec.field(default_factory=CollectorSettings)
    store: StoreSettings = msgspec.field(default_factory=StoreSettings)
    pipelines: PipelinesSettings = msgspec.field(default_factory=PipelinesSettings)
    api: ApiSettings = msgspec.field(default_factory=ApiSettings)
    sources: dict[str, SourceSettings] = msgspec.field(default_factory=dict)
    consumers: dict[str, ConsumerSettings] = msgspec.field(default_factory=dict)
    sinks: dict[str, Sink] = msgspec.field(default_factory=dict)
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    environments: dict[str, EnvironmentSettings] = msgspec.field(default_factory=dict)


_TABLES: dict[str, type[msgspec.Struct]] = {
    "": ProjectFile,
    "project": ProjectSettings,
    "server": ServerSettings,
    "collector": CollectorSettings,
    "store": StoreSettings,
    "pipelines": PipelinesSettings,
    "api": ApiSettings,
    "consumers": ConsumerSettings,
    "sources": SourceSettings,
    "delivery": DeliverySettings,
    "environments": EnvironmentSettings,
}
_SINKS: dict[str, type[msgspec.Struct]] = {
    "files": FilesSink,
    "postgres": PostgresSink,
    "webhook": WebhookSink,
}


@dataclass(frozen=True)
class Project:
    """A loaded project: where it lives, what it says, and in which environment it runs.

    ``settings`` are the environment's: its ``store`` and ``metadata_url``
    replace the top-level ones.
    """

    root: Path
    settings: ProjectFile
    environment: str | None = None

    @property
    def file(self) -> Path:
        return self.root / FILENAME

    @property
    def data_dir(self) -> Path:
        """Runtime files (and the embedded store); each environment has its own folder."""
        base = (self.root / self.settings.project.data_dir).resolve()
        return base / self.environment if self.environment else base

    @property
    def pipelines_dir(self) -> Path:
        return self.root / self.settings.pipelines.folder

    @property
    def store_path(self) -> Path:
        return self.data_dir / self.settings.store.path

    def consumer_tokens(self) -> dict[str, tuple[KeyHash, list[str]]]:
        """Each consumer's token hash and datasets; environment references are read now."""
        return {
            name: (KeyHash.parse(c.token, where=f"[consumers.{name}] token"), list(c.datasets))
            for name, c in self.settings.consumers.items()
        }

    def source_keys(self) -> dict[str, KeyHash]:
        """Each source's key hash; environment references are read now, not at import."""
        return {
            name: KeyHash.parse(source.write_key, where=f"[sources.{name}] write_key")
            for name, source in self.settings.sources.items()
        }


def find_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds ``headwater.toml``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / FILENAME).is_file():
            return folder
    raise ConfigError(
        f"no {FILENAME} in {start} or any folder above it",
        hint="run `headwater init` to create a project, or pass --project DIR",
    )


def load_project(start: Path | None = None, environment: str | None = None) -> Project:
    """Find and load the project at or above ``start`` (default: the working folder), in
    ``environment`` (default: ``$HEADWATER_ENV``, else the top-level settings)."""
    root = find_root(start or Path.cwd())
    path = root / FILENAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML ({exc})", path=str(path)) from None
    try:
        settings = msgspec.convert(raw, ProjectFile)
    except msgspec.ValidationError as exc:
        raise _explain(exc, str(path), raw) from None
    _check(settings, str(path))
    environment = environment or os.environ.get("HEADWATER_ENV") or None
    if environment is None:
        return Project(root=root, settings=settings)
    chosen = settings.environments.get(environment)
    if chosen is None:
        known = ", ".join(sorted(settings.environments)) or "none declared"
        raise ConfigError(
            f"there is no environment {environment!r} ({known})",
            path=str(path),
            hint=f"add [environments.{environment}.store] with its engine, or drop --env",
        )
    pipelines = msgspec.structs.replace(
        settings.pipelines, metadata_url=chosen.metadata_url or settings.pipelines.metadata_url
    )
    sinks = {**settings.sinks, **chosen.sinks}
    settings = msgspec.structs.replace(
        settings, store=chosen.store, pipelines=pipelines, sinks=sinks
    )
    return Project(root=root, settings=settings, environment=environment)


def _check(settings: ProjectFile, path: str) -> None:
    for name, source in settings.sources.items():
        _check_holder(
            "source", name, "write_key", source.write_key, path,
            "create keys with `headwater sources add NAME`, which stores only the hash",
        )  # fmt: skip
    for name, consumer in settings.consumers.items():
        _check_holder(
            "consumer", name, "token", consumer.token, path,
            "create consumers with `headwater consumers add NAME --datasets a,b`",
        )  # fmt: skip
    for name, sink in settings.sinks.items():
        _check_sink(name, sink, path)
    _check_store(settings.store, "[store]", path)
    for name, environment in settings.environments.items():
        if not SOURCE_NAME.match(name):
            raise ConfigError(
                f"environment name {name!r} is not allowed",
                path=path,
                hint="use lower-case letters, digits, '-' and '_', starting with a letter",
            )
        _check_store(environment.store, f"[environments.{name}.store]", path)
        for sink_name, sink in environment.sinks.items():
            _check_sink(sink_name, sink, path)
    parse_duration(settings.collector.dedupe_window)
    limits = settings.collector
    if min(limits.max_event_bytes, limits.max_request_bytes, limits.max_batch_events) <= 0:
        raise ConfigError("[collector] limits must be positive numbers", path=path)


def _check_holder(kind: str, name: str, field: str, stored: str, path: str, hint: str) -> None:
    """A source or consumer: a plain name, and its secret stored hashed or by reference."""
    if not SOURCE_NAME.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not allowed",
            path=path,
            hint="use lower-case letters, digits, '-' and '_', starting with a letter",
        )
    if stored_form(stored) is None:
        raise ConfigError(
            f'[{kind}s.{name}] {field} must be a hash ("sha256:…") or an environment '
            'reference ("${NAME}"), not the secret itself',
            path=path,
            hint=hint,
        )


def _check_store(store: StoreSettings, where: str, path: str) -> None:
    if store.engine == "postgres":
        if not store.url:
            raise ConfigError(
                f'{where} engine = "postgres" needs url',
                path=path,
                hint='url = "${DATABASE_URL}", the URL (with its password) from the environment',
            )
        _check_no_password(store.url, f"{where} url", path)
    elif store.url is not None:
        raise ConfigError(f'{where} url is for engine = "postgres"', path=path)


def _check_no_password(url: str, where: str, path: str) -> None:
    """A PostgreSQL URL in the file: without a password, or wholly from the environment."""
    if is_environment_reference(url):
        return
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except Exception as exc:
        raise ConfigError(f"{where} is not a PostgreSQL URL ({exc})", path=path) from None
    if password:
        raise ConfigError(
            f"{where} holds a password in plain text",
            path=path,
            hint='put the whole URL in an environment variable and write "${NAME}"',
        )


def _check_sink(name: str, sink: Sink, path: str) -> None:
    where = f"[sinks.{name}]"
    if not SOURCE_NAME.match(name):
        raise ConfigError(
            f"sink name {name!r} is not allowed",
            path=path,
            hint="use lower-case letters, digits, '-' and '_', starting with a letter",
        )
    if sink.max_attempts < 1 or sink.backoff_seconds < 0 or sink.max_backoff_seconds < 0:
        raise ConfigError(
            f"{where} max_attempts must be at least 1 and the backoffs not negative", path=path
        )
    if isinstance(sink, WebhookSink):
        if not is_environment_reference(sink.secret):
            raise ConfigError(
                f'{where} secret must be an environment reference ("${{NAME}}"), '
                "not the secret itself",
                path=path,
                hint=f'write secret = "${{{name.upper().replace("-", "_")}_SECRET}}" '
                "and export that variable",
            )
        if not sink.url.startswith(("https://", "http://", "${")):
            raise ConfigError(f"{where} url must start with https:// or http://", path=path)
        if not sink.url.startswith("${"):
            try:
                parts = urlsplit(sink.url)
                parts.port  # noqa: B018 - raises for a port out of range
            except ValueError as exc:
                raise ConfigError(f"{where} url is not a URL ({exc})", path=path) from None
            if not parts.hostname:
                raise ConfigError(f"{where} url has no host", path=path)
        if sink.batch_rows < 1 or sink.timeout_seconds <= 0:
            raise ConfigError(f"{where} batch_rows and timeout_seconds must be positive", path=path)
    if isinstance(sink, PostgresSink):
        _check_no_password(sink.url, f"{where} url", path)


_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<key>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?"
)
_AT = re.compile(r" - at `\$(?P<at>[^`]*)`$")


def _explain(exc: msgspec.ValidationError, path: str, raw: dict[str, object]) -> ConfigError:
    """Turn msgspec's message into one that names the TOML table and the fix."""
    text = str(exc)
    if match := _UNKNOWN.match(text):
        key = match.group("key")
        at = (match.group("at") or "").lstrip(".")
        top = re.split(r"[.\[]", at, maxsplit=1)[0]
        struct = _TABLES.get(top, ProjectFile)
        if top == "sinks":
            name, struct = _sink_with(raw, key)
            at = f"sinks.{name}"
        elif at.startswith(("sources[", "consumers[", "environments[")):
            # msgspec says `sources[...]`; find which table holds the key.
            names = [n for n, t in _named_tables(raw, top) if key in t]
            at = f"{top}.{names[0] if names else '<name>'}"
        table = f"[{at}]" if at else "the top level"
        allowed = ", ".join(
            ("type", *struct.__struct_fields__) if top == "sinks" else struct.__struct_fields__
        )
        return ConfigError(
            f"unknown key `{key}` in {table}",
            path=path,
            hint=f"allowed keys there: {allowed}",
        )
    if text.startswith(("Object missing required field `type`", "Invalid value")) and (
        "sinks[" in text
    ):
        return _sink_type_error(raw, path)
    where = ""
    if match := _AT.search(text):
        where = f" at `{match.group('at').lstrip('.')}`"
        text = text[: match.start()]
    field = where.strip(" `").rsplit(".", 1)[-1]
    hint = f"one of: {_CHOICES[field]}" if field in _CHOICES else None
    if "sinks[...]" in where:
        # Name the sink whose value msgspec quotes.
        for name, values in _named_tables(raw, "sinks"):
            if field in values and repr(values[field]) in text:
                return ConfigError(f"[sinks.{name}] {field}: {text}", path=path, hint=hint)
    return ConfigError(f"{text}{where}", path=path, hint=hint)


_CHOICES = {"format": "parquet, csv, jsonl", "engine": "duckdb, postgres, spark, bigquery"}


def _named_tables(raw: dict[str, object], top: str) -> list[tuple[str, dict[str, object]]]:
    tables = raw.get(top)
    if not isinstance(tables, dict):
        return []
    return [(n, t) for n, t in tables.items() if isinstance(t, dict)]


def _sink_with(raw: dict[str, object], key: str) -> tuple[str, type[msgspec.Struct]]:
    """The sink whose type does not allow ``key`` (msgspec does not say which)."""
    for name, table in _named_tables(raw, "sinks"):
        kind = table.get("type")
        struct = _SINKS.get(kind, FilesSink) if isinstance(kind, str) else FilesSink
        if key in table and key not in struct.__struct_fields__:
            return name, struct
    return "<name>", FilesSink


def _sink_type_error(raw: dict[str, object], path: str) -> ConfigError:
    for name, table in _named_tables(raw, "sinks"):
        kind = table.get("type")
        if kind not in _SINKS:
            said = "has no type" if kind is None else f"has type {kind!r}"
            return ConfigError(
                f"[sinks.{name}] {said}",
                path=path,
                hint='set type = "files", "postgres" or "webhook"',
            )
    return ConfigError("a [sinks.NAME] table has no valid type", path=path)
