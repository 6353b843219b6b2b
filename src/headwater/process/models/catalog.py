"""The models a project declares, resolved to their artifacts when a pipeline loads.

An artifact is read (and hashed) again only when it changed (a local file's modification
time and size; a URL's size, time and tag as its store reports them), so the version
every pipeline folds in is the bytes on disk now, and a swapped file is a new version at
the next load. Reading is not loading: the estimator or ONNX session is made only when
a run scores (or ``headwater models`` asks), so ``status`` and ``plan`` load none.

A URL's stamp is asked of its store at most every :data:`URL_STAMP_SECONDS`: a scheduler
pass every few seconds would otherwise cost a request per artifact each time. An
artifact swapped in the bucket is therefore seen up to that long later; until then runs
score with the bytes read before, and tag their rows with those bytes' version, so no
row is ever tagged with a version that did not score it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
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
        """The model ``name`` with its artifacts read, not loaded (``Model.load`` loads
        them; scoring does): a missing or unreadable artifact raises ModelError."""
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
        return Model(
            name,
            tuple(settings.inputs),
            tuple(settings.outputs),
            artifacts[0],
            artifacts[1] if len(artifacts) > 1 else None,
            batch_rows(settings),
            settings.description,
        )


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


#: Seconds a URL artifact's stamp is reused before its store is asked again.
URL_STAMP_SECONDS = 30.0
_URL_STAMPS: dict[str, tuple[float, object]] = {}


def _remote_stamp(url: str, clock: Callable[[], float] = time.monotonic) -> object:
    now = clock()
    with _LOCK:
        cached = _URL_STAMPS.get(url)
    if cached is not None and now - cached[0] < URL_STAMP_SECONDS:
        return cached[1]
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
        info = fs.info(path)
    except Exception:  # unreachable now: read it again at the next load
        return (url, None)
    keys = ("size", "mtime", "updated", "etag", "ETag", "md5Hash", "generation")
    found = (url, tuple(str(info.get(k)) for k in keys))
    with _LOCK:
        _URL_STAMPS[url] = (now, found)
    return found


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
