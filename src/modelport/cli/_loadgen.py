"""A small closed-loop HTTP/1.1 load generator for ``modelport bench`` (asyncio streams).

Each connection sends the same request, waits for the whole response, and sends the next
one until the time is up. It measures what a Python client sees; for the server's own
ceiling use wrk (``benchmarks/run.py``), which costs far less per request.

Only 2xx answers count in the rate and the latencies: an error page is often much faster
(or slower) than a prediction, and would make a failing server look good. Other answers
are counted in ``non_2xx``; failed connections and requests that outlive the run by more
than ``GRACE_S`` (a server that accepts and never answers) in ``errors``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

GRACE_S = 5.0  # how long a request may run past the end of the run before it is dropped


@dataclass
class LoadResult:
    """One run: ``latencies_s`` of the 2xx answers; ``elapsed_s`` from the start to the
    last answer (at least ``seconds``: requests sent before the end finish after it)."""

    connections: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0
    elapsed_s: float = 0.0

    def record(self, status: int, latency_s: float) -> None:
        if 200 <= status < 300:
            self.latencies_s.append(latency_s)
        else:
            self.non_2xx += 1

    @property
    def requests(self) -> int:
        """2xx answers."""
        return len(self.latencies_s)

    @property
    def rate(self) -> float:
        """2xx answers per second of the run, its tail of late answers included."""
        elapsed = max(self.seconds, self.elapsed_s)
        return self.requests / elapsed if elapsed else 0.0

    def percentile_ms(self, q: float) -> float:
        """The nearest-rank percentile: the smallest latency with at least ``q`` of them
        at or below it."""
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        rank = max(1, math.ceil(q * len(ordered)))
        return 1000 * ordered[min(len(ordered), rank) - 1]


def check_url(url: str) -> None:
    """The load generator speaks plain HTTP/1.1: an http:// URL with a host, or ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"use an http:// URL such as http://127.0.0.1:8000, got {url!r} "
            "(the load generator speaks plain HTTP/1.1)"
        )


def _request_bytes(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    check_url(url)
    parts = urlsplit(url)
    assert parts.hostname is not None  # check_url
    port = parts.port or 80
    head = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.hostname}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return parts.hostname, port, ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def run_load(
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    on_tick: Callable[[float], None] | None = None,
    grace_s: float = GRACE_S,
) -> LoadResult:
    host, port, request = _request_bytes(url, body, headers or {})
    result = LoadResult(connections=connections, seconds=seconds)
    started = time.monotonic()
    deadline = started + seconds

    # never wait on a silent server past the run and its grace: one limit per connection
    # (a timeout per request would cost a task each)
    give_up = asyncio.get_running_loop().time() + seconds + grace_s

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout_at(give_up):
                while time.monotonic() < deadline:
                    try:
                        if writer is None:
                            reader, writer = await asyncio.open_connection(host, port)
                        assert reader is not None
                        start = time.perf_counter()
                        writer.write(request)
                        status = await _read_response(reader)
                        result.record(status, time.perf_counter() - start)
                        result.elapsed_s = max(result.elapsed_s, time.monotonic() - started)
                    except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                        result.errors += 1
                        if writer is not None:
                            writer.close()
                        reader = writer = None
                        await asyncio.sleep(0.01)
        except TimeoutError:  # the request in flight outlived the grace: cancelled
            result.errors += 1
        finally:
            if writer is not None:
                writer.close()

    async def ticker() -> None:
        start = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if on_tick is not None:
                on_tick(min(seconds, time.monotonic() - start))

    await asyncio.gather(ticker(), *(connection() for _ in range(connections)))
    return result
