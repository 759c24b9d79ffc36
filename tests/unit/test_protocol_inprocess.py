"""HttpProtocol driven in-process with a fake transport: what a socket test cannot see.

One ``transport.write`` per JSON response, and no reference cycles left per request (each
would be work for the cyclic garbage collector, whose pauses were once our p99).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from modelport.api import protocol as protocol_module
from modelport.api.protocol import HttpProtocol
from modelport.testing import FakeTransport

REQUEST = (
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    assert message["body"] == b"{}"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def test_one_write_per_response_and_no_garbage_cycles() -> None:
    async def main() -> None:
        config = uvicorn.Config(app, log_config=None, lifespan="off")
        protocol = HttpProtocol(config, ServerState(), {})
        transport = FakeTransport()
        protocol.connection_made(transport)
        for _ in range(5):  # warm up
            protocol.data_received(REQUEST)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        transport.writes.clear()
        gc.collect()
        gc.disable()
        try:
            for _ in range(200):
                protocol.data_received(REQUEST)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            assert len(transport.writes) == 200
            assert all(
                w.startswith(b"HTTP/1.1 200 OK\r\n") and w.endswith(b"\r\n\r\n{}")
                for w in transport.writes
            )
            found = gc.collect()
        finally:
            gc.enable()
        assert found < 50, f"{found} objects in reference cycles after 200 requests"
        protocol.connection_lost(None)

    asyncio.run(main())


def test_direct_predict_answers_and_meters_the_served_version(tmp_path: Any) -> None:
    """A predict request served by the direct path (no ASGI) is answered with the same
    headers and metered under the version that served it, as the ASGI gate does."""

    async def main() -> None:
        services, protocol, transport = await _direct_protocol(tmp_path, ServerState())
        for _ in range(3):
            await _predict(protocol)
        assert len(transport.writes) == 3
        answer = transport.writes[0]
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        for header in (b"x-model-version: 1", b"x-content-type-options: nosniff", b"x-request-id"):
            assert header in answer
        assert answer.endswith(b'"outputs":[{"y":[2.0,4.0,6.0]}]}')
        gate = services.security
        assert gate is not None
        pending = gate.meter._pending
        assert {group[:3]: counts.requests for group, counts in pending.items()} == {
            ("anonymous", "m", "1"): 3
        }
        protocol.connection_lost(None)

    asyncio.run(main())


def test_direct_answers_carry_the_current_default_headers_and_refuse_bad_ones(
    tmp_path: Any,
) -> None:
    """The server's default headers are rendered once per list uvicorn makes (each second,
    for the date): a new list shows up on the next answer, and a CR/LF in one (a bad
    ``--header``) gets a 500 and a closed connection, never a split response."""

    async def main() -> None:
        state = ServerState()
        state.default_headers = [(b"date", b"Mon, 23 Nov 2026 11:00:00 GMT")]
        _, protocol, transport = await _direct_protocol(tmp_path, state)
        await _predict(protocol)
        state.default_headers = [(b"date", b"Mon, 23 Nov 2026 11:00:01 GMT")]
        await _predict(protocol)
        assert b"\r\ndate: Mon, 23 Nov 2026 11:00:00 GMT\r\n" in transport.writes[0]
        assert b"\r\ndate: Mon, 23 Nov 2026 11:00:01 GMT\r\n" in transport.writes[1]
        state.default_headers = [(b"server", b"x\r\nset-cookie: evil=1")]
        await _predict(protocol)
        assert transport.writes[2].startswith(b"HTTP/1.1 500 ")
        assert b"evil" not in transport.writes[2]
        assert transport.closed
        protocol.connection_lost(None)

    asyncio.run(main())


def test_a_cr_or_lf_in_an_answer_header_gets_a_500_not_a_split_response(tmp_path: Any) -> None:
    """The direct path's own header values come from the registry and the gate, not the
    client; if one ever holds a CR or LF (here: a version name given to ``add_object``,
    which does not check names), the answer is refused rather than written."""

    async def main() -> None:
        _, protocol, transport = await _direct_protocol(
            tmp_path, ServerState(), version="1\r\nset-cookie: evil=1"
        )
        await _predict(protocol)
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 500 ")
        assert b"evil" not in transport.writes[0]
        assert transport.closed
        protocol.connection_lost(None)

    asyncio.run(main())


async def refuse_unread(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 413 without reading the body, as the body-limit check does."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


UPLOAD = (
    b"POST /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
    + b"x" * 1000
)


def _upload(half_close: bool = True) -> tuple[HttpProtocol, FakeTransport]:
    config = uvicorn.Config(refuse_unread, log_config=None, lifespan="off")
    protocol = HttpProtocol(config, ServerState(), {})
    transport = FakeTransport()
    transport.half_close = half_close
    protocol.connection_made(transport)
    protocol.data_received(UPLOAD)
    return protocol, transport


async def _answered(transport: FakeTransport) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 413 ")


@pytest.fixture
def short_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol_module, "LINGER_IDLE_S", 0.05)
    monkeypatch.setattr(protocol_module, "LINGER_MAX_S", 0.3)


@pytest.mark.usefixtures("short_linger")
def test_an_answer_before_the_upload_ends_closes_in_stages() -> None:
    """Answered before its body is in, a ``Connection: close`` request is not closed at
    once (the client's unread bytes would draw a reset): FIN first, then what the client
    still sends is dropped until it has sent nothing for LINGER_IDLE_S."""

    async def main() -> None:
        protocol, transport = _upload()
        await _answered(transport)
        assert transport.eof_written and not transport.closed
        for _ in range(3):  # the upload goes on: dropped, no parser error, no answer
            protocol.data_received(b"x" * 50_000)
            await asyncio.sleep(0.03)
        protocol.data_received(b"GET / HTTP/1.1\r\n\r\n")
        assert len(transport.writes) == 1 and not transport.closed
        await asyncio.sleep(0.1)
        assert transport.closed  # quiet for LINGER_IDLE_S
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.mark.usefixtures("short_linger")
def test_a_client_that_never_stops_sending_is_closed_after_linger_max() -> None:
    async def main() -> None:
        protocol, transport = _upload()
        await _answered(transport)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not transport.closed:
            assert loop.time() - start < 1.0, "still open long after LINGER_MAX_S"
            protocol.data_received(b"x" * 1000)
            await asyncio.sleep(0.01)
        assert loop.time() - start >= 0.25
        protocol.connection_lost(None)

    asyncio.run(main())


def test_no_lingering_over_tls_or_while_the_server_stops() -> None:
    """A transport that cannot half-close (TLS) is closed at once, as before; so is a
    connection whose upload is cut short by a graceful shutdown."""

    async def main() -> None:
        protocol, transport = _upload(half_close=False)
        await _answered(transport)
        assert transport.closed and not transport.eof_written
        protocol.connection_lost(None)

        protocol, transport = _upload()
        protocol.shutdown()  # before the app answers, with the upload still arriving
        await _answered(transport)
        assert transport.closed and not transport.eof_written
        protocol.connection_lost(None)

    asyncio.run(main())


async def read_all(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, answers its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def test_a_chunk_with_one_requests_body_and_the_next_ones_head_is_not_counted_as_head() -> None:
    """The head-size check counts only chunks that were all one request's head: a chunk
    holding the end of one head, a 100 KB body and the start of the next request must not
    get that next request a 431."""

    async def main() -> None:
        config = uvicorn.Config(read_all, log_config=None, lifespan="off")
        protocol = HttpProtocol(config, ServerState(), {})
        transport = FakeTransport()
        protocol.connection_made(transport)
        body = b"x" * 100_000
        protocol.data_received(b"POST /a HTTP/1.1\r\nHost: x\r\n")
        protocol.data_received(
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body) + b"GET /b HTTP/1.1\r\nHo"
        )
        protocol.data_received(b"st: x\r\n\r\n")
        for _ in range(20):
            await asyncio.sleep(0)
        answers = b"".join(transport.writes)
        assert answers.count(b"HTTP/1.1 200 OK") == 2, answers[:300]
        assert b"431" not in answers
        protocol.connection_lost(None)

    asyncio.run(main())


def test_a_malformed_request_behind_one_being_answered_closes_at_once() -> None:
    """A 400 for a pipelined request while the one before it is still being answered
    closes the connection as before: a half-closed one would refuse that answer's
    writes."""

    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.02)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def main() -> None:
        config = uvicorn.Config(slow, log_config=None, lifespan="off")
        protocol = HttpProtocol(config, ServerState(), {})
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n")
        await asyncio.sleep(0.05)
        assert transport.closed and not transport.eof_written
        assert transport.writes[0].startswith(b"HTTP/1.1 400 ")
        protocol.connection_lost(None)

    asyncio.run(main())


async def _direct_protocol(
    tmp_path: Any, state: ServerState, version: str = "1"
) -> tuple[Any, Any, FakeTransport]:
    """(services, protocol, transport): one connection to a served FakeModel ``m`` (at
    ``version``) whose predict requests take the direct path."""
    from modelport.api.app import create_app
    from modelport.testing import FakeModel, build_test_services

    services = build_test_services(data_dir=tmp_path)
    services.registry.add_object("m", FakeModel(), version=version)
    app = create_app(services)
    await services.registry.load_all()
    config = uvicorn.Config(app, log_config=None, lifespan="off", proxy_headers=False)
    protocol = HttpProtocol(config, state, {})
    assert protocol.direct is not None
    transport = FakeTransport()
    protocol.connection_made(transport)
    return services, protocol, transport


async def _predict(protocol: HttpProtocol) -> None:
    body = b'{"inputs": [[1, 2, 3]]}'
    head = b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    protocol.data_received(head % len(body) + body)
    for _ in range(5):
        await asyncio.sleep(0)
