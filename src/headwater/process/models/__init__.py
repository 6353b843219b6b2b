"""Models as pipeline steps: artifacts versioned by the hash of their bytes, scored in
Arrow batches, every prediction tagged with its model and version.

See docs/models.md. The names below are imported from their modules on first use, so that
reading ``headwater.toml`` (which takes :class:`ModelSettings`) imports no Arrow or NumPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headwater.process.models.catalog import ModelCatalog
    from headwater.process.models.errors import ModelError
    from headwater.process.models.scoring import Model
    from headwater.process.models.settings import ModelSettings

__all__ = ["Model", "ModelCatalog", "ModelError", "ModelSettings"]

_HOMES = {
    "Model": "scoring",
    "ModelCatalog": "catalog",
    "ModelError": "errors",
    "ModelSettings": "settings",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
