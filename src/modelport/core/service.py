"""``InferenceService``: the one way to run a prediction, whatever the transport.

The native, V2 and OpenAI routers, the CLI's ``predict`` and the Ray adapter all translate
their requests into ``predict(model, version, inputs)`` and its result back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from modelport.clock import Clock
from modelport.core.registry import Registry, ServedVersion
from modelport.core.signature import NamedArrays, Signature, validate


@dataclass(slots=True)  # one per request: a frozen dataclass's __init__ costs 4x
class Prediction:
    model: str
    version: str
    signature: Signature
    outputs: NamedArrays
    rows: int


class Pending:
    """A queued prediction: its future resolves to the outputs. (A plain slotted class:
    one is made per request, and a frozen dataclass's ``__init__`` costs several times
    as much.)"""

    __slots__ = ("future", "rows", "served")

    def __init__(
        self, served: ServedVersion, rows: int, future: asyncio.Future[NamedArrays]
    ) -> None:
        self.served = served
        self.rows = rows
        self.future = future

    def result(self, outputs: NamedArrays) -> Prediction:
        served = self.served
        assert served.signature is not None
        return Prediction(served.model, served.version, served.signature, outputs, self.rows)


class InferenceService:
    def __init__(
        self, registry: Registry, clock: Clock, *, default_timeout_s: float, max_request_rows: int
    ) -> None:
        self.registry = registry
        self._clock = clock
        self._default_timeout_s = default_timeout_s
        self._max_rows = max_request_rows

    def target(self, model: str, version: str | None = None) -> ServedVersion:
        """The ready version a request for ``model`` (and version/alias) would run on."""
        return self.registry.resolve(model, version)

    async def predict(
        self,
        model: str,
        version: str | None,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout_s: float | None = None,
        served: ServedVersion | None = None,
    ) -> Prediction:
        pending = self.enqueue(model, version, inputs, timeout_s=timeout_s, served=served)
        return pending.result(await pending.future)

    def enqueue(
        self,
        model: str,
        version: str | None,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout_s: float | None = None,
        served: ServedVersion | None = None,
        finite: bool = False,
    ) -> Pending:
        """Validate and queue without waiting (``predict`` awaits this; the HTTP protocol's
        direct path adds a callback instead). Raises at once for invalid input, a full
        queue or a model that is not ready. ``finite``: the caller vouches that the inputs'
        numbers hold no NaN or infinity (they came from strict JSON; see ``validate``)."""
        served = served or self.registry.resolve(model, version)
        assert served.signature is not None and served.batcher is not None
        arrays, rows = validate(served.signature, inputs, max_rows=self._max_rows, finite=finite)
        timeout = self._default_timeout_s if timeout_s is None else timeout_s
        future = served.batcher.enqueue(arrays, rows, self._clock.now() + timeout)
        return Pending(served, rows, future)
