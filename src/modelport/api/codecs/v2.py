"""Open Inference Protocol (KServe V2 / Triton) bodies ↔ named numpy arrays. Pure: no HTTP.

Request: a JSON header, optionally followed by the binary tensor data extension's raw bytes.
``Inference-Header-Content-Length`` says where the JSON ends; each binary input declares
``parameters.binary_data_size`` and takes that many bytes, in input order. Numeric tensors
are little-endian, row-major; a ``BYTES`` element is a 4-byte little-endian length, then
its bytes. In JSON, ``data`` is row-major, flat or nested; ``BYTES`` elements are strings.

Every problem with the body itself (JSON, header length, sizes, shapes, datatypes) raises
``MalformedRequest`` naming the field, before anything large is allocated; whether the
tensors fit the model is the service's ``validate`` (``InvalidInput``).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelport.core.signature import NamedArrays, Signature
from modelport.errors import (
    InvalidInput,
    MalformedRequest,
    ModelFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
)

BYTES = "BYTES"
_NUMERIC: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_BF16 = "BF16"  # binary only; widened to float32 (numpy has no bfloat16)
DATATYPES = (*_NUMERIC, _BF16, BYTES)
_DATATYPE_OF = {(dt.kind, dt.itemsize): name for name, dt in _NUMERIC.items()}
_MAX_DIMS = 32
_MAX_ELEMENTS = 1 << 40  # product of the non-zero dimensions; far past any body limit
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The V2 datatype for a numpy dtype: strings, bytes and objects are ``BYTES``."""
    if dtype.kind == "f" and dtype.itemsize not in (2, 4, 8):
        return "FP64"
    return _DATATYPE_OF.get((dtype.kind, dtype.itemsize), BYTES)


# ── request ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: follow the request's ``binary_data_output``
    classification: int = 0  # top-k classes as "score:index[:label]" strings


