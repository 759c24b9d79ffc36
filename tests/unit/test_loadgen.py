"""The load generator behind ``modelport bench`` (cli/_loadgen.py): what it counts, and
that a slow or silent server cannot hold it past its run. The servers here are a few
lines of asyncio on a loopback port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from modelport.cli._loadgen import LoadResult, run_load

Answer = Callable[[], Awaitable[bytes | None]]  # the response, or None: never answer


async def _serve(answer: Answer) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                response = await answer()
                if response is None:
                    await asyncio.sleep(3600)
                writer.write(response or b"")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:  # also when cancelled at the end of the test's event loop
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/models/m/predict"


def _response(status: int) -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\n{{}}".encode()


async def _load(answer: Answer, connections: int, seconds: float, grace_s: float) -> LoadResult:
    server, url = await _serve(answer)
    try:
        return await run_load(url, b"{}", connections, seconds, grace_s=grace_s)
    finally:
        server.close()


def test_percentiles_are_nearest_rank() -> None:
    result = LoadResult(connections=1, seconds=1.0, latencies_s=[i / 1000 for i in range(1, 101)])
    assert result.percentile_ms(0.5) == pytest.approx(50.0)
    assert result.percentile_ms(0.99) == pytest.approx(99.0)
    assert result.percentile_ms(1.0) == pytest.approx(100.0)
    lone = LoadResult(connections=1, seconds=1.0, latencies_s=[0.002])
    assert lone.percentile_ms(0.5) == lone.percentile_ms(0.99) == pytest.approx(2.0)


def test_only_2xx_answers_count_in_the_rate_and_latencies() -> None:
    result = LoadResult(connections=1, seconds=2.0)
    result.record(200, 0.010)
    result.record(503, 0.001)
    result.record(401, 0.001)
    assert result.requests == 1 and result.non_2xx == 2
    assert result.rate == pytest.approx(0.5)
    assert result.percentile_ms(0.5) == pytest.approx(10.0)


def test_a_server_that_never_answers_ends_the_run_with_errors() -> None:
    async def never() -> None:
        return None

    start = time.monotonic()
    result = asyncio.run(_load(never, connections=3, seconds=0.3, grace_s=0.5))
    assert time.monotonic() - start < 5
    assert result.requests == 0 and result.errors == 3


def test_the_rate_counts_the_time_the_last_answers_took_past_the_end() -> None:
    """Answers take 0.4 s and the run 0.5 s: each connection's second request ends at
    0.8 s. Its answer counts, and so does the time it took."""

    async def slow() -> bytes:
        await asyncio.sleep(0.4)
        return _response(200)

    result = asyncio.run(_load(slow, connections=2, seconds=0.5, grace_s=5))
    assert result.requests == 4 and result.errors == 0
    assert result.elapsed_s >= 0.75
    assert result.rate == pytest.approx(result.requests / result.elapsed_s)
