"""Open Inference Protocol (KServe V2) over REST, in-process: metadata, JSON and binary
tensors of every datatype, requested outputs, and a precise 4xx for every malformed body."""

from __future__ import annotations

import gzip
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from tritonclient.http import InferResult

from modelport.api.codecs import v2 as codec
from modelport.core.signature import NamedArrays, Signature, TensorSpec
from modelport.testing import FakeModel, build_test_app
from tests.conftest import wait_ready

INFER = "/v2/models/iris/infer"
SETOSA = [5.1, 3.5, 1.4, 0.2]
HEADER = "Inference-Header-Content-Length"

NUMERIC: dict[str, type[Any]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def iris_json(**extra: Any) -> dict[str, Any]:
    return {"inputs": [tensor("input", "FP64", [1, 4], SETOSA)], **extra}


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + b"".join(blobs), {HEADER: str(len(head))}


def iris_binary(datatype: str = "FP32", **extra: Any) -> tuple[bytes, dict[str, str]]:
    raw = np.array([SETOSA], dtype=NUMERIC[datatype]).tobytes()
    spec = {
        "name": "input",
        "datatype": datatype,
        "shape": [1, 4],
        "parameters": {"binary_data_size": len(raw)},
    }
    return binary_body({"inputs": [spec], **extra}, raw)


def result_of(response: Any) -> InferResult:
    """Read a response the way NVIDIA's tritonclient does."""
    assert response.status_code == 200, response.text
    size = response.headers.get(HEADER)
    return InferResult.from_response_body(
        response.content, header_length=int(size) if size is not None else None
    )


def assert_setosa(result: InferResult) -> None:
    label = result.as_numpy("label")
    assert label is not None and label.shape == (1,)
    assert label[0] in ("setosa", b"setosa")
    probs = result.as_numpy("probabilities")
    assert probs is not None and probs.shape == (1, 3)
    assert probs.sum() == pytest.approx(1.0)
    assert probs[0, 0] > 0.9


def assert_v2_error(response: Any, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    assert "Traceback" not in response.text
    return str(body["error"])


# ── health, server and model metadata ──────────────────────────────────────────


def test_server_metadata_and_health(demo_client: TestClient) -> None:
    meta = demo_client.get("/v2").json()
    assert meta["name"] == "modelport" and "binary_tensor_data" in meta["extensions"]
    assert demo_client.get("/v2/health/live").status_code == 200
    assert demo_client.get("/v2/health/ready").status_code == 200


def test_model_metadata_maps_dtypes_to_v2(demo_client: TestClient) -> None:
    for path in ("/v2/models/iris", "/v2/models/iris/versions/1"):
        meta = demo_client.get(path).json()
        assert meta == {
            "name": "iris",
            "versions": ["1"],
            "platform": "sklearn",
            "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
            "outputs": [
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
            ],
        }
    digits = demo_client.get("/v2/models/digits").json()
    assert digits["outputs"][0] == {"name": "label", "datatype": "INT64", "shape": [-1]}


def test_model_config_is_triton_shaped(demo_client: TestClient) -> None:
    config = demo_client.get("/v2/models/iris/config").json()
    assert config["max_batch_size"] > 0
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP64", "dims": [4]}]
    assert config["output"][0] == {"name": "label", "data_type": "TYPE_STRING", "dims": []}


def test_model_ready(demo_client: TestClient) -> None:
    assert demo_client.get("/v2/models/iris/ready").status_code == 200
    assert demo_client.get("/v2/models/iris/versions/1/ready").status_code == 200
    assert_v2_error(demo_client.get("/v2/models/nope/ready"), 404, "nope")
    assert_v2_error(demo_client.get("/v2/models/iris/versions/7/ready"), 404, "'7'")
    assert_v2_error(demo_client.get("/v2/models/nope"), 404, "nope")


def test_a_failed_model_is_not_ready(tmp_path: Path) -> None:
    class Broken(FakeModel):
        def warmup(self) -> None:
            raise RuntimeError("cannot load")

    app = build_test_app({"broken": Broken(), "ok": FakeModel()}, data_dir=tmp_path)
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/v2/models/ok/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert_v2_error(client.get("/v2/models/broken/ready"), 400, "failed")
        assert_v2_error(client.get("/v2/health/ready"), 400)
        assert client.get("/v2/health/live").status_code == 200
        assert_v2_error(client.get("/v2/models/broken"), 503, "metadata")
        index = client.post("/v2/repository/index").json()
        assert {"name": "ok", "version": "1", "state": "READY"} in index
        broken = next(e for e in index if e["name"] == "broken")
        assert broken["state"] == "UNAVAILABLE" and "server log" in broken["reason"]
        assert "cannot load" not in broken["reason"]  # the load error: log and admin API only
        ready = client.post("/v2/repository/index", json={"ready": True}).json()
        assert [e["name"] for e in ready] == ["ok"]
        assert_v2_error(client.post("/v2/repository/index", json={"ready": 1}), 400, "ready")


def test_repository_index(demo_client: TestClient) -> None:
    index = demo_client.post("/v2/repository/index").json()
    assert [(e["name"], e["state"]) for e in index] == [
        ("diabetes", "READY"),
        ("digits", "READY"),
        ("iris", "READY"),
    ]
    assert_v2_error(demo_client.post("/v2/repository/index", content=b"[1"), 400, "JSON")


# ── infer on the iris demo: JSON and binary, read back as tritonclient does ───────


def test_infer_json(demo_client: TestClient) -> None:
    r = demo_client.post(INFER, json=iris_json(id="req-1"))
    assert r.headers["content-type"] == "application/json"
    assert HEADER.lower() not in r.headers
    body = r.json()
    assert body["model_name"] == "iris" and body["model_version"] == "1"
    assert body["id"] == "req-1"
    assert body["outputs"][0] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [1],
        "data": ["setosa"],
    }
    assert_setosa(result_of(r))
    assert r.headers["x-model-version"] == "1"


def test_infer_without_id_has_no_id(demo_client: TestClient) -> None:
    assert "id" not in demo_client.post(INFER, json=iris_json()).json()


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT64"])
def test_infer_casts_numeric_inputs_to_the_model_dtype(
    demo_client: TestClient, datatype: str
) -> None:
    data = [5, 3, 1, 0] if datatype == "INT64" else SETOSA
    r = demo_client.post(INFER, json={"inputs": [tensor("input", datatype, [1, 4], data)]})
    assert result_of(r).as_numpy("label")[0] == "setosa"


def test_infer_nested_data_is_accepted(demo_client: TestClient) -> None:
    r = demo_client.post(INFER, json={"inputs": [tensor("input", "FP64", [1, 4], [SETOSA])]})
    assert_setosa(result_of(r))


def test_infer_matches_the_native_api(demo_client: TestClient) -> None:
    rows = [SETOSA, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    native = demo_client.post("/v1/models/iris/predict", json={"inputs": rows}).json()["outputs"]
    flat = [v for row in rows for v in row]
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": [3, 4],
                    "parameters": {"binary_data_size": 96},
                }
            ],
            "parameters": {"binary_data_output": True},
        },
        np.array(flat, dtype="<f8").tobytes(),
    )
    result = result_of(demo_client.post(INFER, content=body, headers=headers))
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == [row["label"] for row in native] == ["setosa", "virginica", "versicolor"]
    probs = result.as_numpy("probabilities")
    expected = [list(row["probabilities"].values()) for row in native]
    np.testing.assert_allclose(probs, expected)


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_infer_binary_input(demo_client: TestClient, datatype: str) -> None:
    body, headers = iris_binary(datatype)
    r = demo_client.post(INFER, content=body, headers=headers)
    assert r.headers["content-type"] == "application/json"  # outputs default to JSON
    assert_setosa(result_of(r))


