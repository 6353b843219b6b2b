"""``[models.NAME]`` is strict: every mistake is an error naming the table and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.process.models import ModelSettings

BASE = 'inputs = ["a", "b"]\noutputs = ["score"]\n'


def _load(tmp_path: Path, table: str) -> ModelSettings:
    (tmp_path / "headwater.toml").write_text("[models.churn]\n" + table, "utf-8")
    return load_project(tmp_path).settings.models["churn"]


def test_a_model_table_loads(tmp_path: Path) -> None:
    model = _load(tmp_path, 'path = "models/churn.onnx"\nshadow = "gs://b/churn-v2.onnx"\n' + BASE)
    assert (model.path, model.shadow, model.inputs, model.outputs) == (
        "models/churn.onnx", "gs://b/churn-v2.onnx", ["a", "b"], ["score"],
    )  # fmt: skip
    assert model.batch_rows is None


@pytest.mark.parametrize(
    ("table", "message", "hint"),
    [
        ('path = "m.onnx"\nfeatures = ["a"]\n' + BASE, "unknown key `features` in [models.churn]",
         "allowed keys there: path, function, inputs, outputs, shadow"),
        ('path = "m.onnx"\nfunction = "rules:score"\n' + BASE, "sets both path and function",
         'function = "module:function"'),
        (BASE, "sets neither path nor function", 'path = "models/churn.onnx"'),
        ('path = "models/churn.h5"\n' + BASE, "'models/churn.h5' is not a file Headwater can load",
         "an .onnx file (preferred)"),
        ('path = "m.onnx"\nshadow = "m2.bin"\n' + BASE, "shadow = 'm2.bin' is not a file", None),
        ('function = "rules"\n' + BASE, "function = 'rules' is not module:function",
         '"churn_rules:score"'),
        ('function = "rules:score"\nshadow = "models/v2.onnx"\n' + BASE,
         "shadow = 'models/v2.onnx' is not module:function", None),
        ('path = "m.onnx"\ninputs = []\noutputs = ["s"]\n', "inputs is empty", None),
        ('path = "m.onnx"\ninputs = ["a", "a"]\noutputs = ["s"]\n', "inputs names a twice", None),
        ('path = "m.onnx"\ninputs = ["a"]\noutputs = ["model_version"]\n',
         "outputs names model_version, a column scoring keeps already", "rename the output"),
        ('path = "m.onnx"\ninputs = ["a"]\noutputs = ["a"]\n', "outputs names a", None),
        ('path = "m.onnx"\nbatch_rows = 0\n' + BASE, "batch_rows must be a positive number", None),
    ],
)  # fmt: skip
def test_a_wrong_model_table_is_refused_with_the_fix(
    tmp_path: Path, table: str, message: str, hint: str | None
) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, table)
    assert message in caught.value.message
    if hint is not None:
        assert caught.value.hint is not None
        assert hint in caught.value.hint
