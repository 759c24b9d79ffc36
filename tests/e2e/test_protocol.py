"""modelport's HTTP/1.1 protocol (``api/protocol.py``) over real sockets, in a real uvicorn.

The app under test is ``_protocol_app.py``; the protocol is what is being checked: framing,
keep-alive, pipelining, chunked bodies both ways, 100-continue, HEAD, limits on the request
head, slow clients, hostile response headers, app crashes, and disconnects.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelport._process import ChildServer, NotReady, ServerExited, free_port

ROOT = Path(__file__).resolve().parents[2]
KEEP_ALIVE_S = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("protocol") / "server.log"
    argv = [
        sys.executable, "-m", "uvicorn", "tests.e2e._protocol_app:app",
        "--port", str(port), "--loop", "uvloop", "--http", "modelport.api.protocol:HttpProtocol",
        "--timeout-keep-alive", str(KEEP_ALIVE_S), "--log-level", "warning",
    ]  # fmt: skip
    server = ChildServer(argv, log, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            httpx.post(f"{url}/echo", timeout=1)
        except httpx.TransportError:
            return False
        return True

    try:
        try:
            server.wait_until(answers, 30, interval_s=0.05)
        except (ServerExited, NotReady):
            raise RuntimeError(log.read_text()) from None
        yield url
    finally:
        server.stop()


def _connect(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` Content-Length-framed responses from a kept-alive connection."""
    buffer = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buffer:
            data = sock.recv(65536)
            assert data, f"connection closed after {len(out)} responses"
            buffer += data
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        out.append((status, headers, buffer[:length]))
        buffer = buffer[length:]
    return out


def _healthy(url: str) -> None:
    response = httpx.post(f"{url}/echo", content=b"still fine", timeout=5)
    assert response.status_code == 200
    assert response.json()["length"] == 10


def test_one_request_with_a_body_and_a_query(server: str) -> None:
    body = b'{"inputs": [[1, 2, 3, 4]]}'
    response = httpx.post(f"{server}/echo?x=1&y=%20", content=body)
    assert response.status_code == 200
    data = response.json()
    assert data["query"] == "x=1&y=%20"
    assert data["length"] == len(body)
    assert response.headers["content-length"] == str(len(response.content))
    assert "date" in response.headers


def test_percent_encoded_path_is_decoded(server: str) -> None:
    response = httpx.post(f"{server}/%65cho")
    assert response.status_code == 200
    assert response.json()["path"] == "/echo"


def test_keep_alive_and_pipelining_answer_in_order(server: str) -> None:
    with _connect(server) as sock:
        request = b"POST /echo?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        sock.sendall(request % 1)
        first = _read_responses(sock, 1)
        sock.sendall(b"".join(request % n for n in (2, 3, 4)))  # three in one write
        rest = _read_responses(sock, 3)
    queries = [json.loads(body)["query"] for _, _, body in first + rest]
    assert queries == ["n=1", "n=2", "n=3", "n=4"]
    assert all(status == 200 for status, _, _ in first + rest)


def test_chunked_request_body(server: str) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        ((status, _, body),) = _read_responses(sock, 1)
    assert status == 200
    assert json.loads(body)["sha"] == hashlib.sha256(b"hello world").hexdigest()


def test_large_body_streams_through_flow_control(server: str) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    response = httpx.post(f"{server}/echo", content=payload, timeout=30)
    assert response.status_code == 200
    assert response.json()["sha"] == hashlib.sha256(payload).hexdigest()


def test_expect_100_continue(server: str) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = sock.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"data")
        ((status, _, body),) = _read_responses(sock, 1)
    assert status == 200
    assert json.loads(body)["length"] == 4


def test_head_has_headers_and_no_body(server: str) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            data += sock.recv(65536)
    head_response, post_response = data.split(b"HTTP/1.1 200 OK", 2)[1:]
    assert b"content-length:" in head_response
    assert head_response.endswith(b"\r\n\r\n")  # no body bytes before the next answer
    assert post_response.endswith(b"}")


def test_streamed_response_is_chunked(server: str) -> None:
    response = httpx.get(f"{server}/stream")
    assert response.status_code == 200
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"one,two,three"


