"""The ``[models.NAME]`` tables of ``headwater.toml``: a model, its features and its outputs."""

from __future__ import annotations

import msgspec


class ModelSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One ``[models.NAME]`` table. Set ``path`` or ``function``, not both::

    [models.churn]
    path = "models/churn.onnx"
    inputs = ["sessions_7d", "events_7d", "days_active_7d"]
    outputs = ["churn_probability"]
    """

    path: str | None = None
    """The artifact: a file relative to ``headwater.toml`` or an fsspec URL
    (``gs://bucket/churn.onnx``). ``.onnx`` runs in onnxruntime; ``.joblib``, ``.pkl``
    and ``.pickle`` are scikit-learn estimators saved with joblib (loading one runs its
    code: only trusted files)."""

    function: str | None = None
    """A Python callable ``module:function`` that takes an Arrow batch of the inputs and
    returns an Arrow batch (or table) of the outputs. The module is a file in the
    project's ``models/`` folder or the project folder, or an installed module."""

    inputs: list[str]
    """The features, in the order the model takes them: columns of the scoring query."""

    outputs: list[str]
    """The columns the model's outputs are appended as. A classifier gives its
    probabilities: one name takes a binary classifier's positive class, one per class
    takes them all; a regressor's (or ``predict``'s) value takes one name."""

    shadow: str | None = None
    """A second version scored beside this one, into the same table, with ``shadow``
    true, and not served: a ``path`` for a file model, a ``module:function`` for a
    callable. Promote it by making it ``path`` (or ``function``)."""

    batch_rows: int = 65_536
    """Rows scored at once: bounds the memory of one batch's feature matrix."""

    description: str = ""
    """Shown by ``headwater models``."""


MODEL_KEYS = tuple(ModelSettings.__struct_fields__)
#: Columns every prediction row carries after the model's own outputs.
TAG_COLUMNS = ("model", "model_version", "shadow", "scored_at")
