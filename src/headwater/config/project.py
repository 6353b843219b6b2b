"""Load ``headwater.toml`` strictly into typed settings, in an environment.

An unknown key is an error that names the table and the allowed keys: a typo
must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from headwater.collect.pii import Redactor, redactor
from headwater.config.checks import check
from headwater.config.explain import explain
from headwater.config.file import FILENAME, ProjectFile
from headwater.core.errors import ConfigError
from headwater.core.secrets import KeyHash
from headwater.deliver.settings import FilesSink, Sink
from headwater.store.settings import EngineSettings


@dataclass(frozen=True)
class Project:
    """A loaded project: where it lives, what it says, and in which environment it runs.

    ``settings`` are the environment's: its ``store``, ``warehouse`` and ``metadata_url``
    replace the top-level ones, and its ``sinks`` are the environment's own and
    the top-level ones it shares, no others.
    """

    root: Path
    settings: ProjectFile
    environment: str | None = None
    #: The file as written, before the environment applied (``None``: ``settings``).
    written: ProjectFile | None = None

    @property
    def file(self) -> Path:
        return self.root / FILENAME

    @property
    def data_dir(self) -> Path:
        """Runtime files (and the embedded store); each environment has its own folder."""
        base = (self.root / self.settings.project.data_dir).resolve()
        return base / self.environment if self.environment else base

    @property
    def protected(self) -> bool:
        """Whether this environment is ``protected``: its metadata database is migrated
        only by ``headwater migrate``, never as it opens."""
        if self.environment is None or self.written is None:
            return False
        chosen = self.written.environments.get(self.environment)
        return chosen is not None and chosen.protected

    @property
    def promote_from(self) -> str | None:
        """The environment a commit must have been applied to before this one."""
        if self.environment is None or self.written is None:
            return None
        chosen = self.written.environments.get(self.environment)
        return chosen.promote_from if chosen is not None else None

    @property
    def pipelines_dir(self) -> Path:
        return self.root / self.settings.pipelines.folder

    @property
    def pipelines_store(self) -> EngineSettings:
        """Where pipelines run: the warehouse, when one is declared apart from the store;
        else the store itself."""
        warehouse = self.settings.warehouse
        if warehouse is None or warehouse.same_place(self.settings.store):
            return self.settings.store
        return warehouse

    @property
    def store_path(self) -> Path:
        return self.data_dir / self.settings.store.path

    def sinks_elsewhere(self) -> dict[str, list[str]]:
        """Sinks declared in the file but not in this environment, each with where it is
        declared (``"the default environment"``, ``"qa"``)."""
        file = self.written or self.settings
        found: dict[str, list[str]] = {}
        if self.environment is not None:
            for name in file.sinks:
                found.setdefault(name, []).append("the default environment")
        for environment, chosen in sorted(file.environments.items()):
            if environment != self.environment:
                for name in chosen.sinks:
                    found.setdefault(name, []).append(environment)
        return {name: where for name, where in found.items() if name not in self.settings.sinks}

    def sink_declarations(self) -> dict[str, list[Sink]]:
        """Every declaration of each sink name in the file: top level and every environment."""
        file = self.written or self.settings
        found: dict[str, list[Sink]] = {}
        for sinks in (file.sinks, *(e.sinks for e in file.environments.values())):
            for name, sink in sinks.items():
                found.setdefault(name, []).append(sink)
        return found

    def consumer_tokens(self) -> dict[str, tuple[KeyHash, list[str]]]:
        """Each consumer's token hash and datasets; environment references are read now."""
        return {
            name: (KeyHash.parse(c.token, where=f"[consumers.{name}] token"), list(c.datasets))
            for name, c in self.settings.consumers.items()
        }

    def admin_tokens(self) -> dict[str, KeyHash]:
        """Each admin's token hash; environment references are read now."""
        return {
            name: KeyHash.parse(admin.token, where=f"[admins.{name}] token")
            for name, admin in self.settings.admins.items()
        }

    def source_keys(self) -> dict[str, KeyHash]:
        """Each source's key hash; environment references are read now, not at import."""
        return {
            name: KeyHash.parse(source.write_key, where=f"[sources.{name}] write_key")
            for name, source in self.settings.sources.items()
        }

    def source_rules(self) -> dict[str, Redactor | ConfigError]:
        """Each source with PII rules: its rules with their key read from the environment
        now, or the error that keeps them from applying (its events are then refused, never
        stored without them)."""
        found: dict[str, Redactor | ConfigError] = {}
        for name, source in self.settings.sources.items():
            try:
                rules = redactor(name, source)
            except ConfigError as exc:
                found[name] = exc
                continue
            if rules is not None:
                found[name] = rules
        return found


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
        raise explain(exc, str(path), raw) from None
    check(settings, str(path))
    environment = environment or os.environ.get("HEADWATER_ENV") or None
    if environment is None:
        return Project(root=root, settings=settings)
    chosen = settings.environments.get(environment)
    if chosen is None:
        known = ", ".join(sorted(settings.environments)) or "none declared"
        close = difflib.get_close_matches(environment, sorted(settings.environments), n=1)
        raise ConfigError(
            f"there is no environment {environment!r} ({known})",
            path=str(path),
            hint=f"did you mean --env {close[0]}?"
            if close
            else f"add [environments.{environment}.store] with its engine, or drop --env",
        )
    pipelines = msgspec.structs.replace(
        settings.pipelines, metadata_url=chosen.metadata_url or settings.pipelines.metadata_url
    )
    folder = (root / settings.project.data_dir).resolve() / environment
    sinks = {name: settings.sinks[name] for name in chosen.shared_sinks}
    sinks |= {name: _own(sink, folder) for name, sink in chosen.sinks.items()}
    written = settings
    settings = msgspec.structs.replace(
        settings,
        store=chosen.store,
        warehouse=chosen.warehouse,
        retention=chosen.retention or settings.retention,
        pipelines=pipelines,
        sinks=sinks,
    )
    return Project(root=root, settings=settings, environment=environment, written=written)


def _own(sink: Sink, folder: Path) -> Sink:
    """An environment's own sink: a files sink's relative folder is in ``folder``, the
    environment's data folder, not beside ``headwater.toml`` where the default's are."""
    if isinstance(sink, FilesSink) and "://" not in sink.url and not Path(sink.url).is_absolute():
        return msgspec.structs.replace(sink, url=str(folder / sink.url))
    return sink
