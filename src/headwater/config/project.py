"""Load ``headwater.toml`` strictly into typed settings, in an environment.

An unknown key is an error that names the table and the allowed keys: a typo
must not silently fall back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from headwater.config.checks import check
from headwater.config.explain import explain
from headwater.config.file import FILENAME, ProjectFile
from headwater.core.errors import ConfigError
from headwater.core.secrets import KeyHash


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
        raise explain(exc, str(path), raw) from None
    check(settings, str(path))
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