def test_http_10_closes_after_the_answer(server: str) -> None:
    with _connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi")
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in data
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["http_version"] == "1.0"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
    ids=["request-line", "content-length", "two-lengths", "chunk-size", "header-line"],
)
def test_malformed_requests_get_400_and_a_close(server: str, raw: bytes) -> None:
    with _connect(server) as sock:
        sock.sendall(raw)
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in data
    assert data.endswith(b"Invalid HTTP request received.")  # the parser's, not the Host rule
    _healthy(server)


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * 70_000 + b"\r\n", b"".join(b"X-%d: v\r\n" % i for i in range(200))],
    ids=["one-huge-header", "too-many-headers"],
)
def test_oversized_request_head_gets_431(server: str, headers: bytes) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    _healthy(server)


def test_a_header_that_never_ends_gets_431_and_the_rest_is_dropped(server: str) -> None:
    """httptools holds a header line until it ends, so the head's size is also checked
    as bytes arrive: a header that never ends gets its 431 at about the limit instead of
    growing in memory until the keep-alive timeout. The connection then closes in stages
    (as after an early 413): what the client still sends is dropped, not reset, and the
    client reads the 431."""
    with _connect(server) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(10):  # 500 KB of one header value, past the 64 KiB limit
            sock.sendall(b"a" * 50_000)
            time.sleep(0.02)
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    _healthy(server)


def test_oversized_url_gets_431(server: str) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 431 ")


def test_slow_headers_and_idle_connections_are_closed(server: str) -> None:
    with _connect(server) as slow, _connect(server) as idle:
        slow.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        idle.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        _read_responses(idle, 1)
        start = time.monotonic()
        assert _read_all(slow) == b""
        assert _read_all(idle) == b""
        waited = time.monotonic() - start
    assert waited < KEEP_ALIVE_S + 3


