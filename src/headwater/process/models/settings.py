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

    batch_rows: int | None = None
    """Rows scored at once, which bounds the memory of one batch's feature matrix. Default:
    as many as 16 MB of features hold (262,144 rows of 8 features), at least 65,536: a
    model called once on many rows is faster than many times on few."""

    description: str = ""
    """Shown by ``headwater models``."""


MODEL_KEYS = tuple(ModelSettings.__struct_fields__)
#: The feature matrix of one batch, by default (``batch_rows``).
BATCH_BYTES = 16 * 2**20


def batch_rows(settings: ModelSettings) -> int:
    """The rows ``settings`` scores at once.

    >>> batch_rows(ModelSettings(path="m.onnx", inputs=list("abcdefgh"), outputs=["p"]))
    262144
    """
    if settings.batch_rows is not None:
        return settings.batch_rows
    return max(65_536, BATCH_BYTES // (8 * max(len(settings.inputs), 1)))


#: Columns every prediction row carries after the model's own outputs.
TAG_COLUMNS = ("model", "model_version", "shadow", "scored_at")
