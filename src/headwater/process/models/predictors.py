"""Loading an artifact into something that predicts: a scikit-learn estimator (joblib),
an ONNX graph (onnxruntime) or a Python callable, each checked against the declared
inputs and outputs when it loads.

Each kind is one loader in :data:`LOADERS`. A loaded predictor takes a batch of the
features (an Arrow batch, the inputs in order) and gives one array per output; the
estimator and the ONNX graph get the batch as one NumPy matrix, built column by
column, with no Python per row. Loaded predictors are kept by version in the process.
"""

from __future__ import annotations

import io
import threading
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.core.extras import load
from headwater.process.models.artifact import Artifact, Kind
from headwater.process.models.errors import ModelError


class Predictor(Protocol):
    """A loaded model: feature batch in, one array per declared output out."""

    def output_types(self, features: pa.Schema) -> list[pa.DataType]: ...

    def predict(self, features: pa.Table) -> list[pa.Array]: ...


#: Rows of the matrix filled at a time: a block of them stays in the processor's cache while
#: each column is written into it (a column written down a whole large matrix at once
#: touches every cache line of it once per column).
_BLOCK = 16_384


def matrix(
    features: pa.Table, dtype: type[np.floating[Any]], *, by_column: bool = False
) -> np.ndarray[Any, Any]:
    """The features as one ``rows x inputs`` matrix of ``dtype``, filled from each chunk's
    columns (read in place: a FLOAT64 column without NULLs is not copied on its way).

    Row-major by default, a block of rows at a time (what onnxruntime takes). With
    ``by_column``, column-major: each column is then one contiguous copy, three times
    cheaper than writing it across rows, and scikit-learn's estimators take either
    order (a linear model's product and a tree ensemble's walk are as fast or faster).

    >>> matrix(pa.table({"a": [1, 2], "b": [0.5, 1.5]}), np.float64).tolist()
    [[1.0, 0.5], [2.0, 1.5]]
    >>> matrix(pa.table({"a": [1, 2], "b": [0.5, 1.5]}), np.float64, by_column=True).tolist()
    [[1.0, 0.5], [2.0, 1.5]]
    """
    out = np.empty(
        (features.num_rows, features.num_columns), dtype=dtype, order="F" if by_column else "C"
    )
    offset = 0
    for batch in features.to_batches():
        columns = []
        for column in batch.columns:
            if pa.types.is_decimal(column.type):
                column = pc.cast(column, pa.float64())
            columns.append(column.to_numpy(zero_copy_only=False))
        rows = batch.num_rows
        if by_column:
            for index, values in enumerate(columns):
                out[offset : offset + rows, index] = values
        else:
            for start in range(0, rows, _BLOCK):
                stop = min(start + _BLOCK, rows)
                for index, values in enumerate(columns):
                    out[offset + start : offset + stop, index] = values[start:stop]
        offset += rows
    return out


def _columns(model: Artifact, width: int | None, outputs: Sequence[str]) -> list[int] | None:
    """Which columns of a 2-D result make the outputs: a binary classifier's positive class
    for one name, every column for one name each; ``None`` for a 1-D result."""
    if width is None:
        return None
    if len(outputs) == width:
        return list(range(width))
    if len(outputs) == 1 and width == 2:
        return [1]
    raise ModelError(
        model.model,
        f"the model gives {width} columns and outputs names {len(outputs)} ({', '.join(outputs)})",
        version=model.version,
        hint="name one output for a binary classifier's positive class, or one per column",
    )


def _split(result: np.ndarray[Any, Any], columns: list[int] | None) -> list[pa.Array]:
    if result.ndim == 1 or columns is None:
        return [pa.array(np.ravel(result))]
    return [pa.array(np.ascontiguousarray(result[:, i])) for i in columns]