def test_binary_data_output_makes_every_output_binary(demo_client: TestClient) -> None:
    r = demo_client.post(INFER, json=iris_json(parameters={"binary_data_output": True}))
    assert r.headers["content-type"] == "application/octet-stream"
    size = int(r.headers[HEADER])
    header = orjson.loads(r.content[:size])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [10, 24]
    assert all("data" not in o for o in header["outputs"])
    assert r.content[size : size + 10] == struct.pack("<I", 6) + b"setosa"
    assert len(r.content) == size + 34
    assert_setosa(result_of(r))


def test_requested_outputs_pick_names_order_and_encoding(demo_client: TestClient) -> None:
    outputs = [
        {"name": "probabilities", "parameters": {"binary_data": True}},
        {"name": "label", "parameters": {"binary_data": False}},
    ]
    r = demo_client.post(INFER, json=iris_json(outputs=outputs))
    size = int(r.headers[HEADER])
    header = orjson.loads(r.content[:size])
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "label"]
    assert header["outputs"][1]["data"] == ["setosa"]
    assert_setosa(result_of(r))
    only = demo_client.post(INFER, json=iris_json(outputs=[{"name": "label"}])).json()
    assert [o["name"] for o in only["outputs"]] == ["label"]
    # per-output binary_data overrides the request-wide default
    r = demo_client.post(
        INFER,
        json=iris_json(
            parameters={"binary_data_output": True},
            outputs=[{"name": "label", "parameters": {"binary_data": False}}],
        ),
    )
    assert r.json()["outputs"][0]["data"] == ["setosa"]


