"""Pure-ASGI middleware: request id and body-size limit (no BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

import itertools
import os
import re

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.api.errors import error_response
from modelport.errors import PayloadTooLarge

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdMiddleware:
    """Takes a sane ``X-Request-Id`` from the client or makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _VALID_ID.match(value):
                    rid = value
                break
        if rid is None:
            rid = f"{self._prefix}-{next(self._counter):x}".encode()
        scope.setdefault("state", {})["request_id"] = rid.decode()
        header = (b"x-request-id", rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413, without reading them into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
                break
        if length is not None:
            if length > self.limit:
                response = error_response(
                    Request(scope),
                    413,
                    PayloadTooLarge.code,
                    f"the body is {length} bytes; the limit is {self.limit}",
                )
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # no Content-Length (chunked): count as it streams in
        received = 0
        limit = self.limit

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)
