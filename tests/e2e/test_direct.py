"""The direct predict path (``api/direct.py``): a real server answers exactly as the ASGI
chain does, and hands the requests it must not take to that chain.

Every predict request to ``modelport serve`` goes through the direct path unless it has an
``Origin`` header, an ``Expect: 100-continue``, or a body over the limit; the in-process
``TestClient`` always goes through the ASGI chain. So comparing the two compares the paths.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

IRIS = "/v1/models/iris/predict"
ROW = [5.1, 3.5, 1.4, 0.2]

CASES = [
    ("ok rows", {"content-type": "application/json"}, json.dumps({"inputs": [ROW]})),
    ("ok records", {}, json.dumps({"instances": [dict(zip(
        ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
        ROW, strict=True))]})),
    ("bad json", {"content-type": "application/json"}, '{"inputs": [[1, 2'),
    ("wrong type", {"content-type": "text/csv"}, "1,2,3,4"),
    ("bad shape", {"content-type": "application/json"}, json.dumps({"inputs": [[1, 2]]})),
    ("nan", {"content-type": "application/json"}, '{"inputs": [[NaN, 1, 2, 3]]}'),
    ("empty", {"content-type": "application/json"}, '{"inputs": []}'),
    ("both keys", {"content-type": "application/json"}, '{"inputs": [], "instances": []}'),
    ("bad timeout", {"x-request-timeout": "soon"}, json.dumps({"inputs": [ROW]})),
    ("strings", {}, json.dumps({"inputs": [["a", "b", "c", "d"]]})),
]  # fmt: skip


@pytest.fixture(scope="module")
def real_server(demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import ServerProcess

    server = ServerProcess(
        ["--data-dir", str(demo_data_dir), "--workers", "1", "--body-limit", "65536"],
        cwd=tmp_path_factory.mktemp("direct"),
    )
    server.wait_ready()
    yield server
    server.stop()


def _comparable(response: httpx.Response) -> tuple[int, Any, set[str]]:
    body = response.json()
    if isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
        body["error"]["message"] = body["error"]["message"].split("; quote request id")[0]
    body.pop("request_id", None)
    names = {k.lower() for k in response.headers} - {"date", "content-length"}
    return response.status_code, body, names


@pytest.mark.parametrize(("name", "headers", "body"), CASES, ids=[c[0] for c in CASES])
def test_direct_path_answers_like_the_asgi_chain(
    real_server: Any, demo_client: TestClient, name: str, headers: dict[str, str], body: str
) -> None:
    over_http = httpx.post(f"{real_server.url}{IRIS}", content=body, headers=headers)
    in_process = demo_client.post(IRIS, content=body, headers=headers)
    assert _comparable(over_http) == _comparable(in_process)  # type: ignore[arg-type]
    assert over_http.headers["x-request-id"]


def test_a_client_request_id_is_echoed(real_server: Any) -> None:
    r = httpx.post(
        f"{real_server.url}{IRIS}", json={"inputs": [ROW]}, headers={"X-Request-Id": "abc-1"}
    )
    assert r.headers["x-request-id"] == "abc-1"
    assert r.json()["request_id"] == "abc-1"


def _raw(server: Any, data: bytes) -> bytes:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)  # the last request says Connection: close
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _predict_request(body: bytes, extra: bytes = b"", close: bool = False) -> bytes:
    conn = b"Connection: close\r\n" if close else b""
    return (
        b"POST /v1/models/iris/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + conn + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


def test_pipelined_predictions_are_answered_in_order(real_server: Any) -> None:
    body = json.dumps({"inputs": [ROW]}).encode()
    requests = [
        _predict_request(body, b"X-Request-Id: r%d\r\n" % i, close=i == 4) for i in range(5)
    ]
    data = _raw(real_server, b"".join(requests))
    assert data.count(b"HTTP/1.1 200 OK") == 5
    ids = [line.split(b": ")[1] for line in data.split(b"\r\n") if line.startswith(b"x-request-id")]
    assert ids == [b"r0", b"r1", b"r2", b"r3", b"r4"]


def test_chunked_and_100_continue_predictions(real_server: Any) -> None:
    body = json.dumps({"inputs": [ROW]}).encode()
    chunked = (
        b"POST /v1/models/iris/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%b\r\n" % (10, body[:10]) + b"%x\r\n%b\r\n" % (len(body) - 10, body[10:])
        + b"0\r\n\r\n"
    )  # fmt: skip
    assert _raw(real_server, chunked).startswith(b"HTTP/1.1 200 OK")
    port = int(real_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_predict_request(body, b"Expect: 100-continue\r\n", close=True)[: -len(body)])
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_bodies_over_the_limit_get_413_and_the_server_lives(real_server: Any) -> None:
    big = b'{"inputs": [' + b"[1, 2, 3, 4], " * 6000 + b"[1, 2, 3, 4]]}"  # ~84 KB > 64 KiB
    declared = _raw(real_server, _predict_request(big, close=True))
    assert declared.startswith(b"HTTP/1.1 413 ")
    chunked = (
        b"POST /v1/models/iris/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%b\r\n0\r\n\r\n" % (len(big), big)
    )
    answer = _raw(real_server, chunked)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"payload_too_large"' in answer
    assert httpx.post(f"{real_server.url}{IRIS}", json={"inputs": [ROW]}).status_code == 200


def test_an_upload_answered_early_is_drained_not_reset(real_server: Any) -> None:
    """The server answers 413 from the declared length, long before the upload ends.
    It closes in stages (RFC 9112, section 9.6): the client reads the 413 and the end
    of the stream, and may go on sending; what it sends is dropped, not answered with a
    reset that could erase the 413 from the client's buffers before it reads it."""
    part = b"[1, 2, 3, 4], " * 6000  # ~84 KB; the body limit here is 64 KiB
    head = (
        b"POST /v1/models/iris/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (10 * len(part))
    )
    port = int(real_server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + part)
        chunks = []
        while chunk := sock.recv(65536):  # up to the server's FIN
            chunks.append(chunk)
        answer = b"".join(chunks)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b'"payload_too_large"' in answer
        for _ in range(8):  # the rest of the upload: a closed socket would reset it
            sock.sendall(part)
            time.sleep(0.02)
    assert httpx.post(f"{real_server.url}{IRIS}", json={"inputs": [ROW]}).status_code == 200


