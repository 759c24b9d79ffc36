"""Custom Python models: ``model.py`` with a class that has ``load(path)`` and ``predict(inputs)``.

The class is instantiated with no arguments, ``load`` receives the version folder, and
``predict`` receives and returns ``dict[str, numpy.ndarray]`` for a whole batch. The
signature comes from a ``signature`` attribute (a mapping like model.yaml's) or model.yaml.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelport.core.runtime import BaseLoadedModel, ModelConfig
from modelport.core.signature import NamedArrays, Signature
from modelport.core.signature_spec import signature_from_mapping
from modelport.errors import ConfigError


class PythonModel(BaseLoadedModel):
    def __init__(self, obj: Any, signature: Signature) -> None:
        self._obj = obj
        self.signature = signature

    def predict(self, inputs: NamedArrays) -> NamedArrays:
        result = self._obj.predict(inputs)
        if not isinstance(result, Mapping):
            if len(self.signature.outputs) == 1:
                return {self.signature.outputs[0].name: np.asarray(result)}
            raise TypeError("predict must return a dict of arrays")
        return {str(k): np.asarray(v) for k, v in result.items()}

    def close(self) -> None:
        closer = getattr(self._obj, "close", None)
        if callable(closer):
            closer()


def _find_class(module: Any, path: Path) -> type[Any]:
    candidates = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__
        and callable(getattr(obj, "load", None))
        and callable(getattr(obj, "predict", None))
    ]
    named = [c for c in candidates if c.__name__ == "Model"]
    if named:
        return named[0]
    if len(candidates) != 1:
        raise ConfigError(
            f"{path}: define exactly one class with load() and predict() (or name it Model); "
            f"found {[c.__name__ for c in candidates]}"
        )
    return candidates[0]


class PythonRuntime:
    name = "python"

    def load(self, artifact: Path, config: ModelConfig) -> PythonModel:
        module_name = f"modelport_user_{abs(hash(str(artifact.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, artifact)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{artifact}: cannot import")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(
                f"{artifact}: importing it raised {type(exc).__name__}: {exc}"
            ) from exc
        obj = _find_class(module, artifact)()
        obj.load(artifact.parent)
        raw = config.signature or getattr(obj, "signature", None)
        if isinstance(raw, Signature):
            signature = raw
        elif isinstance(raw, Mapping):
            signature = signature_from_mapping(raw, str(artifact))
        else:
            raise ConfigError(
                f"{artifact}: give a signature (a 'signature' attribute or model.yaml)"
            )
        return PythonModel(obj, signature)
