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

from modelport.api import _timers
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
    monkeypatch.setattr(_timers, "LINGER_IDLE_S", 0.05)
    monkeypatch.setattr(_timers, "LINGER_MAX_S", 0.3)


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


def test_a_malformed_request_behind_one_being_answered_gets_its_400_after_that_answer() -> None:
    """Answers go out in request order (RFC 9112, section 9.3.2): a malformed request
    pipelined behind one still being answered gets its 400 once that answer is out, then
    the connection closes in stages. (It used to be written at once, ahead of the answer
    the client was waiting for, which was then lost.)"""

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
        await asyncio.sleep(0)
        assert transport.writes == [] and not transport.closed
        await asyncio.sleep(0.05)
        assert [w[:12] for w in transport.writes] == [b"HTTP/1.1 200", b"HTTP/1.1 400"]
        assert transport.eof_written
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


def _connection(app: Any, keep_alive_s: float = 5.0) -> tuple[HttpProtocol, FakeTransport]:
    config = uvicorn.Config(app, log_config=None, lifespan="off", timeout_keep_alive=keep_alive_s)
    protocol = HttpProtocol(config, ServerState(), {})
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _turns(count: int = 10) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_no_requests_are_read_while_the_client_does_not_read_our_answers() -> None:
    """Write backpressure: once the transport's buffer is full (pause_writing), reading
    stops until it drains, so a client that sends requests and never reads the answers
    cannot make the server buffer answers without bound."""

    async def main() -> None:
        protocol, transport = _connection(app)
        protocol.data_received(REQUEST)
        await _turns()
        protocol.pause_writing()
        assert protocol.flow.read_paused
        protocol.data_received(REQUEST)  # already in flight: its answer waits for the drain
        await _turns()
        assert len(transport.writes) == 1
        assert protocol.flow.read_paused
        protocol.resume_writing()
        await _turns()
        assert len(transport.writes) == 2
        assert not protocol.flow.read_paused
        protocol.connection_lost(None)

    asyncio.run(main())


