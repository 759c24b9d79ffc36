"""Build the benchmark models and their request bodies.

M1: scikit-learn Pipeline(StandardScaler, LogisticRegression) on iris, string labels.
M2: ONNX MLP 256 -> 4 x 1024 (ReLU) -> 10, float32, built with the ``onnx`` helper API.

Usage: ``python benchmarks/models.py [DIR]`` (default ``benchmarks/.work``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DIR = Path(__file__).resolve().parent / ".work"
M2_IN, M2_HIDDEN, M2_LAYERS, M2_OUT = 256, 1024, 4, 10
OPSET = 17
SEED = 20240601


@dataclass(frozen=True)
class ModelFiles:
    """Paths for one benchmark model: the artifact and the two request bodies."""

    key: str
    model: Path
    native_body: Path
    fastapi_body: Path
    n_features: int

    @property
    def stem(self) -> str:
        return self.model.stem


def _write_bodies(row: list[float], native: Path, fastapi: Path) -> None:
    native.write_text(json.dumps({"inputs": [row]}, separators=(",", ":")))
    fastapi.write_text(json.dumps({"features": row}, separators=(",", ":")))


def build_m1(directory: Path) -> ModelFiles:
    """Train and save the iris pipeline with string class labels."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    iris = load_iris()
    labels = np.asarray(iris.target_names)[iris.target]
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))])
    pipe.fit(iris.data, labels)
    files = ModelFiles(
        key="m1",
        model=directory / "m1_iris.joblib",
        native_body=directory / "m1_body_native.json",
        fastapi_body=directory / "m1_body_fastapi.json",
        n_features=4,
    )
    joblib.dump(pipe, files.model)
    _write_bodies([5.1, 3.5, 1.4, 0.2], files.native_body, files.fastapi_body)
    return files


def _gemm_layer(
    idx: int, src: str, n_in: int, n_out: int, rng: np.random.Generator, relu: bool
) -> tuple[list[object], list[object], str]:
    from onnx import helper, numpy_helper

    w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
    b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
    w_name, b_name = f"W{idx}", f"B{idx}"
    inits = [numpy_helper.from_array(w, w_name), numpy_helper.from_array(b, b_name)]
    gemm_out = f"gemm{idx}" if relu else "output"
    nodes = [helper.make_node("Gemm", [src, w_name, b_name], [gemm_out], name=f"gemm_{idx}")]
    if not relu:
        return nodes, inits, gemm_out
    relu_out = f"relu{idx}"
    nodes.append(helper.make_node("Relu", [gemm_out], [relu_out], name=f"relu_{idx}"))
    return nodes, inits, relu_out


def build_m2(directory: Path) -> ModelFiles:
    """Build the MLP with seeded random weights and save it as ONNX (opset 17)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(SEED)
    nodes: list[object] = []
    inits: list[object] = []
    src, width = "input", M2_IN
    for i in range(M2_LAYERS):
        n, t, src = _gemm_layer(i, src, width, M2_HIDDEN, rng, relu=True)
        nodes += n
        inits += t
        width = M2_HIDDEN
    n, t, _ = _gemm_layer(M2_LAYERS, src, width, M2_OUT, rng, relu=False)
    nodes += n
    inits += t
    graph = helper.make_graph(
        nodes,
        "m2_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", M2_IN])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", M2_OUT])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    files = ModelFiles(
        key="m2",
        model=directory / "m2_mlp.onnx",
        native_body=directory / "m2_body_native.json",
        fastapi_body=directory / "m2_body_fastapi.json",
        n_features=M2_IN,
    )
    onnx.save(model, str(files.model))
    row = [round(float(v), 4) for v in np.random.default_rng(SEED + 1).standard_normal(M2_IN)]
    _write_bodies(row, files.native_body, files.fastapi_body)
    return files


BUILDERS = {"m1": build_m1, "m2": build_m2}


def build(keys: list[str], directory: Path = DEFAULT_DIR) -> dict[str, ModelFiles]:
    """Build the requested models (``m1``, ``m2``) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return {key: BUILDERS[key](directory) for key in keys}


def main(argv: list[str]) -> int:
    directory = Path(argv[0]) if argv else DEFAULT_DIR
    for files in build(list(BUILDERS), directory).values():
        print(f"{files.key}: {files.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