class _Estimator:
    """A scikit-learn estimator: ``predict_proba`` when it has one, else ``predict``."""

    def __init__(self, model: Artifact, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        joblib = load("joblib", extra="models", what="a scikit-learn model")
        load("sklearn", extra="models", what="a scikit-learn model")
        try:
            estimator = joblib.load(io.BytesIO(model.data))
        except Exception as exc:  # a corrupt pickle may raise anything
            raise ModelError(
                model.model,
                f"{model.source} cannot be loaded: {type(exc).__name__}: {exc}",
                version=model.version,
                hint="save the estimator again with joblib.dump, or export it to ONNX",
            ) from None
        if not callable(getattr(estimator, "predict", None)):
            raise ModelError(
                model.model,
                f"{model.source} holds a {type(estimator).__name__}, not an estimator",
                version=model.version,
                hint="save a fitted scikit-learn estimator (or pipeline) with joblib.dump",
            )
        count = getattr(estimator, "n_features_in_", None)
        if count is not None and count != len(inputs):
            raise ModelError(
                model.model,
                f"the model takes {count} features and inputs names {len(inputs)} "
                f"({', '.join(inputs)})",
                version=model.version,
                hint=f"list the {count} features it was trained on in [models.{model.model}] "
                "inputs, in order",
            )
        names = getattr(estimator, "feature_names_in_", None)
        if names is not None and [str(n) for n in names] != list(inputs):
            raise ModelError(
                model.model,
                f"the model was trained on features {', '.join(map(str, names))}, "
                f"inputs names {', '.join(inputs)}",
                version=model.version,
                hint="name the inputs as the model's features, in the same order",
            )
        self._estimator = estimator
        classes = getattr(estimator, "classes_", None)
        self._proba = classes is not None and hasattr(estimator, "predict_proba")
        width = len(classes) if self._proba and classes is not None else None
        if not self._proba and len(outputs) != 1:
            outputs_width = getattr(estimator, "n_outputs_", 1)
            width = int(outputs_width)
        self._columns = _columns(model, width, outputs) if width and width > 1 else None
        # An estimator without predict_proba gives its classes' labels, of their type.
        self._label = pa.array(classes).type if classes is not None and not self._proba else None
        self._named = names is not None

    def output_types(self, features: pa.Schema) -> list[pa.DataType]:
        count = len(self._columns) if self._columns is not None else 1
        return [self._label or pa.float64()] * count

    def predict(self, features: pa.Table) -> list[pa.Array]:
        rows = matrix(features, np.float64, by_column=True)
        with warnings.catch_warnings():
            if self._named:  # the names were checked when it loaded
                warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if self._proba:
                result = self._estimator.predict_proba(rows)
            else:
                result = self._estimator.predict(rows)
        return _split(np.asarray(result), self._columns)


class _Onnx:
    """An ONNX graph with one 2-D float input; the output is ``probabilities`` when it has
    one (scikit-learn classifiers converted by skl2onnx), else its first."""

    def __init__(self, model: Artifact, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        ort = load("onnxruntime", extra="models", what="an ONNX model")
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            session = ort.InferenceSession(model.data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad graph
            raise ModelError(
                model.model,
                f"{model.source} is not a valid ONNX model: {exc}",
                version=model.version,
                hint="export the model again (skl2onnx.to_onnx for scikit-learn)",
            ) from None
        given = session.get_inputs()
        if len(given) != 1 or len(given[0].shape) != 2:
            shapes = ", ".join(f"{i.name} {i.shape}" for i in given)
            raise ModelError(
                model.model,
                f"the ONNX model takes {shapes}; Headwater gives one rows x features matrix",
                version=model.version,
                hint="export it with one input, e.g. initial_types=[('X', FloatTensorType("
                f"[None, {len(inputs)}]))]",
            )
        types_: dict[str, type[np.floating[Any]]] = {
            "tensor(float)": np.float32,
            "tensor(double)": np.float64,
        }
        if given[0].type not in types_:
            raise ModelError(
                model.model,
                f"the ONNX model's input is {given[0].type}; Headwater gives float or double",
                version=model.version,
                hint="export it with a FloatTensorType or DoubleTensorType input",
            )
        width = given[0].shape[1]
        if isinstance(width, int) and width != len(inputs):
            raise ModelError(
                model.model,
                f"the model takes {width} features and inputs names {len(inputs)} "
                f"({', '.join(inputs)})",
                version=model.version,
                hint=f"list the {width} features it was trained on in [models.{model.model}] "
                "inputs, in order",
            )
        results = {o.name: o for o in session.get_outputs()}
        chosen = results.get("probabilities") or next(iter(results.values()))
        if not chosen.type.startswith("tensor("):
            raise ModelError(
                model.model,
                f"the ONNX model's output {chosen.name} is {chosen.type}, not a tensor",
                version=model.version,
                hint="convert a classifier without ZipMap: "
                "to_onnx(model, X, options={'zipmap': False})",
            )
        shape = chosen.shape
        columns = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        self._session = session
        self._input = given[0].name
        self._dtype = types_[given[0].type]
        self._output = chosen.name
        self._columns = _columns(model, columns, outputs) if columns and columns > 1 else None
        self._count = len(outputs)

    def output_types(self, features: pa.Schema) -> list[pa.DataType]:
        return [pa.float64()] * self._count

    def predict(self, features: pa.Table) -> list[pa.Array]:
        (result,) = self._session.run([self._output], {self._input: matrix(features, self._dtype)})
        return [pc.cast(a, pa.float64()) for a in _split(np.asarray(result), self._columns)]


class WrongAnswer(ValueError):
    """A callable gave something other than a batch of the outputs, row for row."""


class _Callable:
    """``module:function``: an Arrow batch of the inputs in, the outputs by name out."""

    def __init__(self, model: Artifact, inputs: Sequence[str], outputs: Sequence[str]) -> None:
        module = types.ModuleType(f"headwater_models.{model.model}")
        origin = model.source.rsplit("(", 1)[-1].rstrip(")")
        module.__file__ = origin
        try:
            exec(compile(model.data, origin, "exec"), module.__dict__)  # noqa: S102
        except Exception as exc:  # importing the author's module may raise anything
            raise ModelError(
                model.model,
                f"importing {origin} failed: {type(exc).__name__}: {exc}",
                version=model.version,
            ) from None
        function = getattr(module, model.attribute or "", None)
        if not callable(function):
            raise ModelError(
                model.model,
                f"{origin} has no function {model.attribute}",
                version=model.version,
                hint="define it: def NAME(batch: pyarrow.RecordBatch) -> pyarrow.RecordBatch",
            )
        self._function: Callable[[pa.RecordBatch], Any] = function
        self._model = model
        self._outputs = list(outputs)

    def output_types(self, features: pa.Schema) -> list[pa.DataType]:
        """The types the function gives: from an empty batch, and where that leaves one
        untyped (``pa.array([])`` is of type null), from a row of zeros; FLOAT64 where
        neither tells."""
        types = [a.type for a in self.predict(features.empty_table())]
        if any(pa.types.is_null(t) for t in types):
            try:
                zeros = pa.table({f.name: pa.array([0]).cast(f.type) for f in features})
                probed = [a.type for a in self.predict(zeros)]
            except Exception:  # the author's function may refuse zeros: decided by its runs
                probed = types
            types = [p if pa.types.is_null(t) else t for t, p in zip(types, probed, strict=True)]
        return [pa.float64() if pa.types.is_null(t) else t for t in types]

    def predict(self, features: pa.Table) -> list[pa.Array]:
        batches = features.combine_chunks().to_batches()
        batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=features.schema)
        result = self._function(batch)
        if not isinstance(result, pa.RecordBatch | pa.Table):
            raise WrongAnswer(f"returned {type(result).__name__}, not a pyarrow.RecordBatch")
        given = result.schema.names
        missing = [name for name in self._outputs if name not in given]
        # The inputs handed back beside the outputs (the batch with its outputs appended)
        # are not outputs; any other column is one `outputs` does not name.
        extra = [n for n in given if n not in self._outputs and n not in features.schema.names]
        if missing or extra:
            raise WrongAnswer(
                f"returned column{'s' if len(given) != 1 else ''} {', '.join(given) or 'none'}; "
                f"outputs are {', '.join(self._outputs)}"
                + (f" (no {', '.join(missing)})" if missing else "")
                + (f" (not {', '.join(extra)})" if extra else "")
            )
        if result.num_rows != features.num_rows:
            raise WrongAnswer(f"returned {result.num_rows} rows for {features.num_rows} rows")
        if isinstance(result, pa.Table):
            return [result.column(name).combine_chunks() for name in self._outputs]
        return [result.column(name) for name in self._outputs]


Loader = Callable[[Artifact, Sequence[str], Sequence[str]], Predictor]

#: One loader per kind of artifact.
LOADERS: dict[Kind, Loader] = {
    "joblib": _Estimator,
    "onnx": _Onnx,
    "callable": _Callable,
}

_LOADED: dict[tuple[str, str, str | None, tuple[str, ...], tuple[str, ...]], Predictor] = {}
_LOCK = threading.Lock()


def predictor(model: Artifact, inputs: Sequence[str], outputs: Sequence[str]) -> Predictor:
    """``model`` loaded and checked against ``inputs`` and ``outputs``, once per version
    in this process."""
    key = (model.kind, model.sha256, model.attribute, tuple(inputs), tuple(outputs))
    with _LOCK:
        found = _LOADED.get(key)
        if found is None:
            found = LOADERS[model.kind](model, inputs, outputs)
            _LOADED[key] = found
        return found
