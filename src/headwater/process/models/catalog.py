"""The models a project declares, resolved to their artifacts when a pipeline loads.

An artifact is read again only when it changed (a local file's modification time and
size; a URL's size, time and tag as its store reports them), so the version every
pipeline folds in is the bytes on disk now, and a swapped file is a new version at the
next load.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from headwater.process.models.artifact import Artifact, read, stamp
from headwater.process.models.errors import ModelError
from headwater.process.models.scoring import Model
from headwater.process.models.settings import ModelSettings, batch_rows

_READ: dict[tuple[str, str, bool, Path, object], Artifact] = {}
_LOCK = threading.Lock()


class ModelCatalog:
    """``[models.NAME]`` of ``headwater.toml``, each resolved on demand."""

    def __init__(self, settings: Mapping[str, ModelSettings], root: Path) -> None:
        self.settings = dict(settings)
        self.root = root

    def __contains__(self, name: object) -> bool:
        return name in self.settings

    def names(self) -> list[str]:
        return sorted(self.settings)

    def stamp(self) -> tuple[object, ...]:
        """What changes when any artifact changes (cheap: no file is read)."""
        return tuple(
            (name, *(_stamp(where, function, self.root) for where, function in _where(s)))
            for name, s in sorted(self.settings.items())
        )

    def get(self, name: str) -> Model:
        """The model ``name`` with its artifacts read and loaded: a missing or corrupt
        artifact, or one that does not fit the inputs and outputs, raises ModelError."""
        settings = self.settings.get(name)
        if settings is None:
            raise ModelError(
                name,
                "is not declared in headwater.toml",
                hint=f'declare it: [models.{name}] path = "models/{name}.onnx", inputs = '
                f"[...], outputs = [...]"
                + (f" (declared: {', '.join(self.names())})" if self.settings else ""),
            )
        artifacts = [
            _read(name, where, function, self.root) for where, function in _where(settings)
        ]
        model = Model(
            name,
            tuple(settings.inputs),
            tuple(settings.outputs),
            artifacts[0],
            artifacts[1] if len(artifacts) > 1 else None,
            batch_rows(settings),
            settings.description,
        )
        model.load()
        return model


def _where(settings: ModelSettings) -> list[tuple[str, bool]]:
    """The live artifact's location and the shadow's, and whether they are callables."""
    function = settings.function is not None
    live = settings.function if function else settings.path
    found = [(live or "", function)]
    if settings.shadow is not None:
        found.append((settings.shadow, function))
    return found


def _stamp(where: str, function: bool, root: Path) -> object:
    if "://" in where and not function:
        return _remote_stamp(where)
    return stamp(where, root, function=function)


def _remote_stamp(url: str) -> object:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
    except Exception:  # unreachable now: read it again at the next load
        return (url, None)
    keys = ("size", "mtime", "updated", "etag", "ETag", "md5Hash", "generation")
    return (url, tuple(str(info.get(k)) for k in keys))


def _read(model: str, where: str, function: bool, root: Path) -> Artifact:
    now = _stamp(where, function, root)
    if "://" in where and now == (where, None):
        return read(model, where, root, function=function)
    key = (model, where, function, root, now)
    with _LOCK:
        found = _READ.get(key)
    if found is not None:
        return found
    found = read(model, where, root, function=function)
    with _LOCK:
        if len(_READ) > 256:
            _READ.clear()
        _READ[key] = found
    return found
