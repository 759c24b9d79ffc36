"""Native v1 API, in-process: body forms, metadata, and every error class with its status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from modelport.core.signature import NamedArrays
from modelport.testing import FakeModel, build_test_app
from tests.conftest import wait_ready

IRIS = "/v1/models/iris/predict"
SETOSA = [5.1, 3.5, 1.4, 0.2]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
RECORD = dict(zip(FEATURES, SETOSA, strict=True))
COLUMNS = {f: [v] for f, v in RECORD.items()}


def assert_error(response: Any, status: int, code: str, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    for fragment in fragments:
        assert fragment in error["message"]
    assert "Traceback" not in response.text
    return error


def assert_setosa(response: Any) -> None:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "iris" and body["version"] == "1"
    assert body["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-model-version"] == "1"
    out = body["outputs"][0]
    assert out["label"] == "setosa"
    assert set(out["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert sum(out["probabilities"].values()) == pytest.approx(1.0)
    assert out["probabilities"]["setosa"] > 0.9


# ── the three body forms ──────────────────────────────────────────────────────


def test_rows(demo_client: TestClient) -> None:
    assert_setosa(demo_client.post(IRIS, json={"inputs": [SETOSA]}))


def test_records(demo_client: TestClient) -> None:
    assert_setosa(demo_client.post(IRIS, json={"instances": [RECORD]}))


def test_columns(demo_client: TestClient) -> None:
    assert_setosa(demo_client.post(IRIS, json={"inputs": COLUMNS}))


def test_one_output_per_row_in_order(demo_client: TestClient) -> None:
    body = demo_client.post(IRIS, json={"inputs": [SETOSA, [6.7, 3.0, 5.2, 2.3], SETOSA]}).json()
    assert [o["label"] for o in body["outputs"]] == ["setosa", "virginica", "setosa"]


def test_pinned_version_and_latest_alias(demo_client: TestClient) -> None:
    assert_setosa(demo_client.post("/v1/models/iris/versions/1/predict", json={"inputs": [SETOSA]}))
    assert_setosa(
        demo_client.post("/v1/models/iris/versions/latest/predict", json={"inputs": [SETOSA]})
    )


def test_regressor_answers_a_prediction_per_row(demo_client: TestClient) -> None:
    r = demo_client.post("/v1/models/diabetes/predict", json={"inputs": [[0.0] * 10, [0.05] * 10]})
    assert r.status_code == 200
    outputs = r.json()["outputs"]
    assert len(outputs) == 2 and all(isinstance(o["prediction"], float) for o in outputs)


def test_digits_image_tensor(demo_client: TestClient) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    r = demo_client.post("/v1/models/digits/predict", json={"inputs": digits.data[:5].tolist()})
    assert r.status_code == 200
    labels = [o["label"] for o in r.json()["outputs"]]
    assert labels == [str(t) for t in digits.target[:5]]


def test_curl_default_form_content_type_is_read_as_json(demo_client: TestClient) -> None:
    r = demo_client.post(
        IRIS,
        content=json.dumps({"inputs": [SETOSA]}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_setosa(r)


# ── metadata ─────────────────────────────────────────────────────────────────


def test_list_and_describe(demo_client: TestClient) -> None:
    models = demo_client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["diabetes", "digits", "iris"]
    iris = demo_client.get("/v1/models/iris").json()
    version = iris["versions"][0]
    assert version["state"] == "ready" and version["runtime"] == "sklearn"
    assert version["signature"]["inputs"][0]["names"] == FEATURES
    assert version["signature"]["labels"] == ["setosa", "versicolor", "virginica"]
    assert version["batching"]["stats"]["batches"] >= 0


def test_openapi_shows_real_examples(demo_client: TestClient) -> None:
    spec = demo_client.get("/openapi.json").json()
    op = spec["paths"]["/v1/models/{name}/predict"]["post"]
    examples = op["requestBody"]["content"]["application/json"]["examples"]
    assert examples["iris-records"]["value"] == {"instances": [RECORD]}
    assert "iris" in op["responses"]["200"]["content"]["application/json"]["examples"]
    assert demo_client.get("/docs").status_code == 200
    assert demo_client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_ops_endpoints(demo_client: TestClient) -> None:
    assert demo_client.get("/healthz").json() == {"status": "ok"}
    assert demo_client.get("/readyz").json() == {"status": "ready"}


# ── every error class: status and body ───────────────────────────────────────


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"inputs": [[1, 2, 3]]}, ["expected shape [N, 4], received [1, 3]"]),
        ({"inputs": [SETOSA, [1, 2, 3]]}, ["rows have different lengths"]),
        ({"inputs": [["a", "b", "c", "d"]]}, ["expected float64 numbers, received strings"]),
        ({"inputs": [[1, None, 3, 4]]}, ["received mixed values"]),
        ({"inputs": [[True, False, True, False]]}, ["received booleans"]),
        ({"instances": [{"sepal_length": 5.1}]}, ["missing feature(s)", "sepal_width"]),
        (
            {"instances": [{**RECORD, "colour": 1}]},
            ["unknown feature(s) ['colour']"],
        ),
        ({"inputs": {"sepal_length": [1.0]}}, ["missing feature(s)"]),
        (
            {"inputs": {**{f: [1.0] for f in FEATURES}, "petal_width": [1.0, 2.0]}},
            ["has 2 values but other features have 1"],
        ),
        ({"inputs": []}, ["no rows"]),
        ({"instances": []}, ["no rows"]),
        ({"inputs": [SETOSA], "instances": []}, ["exactly one of"]),
        ({}, ["exactly one of"]),
        ([SETOSA], ["must be a JSON object"]),
        ({"inputs": "hello"}, ["must be a list of rows"]),
        ({"instances": [1, 2]}, ["list of objects"]),
    ],
)
def test_invalid_input_is_422_naming_the_problem(
    demo_client: TestClient, body: Any, fragments: list[str]
) -> None:
    r = demo_client.post(IRIS, json=body)
    assert_error(r, 422, r.json()["error"]["code"], *fragments)
    assert r.json()["error"]["code"] in ("invalid_input", "empty_batch")


def test_non_finite_numbers_are_422(demo_client: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        r = demo_client.post(
            IRIS,
            content=f'{{"inputs": [[5.1, {literal}, 1.4, 0.2]]}}',
            headers={"content-type": "application/json"},
        )
        assert_error(r, 422, "invalid_input", "NaN or infinite values are not allowed")


def test_only_strict_json_vouches_that_its_numbers_are_finite() -> None:
    from modelport.api.codecs.native import read_json

    assert read_json(b'{"inputs": [[1e308, -2]]}') == ({"inputs": [[1e308, -2]]}, True)
    # the lenient fallback reads NaN/Infinity (so the check can name them): no vouching
    payload, finite = read_json(b'{"inputs": [[NaN, Infinity]]}')
    assert not finite and np.isnan(payload["inputs"][0][0])


def test_batch_over_the_configured_maximum_is_422(tmp_path: Any) -> None:
    app = build_test_app(
        {"m": FakeModel()}, settings={"batching": {"max_request_rows": 5}}, data_dir=tmp_path
    )
    with TestClient(app) as client:
        wait_ready(client)
        assert (
            client.post("/v1/models/m/predict", json={"inputs": [[1, 2, 3]] * 5}).status_code == 200
        )
        r = client.post("/v1/models/m/predict", json={"inputs": [[1, 2, 3]] * 6})
        assert_error(r, 422, "batch_too_large", "holds 6 rows; at most 5")


@pytest.mark.parametrize("body", [b"{", b"not json", b"", b'{"inputs": [[1,2,3,4]]', b"\xff\xfe"])
def test_malformed_json_is_400(demo_client: TestClient, body: bytes) -> None:
    r = demo_client.post(IRIS, content=body, headers={"content-type": "application/json"})
    assert_error(r, 400, "malformed_request")


def test_deeply_nested_json_is_a_clean_4xx(demo_client: TestClient) -> None:
    r = demo_client.post(
        IRIS, content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"}
    )
    assert r.status_code in (400, 422)


@pytest.mark.parametrize(
    "ctype", ["text/csv", "application/xml", "multipart/form-data; boundary=x", "text/plain"]
)
def test_unsupported_content_type_is_415(demo_client: TestClient, ctype: str) -> None:
    r = demo_client.post(IRIS, content=b"a,b\n1,2", headers={"content-type": ctype})
    assert_error(r, 415, "unsupported_media_type", ctype.split(";")[0])


def test_unknown_model_and_version_are_404(demo_client: TestClient) -> None:
    r = demo_client.post("/v1/models/nope/predict", json={"inputs": [SETOSA]})
    assert_error(r, 404, "model_not_found", "'nope'", "iris")
    r = demo_client.post("/v1/models/iris/versions/7/predict", json={"inputs": [SETOSA]})
    assert_error(r, 404, "version_not_found", "'7'")
    assert_error(demo_client.get("/v1/models/nope"), 404, "model_not_found")
    assert_error(demo_client.get("/v1/nothing/here"), 404, "not_found")


def test_wrong_method_is_405(demo_client: TestClient) -> None:
    assert_error(demo_client.get(IRIS), 405, "method_not_allowed")


@pytest.fixture
def small_limit_client(tmp_path: Any) -> Iterator[TestClient]:
    app = build_test_app(
        {"m": FakeModel()}, settings={"server": {"body_limit_bytes": 2048}}, data_dir=tmp_path
    )
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def test_body_over_the_limit_is_413_by_content_length(small_limit_client: TestClient) -> None:
    r = small_limit_client.post(
        "/v1/models/m/predict", content=b" " * 5000, headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large", "5000 bytes", "2048")
    assert small_limit_client.get("/healthz").status_code == 200


def test_body_over_the_limit_is_413_when_chunked(small_limit_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1000

    r = small_limit_client.post(
        "/v1/models/m/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(r, 413, "payload_too_large", "2048")


def test_model_that_raises_is_500_with_request_id_and_server_stays_healthy(tmp_path: Any) -> None:
    def boom(inputs: NamedArrays) -> NamedArrays:
        if not inputs["x"].any():  # warm-up batch (zeros) passes, real data raises
            return {"y": inputs["x"]}
        raise RuntimeError("database password is hunter2")

    app = build_test_app({"bad": FakeModel(boom), "good": FakeModel()}, data_dir=tmp_path)
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        r = client.post("/v1/models/bad/predict", json={"inputs": [[1, 2, 3]]})
        error = assert_error(r, 500, "model_failed", r.headers["x-request-id"])
        assert "hunter2" not in r.text and "RuntimeError" not in r.text
        assert error["message"].startswith("internal error")
        ok = client.post("/v1/models/good/predict", json={"inputs": [[1, 2, 3]]})
        assert ok.json()["outputs"] == [{"y": [2.0, 4.0, 6.0]}]
        assert client.get("/healthz").status_code == 200


def test_request_timeout_header_is_validated(demo_client: TestClient) -> None:
    for bad in ("soon", "-1", "0", "99999"):
        r = demo_client.post(IRIS, json={"inputs": [SETOSA]}, headers={"x-request-timeout": bad})
        assert_error(r, 422, "invalid_input", "X-Request-Timeout")
    assert_setosa(
        demo_client.post(IRIS, json={"inputs": [SETOSA]}, headers={"x-request-timeout": "5"})
    )


def test_client_request_id_is_echoed_only_when_sane(demo_client: TestClient) -> None:
    r = demo_client.post(IRIS, json={"inputs": [SETOSA]}, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" and r.json()["request_id"] == "abc-123"
    r = demo_client.post(IRIS, json={"inputs": [SETOSA]}, headers={"x-request-id": "<script>"})
    assert r.headers["x-request-id"] != "<script>"


def test_multi_input_model_takes_named_inputs(tmp_path: Any) -> None:
    from modelport.core.signature import Signature, TensorSpec

    sig = Signature(
        inputs=(TensorSpec("a", "float32", (-1, 2)), TensorSpec("b", "int64", (-1,))),
        outputs=(TensorSpec("s", "float32", (-1,)),),
    )
    model = FakeModel(lambda x: {"s": x["a"].sum(axis=1) + x["b"]}, signature=sig)
    with TestClient(build_test_app({"multi": model}, data_dir=tmp_path)) as client:
        wait_ready(client)
        r = client.post(
            "/v1/models/multi/predict", json={"inputs": {"a": [[1, 2], [3, 4]], "b": [10, 20]}}
        )
        assert r.json()["outputs"] == [{"s": 13.0}, {"s": 27.0}]
        r = client.post("/v1/models/multi/predict", json={"instances": [{"a": [1, 2], "b": 1}]})
        assert r.json()["outputs"] == [{"s": 4.0}]
        r = client.post("/v1/models/multi/predict", json={"inputs": [[1, 2]]})
        assert_error(r, 422, "invalid_input", "several inputs")
        r = client.post("/v1/models/multi/predict", json={"inputs": {"a": [[1, 2]]}})
        assert_error(r, 422, "invalid_input", "missing input(s) ['b']")


def test_a_value_too_large_for_the_model_is_a_422_and_the_server_lives(
    demo_client: TestClient,
) -> None:
    """Finite but huge: iris's scaler overflows on 1.7e308 (422, not a model failure);
    3.07e307 scales but overflows the logits, which still give probabilities (found by
    the fuzz test below)."""
    r = demo_client.post("/v1/models/iris/predict", json={"inputs": [[1.7e308, 0, 0, 0]]})
    assert_error(r, 422, "value_out_of_range", "too large to scale")
    r = demo_client.post(
        "/v1/models/iris/predict",
        json={"inputs": [[0, 0, 0, 0], [0, 0, 0, 3.0679081823455906e307]]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][1]["label"] == "virginica"
    r = demo_client.post("/v1/models/iris/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert r.status_code == 200 and r.json()["outputs"][0]["label"] == "setosa"


# ── fuzzing: no input yields a 5xx ────────────────────────────────────────────

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
bodies = (
    json_values
    | st.fixed_dictionaries({"inputs": json_values})
    | st.fixed_dictionaries({"instances": json_values})
    | st.fixed_dictionaries(
        {
            "inputs": st.lists(
                st.lists(st.floats(allow_nan=False) | st.integers(), max_size=6), max_size=5
            )
        }
    )
    | st.fixed_dictionaries(
        {
            "instances": st.lists(
                st.dictionaries(st.sampled_from([*FEATURES, "x"]), json_values, max_size=5),
                max_size=4,
            )
        }
    )
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies, model=st.sampled_from(["iris", "diabetes", "digits"]))
def test_fuzz_native_predict_never_5xx(demo_client: TestClient, body: Any, model: str) -> None:
    r = demo_client.post(
        f"/v1/models/{model}/predict",
        content=json.dumps(body),
        headers={"content-type": "application/json"},
    )
    assert r.status_code in (200, 400, 413, 422), r.text


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200))
def test_fuzz_raw_bytes_never_5xx(demo_client: TestClient, raw: bytes) -> None:
    r = demo_client.post(IRIS, content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400, 422), r.text


def test_stats_count_batches(demo_client: TestClient) -> None:
    before = demo_client.get("/v1/models/iris").json()["versions"][0]["batching"]["stats"]
    demo_client.post(IRIS, json={"inputs": [SETOSA] * 3})
    after = demo_client.get("/v1/models/iris").json()["versions"][0]["batching"]["stats"]
    assert after["batches"] == before["batches"] + 1
    assert after["rows"] == before["rows"] + 3
    assert np.isfinite(after["mean_queue_wait_ms"])


@pytest.mark.parametrize("declared", [b"abc", b"-1", b""])
def test_untrustworthy_content_length_is_counted_not_believed(
    small_limit_client: TestClient, declared: bytes
) -> None:
    """At the ASGI level a Content-Length that is not a non-negative number is ignored and
    the body is counted as it arrives: still a 413, nothing read past the limit."""
    import asyncio

    app = small_limit_client.app
    sent: list[dict[str, Any]] = []
    chunks = [b" " * 1000] * 5

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/m/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", declared)],
        "http_version": "1.1",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    assert sent[0]["status"] == 413
    assert len(chunks) >= 1  # stopped reading once past the 2048-byte limit
    assert small_limit_client.get("/healthz").status_code == 200


def test_classification_rows_pick_the_first_best_label_as_argmax_does() -> None:
    from modelport.api.codecs.native import encode
    from modelport.core.signature import Signature, Task, TensorSpec

    sig = Signature(
        inputs=(TensorSpec("x", "float64", (-1, 1)),),
        outputs=(TensorSpec("probabilities", "float64", (-1, 3)),),
        task=Task.CLASSIFICATION,
        labels=("a", "b", "c"),
    )
    probs = np.array([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [0.0, 0.0, 1.0]])
    rows = encode(sig, {"probabilities": probs})
    assert [r["label"] for r in rows] == [sig.labels[i] for i in np.argmax(probs, axis=1)]
    assert rows[0]["probabilities"] == {"a": 0.2, "b": 0.4, "c": 0.4}
    with pytest.raises(ValueError):  # a model that returns the wrong number of columns
        encode(sig, {"probabilities": np.array([[0.5, 0.5]])})
