"""A small closed-loop HTTP/1.1 load generator for ``modelport bench`` (asyncio streams).

Each connection sends the same request, waits for the whole response, and sends the next
one until the time is up. It measures what a Python client sees; for the server's own
ceiling use wrk (``benchmarks/run.py``), which costs far less per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    connections: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _request_bytes(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
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
) -> LoadResult:
    host, port, request = _request_bytes(url, body, headers or {})
    result = LoadResult(connections=connections, seconds=seconds)
    deadline = time.monotonic() + seconds

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while time.monotonic() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                start = time.perf_counter()
                writer.write(request)
                status = await _read_response(reader)
                result.latencies_s.append(time.perf_counter() - start)
                if not 200 <= status < 300:
                    result.non_2xx += 1
            except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError):
                result.errors += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)
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