def test_classification_extension(demo_client: TestClient) -> None:
    outputs = [{"name": "probabilities", "parameters": {"classification": 2}}]
    out = demo_client.post(INFER, json=iris_json(outputs=outputs)).json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 2]
    top, second = out["data"]
    assert top.endswith(":0:setosa") and float(top.split(":")[0]) > 0.9
    assert second.split(":")[1] in ("1", "2")
    bad = [{"name": "label", "parameters": {"classification": 1}}]
    assert_v2_error(demo_client.post(INFER, json=iris_json(outputs=bad)), 422, "classification")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_body(demo_client: TestClient, encoding: str) -> None:
    body, headers = iris_binary("FP64")
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    r = demo_client.post(INFER, content=packed, headers={**headers, "Content-Encoding": encoding})
    assert_setosa(result_of(r))


def test_pinned_version_infer(demo_client: TestClient) -> None:
    r = demo_client.post("/v2/models/iris/versions/1/infer", json=iris_json())
    assert r.json()["model_version"] == "1"
    assert_v2_error(demo_client.post("/v2/models/iris/versions/3/infer", json=iris_json()), 404)
    assert_v2_error(demo_client.post("/v2/models/nope/infer", json=iris_json()), 404, "nope")


# ── every datatype, JSON and binary, through an echo model ──────────────────────


def _echo(inputs: NamedArrays) -> NamedArrays:
    return {"y": inputs["x"].copy()}


def _echo_model(dtype: str) -> FakeModel:
    shape = (-1,) if dtype in ("str", "bytes", "object") else (-1, 2)
    return FakeModel(
        _echo,
        Signature(
            inputs=(TensorSpec("x", dtype, shape),), outputs=(TensorSpec("y", dtype, shape),)
        ),
    )


