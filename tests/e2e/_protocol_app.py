"""A small ASGI app for tests/e2e/test_protocol.py, served by uvicorn with modelport's protocol."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from modelport.api.protocol import ON_DISCONNECT

DISCONNECTS: list[str] = []


async def _read(receive: Any) -> bytes:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _json(send: Any, status: int, data: Any, extra: list[Any] | None = None) -> None:
    body = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/echo":
        body = await _read(receive)
        await _json(
            send,
            200,
            {
                "method": scope["method"],
                "path": path,
                "query": scope["query_string"].decode(),
                "length": len(body),
                "sha": hashlib.sha256(body).hexdigest(),
                "http_version": scope["http_version"],
            },
        )
    elif path == "/slow":  # as /echo, a moment later
        body = await _read(receive)
        await asyncio.sleep(0.2)
        await _json(send, 200, {"query": scope["query_string"].decode(), "length": len(body)})
    elif path in ("/stream", "/stream-te"):  # /stream-te: the app asks for chunks itself
        headers = [(b"transfer-encoding", b"chunked")] if path == "/stream-te" else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/split":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-note", b"a\r\nset-cookie: evil=1"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/boom":
        raise RuntimeError("boom")
    elif path == "/headers":  # the request's header names, after its body (and trailers)
        await _read(receive)
        await _json(send, 200, sorted(name.decode() for name, _ in scope["headers"]))
    elif path == "/raise-after":  # a whole answer, then an error (as Starlette's 500 does)
        await _read(receive)
        await _json(send, 500, {"error": "after"})
        raise RuntimeError("after the answer")
    elif path == "/wait":
        await _read(receive)
        message = await receive()  # blocks until the client goes away
        DISCONNECTS.append(message["type"])
    elif path == "/callback":  # the ON_DISCONNECT extension instead of receive()
        await _read(receive)
        seen = asyncio.Event()
        scope["extensions"][ON_DISCONNECT](seen.set)
        await seen.wait()
        DISCONNECTS.append("callback")
    elif path == "/disconnects":
        await _read(receive)
        await _json(send, 200, DISCONNECTS)
    else:
        await _json(send, 404, {"error": "not found"})
