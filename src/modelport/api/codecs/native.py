"""The native v1 JSON bodies ↔ named arrays.

Request forms (``decode``):
  rows     ``{"inputs": [[5.1, 3.5, 1.4, 0.2], ...]}``               one input, one list per row
  columns  ``{"inputs": {"sepal_length": [5.1, ...], ...}}``          one list per feature
  named    ``{"inputs": {"input_a": [...], "input_b": [...]}}``       one array per model input
  records  ``{"instances": [{"sepal_length": 5.1, ...}, ...]}``       one object per row
Response rows (``encode``): a classifier gives ``{"label", "probabilities": {label: p}}``,
a regressor ``{"prediction": value}``, anything else ``{output_name: value}`` per row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import simdjson

from modelport.core.signature import NamedArrays, Signature, Task, TensorSpec
from modelport.errors import InvalidInput, MalformedRequest


def parse_json(body: bytes) -> Any:
    return read_json(body)[0]


def read_json(body: bytes) -> tuple[Any, bool]:
    """(payload, finite). ``finite``: strict JSON read it, so every number in it is a
    finite double (orjson refuses ``NaN``, ``Infinity`` and numbers that overflow), and
    the signature check may skip its NaN/infinity scan of float64 inputs."""
    if not body:
        raise MalformedRequest("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body), True
    except orjson.JSONDecodeError as exc:
        error = exc
    # Python's json.dumps writes NaN/Infinity, which strict JSON (orjson) refuses; read them
    # here, off the fast path, so the signature check can answer with a precise 422.
    try:
        return json.loads(body), False
    except (ValueError, RecursionError):
        raise MalformedRequest(f"the body is not valid JSON: {error}") from None


def read_inputs(body: bytes, signature: Signature) -> tuple[NamedArrays, bool]:
    """(inputs, finite) from a native JSON body: ``read_rows`` when it can, else
    ``read_json`` + ``decode``, which also word every error."""
    fast = read_rows(body, signature)
    if fast is not None:
        return fast, True
    payload, finite = read_json(body)
    return decode(payload, signature), finite


_EXACT = float(2**53)  # below this every integer a JSON number can spell is an exact double
_FAST_DTYPES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
_FAST_MIN_BYTES = 512  # smaller bodies read faster through orjson (measured: 30 B, 1.9 KB)
_SHARED_MAX_BYTES = 1 << 20  # bodies above this get a parser of their own (see _Parsers)
_ROWS_START = re.compile(rb'\s*\{\s*"inputs"\s*:\s*\[\s*\[')
_lowest = np.minimum.reduce
_highest = np.maximum.reduce


class _Parsers:
    """A simdjson parser sizes its buffers to the largest body it has read (~15 bytes per
    body byte) and keeps them, and a fresh one per request costs more than a small parse.
    So bodies up to 1 MiB share one parser (at most ~15 MB held per process) and larger
    ones get a parser that is dropped with them. simdjson refuses to re-parse while a
    proxy from its previous document lives; ``read_rows`` drops every proxy before it
    returns. Should one ever leak, the shared parser would refuse every later body, so a
    RuntimeError from it gets one retry on a fresh parser: if that one reads the body, it
    becomes the shared parser; if it refuses too, the body was at fault (pysimdjson files
    some parse errors, e.g. nesting too deep, as RuntimeError) and the old parser stays."""

    shared = simdjson.Parser()

    @classmethod
    def parse(cls, body: bytes) -> Any:
        if len(body) > _SHARED_MAX_BYTES:
            return simdjson.Parser().parse(body)
        try:
            return cls.shared.parse(body)
        except RuntimeError:
            fresh = simdjson.Parser()
            doc = fresh.parse(body)  # raises again when the body itself is at fault
            cls.shared = fresh
            return doc


def read_rows(body: bytes, signature: Signature) -> NamedArrays | None:
    """The commonest large body, ``{"inputs": [[x, ...], ...]}`` for a model with one
    float32 or float64 input, read straight from the JSON text into a float64 buffer by
    simdjson: no Python float per number (measured in docs/benchmarks.md, "What changed").

    Returns None, and the caller takes the general path, for anything else or anything
    unusual: a body under 512 bytes or not starting ``{"inputs": [[``, another key, rows
    that are not flat lists of numbers of one length (strings, ``true``, ``null``,
    objects, deeper lists), syntax simdjson refuses, a leading BOM. It never accepts a
    body the general path refuses, and reads what it accepts to the same numbers: it gives
    up when a value is not below 2**53 in magnitude (an integer there may round
    differently), which also keeps a cast to float32 finite. One known exception, in its
    favour: a number exactly halfway between two doubles spelled with hundreds of digits,
    which orjson 3.x rounds the wrong way and simdjson (like Python's ``float``) right."""
    spec = signature.single_input
    if spec is None or len(body) < _FAST_MIN_BYTES or spec.np_dtype not in _FAST_DTYPES:
        return None
    start = _ROWS_START.match(body)
    if start is None:
        return None
    try:
        doc = _Parsers.parse(body)
        try:
            # the prefix match made "inputs" the first key and its value a list that starts
            # with a list; any second key (a repeated "inputs" too, whose last value
            # orjson would take) is declined
            if not isinstance(doc, simdjson.Object) or len(doc) != 1:
                return None
            rows: Any = doc["inputs"]
            n = len(rows)
            # n rows in the outer list and no other "[": nothing nested deeper, which
            # as_buffer would flatten without a word. The usual body has one row, and a
            # find (a memchr) is 15 times faster than a count on 5 KB (measured).
            nested = (body.find(b"[", start.end()) != -1) if n == 1 else (body.count(b"[") != n + 1)
            if nested:
                return None
            width = len(rows[0])  # a list: the prefix match saw "[["
            if width == 0:
                return None
            if n > 1:
                for row in rows:
                    if not isinstance(row, simdjson.Array) or len(row) != width:
                        return None
            flat = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
        finally:
            row = rows = doc = None  # no proxy may outlive this call: the parser is reused
    except (ValueError, TypeError, RuntimeError, MemoryError):
        return None
    # NaN fails both comparisons. (One dot product, the sum of the squares below 2**106,
    # would be a sound single check at a third of the cost, but it warns when the sum
    # overflows, as a hostile body's 1e200 makes it do.)
    if not (flat.size == n * width and _lowest(flat) > -_EXACT and _highest(flat) < _EXACT):
        return None
    return {spec.name: flat.reshape(n, width).astype(spec.np_dtype, copy=False)}


def _array(value: Any, where: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"{where}: rows have different lengths or mixed nesting; send a rectangular array"
        ) from None
    if (
        array.dtype.kind == "O"
        and array.ndim
        and any(isinstance(v, list | dict) for v in array.flat)
    ):
        raise InvalidInput(f"{where}: rows have different lengths or mixed nesting")
    return array


def _columns(spec: TensorSpec, columns: Mapping[str, Any]) -> np.ndarray:
    assert spec.names is not None
    missing = [n for n in spec.names if n not in columns]
    unknown = [k for k in columns if k not in spec.names]
    if missing or unknown:
        raise InvalidInput(_feature_problem(missing, unknown, spec.names))
    cols = []
    length: int | None = None
    for name in spec.names:
        col = columns[name]
        if not isinstance(col, list):
            raise InvalidInput(f"feature '{name}': expected a list of values, one per row")
        if length is None:
            length = len(col)
        elif len(col) != length:
            raise InvalidInput(
                f"feature '{name}': has {len(col)} values but other features have {length}"
            )
        cols.append(col)
    return _array(cols, "inputs").T


def _feature_problem(missing: Sequence[str], unknown: Sequence[str], names: Sequence[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing feature(s) {list(missing)}")
    if unknown:
        parts.append(f"unknown feature(s) {list(unknown)}")
    return f"{'; '.join(parts)}; expected features {list(names)}"


def _records(signature: Signature, records: list[Any]) -> NamedArrays:
    spec = signature.single_input
    if records and all(isinstance(r, list) for r in records):
        if spec is None:
            raise InvalidInput("this model has several inputs: send records keyed by input name")
        return {spec.name: _array(records, "instances")}
    if not all(isinstance(r, dict) for r in records):
        raise InvalidInput("'instances' must be a list of objects (one per row)")
    if spec is not None and spec.names is not None:
        names = spec.names
        rows = []
        for i, record in enumerate(records):
            if len(record) != len(names) or any(n not in record for n in names):
                missing = [n for n in names if n not in record]
                unknown = [k for k in record if k not in names]
                raise InvalidInput(f"instances[{i}]: {_feature_problem(missing, unknown, names)}")
            rows.append([record[n] for n in names])
        return {spec.name: _array(rows, "instances")}
    input_names = [s.name for s in signature.inputs]
    out: NamedArrays = {}
    for name in input_names:
        try:
            out[name] = _array([r[name] for r in records], f"instances.{name}")
        except KeyError:
            raise InvalidInput(
                f"instances: every record needs the input(s) {input_names}"
            ) from None
    unknown = sorted({k for r in records for k in r} - set(input_names))
    if unknown:
        raise InvalidInput(f"instances: unknown input(s) {unknown}; expected {input_names}")
    return out


def decode(payload: Any, signature: Signature) -> NamedArrays:
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object with 'inputs' or 'instances'")
    has_inputs, has_instances = "inputs" in payload, "instances" in payload
    if has_inputs == has_instances:
        raise InvalidInput(
            "send exactly one of 'inputs' (rows or columns) or 'instances' (records)"
        )
    if has_instances:
        records = payload["instances"]
        if not isinstance(records, list):
            raise InvalidInput("'instances' must be a list of objects (one per row)")
        return _records(signature, records)
    inputs = payload["inputs"]
    spec = signature.single_input
    if isinstance(inputs, list):
        if spec is None:
            raise InvalidInput(
                f"this model has several inputs {[s.name for s in signature.inputs]}: "
                'send {"inputs": {name: array, ...}}'
            )
        return {spec.name: _array(inputs, "inputs")}
    if isinstance(inputs, dict):
        if spec is not None and spec.names is not None and spec.name not in inputs:
            return {spec.name: _columns(spec, inputs)}
        return {name: _array(value, f"input '{name}'") for name, value in inputs.items()}
    raise InvalidInput("'inputs' must be a list of rows or an object of columns")


def encode(signature: Signature, outputs: NamedArrays) -> list[dict[str, Any]]:
    probs = outputs.get("probabilities")
    if signature.task is Task.CLASSIFICATION and probs is not None and signature.labels:
        labels = signature.labels
        # A request is usually a row or a few: plain Python over ``tolist()`` beats a
        # NumPy call per request. ``_first_best`` picks the label argmax would.
        return [
            {
                "label": labels[_first_best(row)],
                "probabilities": dict(zip(labels, row, strict=True)),
            }
            for row in probs.tolist()
        ]
    if signature.task is Task.REGRESSION and "prediction" in outputs:
        return [{"prediction": v} for v in outputs["prediction"].tolist()]
    names = list(outputs)
    columns = [_jsonable(outputs[n]) for n in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _first_best(row: list[float]) -> int:
    """The index np.argmax gives: the first highest value, or the first NaN if there is
    one (``max`` alone skips a NaN that is not first, since every comparison with it is
    false). The sum is NaN whenever a value is, so rows without one pay a single sum."""
    total = sum(row)
    if total != total:
        for i, value in enumerate(row):
            if value != value:
                return i
    return row.index(max(row))


def _jsonable(array: np.ndarray) -> list[Any]:
    if array.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in array.tolist()]
    return list(array.tolist())