@pytest.fixture(scope="module")
def echo_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    models: dict[str, Any] = {
        f"echo_{np.dtype(t).name}": _echo_model(np.dtype(t).name) for t in NUMERIC.values()
    }
    models |= {
        "echo_str": _echo_model("str"),
        "echo_bytes": _echo_model("bytes"),
        "echo_object": _echo_model("object"),
    }

    def boom(inputs: NamedArrays) -> NamedArrays:
        if inputs["x"].any():  # warm-up (zeros) passes; real requests fail
            raise RuntimeError("secret detail")
        return {"y": inputs["x"]}

    models["boom"] = FakeModel(boom)
    app = build_test_app(models, data_dir=tmp_path_factory.mktemp("v2-echo"))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def _sample(datatype: str) -> np.ndarray:
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    dtype: np.dtype[Any] = np.dtype(NUMERIC[datatype])
    if dtype.kind == "f":
        return np.array([[1.5, -2.25], [0.0, 1e3]], dtype=dtype)
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max], [0, 1]], dtype=dtype)


@pytest.mark.parametrize("datatype", list(NUMERIC))
@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_numeric_round_trip(
    echo_client: TestClient, datatype: str, binary_in: bool, binary_out: bool
) -> None:
    array = _sample(datatype)
    url = f"/v2/models/echo_{array.dtype.name}/infer"
    params = {"binary_data_output": binary_out}
    if binary_in:
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        body, headers = binary_body(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": datatype,
                        "shape": [2, 2],
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "parameters": params,
            },
            raw,
        )
        r = echo_client.post(url, content=body, headers=headers)
    else:
        r = echo_client.post(
            url,
            json={"inputs": [tensor("x", datatype, [2, 2], array.tolist())], "parameters": params},
        )
    result = result_of(r)
    assert result.get_output("y")["datatype"] == datatype
    got = result.as_numpy("y")
    assert got is not None and got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("model", ["echo_str", "echo_object", "echo_bytes"])
@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_bytes_round_trip(
    echo_client: TestClient, model: str, binary_in: bool, binary_out: bool
) -> None:
    words = ["héllo", "", "wörld"]
    params = {"binary_data_output": binary_out}
    if binary_in:
        raw = b"".join(struct.pack("<I", len(w.encode())) + w.encode() for w in words)
        body, headers = binary_body(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "BYTES",
                        "shape": [3],
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "parameters": params,
            },
            raw,
        )
        r = echo_client.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    else:
        r = echo_client.post(
            f"/v2/models/{model}/infer",
            json={"inputs": [tensor("x", "BYTES", [3], words)], "parameters": params},
        )
    result = result_of(r)
    assert result.get_output("y")["datatype"] == "BYTES"
    got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("y")]
    assert got == words


def test_bytes_to_a_numeric_model_is_422(echo_client: TestClient) -> None:
    r = echo_client.post(
        "/v2/models/echo_float32/infer", json={"inputs": [tensor("x", "BYTES", [1, 2], ["a", "b"])]}
    )
    assert_v2_error(r, 422, "BYTES", "float32")


def test_non_utf8_bytes_to_a_text_model_is_422(echo_client: TestClient) -> None:
    raw = struct.pack("<I", 2) + b"\xff\xfe"
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 6},
                }
            ]
        },
        raw,
    )
    r = echo_client.post("/v2/models/echo_str/infer", content=body, headers=headers)
    assert_v2_error(r, 422, "UTF-8")


def test_bf16_binary_is_widened_to_fp32(echo_client: TestClient) -> None:
    values = np.array([[1.5, -2.0], [0.25, 8.0]], dtype=np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "BF16",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        },
        raw,
    )
    got = result_of(
        echo_client.post("/v2/models/echo_float32/infer", content=body, headers=headers)
    ).as_numpy("y")
    np.testing.assert_array_equal(got, values)


def test_model_that_raises_is_a_masked_500(echo_client: TestClient) -> None:
    r = echo_client.post(
        "/v2/models/boom/infer", json={"inputs": [tensor("x", "FP32", [1, 3], [1, 2, 3])]}
    )
    message = assert_v2_error(r, 500, r.headers["x-request-id"])
    assert "secret" not in message
    assert echo_client.get("/v2/health/live").status_code == 200


# ── malformed requests: a precise 4xx each, never a 5xx ────────────────────────


