"""Signatures: what a model takes and returns, and the one place inputs are validated.

A ``TensorSpec`` names a tensor, its dtype and shape (``-1`` = any size; the first
dimension is the batch). Optional ``names`` label the last axis (feature names for a
table, class labels for a probability output). ``validate`` turns decoded request arrays
into exactly what the model expects or raises ``InvalidInput`` naming the field, the
expected and the received shape/dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from modelport.errors import BatchTooLarge, EmptyBatch, InvalidInput

NamedArrays = dict[str, np.ndarray]


class ContentKind(StrEnum):
    TENSOR = "tensor"
    TABLE = "table"
    IMAGE = "image"
    AUDIO = "audio"
    TEXT = "text"


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    EMBEDDING = "embedding"
    GENERIC = "generic"


_NUMERIC_KINDS = frozenset("biuf")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    names: tuple[str, ...] | None = None
    kind: ContentKind = ContentKind.TENSOR
    allow_nonfinite: bool = False
    value_range: tuple[float, float] | None = None
    # derived once, used on every request (see ``validate``)
    np_dtype: np.dtype[Any] = field(init=False, repr=False, compare=False)
    fixed_axes: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    check_finite: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dtype = np.dtype(self.dtype)
        object.__setattr__(self, "np_dtype", dtype)
        fixed = tuple((axis, dim) for axis, dim in enumerate(self.shape) if dim != -1)
        object.__setattr__(self, "fixed_axes", fixed)
        object.__setattr__(self, "check_finite", dtype.kind == "f" and not self.allow_nonfinite)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.names is not None:
            out["names"] = list(self.names)
        if self.kind is not ContentKind.TENSOR:
            out["kind"] = self.kind.value
        if self.value_range is not None:
            out["range"] = list(self.value_range)
        return out


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    task: Task = Task.GENERIC
    labels: tuple[str, ...] | None = None
    input_names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_names", frozenset(s.name for s in self.inputs))

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def single_input(self) -> TensorSpec | None:
        return self.inputs[0] if len(self.inputs) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task.value,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out


def _shape_str(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if i == 0 and d == -1 else str(d) for i, d in enumerate(shape)) + "]"


def _cast(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    target = spec.np_dtype
    got = array.dtype
    if got == target:
        return array
    if target.kind in _NUMERIC_KINDS:
        if got.kind == "b" and target.kind != "b":
            raise InvalidInput(
                f"input '{spec.name}': expected {spec.dtype} numbers, received booleans"
            )
        if got.kind not in _NUMERIC_KINDS:
            raise InvalidInput(
                f"input '{spec.name}': expected {spec.dtype} numbers, received {_kind_word(got)}"
            )
        if (target.kind in "iu" and got.kind == "f") and (
            not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0)
        ):
            raise InvalidInput(
                f"input '{spec.name}': expected integers ({spec.dtype}), received fractions"
            )
        if target.kind in "iu":
            info = np.iinfo(target)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise InvalidInput(
                    f"input '{spec.name}': values out of range for {spec.dtype} "
                    f"[{info.min}, {info.max}]"
                )
        return array.astype(target, copy=False)
    if target.kind in "OUS":
        if got.kind not in "OUS":
            raise InvalidInput(f"input '{spec.name}': expected strings, received {_kind_word(got)}")
        return array.astype(target, copy=False)
    return array.astype(target, copy=False)


def _kind_word(dtype: np.dtype[Any]) -> str:
    return {"O": "mixed values", "U": "strings", "S": "bytes", "b": "booleans"}.get(
        dtype.kind, str(dtype)
    )


_isfinite = np.isfinite
_all = np.logical_and.reduce  # ndarray.all() without its Python-level wrapper


def _finite(array: np.ndarray) -> bool:
    """Whether a float array holds no NaN or infinity."""
    return bool(_all(_isfinite(array), axis=None))


def validate(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    *,
    max_rows: int | None = None,
    finite: bool = False,
) -> tuple[NamedArrays, int]:
    """Check and cast ``inputs`` against ``signature``; returns (arrays, batch rows).

    Runs on every request, so what can be worked out once lives on the specs
    (``np_dtype``, ``fixed_axes``, ``check_finite``, ``Signature.input_names``).
    ``finite``: the numbers in ``inputs`` are known to be finite (read by strict JSON),
    so an input that needs no cast, or is cast to float64 (or wider), skips the
    NaN/infinity scan, which costs about as much as the rest of this function. A cast to
    a narrower float still gets it: float64 to float32 can overflow to infinity."""
    if inputs.keys() != signature.input_names:
        expected = signature.input_names
        missing = sorted(expected - inputs.keys())
        unknown = sorted(inputs.keys() - expected)
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        raise InvalidInput(f"{'; '.join(parts)}; the model takes {sorted(expected)}")
    out: NamedArrays = {}
    rows: int | None = None
    for spec in signature.inputs:
        raw = inputs[spec.name]
        if raw.ndim and raw.shape[0] == 0:
            raise EmptyBatch(f"input '{spec.name}' holds no rows; send at least one")
        array = raw if raw.dtype == spec.np_dtype else _cast(spec, raw)
        shape = array.shape
        fits = len(shape) == len(spec.shape)
        if fits:
            for axis, dim in spec.fixed_axes:
                if shape[axis] != dim:
                    fits = False
                    break
        if not fits:
            raise InvalidInput(
                f"input '{spec.name}': expected shape {_shape_str(spec.shape)}, "
                f"received {list(shape)}"
            )
        n = shape[0] if shape else 1
        if rows is None:
            rows = n
        elif n != rows:
            raise InvalidInput(f"input '{spec.name}': has {n} rows but other inputs have {rows}")
        # (``array`` has the spec's dtype by now: ``check_finite`` means a float one)
        if (
            spec.check_finite
            and not (finite and (array is raw or spec.np_dtype.itemsize >= 8))
            and not _finite(array)
        ):
            raise InvalidInput(
                f"input '{spec.name}': NaN or infinite values are not allowed for this model"
            )
        if spec.value_range is not None and array.size:
            lo, hi = spec.value_range
            if array.min() < lo or array.max() > hi:
                raise InvalidInput(f"input '{spec.name}': values must lie in [{lo}, {hi}]")
        out[spec.name] = array
    if not rows:
        raise EmptyBatch("the request holds no rows; send at least one")
    if max_rows is not None and rows > max_rows:
        raise BatchTooLarge(f"the request holds {rows} rows; at most {max_rows} are allowed")
    return out, rows
