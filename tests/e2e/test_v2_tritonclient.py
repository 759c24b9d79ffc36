"""A real `modelport serve` process, driven by NVIDIA's own ``tritonclient.http`` client.

The acceptance check: the V2 infer endpoint gives tritonclient the same answer as the
native API (iris: setosa, probabilities summing to 1), in JSON and in binary mode.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

pytestmark = pytest.mark.e2e

SETOSA = [5.1, 3.5, 1.4, 0.2]
ROWS = [SETOSA, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def server(
    demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("v2-e2e")
    data = root / "data"
    shutil.copytree(demo_data_dir, data)  # demo models already built: a fast start
    process = ServerProcess(["--data-dir", str(data)], cwd=root)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
    assert "Traceback" not in process.output()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        yield client
    finally:
        client.close()


def iris_input(rows: list[list[float]], binary: bool, datatype: str = "FP64") -> triton.InferInput:
    array = np.array(rows, dtype=np.float64 if datatype == "FP64" else np.float32)
    infer_input = triton.InferInput("input", list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def as_text(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values.reshape(-1)]


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("iris", "42")
    server = client.get_server_metadata()
    assert server["name"] == "modelport" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("iris")
    assert meta["name"] == "iris" and meta["versions"] == ["1"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("label", "BYTES"),
        ("probabilities", "FP64"),
    ]
    assert client.get_model_metadata("iris", "1") == meta
    config = client.get_model_config("iris")
    assert config["input"][0]["dims"] == [4]
    index = client.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} == {
        ("iris", "READY"),
        ("diabetes", "READY"),
        ("digits", "READY"),
    }


@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_infer_iris_setosa(
    client: triton.InferenceServerClient, binary_in: bool, binary_out: bool, datatype: str
) -> None:
    outputs = [
        triton.InferRequestedOutput("label", binary_data=binary_out),
        triton.InferRequestedOutput("probabilities", binary_data=binary_out),
    ]
    result = client.infer(
        "iris", [iris_input([SETOSA], binary_in, datatype)], outputs=outputs, request_id="r-1"
    )
    label = result.as_numpy("label")
    assert label is not None and label.shape == (1,)
    assert label[0] == (b"setosa" if binary_out else "setosa")
    probs = result.as_numpy("probabilities")
    assert probs is not None and probs.shape == (1, 3) and probs.dtype == np.float64
    assert probs.sum() == pytest.approx(1.0)
    assert probs[0, 0] > 0.9
    response = result.get_response()
    assert response["model_name"] == "iris" and response["model_version"] == "1"
    assert response["id"] == "r-1"


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_same_answer_as_the_native_api(
    client: triton.InferenceServerClient, server: ServerProcess, binary: bool
) -> None:
    native = httpx.post(f"{server.url}/v1/models/iris/predict", json={"inputs": ROWS}).json()
    # no requested outputs: tritonclient asks for every output in binary
    outputs = (
        None
        if binary
        else [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
    )
    result = client.infer("iris", [iris_input(ROWS, binary)], outputs=outputs, model_version="1")
    labels = as_text(result.as_numpy("label"))
    assert labels == [row["label"] for row in native["outputs"]]
    assert labels == ["setosa", "virginica", "versicolor"]
    expected = [list(row["probabilities"].values()) for row in native["outputs"]]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected)


def test_classification_and_compression(client: triton.InferenceServerClient) -> None:
    outputs = [triton.InferRequestedOutput("probabilities", class_count=2)]
    result = client.infer(
        "iris",
        [iris_input([SETOSA], binary=True)],
        outputs=outputs,
        request_compression_algorithm="gzip",
    )
    top = as_text(result.as_numpy("probabilities"))
    assert len(top) == 2 and top[0].endswith(":0:setosa")


def test_errors_reach_the_client_and_the_server_stays_healthy(
    client: triton.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as missing:
        client.infer("no-such-model", [iris_input([SETOSA], binary=True)])
    assert missing.value.status() == "404" and "no-such-model" in missing.value.message()

    bad = triton.InferInput("input", [1, 3], "FP64")
    bad.set_data_from_numpy(np.array([[1.0, 2.0, 3.0]]), binary_data=True)
    with pytest.raises(InferenceServerException) as wrong_shape:
        client.infer("iris", [bad])
    assert wrong_shape.value.status() == "422"
    assert "expected shape [N, 4]" in wrong_shape.value.message()

    with pytest.raises(InferenceServerException) as unknown_output:
        client.infer(
            "iris", [iris_input([SETOSA], True)], outputs=[triton.InferRequestedOutput("x")]
        )
    assert "unknown output(s) ['x']" in unknown_output.value.message()

    assert client.is_server_live()
    result = client.infer("iris", [iris_input([SETOSA], True)])
    assert as_text(result.as_numpy("label")) == ["setosa"]
