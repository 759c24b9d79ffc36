"""The runtime seam: one module per model format implements ``Runtime``.

``Runtime.load`` does the I/O and returns a ``LoadedModel``; constructing a runtime does
nothing. ``LoadedModel.predict`` takes a batch of named arrays (already validated against
``signature``) and returns named arrays with the same number of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelport.core.signature import NamedArrays, Signature


class Isolation(StrEnum):
    THREAD = "thread"
    PROCESS = "process"


@dataclass(frozen=True)
class BatchingOverrides:
    max_batch_size: int | None = None
    max_delay_ms: float | None = None
    preferred_batch_size: int | None = None
    max_queue: int | None = None
    enabled: bool | None = None


@dataclass(frozen=True)
class ModelConfig:
    """What model.yaml (or defaults) says about one model; shared by its versions."""

    runtime: str | None = None
    signature: dict[str, Any] | None = None
    batching: BatchingOverrides = BatchingOverrides()
    isolation: Isolation = Isolation.THREAD
    threads: int | None = None
    labels: tuple[str, ...] | None = None
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    trusted_types: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LoadedModel(Protocol):
    @property
    def signature(self) -> Signature: ...

    def predict(self, inputs: NamedArrays) -> NamedArrays: ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


class Runtime(Protocol):
    name: str

    def load(self, artifact: Path, config: ModelConfig) -> LoadedModel: ...


def example_batch(signature: Signature, rows: int = 1) -> NamedArrays:
    """A harmless batch that fits the signature (zeros / empty strings), for warm-up."""
    batch: NamedArrays = {}
    for spec in signature.inputs:
        shape = (rows, *(d if d > 0 else 1 for d in spec.row_shape))
        if spec.np_dtype.kind in "OUS":
            batch[spec.name] = np.full(shape, "", dtype=spec.np_dtype)
        else:
            low = spec.value_range[0] if spec.value_range else 0
            batch[spec.name] = np.full(shape, low, dtype=spec.np_dtype)
    return batch


class BaseLoadedModel:
    """Default warm-up (one example batch) and close (nothing) for runtimes to inherit."""

    signature: Signature
    # True when predict spends its time in native code that releases the GIL, so running it
    # in a thread lets the event loop work meanwhile (see core/executors.py).
    releases_gil: bool = False
    # A runtime that can run a one-row batch on more threads (the idle HTTP workers' cores,
    # core/busy.py) sets this to a predict that does, with the same answers.
    predict_lone: Callable[[NamedArrays], NamedArrays] | None = None

    def predict(self, inputs: NamedArrays) -> NamedArrays:  # pragma: no cover - abstract
        raise NotImplementedError

    def warmup(self) -> None:
        self.predict(example_batch(self.signature))

    def close(self) -> None:
        return None
