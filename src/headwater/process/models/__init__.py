"""Models as pipeline steps: artifacts versioned by the hash of their bytes, scored in
Arrow batches, every prediction tagged with its model and version.

See docs/models.md.
"""

from headwater.process.models.catalog import ModelCatalog
from headwater.process.models.errors import ModelError
from headwater.process.models.scoring import Model
from headwater.process.models.settings import ModelSettings

__all__ = ["Model", "ModelCatalog", "ModelError", "ModelSettings"]