@dataclass(frozen=True)
class InferRequest:
    inputs: NamedArrays
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None  # None: every output
    binary_output: bool = False
    timeout_s: float | None = None


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate``, never producing more than ``limit`` bytes."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding '{coding}' is not supported; use gzip, deflate or none"
        )
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if coding == "gzip" else 0))
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MalformedRequest(f"the {coding} body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise MalformedRequest(f"the {coding} body is truncated")
    return out


def header_length(value: str | None, body_size: int) -> int | None:
    """Parse ``Inference-Header-Content-Length``: where the JSON header ends."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise MalformedRequest(
            f"header Inference-Header-Content-Length must be a non-negative integer, "
            f"received {value[:40]!r}"
        )
    length = int(value)
    if length > body_size:
        raise MalformedRequest(
            f"header Inference-Header-Content-Length is {length} but the body has only "
            f"{body_size} bytes"
        )
    return length


def parse_json_object(body: bytes | memoryview, what: str) -> dict[str, Any]:
    if not body:
        raise MalformedRequest(f"{what} is empty; send a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedRequest(f"{what} must be a JSON object")
    return payload


def decode_request(body: bytes, header_length_value: str | None = None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON + binary tensor data)."""
    view = memoryview(body)
    split = header_length(header_length_value, len(body))
    header = view if split is None else view[:split]
    binary = view[len(view) :] if split is None else view[split:]
    payload = parse_json_object(header, "the inference request")

    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MalformedRequest("'id' must be a string")
    params = _object(payload.get("parameters"), "parameters")
    binary_output = _flag(params.get("binary_data_output"), "parameters.binary_data_output")
    timeout = params.get("timeout")  # Triton: microseconds
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise MalformedRequest("'parameters.timeout' must be a non-negative integer (µs)")

    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise MalformedRequest("'inputs' must be a non-empty array of tensors")
    inputs: NamedArrays = {}
    offset = 0
    for i, raw in enumerate(raw_inputs):
        name, array, used = _decode_input(raw, i, binary, offset)
        if name in inputs:
            raise MalformedRequest(f"input '{name}' is given twice")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise MalformedRequest(
            f"the binary section has {len(binary)} bytes but the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return InferRequest(
        inputs=inputs,
        id=request_id,
        outputs=_requested_outputs(payload.get("outputs")),
        binary_output=bool(binary_output),
        timeout_s=min(timeout / 1e6, 3600.0) if timeout else None,
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedRequest(f"'{where}' must be a JSON object")
    return value


def _flag(value: Any, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise MalformedRequest(f"'{where}' must be true or false")
    return value


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) > _MAX_DIMS:
        raise MalformedRequest(f"{where}: 'shape' must be an array of at most {_MAX_DIMS} sizes")
    for dim in raw:
        if type(dim) is not int or dim < 0:
            raise MalformedRequest(
                f"{where}: 'shape' must hold non-negative integers, received {str(dim)[:40]!r}"
            )
    if math.prod(d for d in raw if d) > _MAX_ELEMENTS:
        raise MalformedRequest(f"{where}: shape {raw} is too large")
    return tuple(raw)


def _decode_input(
    raw: Any, index: int, binary: memoryview, offset: int
) -> tuple[str, np.ndarray, int]:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise MalformedRequest(f"{where} must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedRequest(f"{where}: 'name' must be a non-empty string")
    where = f"input '{name}'"
    shape = _shape(raw.get("shape"), where)
    datatype = raw.get("datatype")
    if datatype is None:
        raise MalformedRequest(f"{where}: 'datatype' is missing; one of {list(DATATYPES)}")
    if datatype not in DATATYPES:
        raise MalformedRequest(
            f"{where}: unknown datatype {str(datatype)[:40]!r}; expected one of {list(DATATYPES)}"
        )
    params = _object(raw.get("parameters"), f"{where}.parameters")
    if "shared_memory_region" in params:
        raise MalformedRequest(f"{where}: the shared memory extension is not supported")
    size = params.get("binary_data_size")
    has_data = "data" in raw
    if size is None:
        if not has_data:
            raise MalformedRequest(f"{where}: give 'data' or parameters.binary_data_size")
        return name, _from_json(raw["data"], shape, datatype, where), 0
    if has_data:
        raise MalformedRequest(f"{where}: give either 'data' or binary_data_size, not both")
    if type(size) is not int or size < 0:
        raise MalformedRequest(f"{where}: binary_data_size must be a non-negative integer")
    if offset + size > len(binary):
        raise MalformedRequest(
            f"{where}: binary_data_size is {size} but only {len(binary) - offset} bytes of "
            "binary data remain"
        )
    chunk = binary[offset : offset + size]
    return name, _from_binary(chunk, shape, datatype, where), size


def _from_binary(
    chunk: memoryview, shape: tuple[int, ...], datatype: str, where: str
) -> np.ndarray:
    count = math.prod(shape)
    if datatype == BYTES:
        return _bytes_elements(chunk, count, where).reshape(shape)
    dtype = np.dtype("<u2") if datatype == _BF16 else _NUMERIC[datatype]
    if count * dtype.itemsize != len(chunk):
        raise MalformedRequest(
            f"{where}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(chunk)}"
        )
    array = np.frombuffer(chunk, dtype=dtype)
    if datatype == "BOOL":
        array = array.view(np.uint8) != 0
    elif datatype == _BF16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.reshape(shape)


def _bytes_elements(chunk: memoryview, count: int, where: str) -> np.ndarray:
    if count * 4 > len(chunk):
        raise MalformedRequest(
            f"{where}: {count} BYTES elements need at least {count * 4} bytes, "
            f"binary_data_size is {len(chunk)}"
        )
    out = np.empty(count, dtype=object)
    data = chunk.tobytes()
    unpack = struct.unpack_from
    pos, end = 0, len(data)
    for i in range(count):
        if pos + 4 > end:
            raise MalformedRequest(f"{where}: BYTES element {i} is cut off")
        (n,) = unpack("<I", data, pos)
        pos += 4
        if pos + n > end:
            raise MalformedRequest(
                f"{where}: BYTES element {i} declares {n} bytes, only {end - pos} remain"
            )
        out[i] = data[pos : pos + n]
        pos += n
    if pos != end:
        raise MalformedRequest(
            f"{where}: {end - pos} bytes are left over after the {count} BYTES elements"
        )
    return out


def _from_json(data: Any, shape: tuple[int, ...], datatype: str, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise MalformedRequest(f"{where}: 'data' must be an array")
    count = math.prod(shape)
    if datatype == BYTES:
        try:
            array = np.array(data, dtype=object)
        except (ValueError, TypeError, RecursionError):
            raise MalformedRequest(
                f"{where}: 'data' is not a rectangular array of BYTES strings"
            ) from None
        flat = array.reshape(-1)
        if not all(isinstance(v, str) for v in flat):
            raise MalformedRequest(f"{where}: BYTES data must be an array of strings")
        return _sized(flat, count, shape, where)
    if datatype == _BF16:
        raise MalformedRequest(f"{where}: BF16 tensors must be sent as binary data")
    target = _NUMERIC[datatype]
    try:
        array = np.array(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise MalformedRequest(
            f"{where}: 'data' is not a rectangular array of {datatype} values"
        ) from None
    if array.size == 0:
        return _sized(array.astype(target), count, shape, where)
    kind = array.dtype.kind
    if target.kind in "iu" and kind in "fO":
        # numpy promotes a mix like [-1, 2**63] to float64 (or object): read them exactly
        return _sized(_exact_integers(data, target, datatype, where), count, shape, where)
    if target.kind == "b":
        if kind != "b":
            raise MalformedRequest(f"{where}: BOOL data must be true/false")
    elif kind not in ("iu" if target.kind in "iu" else "iuf"):
        expected = "integers" if target.kind in "iu" else "numbers"
        raise MalformedRequest(f"{where}: {datatype} data must be {expected}")
    elif target.kind in "iu" and target != array.dtype:
        info = np.iinfo(target)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise MalformedRequest(
                f"{where}: values out of range for {datatype} [{info.min}, {info.max}]"
            )
    if array.dtype != target:
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(target)
    return _sized(array.reshape(-1), count, shape, where)


def _exact_integers(
    data: list[Any], target: np.dtype[Any], datatype: str, where: str
) -> np.ndarray:
    try:
        flat = np.array(data, dtype=object).reshape(-1).tolist()
    except (ValueError, TypeError, RecursionError):
        flat = [None]
    if not all(type(v) is int for v in flat):
        raise MalformedRequest(f"{where}: {datatype} data must be integers")
    try:
        return np.array(flat, dtype=target)
    except OverflowError:
        info = np.iinfo(target)
        raise MalformedRequest(
            f"{where}: values out of range for {datatype} [{info.min}, {info.max}]"
        ) from None


def _sized(flat: np.ndarray, count: int, shape: tuple[int, ...], where: str) -> np.ndarray:
    if flat.size != count:
        raise MalformedRequest(
            f"{where}: shape {list(shape)} holds {count} elements, 'data' has {flat.size}"
        )
    return flat.reshape(shape)


def _requested_outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise MalformedRequest("'outputs' must be an array of {name, parameters} objects")
    out: list[RequestedOutput] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedRequest(f"outputs[{i}] must be an object with a string 'name'")
        name = item["name"]
        if name in seen:
            raise MalformedRequest(f"output '{name}' is requested twice")
        seen.add(name)
        params = _object(item.get("parameters"), f"outputs[{i}].parameters")
        if "shared_memory_region" in params:
            raise MalformedRequest(f"output '{name}': the shared memory extension is not supported")
        top = params.get("classification", 0)
        if type(top) is not int or top < 0:
            raise MalformedRequest(f"output '{name}': 'classification' must be a count >= 0")
        binary = _flag(params.get("binary_data"), f"outputs[{i}].parameters.binary_data")
        out.append(RequestedOutput(name, binary, top))
    return tuple(out)


def check_outputs(request: InferRequest, signature: Signature) -> None:
    """Refuse requested outputs the model does not have, before running it."""
    if request.outputs is None:
        return
    names = [spec.name for spec in signature.outputs]
    unknown = [o.name for o in request.outputs if o.name not in names]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; the model returns {names}")


def model_inputs(inputs: NamedArrays, signature: Signature) -> NamedArrays:
    """BYTES tensors as the model's string type: ``str`` for str/object inputs, else bytes."""
    out = dict(inputs)
    for name, array in inputs.items():
        if array.dtype.kind != "O":
            continue
        try:
            target = signature.input(name).np_dtype
        except KeyError:
            continue  # the service names unknown inputs
        if target.kind in "biuf":
            raise InvalidInput(
                f"input '{name}': the model expects {target} ({datatype_of(target)}), "
                "received BYTES"
            )
        flat = array.reshape(-1)
        if target.kind == "S":
            values: list[Any] = [v.encode() if isinstance(v, str) else v for v in flat]
            out[name] = np.array(values, dtype=np.bytes_).reshape(array.shape)
            continue
        try:
            values = [v if isinstance(v, str) else v.decode("utf-8") for v in flat]
        except UnicodeDecodeError:
            raise InvalidInput(f"input '{name}': the model takes text; send UTF-8") from None
        if target.kind == "U":
            out[name] = np.array(values, dtype=np.str_).reshape(array.shape)
        else:
            converted = np.empty(len(values), dtype=object)
            converted[:] = values
            out[name] = converted.reshape(array.shape)
    return out


# ── response ─────────────────────────────────────────────────────────────────


def encode_response(
    *,
    model: str,
    version: str,
    outputs: Mapping[str, np.ndarray],
    request: InferRequest,
    labels: Mapping[str, Sequence[str]] | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    wanted = request.outputs
    if wanted is None:
        wanted = tuple(RequestedOutput(name, None) for name in outputs)
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for req in wanted:
        array = outputs.get(req.name)
        if array is None:
            raise ModelFailed(f"the model returned no output '{req.name}'")
        if req.classification:
            array = _classify(array, req.classification, (labels or {}).get(req.name), req.name)
        binary = request.binary_output if req.binary is None else req.binary
        tensor, blob = _encode_tensor(req.name, array, binary)
        tensors.append(tensor)
        if blob is not None:
            blobs.append(blob)
    body: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id is not None:
        body["id"] = request.id
    body["outputs"] = tensors
    header = orjson.dumps(body, option=_JSON_OPTS)
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)


def _encode_tensor(
    name: str, array: np.ndarray, binary: bool
) -> tuple[dict[str, Any], bytes | None]:
    datatype = datatype_of(array.dtype)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    if datatype == BYTES:
        if binary:
            blob = _serialize_bytes(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            return tensor, blob
        tensor["data"] = _texts(array)
        return tensor, None
    if datatype == "FP64" and array.dtype.itemsize != 8:
        array = array.astype(np.float64)
    if binary:
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        blob = little.tobytes()
        tensor["parameters"] = {"binary_data_size": len(blob)}
        return tensor, blob
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    tensor["data"] = np.ascontiguousarray(array).reshape(-1)
    return tensor, None


def _element_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _serialize_bytes(array: np.ndarray) -> bytes:
    flat = array.reshape(-1).tolist()
    if array.dtype.kind == "U":
        items = [s.encode("utf-8") for s in flat]
    else:
        items = [_element_bytes(v) for v in flat]
    pack = struct.Struct("<I").pack
    return b"".join(part for item in items for part in (pack(len(item)), item))


def _texts(array: np.ndarray) -> list[str]:
    flat = array.reshape(-1).tolist()
    if array.dtype.kind == "U":
        return list(flat)
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]


def _classify(array: np.ndarray, top: int, labels: Sequence[str] | None, name: str) -> np.ndarray:
    """Triton's classification extension: the top ``top`` classes as "score:index[:label]"."""
    if array.dtype.kind not in "biuf" or array.ndim not in (1, 2):
        raise InvalidInput(f"output '{name}': classification needs a [batch, classes] score")
    scores = array if array.ndim == 2 else array[np.newaxis, :]
    k = min(top, scores.shape[1])
    order = np.argsort(-scores.astype(np.float64), axis=1, kind="stable")[:, :k]
    rows = []
    for row, idx in zip(scores.tolist(), order.tolist(), strict=True):
        rows.append(
            [
                f"{row[j]:f}:{j}:{labels[j]}" if labels and j < len(labels) else f"{row[j]:f}:{j}"
                for j in idx
            ]
        )
    result = np.array(rows, dtype=object).reshape(len(rows), k)
    return result if array.ndim == 2 else result[0]