def test_connection_in_use_is_not_closed_by_the_idle_timer(server: str) -> None:
    with _connect(server) as sock:
        for n in range(4):  # spaced over more than the keep-alive time
            sock.sendall(b"POST /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n)
            ((status, _, _),) = _read_responses(sock, 1)
            assert status == 200
            time.sleep(KEEP_ALIVE_S * 0.4)


def test_crlf_in_a_response_header_is_refused_not_sent(server: str) -> None:
    response = httpx.get(f"{server}/split")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    _healthy(server)


def test_app_crash_gets_500_and_the_server_lives(server: str) -> None:
    response = httpx.get(f"{server}/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    _healthy(server)


@pytest.mark.parametrize(
    ("path", "seen_as"), [("/wait", "http.disconnect"), ("/callback", "callback")]
)
def test_client_disconnect_reaches_the_app(server: str, path: str, seen_as: str) -> None:
    """Both ways: receive() returns http.disconnect, and the ON_DISCONNECT callback runs."""
    before = len(httpx.get(f"{server}/disconnects").json())
    with _connect(server) as sock:
        sock.sendall(b"POST %b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx" % path.encode())
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        seen = httpx.get(f"{server}/disconnects").json()
        if len(seen) > before:
            assert seen[-1] == seen_as
            return
        time.sleep(0.05)
    raise AssertionError("the app never saw the disconnect")


def test_upgrade_request_is_answered_as_http_then_closed(server: str) -> None:
    with _connect(server) as sock:
        sock.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    _healthy(server)


def test_trailer_fields_are_not_merged_into_the_headers(server: str) -> None:
    """A chunked body's trailer fields never join the request's headers (RFC 9110, 6.5.1):
    a proxy in front may have filtered those headers."""
    sock = _connect(server)
    sock.sendall(
        b"POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\nX-Api-Key: smuggled\r\nContent-Type: text/plain\r\n\r\n"
    )
    [(status, _, body)] = _read_responses(sock, 1)
    assert status == 200
    assert json.loads(body) == ["host", "transfer-encoding"]
    sock.close()


def test_a_trailer_that_never_ends_gets_431(server: str) -> None:
    sock = _connect(server)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    sock.sendall(b"2\r\n{}\r\n0\r\nX-Long: ")
    answer = b""
    # the server answers 431 and hangs up while we are still sending: our sends then fail
    # with a reset or a broken pipe (never a timeout: the server keeps reading until then)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(64):
            sock.sendall(b"a" * 16384)
            time.sleep(0.005)
    sock.settimeout(5)
    with contextlib.suppress(ConnectionResetError):
        answer = _read_all(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    sock.close()
    _healthy(server)


def test_a_flood_of_pipelined_requests_is_answered_in_order(server: str) -> None:
    """Requests pipelined faster than they are answered are parsed as the queue drains
    (at most MAX_PIPELINE wait parsed; the rest stays bytes): every one is answered, in
    order, and the connection stays open."""
    sock = _connect(server)
    requests = [
        b"POST /echo?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}" % i
        for i in range(2000)
    ]
    sock.sendall(b"".join(requests))
    answers = _read_responses(sock, 2000)
    assert [json.loads(body)["query"] for _, _, body in answers] == [f"n={i}" for i in range(2000)]
    assert all(status == 200 for status, _, _ in answers)
    sock.close()
    _healthy(server)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /echo HTTP/1.1\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
    ids=["no-host", "two-hosts"],
)
def test_an_http_11_request_without_exactly_one_host_gets_400(server: str, head: bytes) -> None:
    sock = _connect(server)
    sock.sendall(head)
    answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"exactly one Host header" in answer
    sock.close()
    sock = _connect(server)  # HTTP/1.0 needs none
    sock.sendall(b"GET /echo HTTP/1.0\r\n\r\n")
    assert _read_all(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_an_error_after_a_complete_answer_keeps_the_connection(server: str) -> None:
    sock = _connect(server)
    sock.sendall(
        b"GET /raise-after HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    )
    (first, _, _), (second, _, body) = _read_responses(sock, 2)
    assert (first, second) == (500, 200)
    assert json.loads(body)["length"] == 3
    sock.close()


def test_http_10_streamed_answer_is_not_chunked(server: str) -> None:
    sock = _connect(server)
    sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")
    answer = _read_all(sock)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower()
    assert body == b"one,two,three"
    sock.close()


def test_http_10_answer_the_app_sends_as_chunked_is_framed_by_the_close(server: str) -> None:
    """An app that sets ``Transfer-Encoding: chunked`` itself: HTTP/1.1 gets chunks, but
    an HTTP/1.0 client cannot decode them (RFC 9112, section 6.1), so it gets the body as
    it is, without the header, ended by the close. (The header and the chunk framing
    used to reach it.)"""
    response = httpx.get(f"{server}/stream-te")
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.content == b"one,two,three"
    sock = _connect(server)
    sock.sendall(b"GET /stream-te HTTP/1.0\r\n\r\n")
    answer = _read_all(sock)
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower()
    assert b"\r\nconnection: close" in head
    assert body == b"one,two,three"
    sock.close()


@pytest.mark.parametrize("count", [1, 3])
def test_a_half_closed_connection_gets_the_answers_to_what_it_sent(server: str, count: int) -> None:
    """A client may send its requests and then half-close (``shutdown(SHUT_WR)``): it
    still gets every answer, from a slow route too, the last with ``connection: close``,
    and then the server closes. (The end of input used to close the connection at once,
    so an answer not ready by then was never sent.) Idle, a half-closed connection closes
    at once."""
    sock = _connect(server)
    sock.sendall(
        b"".join(
            b"POST /slow?n=%d HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" % n
            for n in range(count)
        )
    )
    sock.shutdown(socket.SHUT_WR)
    answers = _read_responses(sock, count)
    assert [json.loads(body)["query"] for _, _, body in answers] == [f"n={n}" for n in range(count)]
    assert answers[-1][1]["connection"] == "close"
    assert _read_all(sock) == b""
    sock.close()

    sock = _connect(server)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    _read_responses(sock, 1)
    start = time.monotonic()
    sock.shutdown(socket.SHUT_WR)
    assert _read_all(sock) == b""
    assert time.monotonic() - start < KEEP_ALIVE_S / 2  # not the keep-alive timer's close
    sock.close()