def _input(**overrides: Any) -> dict[str, Any]:
    return {**tensor("input", "FP64", [1, 4], SETOSA), **overrides}


def _without(key: str) -> dict[str, Any]:
    spec = _input()
    del spec[key]
    return spec


BAD_JSON: list[tuple[Any, str]] = [
    # missing fields
    ({}, "'inputs'"),
    ({"inputs": []}, "'inputs'"),
    ({"inputs": [_without("name")]}, "'name'"),
    ({"inputs": [_without("shape")]}, "'shape'"),
    ({"inputs": [_without("datatype")]}, "'datatype' is missing"),
    ({"inputs": [_without("data")]}, "'data'"),
    ({"inputs": [{"name": "input"}]}, "'shape'"),
    # wrong types
    ([1, 2], "JSON object"),
    ("inputs", "JSON object"),
    ({"inputs": {"input": SETOSA}}, "'inputs'"),
    ({"inputs": [[5.1, 3.5, 1.4, 0.2]]}, "inputs[0]"),
    ({"inputs": [_input(name=7)]}, "'name'"),
    ({"inputs": [_input(name="")]}, "'name'"),
    ({"inputs": [_input(shape="1,4")]}, "'shape'"),
    ({"inputs": [_input(shape=[1.0, 4])]}, "'shape'"),
    ({"inputs": [_input(shape=[True, 4])]}, "'shape'"),
    ({"inputs": [_input(shape=["1", 4])]}, "'shape'"),
    ({"inputs": [_input(shape=[[1], 4])]}, "'shape'"),
    ({"inputs": [_input(shape=[1] * 40)]}, "'shape'"),
    ({"inputs": [_input(datatype=64)]}, "unknown datatype"),
    ({"inputs": [_input(datatype="fp64")]}, "unknown datatype 'fp64'"),
    ({"inputs": [_input(datatype="FLOAT64")]}, "unknown datatype"),
    ({"inputs": [_input(data=5.1)]}, "'data' must be an array"),
    ({"inputs": [_input(data=None)]}, "'data' must be an array"),
    ({"inputs": [_input(data={"a": 1})]}, "'data' must be an array"),
    ({"inputs": [_input(parameters=[])]}, "parameters"),
    (
        {"inputs": [{**_without("data"), "parameters": {"binary_data_size": "4"}}]},
        "binary_data_size must be a non-negative integer",
    ),
    ({"inputs": [_input(parameters={"shared_memory_region": "r"})]}, "shared memory"),
    ({"inputs": [_input(), _input()]}, "twice"),
    ({**iris_json(), "id": 5}, "'id'"),
    ({**iris_json(), "parameters": "binary"}, "'parameters'"),
    ({**iris_json(), "parameters": {"binary_data_output": "yes"}}, "binary_data_output"),
    ({**iris_json(), "parameters": {"timeout": -1}}, "timeout"),
    ({**iris_json(), "outputs": "label"}, "'outputs'"),
    ({**iris_json(), "outputs": [{"nom": "label"}]}, "outputs[0]"),
    ({**iris_json(), "outputs": [{"name": "label"}, {"name": "label"}]}, "twice"),
    (
        {**iris_json(), "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
        "binary_data",
    ),
    (
        {**iris_json(), "outputs": [{"name": "label", "parameters": {"classification": -1}}]},
        "classification",
    ),
    # shape vs data, datatype vs values, nested garbage
    ({"inputs": [_input(shape=[1, -4])]}, "non-negative"),
    ({"inputs": [_input(shape=[1, 3])]}, "holds 3 elements, 'data' has 4"),
    ({"inputs": [_input(shape=[2, 4])]}, "holds 8 elements, 'data' has 4"),
    ({"inputs": [_input(shape=[10**6, 10**6, 10**6])]}, "too large"),
    ({"inputs": [_input(shape=[0, 2**30, 2**30])]}, "too large"),
    ({"inputs": [_input(shape=[2**20, 2**20])]}, "holds 1099511627776 elements"),
    ({"inputs": [_input(data=[[5.1, 3.5], [1.4]])]}, "rectangular"),
    ({"inputs": [_input(data=[5.1, [3.5], 1.4, 0.2])]}, "rectangular"),
    ({"inputs": [_input(data=["5.1", "3.5", "1.4", "0.2"])]}, "FP64 data must be numbers"),
    ({"inputs": [_input(data=[{"x": 1}] * 4)]}, "FP64 data must be numbers"),
    ({"inputs": [_input(data=[None] * 4)]}, "FP64 data must be numbers"),
    ({"inputs": [_input(data=[True, False, True, True])]}, "FP64 data must be numbers"),
    ({"inputs": [_input(datatype="INT64", data=[5.1, 3.5, 1.4, 0.2])]}, "integers"),
    ({"inputs": [_input(datatype="INT8", data=[1, 2, 3, 300])]}, "out of range for INT8"),
    ({"inputs": [_input(datatype="UINT8", data=[1, 2, 3, -1])]}, "out of range for UINT8"),
    ({"inputs": [_input(datatype="BOOL", data=[1, 0, 1, 0])]}, "true/false"),
    ({"inputs": [_input(datatype="BYTES", data=[1, 2, 3, 4])]}, "strings"),
    ({"inputs": [_input(datatype="BYTES", data=[["a"], "b", "c", "d"])]}, "BYTES"),
    ({"inputs": [_input(datatype="BF16")]}, "binary"),
    ({"inputs": [_input(parameters={"binary_data_size": 32})]}, "either 'data' or"),
]


@pytest.mark.parametrize(("payload", "fragment"), BAD_JSON)
def test_malformed_json_requests_are_400(
    demo_client: TestClient, payload: Any, fragment: str
) -> None:
    assert_v2_error(demo_client.post(INFER, content=orjson.dumps(payload)), 400, fragment)


@pytest.mark.parametrize("body", [b"", b"{", b'{"inputs": [', b"\xff\xfe", b"null", b"nan"])
def test_unparseable_json_is_400(demo_client: TestClient, body: bytes) -> None:
    assert_v2_error(demo_client.post(INFER, content=body), 400)


def test_deep_nesting_is_400(demo_client: TestClient) -> None:
    deep = (
        b'{"inputs": [{"name": "input", "datatype": "FP64", "shape": [1], "data": '
        + (b"[" * 200 + b"1" + b"]" * 200)
        + b"}]}"
    )
    assert_v2_error(demo_client.post(INFER, content=deep), 400)
    deeper = b"[" * 5000 + b"]" * 5000
    assert_v2_error(demo_client.post(INFER, content=deeper), 400, "JSON")


def test_huge_shape_product_does_not_allocate(demo_client: TestClient) -> None:
    raw = b"\x00" * 8
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP64",
                    "shape": [2**20, 2**20],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        },
        raw,
    )
    started = time.monotonic()
    assert_v2_error(demo_client.post(INFER, content=body, headers=headers), 400, "needs")
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "BYTES",
                    "shape": [2**20, 2**20],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        },
        raw,
    )
    assert_v2_error(demo_client.post(INFER, content=body, headers=headers), 400, "BYTES")
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("abc", "non-negative integer"),
        ("-5", "non-negative integer"),
        ("1.5", "integer"),
        ("", "integer"),
        ("+10", "integer"),
        ("99999999999999999999999", "integer"),
        ("100000", "only"),
        ("0", "empty"),
    ],
)
def test_bad_header_length_is_400(demo_client: TestClient, value: str, fragment: str) -> None:
    body, _ = iris_binary()
    r = demo_client.post(INFER, content=body, headers={HEADER: value})
    assert_v2_error(r, 400, fragment)


