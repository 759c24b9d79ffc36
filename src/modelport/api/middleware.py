"""Pure-ASGI middleware at the edge: request id, body-size limit, security headers."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.api.errors import error_response
from modelport.api.hardening import ResponseHeaders
from modelport.errors import PayloadTooLarge

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


class EdgeMiddleware:
    """The outermost layer, one pass per request for what every request needs:

    - a request id: a sane ``X-Request-Id`` from the client, or ``<random prefix>-<counter>``;
      put in ``scope["state"]["request_id"]`` and echoed on the response;
    - the body-size limit: 413 from ``Content-Length`` before anything is read, or counted
      as a chunked body streams in;
    - the security headers of ``api.hardening.ResponseHeaders`` on every response, error
      answers from inner layers included (``headers=None`` turns them off).

    One layer rather than three because each layer's ``send`` wrapper costs about as much as
    the work it does (docs/benchmarks.md).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limit: int,
        headers: ResponseHeaders | None,
        too_large: ASGIApp | None = None,
    ) -> None:
        """``too_large`` answers a request whose ``Content-Length`` is over the limit
        (default: ``payload_too_large(body_limit)``); wrap it in the same CORS layer as
        ``app`` so browsers can read that 413 too."""
        self.app = app
        self.body_limit = body_limit
        self.headers = headers
        self.too_large = too_large or payload_too_large(body_limit)
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)
        # api/direct.py's DirectPredict, when create_app could build one: the protocol
        # serves predict requests through it instead of through this ASGI chain
        self.direct: Any = None

    def begin(self, scope: Scope) -> tuple[bytes, bytes | None]:
        """Give the request its id (``scope["state"]["request_id"]``); returns the id and
        the declared ``Content-Length``. Shared with the direct predict path."""
        rid: bytes | None = None
        declared: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if rid is None and _VALID_ID.match(value):
                    rid = value
            elif key == b"content-length" and declared is None:
                declared = value
        if rid is None:
            rid = f"{self._prefix}-{next(self._counter):x}".encode()
        scope.setdefault("state", {})["request_id"] = rid.decode()
        return rid, declared

    def finish(
        self, scope: Scope, rid: bytes, headers: list[tuple[bytes, bytes]], *, api: bool = False
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` plus the security headers and the request id (changed in place).
        ``api``: a JSON answer whose own headers are known to include none of the security
        headers and that is not an admin page (the direct predict path's): no scan needed."""
        if self.headers is not None:
            tls = scope.get("scheme") == "https"
            headers += (
                self.headers.for_api(tls)
                if api
                else self.headers.extra(headers, tls, scope["path"].startswith("/admin"))
            )
        headers.append((b"x-request-id", rid))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid, declared = self.begin(scope)
        finish = self.finish

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = finish(scope, rid, list(message.get("headers", ())))
            await send(message)

        length = _length(declared)
        if length is None:  # chunked, or a Content-Length we cannot trust: count instead
            receive = _counting(receive, self.body_limit)
        elif length > self.body_limit:
            await self.too_large(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def payload_too_large(limit: int) -> ASGIApp:
    """The 413 answer for a declared ``Content-Length`` over ``limit``; nothing is read."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        message = f"the body is {_length(declared)} bytes; the limit is {limit}"
        response = error_response(Request(scope), 413, PayloadTooLarge.code, message)
        await response(scope, receive, send)

    return app


def _length(declared: bytes | None) -> int | None:
    """A usable ``Content-Length`` value, or None (absent, not a number, negative)."""
    if declared is None:
        return None
    try:
        length = int(declared)
    except ValueError:
        return None
    return length if length >= 0 else None


def _counting(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        return message

    return counting_receive