def test_pipelined_requests_answered_at_once_do_not_recurse(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued direct-path requests answered synchronously (here a 404 each) run in a loop,
    not each from inside the previous answer: 400 of them used to exhaust the stack and
    leave the connection hanging."""
    monkeypatch.setattr(protocol_module, "MAX_PIPELINE", 1000)

    async def main() -> None:
        _, protocol, transport = await _direct_protocol(tmp_path, ServerState())
        slow = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # ASGI: answered on a later turn
        missing = b"POST /v1/models/nope/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        protocol.data_received(slow + missing * 400)
        for _ in range(2000):
            await asyncio.sleep(0)
            if len(transport.writes) == 401:
                break
        assert len(transport.writes) == 401
        assert all(w.startswith(b"HTTP/1.1 404 ") for w in transport.writes[1:])
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.mark.parametrize("expect", [b"", b"Expect: 100-continue\r\n"], ids=["plain", "expect"])
def test_an_answer_before_the_body_arrives_closes_a_kept_alive_connection(expect: bytes) -> None:
    """What the client sends after such an answer is the rest of its body (or nothing,
    if it waits for a 100 Continue), so no next request can be told apart: the answer
    says ``connection: close`` and the connection closes in stages."""

    async def main() -> None:
        protocol, transport = _connection(refuse_unread)
        protocol.data_received(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n" + expect + b"\r\n"
        )
        await _turns()
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 413 ")
        assert b"\r\nconnection: close\r\n" in transport.writes[0]
        assert transport.eof_written
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.fixture
def short_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_timers, "STALL_S", 0.05)


@pytest.mark.usefixtures("short_stall")
def test_a_request_body_that_stops_arriving_gets_408_and_a_close() -> None:
    async def main() -> None:
        protocol, transport = _connection(read_all, keep_alive_s=0.02)
        protocol.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        await asyncio.sleep(0.06)
        assert not transport.closed  # progress within STALL_S
        protocol.data_received(b"cd")
        await asyncio.sleep(0.25)
        assert transport.closed
        assert transport.writes[0].startswith(b"HTTP/1.1 408 ")
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.mark.usefixtures("short_stall")
def test_a_client_that_stops_reading_our_answer_is_cut_off() -> None:
    async def main() -> None:
        protocol, transport = _connection(app, keep_alive_s=0.02)
        protocol.data_received(REQUEST)
        await _turns()
        protocol.pause_writing()
        await asyncio.sleep(0.04)
        protocol.resume_writing()  # the client reads a little: progress
        protocol.pause_writing()
        await asyncio.sleep(0.04)
        assert not transport.closed
        await asyncio.sleep(0.2)
        assert transport.aborted  # close() would wait for a drain that never comes
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.mark.usefixtures("short_stall")
def test_a_slow_app_is_not_timed_as_a_stalled_client() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.3)
        await app_answer(send)

    async def main() -> None:
        protocol, transport = _connection(slow, keep_alive_s=0.02)
        protocol.data_received(REQUEST)
        await asyncio.sleep(0.25)  # five times STALL_S, and more than ten keep-alive times
        assert not transport.closed
        await asyncio.sleep(0.1)
        assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
        protocol.connection_lost(None)

    asyncio.run(main())


async def app_answer(send: Any) -> None:
    headers = [(b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the body, then answers 20 ms later: a request that is being answered a while."""
    await receive()
    await asyncio.sleep(0.02)
    await app_answer(send)


def test_http_10_expect_100_continue_is_ignored() -> None:
    async def main() -> None:
        protocol, transport = _connection(read_all)
        protocol.data_received(
            b"POST /p HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        await _turns()
        protocol.data_received(b"{}")
        await _turns()
        assert b"100 Continue" not in b"".join(transport.writes)
        assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
        protocol.connection_lost(None)

    asyncio.run(main())


def test_an_upgrade_request_answered_at_once_closes_the_connection(tmp_path: Any) -> None:
    """An upgrade request answered by the direct path (a 404, inside the parser's own
    call) is answered with ``connection: close``, as on the ASGI path; what followed it
    is not HTTP and is not parsed."""

    async def main() -> None:
        _, protocol, transport = await _direct_protocol(tmp_path, ServerState())
        protocol.data_received(
            b"POST /v1/models/nope/predict HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n"
            b"Upgrade: h2c\r\nContent-Length: 2\r\n\r\n{}GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await _turns()
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 404 ")
        assert b"\r\nconnection: close\r\n" in transport.writes[0]
        assert transport.closed or transport.eof_written
        protocol.connection_lost(None)

    asyncio.run(main())


def test_the_disconnect_callback_runs_once() -> None:
    calls: list[int] = []

    async def watching(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["extensions"][protocol_module.ON_DISCONNECT](lambda: calls.append(1))
        await asyncio.sleep(1)

    async def main() -> None:
        protocol, _ = _connection(watching)
        protocol.data_received(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n")
        await _turns()
        protocol.connection_lost(None)
        assert calls == [1]

    asyncio.run(main())


def test_a_flood_of_pipelined_requests_is_parsed_as_the_queue_drains() -> None:
    """One read of thousands of tiny pipelined requests: parsed a slice at a time, and no
    further once MAX_PIPELINE wait, the rest kept as bytes (a parsed request costs ~40
    times its size); every one is answered, in order, on the same connection."""

    async def main() -> None:
        protocol, transport = _connection(read_all)
        request = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        protocol.data_received(request * 4000)
        assert len(protocol.pipeline) <= protocol_module.MAX_PIPELINE + (
            protocol_module._SLICE // len(request) + 1
        )
        assert len(protocol.backlog) > len(request) * 3000
        assert protocol.flow.read_paused
        for _ in range(20000):
            await asyncio.sleep(0)
            if len(transport.writes) == 4000:
                break
        assert len(transport.writes) == 4000
        assert all(w.startswith(b"HTTP/1.1 200 ") for w in transport.writes)
        assert not transport.closed and not protocol.backlog
        assert not protocol.flow.read_paused
        protocol.connection_lost(None)

    asyncio.run(main())


def test_a_queued_request_with_a_malformed_body_is_refused_after_the_answers_before_it() -> None:
    """The request that fails is itself queued, its chunked body broken: it cannot be
    served, so it leaves the queue and its 400 follows the answer before it (it used to
    wait for a body that would never be parsed, holding the connection for ever)."""

    async def main() -> None:
        protocol, transport = _connection(slow_app)
        protocol.data_received(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"inp\r\nZZZ\r\n'
        )
        await asyncio.sleep(0.1)
        assert [w[:12] for w in transport.writes] == [b"HTTP/1.1 200", b"HTTP/1.1 400"]
        assert transport.eof_written
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.mark.usefixtures("short_stall")
def test_a_close_the_client_never_lets_finish_becomes_an_abort() -> None:
    """close() waits for our unsent answer; a client that does not read never takes it,
    so every close the protocol makes on its own is followed by an abort after STALL_S."""

    async def main() -> None:
        protocol, transport = _connection(app, keep_alive_s=0.02)
        protocol.data_received(REQUEST)
        await asyncio.sleep(0.05)  # answered, then idle past the keep-alive time
        assert transport.closed and not transport.aborted
        await asyncio.sleep(0.1)
        assert transport.aborted  # connection_lost never came
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.mark.usefixtures("short_stall")
def test_a_client_waiting_for_100_continue_is_not_timed() -> None:
    """With Expect: 100-continue the client holds its body until the app asks for it
    (receive), so a slow app is not the client's stall: no 408."""

    async def late(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(0.3)
        await receive()
        await app_answer(send)

    async def main() -> None:
        protocol, transport = _connection(late, keep_alive_s=0.02)
        protocol.data_received(
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        await asyncio.sleep(0.35)
        assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        protocol.data_received(b"{}")
        await _turns()
        assert transport.writes[1].startswith(b"HTTP/1.1 200 ")
        protocol.connection_lost(None)

    asyncio.run(main())


def test_reading_stays_paused_while_the_app_has_not_taken_the_body_it_has() -> None:
    """A drained write buffer (resume_writing) does not read more of an upload the app
    has not asked for: past HIGH_WATER the body waits in the socket."""

    async def streams(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(1)

    async def main() -> None:
        protocol, _ = _connection(streams)
        protocol.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        protocol.data_received(b"x" * (protocol_module.HIGH_WATER + 1))
        assert protocol.flow.read_paused
        protocol.pause_writing()
        protocol.resume_writing()
        assert protocol.flow.read_paused
        protocol.connection_lost(None)

    asyncio.run(main())


def test_a_half_closed_connection_is_answered_then_closed() -> None:
    """The end of input (``eof_received``) with a request being answered keeps our side
    open (True): the answer says ``connection: close`` and the connection then closes at
    once (no lingering: the client has sent all it will). With nothing owed, or with a
    body that can no longer arrive, it closes now."""

    async def main() -> None:
        protocol, transport = _connection(slow_app)
        protocol.data_received(REQUEST)
        await _turns()
        assert protocol.eof_received() is True
        assert not transport.closed
        await asyncio.sleep(0.05)
        assert len(transport.writes) == 1
        assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
        assert b"\r\nconnection: close\r\n" in transport.writes[0]
        assert transport.closed and not transport.eof_written
        protocol.connection_lost(None)

        protocol, transport = _connection(slow_app)  # answered: idle
        protocol.data_received(REQUEST)
        await asyncio.sleep(0.05)
        assert not protocol.eof_received()
        assert transport.closed
        protocol.connection_lost(None)

        protocol, transport = _connection(read_all)  # a body cut short
        protocol.data_received(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        await _turns()
        assert not protocol.eof_received()
        assert transport.closed
        protocol.connection_lost(None)

    asyncio.run(main())


def test_the_end_of_input_is_the_client_leaving_for_an_app_that_watches_for_it(
    tmp_path: Any,
) -> None:
    """TCP does not tell a half-close from a client that left. An app that watches for
    the client leaving (``receive()`` after its body, or the ON_DISCONNECT callback: the
    predict path, to drop queued work) is told at the end of input, even if its watch
    begins later; an app that does not watch gets to answer (above)."""
    seen: list[str] = []

    async def watches_later(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.02)
        seen.append((await receive())["type"])

    async def main() -> None:
        protocol, transport = _connection(watches_later)
        protocol.data_received(REQUEST)
        await _turns()
        assert protocol.eof_received() is True  # not watching yet
        await asyncio.sleep(0.05)
        assert transport.closed and transport.writes == []
        protocol.connection_lost(None)
        await _turns()
        assert seen == ["http.disconnect"]

        _, protocol, transport = await _direct_protocol(tmp_path, ServerState())
        body = b'{"inputs": [[1, 2, 3]]}'
        head = b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        protocol.data_received(head % len(body) + body)  # queued, watching
        assert not protocol.eof_received()
        assert transport.closed
        protocol.connection_lost(None)
        await _turns()
        assert transport.writes == []  # withdrawn from the batch queue

    asyncio.run(main())


@pytest.mark.parametrize("status", [204, 304])
def test_a_bodiless_answer_the_app_marks_chunked_gets_no_chunk_framing(status: int) -> None:
    """A 204 or 304 has no body whatever its headers say (RFC 9112, section 6.3), so an
    app's own ``Transfer-Encoding: chunked`` on one must not bring a last chunk
    (``0\\r\\n\\r\\n``): the client would read it as the start of the next answer on the
    connection. The header is not sent either (RFC 9112, section 6.1, for 204)."""

    async def bodiless(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        headers = [(b"transfer-encoding", b"chunked")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def main() -> None:
        protocol, transport = _connection(bodiless)
        protocol.data_received(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await _turns()
        assert len(transport.writes) == 2
        for answer in transport.writes:
            assert answer.startswith(b"HTTP/1.1 %d " % status)
            assert answer.endswith(b"\r\n\r\n") and answer.count(b"\r\n\r\n") == 1
            assert b"transfer-encoding" not in answer.lower()
        assert not transport.closed  # the connection goes on
        protocol.connection_lost(None)

    asyncio.run(main())


def test_over_tls_the_end_of_input_closes_at_once() -> None:
    """A TLS transport cannot stay open after the client's end of input (asyncio's and
    uvloop's SSL layers shut the connection down whatever ``eof_received`` returns, and
    log a warning for a True), so over TLS the end of input closes the connection, as
    the client leaving: no half-closed state, no warning."""

    async def main() -> None:
        config = uvicorn.Config(slow_app, log_config=None, lifespan="off")
        protocol = HttpProtocol(config, ServerState(), {})
        transport = FakeTransport()
        transport._extra["sslcontext"] = object()  # what is_ssl() looks for
        transport.half_close = False  # as an SSL transport says
        protocol.connection_made(transport)
        assert protocol.scheme == "https"
        protocol.data_received(REQUEST)
        await _turns()
        assert not protocol.eof_received()
        assert transport.closed and not protocol.half_closed
        protocol.connection_lost(None)

    asyncio.run(main())


@pytest.mark.parametrize("half_closed", [False, True])
def test_a_disconnect_watch_begun_after_the_client_left_is_told_at_once(
    half_closed: bool,
) -> None:
    """An app that registers its ON_DISCONNECT callback after the connection was lost
    (between reading the body and queueing its work, say) is called back at once: it
    would otherwise wait for ever, or run work for a gone client. And nothing is armed on
    the lost connection (a half-closed one used to start its 30 s abort timer again)."""
    seen: list[str] = []
    go = asyncio.Event()

    async def late(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await go.wait()
        scope["extensions"][protocol_module.ON_DISCONNECT](lambda: seen.append("gone"))

    async def main() -> None:
        protocol, _ = _connection(late)
        protocol.data_received(REQUEST)
        await _turns()
        if half_closed:
            assert protocol.eof_received() is True  # not watching yet
        protocol.connection_lost(ConnectionResetError())
        go.set()
        await _turns()
        assert seen == ["gone"]
        assert protocol.timer is None

    asyncio.run(main())


@pytest.mark.usefixtures("short_stall")
def test_an_answer_cut_short_for_a_client_that_does_not_read_ends_in_an_abort() -> None:
    """An app that fails halfway through its answer gets the connection closed, so the
    client sees the answer cut short. With the client not reading, close() waits for
    the unsent bytes for ever (the stall timer stops once the transport is closing), so
    that close, like every close the protocol makes on its own, becomes an abort after
    STALL_S."""
    go = asyncio.Event()

    async def breaks(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await go.wait()
        raise RuntimeError("halfway")

    async def main() -> None:
        protocol, transport = _connection(breaks)
        protocol.data_received(REQUEST)
        await _turns()
        protocol.pause_writing()  # the client stopped reading
        go.set()
        await asyncio.sleep(0.3)
        assert transport.closed and transport.aborted
        protocol.connection_lost(None)

    asyncio.run(main())
