"""Test helpers for modelport and for users' own tests: fake models and an app builder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from starlette.types import ASGIApp

from modelport.api.app import create_app
from modelport.api.services import Services
from modelport.bootstrap import build
from modelport.clock import ManualClock
from modelport.core.runtime import BaseLoadedModel, ModelConfig
from modelport.core.signature import NamedArrays, Signature, TensorSpec
from modelport.settings import load_settings

__all__ = ["FakeModel", "FakeTransport", "ManualClock", "build_test_app", "build_test_services"]

PredictFn = Callable[[NamedArrays], NamedArrays]


def _double(inputs: NamedArrays) -> NamedArrays:
    return {"y": np.asarray(inputs["x"], dtype=np.float32) * 2}


class FakeModel(BaseLoadedModel):
    """A model with a given signature whose predict is any function (default: y = 2x).

    ``calls`` records the batch size of every predict call, to observe batching.
    """

    def __init__(
        self,
        predict: PredictFn = _double,
        signature: Signature | None = None,
    ) -> None:
        self._predict = predict
        self.signature = signature or Signature(
            inputs=(TensorSpec("x", "float32", (-1, 3)),),
            outputs=(TensorSpec("y", "float32", (-1, 3)),),
        )
        self.calls: list[int] = []

    def predict(self, inputs: NamedArrays) -> NamedArrays:
        first = next(iter(inputs.values()))
        self.calls.append(int(first.shape[0]))
        return self._predict(inputs)


def build_test_services(
    models: Mapping[str, Any] | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    data_dir: Path | None = None,
    configs: Mapping[str, ModelConfig] | None = None,
) -> Services:
    """Services serving the given model objects (name → LoadedModel), with no env read."""
    flags: dict[str, Any] = {"demo": False, **(settings or {})}
    if data_dir is not None:
        flags["data_dir"] = data_dir
    services = build(load_settings(flags, env={}))
    for name, model in (models or {}).items():
        services.registry.add_object(name, model, config=(configs or {}).get(name))
    return services


def build_test_app(models: Mapping[str, Any] | None = None, **kwargs: Any) -> ASGIApp:
    return create_app(build_test_services(models, **kwargs))


class FakeTransport(asyncio.Transport):
    """Enough of a socket transport to drive modelport's ``HttpProtocol`` in-process (no
    sockets): writes are kept in ``writes``, or handed to ``on_write`` if one is given."""

    def __init__(
        self, on_write: Callable[[bytes], None] | None = None, peer_port: int = 5000
    ) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.on_write = on_write or self.writes.append
        self.closed = False
        self.eof_written = False  # write_eof(): our side is half-closed
        self.half_close = True  # what can_write_eof() says (TLS transports say False)
        self.aborted = False
        self._extra = {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", peer_port)}

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof_written:  # as uvloop and asyncio refuse it
            raise RuntimeError("Cannot call write() after write_eof()")
        self.on_write(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return self.half_close

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
