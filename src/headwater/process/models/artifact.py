"""A model's artifact: its bytes, where they came from, and its version, the hash of them.

A file is read whole (a local path relative to the project, or any fsspec URL), so
the version names exactly what is scored: replacing the file is a new version. A
callable's artifact is its module's source file.

>>> a = Artifact("churn", "onnx", "models/churn.onnx", b"bytes of a model")
>>> a.version, a.size
('ee2e0a3346657b1d', 16)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from headwater.process.models.errors import ModelError

Kind = Literal["onnx", "joblib", "callable"]
#: How a file's name says what it holds.
SUFFIXES: dict[str, Kind] = {
    ".onnx": "onnx",
    ".joblib": "joblib",
    ".pkl": "joblib",
    ".pickle": "joblib",
}


@dataclass(frozen=True)
class Artifact:
    """One version of a model: what loads it, where it is from, and its bytes."""

    model: str
    kind: Kind
    source: str
    data: bytes = field(repr=False)
    #: A callable's function name in its module.
    attribute: str | None = None

    @functools.cached_property
    def sha256(self) -> str:
        """Hashed once per artifact read (the version is asked for on every pass). A
        callable's is of its module's source and its function's name: two functions of
        one module (a live one and its shadow) are two versions.

        >>> live = Artifact("m", "callable", "fm:live", b"source", "live")
        >>> live.version == Artifact("m", "callable", "fm:cand", b"source", "cand").version
        False
        """
        digest = hashlib.sha256(self.data)
        if self.attribute is not None:
            digest.update(b"\x00" + self.attribute.encode())
        return digest.hexdigest()

    @property
    def version(self) -> str:
        """The first 16 hex digits of the SHA-256 of the bytes: what every prediction
        row carries as ``model_version``."""
        return self.sha256[:16]

    @property
    def size(self) -> int:
        return len(self.data)


def kind_of(location: str) -> Kind | None:
    """What a file holds, by its name's suffix (``None``: not a model file).

    >>> kind_of("gs://bucket/models/churn.onnx"), kind_of("models/churn.joblib"), kind_of("x.csv")
    ('onnx', 'joblib', None)
    """
    return SUFFIXES.get(Path(location.split("?", 1)[0]).suffix.lower())


def stamp(location: str, root: Path, *, function: bool = False) -> object:
    """What changes when the artifact changes, without reading it: a local file's
    modification time and size; a URL or a module, its name (read again on each load)."""
    if function or "://" in location:
        return location
    try:
        info = _local(location, root).stat()
    except OSError:
        return (location, None)
    return (location, info.st_mtime_ns, info.st_size)


def read(model: str, location: str, root: Path, *, function: bool = False) -> Artifact:
    """Read the artifact at ``location`` (a ``module:function`` when ``function``)."""
    if function:
        return _read_callable(model, location, root)
    kind = kind_of(location)
    if kind is None:
        raise ModelError(
            model,
            f"{location} is not a model file Headwater can load",
            hint="save it as .onnx (preferred), or .joblib for a scikit-learn estimator; "
            'a Python callable is function = "module:function"',
        )
    try:
        if "://" in location:
            import fsspec

            with fsspec.open(location, "rb") as file:
                data = file.read()
        else:
            data = _local(location, root).read_bytes()
    except FileNotFoundError:
        raise ModelError(
            model,
            f"the artifact {location} does not exist",
            hint=f"save the model there, or fix the path in [models.{model}]",
        ) from None
    except OSError as exc:
        raise ModelError(model, f"the artifact {location} cannot be read: {exc}") from None
    return Artifact(model, kind, location, data)


def _local(location: str, root: Path) -> Path:
    path = Path(location)
    return path if path.is_absolute() else root / path


def _read_callable(model: str, location: str, root: Path) -> Artifact:
    module, _, attribute = location.partition(":")
    if not module or not attribute or not all(p.isidentifier() for p in module.split(".")):
        raise ModelError(
            model,
            f"function {location!r} is not module:function",
            hint='e.g. function = "churn_rules:score" for models/churn_rules.py',
        )
    origin = _module_file(module, [root / "models", root])
    if origin is None:
        raise ModelError(
            model,
            f"no module {module} (looked in models/, the project folder and the installed "
            "packages)",
            hint=f"put {module.replace('.', '/')}.py in the project's models/ folder",
        )
    return Artifact(model, "callable", f"{location} ({origin})", origin.read_bytes(), attribute)


def _module_file(module: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        candidate = folder / (module.replace(".", "/") + ".py")
        if candidate.is_file():
            return candidate
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin) if spec.origin not in sys.builtin_module_names else None
