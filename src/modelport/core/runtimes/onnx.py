"""ONNX models through onnxruntime; the signature is read from the graph."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.runtime import BaseLoadedModel, ModelConfig
from modelport.core.signature import NamedArrays, Signature, Task, TensorSpec
from modelport.errors import ConfigError, MissingExtra

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("onnx", "onnxruntime") from exc

_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}
# skl2onnx names for a classifier exported with zipmap=False
_LABEL_NAMES = ("output_label", "label")
_PROBA_NAMES = ("output_probability", "probabilities")


def _spec(arg: Any) -> TensorSpec | None:
    dtype = _ONNX_DTYPES.get(arg.type)
    if dtype is None:
        return None  # sequences / maps (e.g. ZipMap) are not served as tensors
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or [-1]))
    return TensorSpec(name=arg.name, dtype=dtype, shape=shape)


class OnnxModel(BaseLoadedModel):
    releases_gil = True  # onnxruntime drops the GIL for the whole session.run

    def __init__(self, session: Any, signature: Signature, rename: dict[str, str]) -> None:
        self._session = session
        self.signature = signature
        self._rename = rename  # graph output name -> served name
        self._output_names = list(rename)

    def predict(self, inputs: NamedArrays) -> NamedArrays:
        results = self._session.run(self._output_names, inputs)
        return {
            self._rename[name]: np.asarray(value)
            for name, value in zip(self._output_names, results, strict=True)
        }


class OnnxRuntime:
    name = "onnx"

    def load(self, artifact: Path, config: ModelConfig) -> OnnxModel:
        options = ort.SessionOptions()
        # default: every core this process may run on (taskset/cgroup affinity respected)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        options.intra_op_num_threads = int(config.options.get("intra_op_threads", cores))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        wanted = config.options.get("providers") or ["CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        try:
            session = ort.InferenceSession(
                str(artifact), sess_options=options, providers=providers or None
            )
        except Exception as exc:
            raise ConfigError(f"{artifact.name}: onnxruntime cannot load it: {exc}") from exc
        inputs = tuple(s for s in (_spec(a) for a in session.get_inputs()) if s is not None)
        if len(inputs) != len(session.get_inputs()):
            raise ConfigError(f"{artifact.name}: graph inputs must be tensors")
        outputs = [s for s in (_spec(a) for a in session.get_outputs()) if s is not None]
        names = {s.name for s in outputs}
        label = next((n for n in _LABEL_NAMES if n in names), None)
        proba = next((n for n in _PROBA_NAMES if n in names), None)
        if label and proba:
            rename = {label: "label", proba: "probabilities"}
            by_name = {s.name: s for s in outputs}
            n_classes = by_name[proba].shape[-1]
            labels = config.labels or (
                tuple(str(i) for i in range(n_classes)) if n_classes > 0 else None
            )
            signature = Signature(
                inputs=inputs,
                outputs=(
                    TensorSpec("label", by_name[label].dtype, (-1,)),
                    TensorSpec(
                        "probabilities", by_name[proba].dtype, (-1, n_classes), names=labels
                    ),
                ),
                task=Task.CLASSIFICATION,
                labels=labels,
            )
        else:
            rename = {s.name: s.name for s in outputs}
            signature = Signature(inputs=inputs, outputs=tuple(outputs))
        return OnnxModel(session, signature, rename)