def test_header_length_cutting_the_json_is_400(demo_client: TestClient) -> None:
    body, headers = iris_binary()
    r = demo_client.post(INFER, content=body, headers={HEADER: str(int(headers[HEADER]) - 3)})
    assert_v2_error(r, 400, "JSON")


def test_binary_sizes_must_add_up_to_the_binary_section(demo_client: TestClient) -> None:
    body, headers = iris_binary("FP32")
    assert_v2_error(
        demo_client.post(INFER, content=body + b"xx", headers=headers),
        400,
        "18 bytes",
        "add up to 16",
    )
    assert_v2_error(
        demo_client.post(INFER, content=body[:-4], headers=headers),
        400,
        "binary_data_size is 16",
        "only 12",
    )
    # binary data without the header: the whole body is (invalid) JSON
    assert_v2_error(demo_client.post(INFER, content=body), 400, "JSON")
    # a declared binary input but no binary section
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    )
    assert_v2_error(demo_client.post(INFER, content=head), 400, "only 0")


@pytest.mark.parametrize(
    ("datatype", "size"), [("FP32", 8), ("FP64", 16), ("FP64", 40), ("INT8", 3), ("BOOL", 5)]
)
def test_binary_shape_times_dtype_must_match_the_size(
    demo_client: TestClient, datatype: str, size: int
) -> None:
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": datatype,
                    "shape": [1, 4],
                    "parameters": {"binary_data_size": size},
                }
            ]
        },
        b"\x00" * size,
    )
    assert_v2_error(
        demo_client.post(INFER, content=body, headers=headers),
        400,
        f"shape [1, 4] of {datatype} needs",
        f"binary_data_size is {size}",
    )