def test_browser_requests_go_through_cors(start_server: Any, tmp_path: Path) -> None:
    server = start_server(
        "--data-dir", str(tmp_path / "d"), "--workers", "1", "--cors-origins", "https://app.example"
    )
    url = f"{server.url}{IRIS}"
    from_browser = httpx.post(
        url, json={"inputs": [ROW]}, headers={"Origin": "https://app.example"}
    )
    assert from_browser.status_code == 200
    assert from_browser.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in from_browser.headers["access-control-expose-headers"].lower()
    plain = httpx.post(url, json={"inputs": [ROW]})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


SLOW_MODEL = """
import time
import numpy as np

class Model:
    signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 1]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}]}

    def load(self, path):
        pass

    def predict(self, inputs):
        if float(inputs["x"].max()) > 0:
            time.sleep(1.0)
        return {"y": inputs["x"]}
"""


def test_a_queued_request_whose_client_leaves_never_reaches_the_model(
    start_server: Any, tmp_path: Path
) -> None:
    """Over a real socket: the protocol's disconnect callback drops the queued request."""
    repo = tmp_path / "repo" / "slow" / "1"
    repo.mkdir(parents=True)
    (repo / "model.py").write_text(SLOW_MODEL)
    server = start_server(
        "--repository", str(tmp_path / "repo"), "--data-dir", str(tmp_path / "d"),
        "--workers", "1", "--executor", "thread",
    )  # fmt: skip
    port = int(server.url.rsplit(":", 1)[1])
    body = b'{"inputs": [[1]]}'
    request = (
        b"POST /v1/models/slow/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    busy = socket.create_connection(("127.0.0.1", port))
    busy.sendall(request)  # holds the model for a second
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", port)) as leaver:
        leaver.sendall(request)  # queued behind it...
        time.sleep(0.1)
    # ...and gone. The busy one is still answered.
    busy.settimeout(10)
    assert busy.recv(65536).startswith(b"HTTP/1.1 200 OK")
    busy.close()
    info = httpx.get(f"{server.url}/v1/models/slow").json()
    stats = info["versions"][0]["batching"]["stats"]
    assert stats["dropped_cancelled"] == 1
    assert stats["batches"] == 1  # the busy request; never the leaver
