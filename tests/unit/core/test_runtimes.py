"""Each runtime loads a real artifact, infers its signature, and predicts a batch."""

from __future__ import annotations

import logging
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression

from modelport.core.discovery import RuntimeTable
from modelport.core.runtime import ModelConfig
from modelport.core.signature import Task
from modelport.errors import ConfigError

IRIS = load_iris()
LABELS = np.asarray(IRIS.target_names)[IRIS.target]


@pytest.fixture(scope="module")
def table() -> RuntimeTable:
    return RuntimeTable.discover()


def test_sklearn_joblib_classifier_infers_labels_and_warns(
    table: RuntimeTable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(IRIS.data, LABELS), path)
    with caplog.at_level(logging.WARNING):
        model = table.get(table.for_artifact(path)).load(path, ModelConfig())
    assert "pickles execute code" in caplog.text
    sig = model.signature
    assert sig.task is Task.CLASSIFICATION
    assert sig.labels == ("setosa", "versicolor", "virginica")
    assert sig.inputs[0].shape == (-1, 4)
    out = model.predict({"input": IRIS.data[:3]})
    assert out["label"].tolist() == ["setosa"] * 3
    assert out["probabilities"].shape == (3, 3)


def test_sklearn_skops_regressor_and_untrusted_types(table: RuntimeTable, tmp_path: Path) -> None:
    from skops import io as skops_io

    data = load_diabetes()
    path = tmp_path / "diabetes.skops"
    skops_io.dump(LinearRegression().fit(data.data, data.target), path)
    model = table.get("sklearn").load(path, ModelConfig())
    assert model.signature.task is Task.REGRESSION
    assert model.predict({"input": data.data[:2]})["prediction"].shape == (2,)


def test_sklearn_feature_names_from_a_dataframe_are_inferred(
    table: RuntimeTable, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(IRIS.data, columns=["a", "b", "c", "d"])
    path = tmp_path / "named.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(frame, IRIS.target), path)
    model = table.get("sklearn").load(path, ModelConfig())
    assert model.signature.inputs[0].names == ("a", "b", "c", "d")
    model.predict({"input": IRIS.data[:1]})  # no feature-name warning escapes (warnings = errors)


def test_sklearn_pipelines_starting_with_passthrough_infer_their_inputs(
    table: RuntimeTable, tmp_path: Path
) -> None:
    """scikit-learn's Pipeline reads n_features_in_ from its first step, which a
    "passthrough" (or None) step does not have: the first real step, even one inside a
    nested pipeline, says how wide a row is."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    inner = Pipeline([("skip", None), ("scale", StandardScaler())])
    for name, pipe in {
        "leading": Pipeline([("p", "passthrough"), ("lr", LogisticRegression(max_iter=500))]),
        "nested": Pipeline([("p", "passthrough"), ("pre", inner), ("lr", LogisticRegression())]),
    }.items():
        pipe.fit(IRIS.data, LABELS)
        assert getattr(pipe, "n_features_in_", None) is None  # what made inference fail
        path = tmp_path / f"{name}.joblib"
        joblib.dump(pipe, path)
        model = table.get("sklearn").load(path, ModelConfig())
        assert model.signature.inputs[0].shape == (-1, 4)
        out = model.predict({"input": IRIS.data[:5]})
        np.testing.assert_array_equal(out["probabilities"], pipe.predict_proba(IRIS.data[:5]))
        assert out["label"].tolist() == pipe.predict(IRIS.data[:5]).tolist()
        if name == "leading":  # the numpy plan covers passthrough steps, so it must be made
            assert model.plan is not None


def test_a_passthrough_first_pipeline_fitted_on_a_dataframe_keeps_its_names_quietly(
    table: RuntimeTable, tmp_path: Path
) -> None:
    """Its first real step holds the feature names: the signature names them, and rows
    sent without names raise no warning (warnings are errors here), plan or not."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(IRIS.data, columns=["a", "b", "c", "d"])
    pipe = Pipeline([("p", "passthrough"), ("s", StandardScaler()), ("lr", LogisticRegression())])
    path = tmp_path / "named.joblib"
    joblib.dump(pipe.fit(frame, IRIS.target), path)
    for compiled in (True, False):
        config = ModelConfig(options={"compile": compiled})
        model = table.get("sklearn").load(path, config)
        assert model.signature.inputs[0].names == ("a", "b", "c", "d")
        assert (model.plan is not None) is compiled
        model.predict({"input": IRIS.data[:2]})


def test_sklearn_refuses_garbage(table: RuntimeTable, tmp_path: Path) -> None:
    path = tmp_path / "junk.joblib"
    path.write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="cannot unpickle"):
        table.get("sklearn").load(path, ModelConfig())
    joblib.dump({"not": "a model"}, path)
    with pytest.raises(ConfigError, match="no predict method"):
        table.get("sklearn").load(path, ModelConfig())