@pytest.mark.parametrize(
    ("raw", "shape", "fragment"),
    [
        (struct.pack("<I", 10) + b"abc", [1], "declares 10 bytes"),
        (struct.pack("<I", 1) + b"a" + b"\x00\x00", [2], "need at least 8"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 0) + b"zz", [2], "left over"),
        (struct.pack("<I", 2) + b"ab" + b"\x00\x00", [2], "cut off"),
    ],
)
def test_malformed_binary_bytes_are_400(
    demo_client: TestClient, raw: bytes, shape: list[int], fragment: str
) -> None:
    body, headers = binary_body(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "BYTES",
                    "shape": shape,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        },
        raw,
    )
    assert_v2_error(demo_client.post(INFER, content=body, headers=headers), 400, fragment)


def test_inputs_that_do_not_fit_the_model_are_422(demo_client: TestClient) -> None:
    r = demo_client.post(INFER, json={"inputs": [tensor("x", "FP64", [1, 4], SETOSA)]})
    assert_v2_error(r, 422, "unknown input(s) ['x']")
    r = demo_client.post(INFER, json={"inputs": [tensor("input", "FP64", [1, 3], SETOSA[:3])]})
    assert_v2_error(r, 422, "expected shape [N, 4]")
    r = demo_client.post(INFER, json={"inputs": [tensor("input", "FP64", [0, 4], [])]})
    assert_v2_error(r, 422, "no rows")
    r = demo_client.post(INFER, json={"inputs": [tensor("input", "BOOL", [1, 4], [True] * 4)]})
    assert_v2_error(r, 422, "booleans")
    r = demo_client.post(INFER, json=iris_json(outputs=[{"name": "species"}]))
    assert_v2_error(r, 422, "unknown output(s) ['species']", "label")


def test_compression_errors(demo_client: TestClient) -> None:
    body = orjson.dumps(iris_json())
    assert_v2_error(
        demo_client.post(INFER, content=body, headers={"Content-Encoding": "gzip"}), 400, "gzip"
    )
    assert_v2_error(
        demo_client.post(
            INFER, content=gzip.compress(body)[:-10], headers={"Content-Encoding": "gzip"}
        ),
        400,
    )
    assert_v2_error(
        demo_client.post(INFER, content=body, headers={"Content-Encoding": "br"}), 415, "br"
    )
    bomb = gzip.compress(b" " * (32 << 20))  # 32 MiB of spaces > the 16 MiB body limit
    assert_v2_error(
        demo_client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"}),
        413,
        "decompressed",
    )


def test_wrong_method_is_405_in_the_v2_shape(demo_client: TestClient) -> None:
    assert_v2_error(demo_client.get(INFER), 405)
    assert_v2_error(demo_client.get("/v2/nothing"), 404)


def test_server_stays_healthy_after_garbage(demo_client: TestClient) -> None:
    for payload, _ in BAD_JSON:
        demo_client.post(INFER, content=orjson.dumps(payload))
    assert demo_client.get("/v2/health/live").status_code == 200
    assert_setosa(result_of(demo_client.post(INFER, json=iris_json())))


# ── the codec on its own ─────────────────────────────────────────────────────────


def test_datatype_of_numpy_dtypes() -> None:
    for name, dtype in NUMERIC.items():
        assert codec.datatype_of(np.dtype(dtype)) == name
    for name in ("str", "object", "S3", "U5"):
        assert codec.datatype_of(np.dtype(name)) == "BYTES"


def test_encode_response_without_binary_is_plain_json() -> None:
    request = codec.InferRequest(inputs={}, id="7")
    body, size = codec.encode_response(
        model="m", version="2", outputs={"y": np.array([[1, 2]], dtype=np.int32)}, request=request
    )
    assert size is None
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "2",
        "id": "7",
        "outputs": [{"name": "y", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}],
    }


# ── fuzz: random JSON and random bytes never make a 5xx ──────────────────────────

_KEYS = [
    "inputs",
    "outputs",
    "name",
    "shape",
    "datatype",
    "data",
    "parameters",
    "id",
    "binary_data_size",
    "binary_data",
    "binary_data_output",
    "classification",
    "input",
    "label",
    "probabilities",
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.sampled_from(_KEYS + list(codec.DATATYPES))
    | st.text(max_size=8)
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=40,
)
_shapes = st.lists(st.integers(-2, 5), max_size=3)
_tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "x", ""]),
        "datatype": st.sampled_from(codec.DATATYPES),
        "shape": _shapes | st.just([1, 4]),
    },
    optional={
        "data": _json | st.lists(st.floats(-10, 10), max_size=8),
        "parameters": st.fixed_dictionaries(
            {}, optional={"binary_data_size": st.integers(-1, 40) | _scalars}
        ),
    },
)
_requests = st.fixed_dictionaries(
    {"inputs": st.lists(_tensors, max_size=3) | _json},
    optional={
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["label", "probabilities", "other"])},
                optional={"parameters": _json},
            ),
            max_size=3,
        )
        | _json,
        "parameters": _json,
        "id": _scalars,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=_requests | _json,
    tail=st.binary(max_size=48),
    header=st.none()
    | st.booleans()
    | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=6),
)
def test_fuzz_v2_infer_never_5xx(
    demo_client: TestClient, payload: Any, tail: bytes, header: bool | str | None
) -> None:
    head = orjson.dumps(payload)
    headers: dict[str, str] = {}
    if header is True:
        headers[HEADER] = str(len(head))
    elif isinstance(header, str):
        headers[HEADER] = header
    r = demo_client.post(
        INFER, content=head + tail if header is not None else head, headers=headers
    )
    assert r.status_code < 500, r.text
    if r.status_code != 200:
        assert set(r.json()) == {"error"}


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200), header=st.none() | st.integers(-5, 210).map(str))
def test_fuzz_v2_raw_bytes_never_5xx(
    demo_client: TestClient, raw: bytes, header: str | None
) -> None:
    headers = {HEADER: header} if header is not None else {}
    r = demo_client.post(INFER, content=raw, headers=headers)
    assert r.status_code < 500, r.text
    assert demo_client.get("/v2/health/live").status_code == 200