def test_onnx_classifier_from_skl2onnx(table: RuntimeTable, tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    x = IRIS.data.astype(np.float32)
    clf = LogisticRegression(max_iter=500).fit(x, IRIS.target)
    path = tmp_path / "iris.onnx"
    path.write_bytes(to_onnx(clf, x[:1], options={"zipmap": False}).SerializeToString())
    model = table.get(table.for_artifact(path)).load(
        path, ModelConfig(labels=("setosa", "versicolor", "virginica"))
    )
    sig = model.signature
    assert sig.task is Task.CLASSIFICATION and sig.labels == ("setosa", "versicolor", "virginica")
    assert sig.inputs[0].dtype == "float32" and sig.inputs[0].shape == (-1, 4)
    out = model.predict({sig.inputs[0].name: x[:2]})
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(x[:2]), rtol=1e-4)


def test_onnx_generic_tensor_model(table: RuntimeTable, tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "relu.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )
    model = table.get("onnx").load(path, ModelConfig())
    assert model.signature.task is Task.GENERIC
    assert model.predict({"x": np.array([[-1, 0, 2]], dtype=np.float32)})["y"].tolist() == [
        [0, 0, 2]
    ]


def test_onnx_refuses_a_corrupt_file(table: RuntimeTable, tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="onnxruntime cannot load it"):
        table.get("onnx").load(path, ModelConfig())


def test_python_runtime(table: RuntimeTable, tmp_path: Path) -> None:
    path = tmp_path / "model.py"
    path.write_text(
        "import numpy as np\n"
        "class Model:\n"
        "    signature = {'inputs': [{'name': 'x', 'dtype': 'float32', 'shape': [-1, 2]}],\n"
        "                 'outputs': [{'name': 'total', 'dtype': 'float32', 'shape': [-1]}]}\n"
        "    def load(self, path):\n"
        "        self.bias = float((path / 'bias.txt').read_text())\n"
        "    def predict(self, inputs):\n"
        "        return {'total': inputs['x'].sum(axis=1) + self.bias}\n"
    )
    (tmp_path / "bias.txt").write_text("10")
    model = table.get(table.for_artifact(path)).load(path, ModelConfig())
    assert model.predict({"x": np.array([[1, 2]], dtype=np.float32)})["total"].tolist() == [13.0]


def test_python_runtime_needs_a_signature_and_one_class(
    table: RuntimeTable, tmp_path: Path
) -> None:
    path = tmp_path / "model.py"
    path.write_text("class A:\n    def load(self, p): pass\n    def predict(self, x): return x\n")
    with pytest.raises(ConfigError, match="give a signature"):
        table.get("python").load(path, ModelConfig())
    path.write_text("raise ImportError('boom')\n")
    with pytest.raises(ConfigError, match="importing it raised ImportError: boom"):
        table.get("python").load(path, ModelConfig())


def test_unknown_suffix_and_runtime(table: RuntimeTable) -> None:
    with pytest.raises(ConfigError, match=r"no runtime serves '\.h5' files"):
        table.for_artifact(Path("model.h5"))
    with pytest.raises(ConfigError, match="unknown runtime 'tensorflow'"):
        table.for_artifact(Path("model.h5"), "tensorflow")


def test_onnx_footprint_counts_only_the_external_files_an_entry_names_inside_its_folder(
    tmp_path: Path,
) -> None:
    """The auto worker count reads external-data entries from the raw bytes: entries that
    do not parse, or that point outside the model's folder (which ONNX refuses too), add
    nothing, and a file named twice counts once."""
    from modelport.core.runtimes.onnx import _EXTERNAL_MARKER, _external_files, footprint

    def entry(location: bytes) -> bytes:
        return _EXTERNAL_MARKER + b"\x12" + bytes([len(location)]) + location

    (tmp_path / "m.data").write_bytes(b"\0" * 5000)
    artifact = tmp_path / "m.onnx"
    artifact.write_bytes(
        b"head"
        + entry(b"m.data")
        + entry(b"./m.data")
        + entry(b"/etc/hostname")
        + entry(b"../outside.data")
        + _EXTERNAL_MARKER
        + b"\x09not-a-value"  # the marker inside other bytes: no value field follows
        + _EXTERNAL_MARKER
        + b"\x12\x7fshort"  # a length past the end of the file
    )
    assert _external_files(artifact) == {tmp_path / "m.data"}
    assert footprint(artifact) == artifact.stat().st_size + 5000
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert footprint(tmp_path / "empty.onnx") == 0
