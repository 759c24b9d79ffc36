"""One request's ASGI side on modelport's HTTP/1.1 connection (``api/protocol.py``).

``Cycle`` is a request's ``receive`` and ``send``: it hands the app the body the
connection has parsed, and turns the app's response messages into bytes on the wire
(status line, checked headers, framing: Content-Length, chunked, or for HTTP/1.0 the
connection's close). The direct predict path (``api/direct.py``) answers through
``Cycle.respond`` instead. The connection (``HttpProtocol``) owns the socket, the parser,
the request queue and the timers; a cycle tells it when its answer is complete
(``response_complete``).
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelport.api.protocol import HttpProtocol

log = logging.getLogger("modelport.http")

_DISCONNECT = {"type": "http.disconnect"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_BODY = frozenset((204, 304))


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}


def plain_answer(status: int, message: str) -> bytes:
    """A whole text answer that closes the connection (the protocol's own errors)."""
    body = message.encode()
    head = (
        f"content-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return STATUS_LINES[status] + head.encode() + body


_defaults_cache: tuple[Any, bytes | None] = (None, b"")


def _rendered_defaults(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """uvicorn's default response headers as head lines, rendered and checked once per
    list (uvicorn makes a new list each second, for the date); None if a name or value
    holds a CR or LF (``--header`` values come from the command line)."""
    global _defaults_cache
    cached, block = _defaults_cache
    if headers is not cached:
        block = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        if block.count(b"\n") != len(headers) or block.count(b"\r") != len(headers):
            block = None
        _defaults_cache = (headers, block)
    return block


def _call_gone(callback: Callable[[], None]) -> None:
    """Call an ``ON_DISCONNECT`` callback; what it raises is logged, not raised."""
    try:
        callback()
    except Exception:
        log.exception("disconnect callback failed")


class Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of that request."""

    __slots__ = (
        "buffered",
        "chunked",
        "chunks",
        "complete",
        "conn",
        "continue_owed",
        "delivered",
        "direct",
        "disconnected",
        "gone",
        "head",
        "keep_alive",
        "left",
        "more_body",
        "pending",
        "scope",
        "started",
        "waiter",
    )

    def __init__(
        self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.continue_owed = expect
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.more_body = True
        self.delivered = False  # the last body chunk went to the app
        self.disconnected = False
        self.gone: Callable[[], None] | None = None  # see protocol.ON_DISCONNECT
        self.direct: Any = None  # served by api/direct.py rather than the ASGI app
        self.pending: Any = None  # the app to start once the body is in (direct path)
        self.waiter: asyncio.Future[None] | None = None
        self.started = False
        self.complete = False
        self.head = b""  # status line and headers, written with the first body bytes
        self.chunked = False
        self.left = 0  # body bytes still owed under Content-Length

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        if callback is not None and self.disconnected:
            # the connection was lost before the watch began: say so now (it would wait
            # for ever), and arm nothing on the lost connection
            _call_gone(callback)
            return
        self.gone = callback
        if callback is not None and self.conn.half_closed:
            # a watch begun after the end of input: that end counts as the client leaving
            # (see HttpProtocol.eof_received); the callback runs on the close
            self.conn._close()

    def lost(self) -> None:
        """The connection was lost: a request not yet answered learns that its client
        left (its ``ON_DISCONNECT`` callback, a ``receive()`` waiting)."""
        if not self.complete:
            self.disconnected = True
            if self.gone is not None:
                _call_gone(self.gone)
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, app: Callable[..., Any]) -> None:
        try:
            await self._run(app)
        finally:
            # scope -> extensions -> on_disconnect -> this cycle -> scope is a reference
            # cycle: break it, or every request leaves garbage for the cyclic GC
            self.gone = None
            self.scope["extensions"] = None

    def serve_direct(self, direct: Any) -> None:
        """Serve through api/direct.py: the whole body in, ``respond`` called once, no task."""
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.delivered = True
        try:
            direct.start(self.scope, body, self.respond)
        except Exception:
            log.exception("unhandled error in the direct predict path")
            if not self.complete:
                self.respond(None, failed=True)

    def respond(self, answer: Any, failed: bool = False) -> None:
        """The direct path's answer (status, headers, body), or None: the client left."""
        if self.complete:
            return
        self.gone = None
        self.scope["extensions"] = None  # no reference cycle left behind (see ``run``)
        conn = self.conn
        if answer is None:
            if failed and not self.disconnected:
                conn.transport.write(plain_answer(500, "Internal Server Error"))
                conn._close()  # an abort if the client never takes it (api/_timers.py)
            return
        if self.disconnected:
            return
        status, headers, out = answer
        # The direct path's own headers never set the framing (content-length,
        # transfer-encoding, connection), so the head is built without the general scan
        # of _start_response. The server's default headers (date, server) change once a
        # second and are rendered and checked once (``_rendered_defaults``); the CR/LF
        # count still guards every name and value of this answer's own headers.
        parts: list[bytes] = []
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        own = b"".join(parts)
        lines = len(headers)
        defaults = _rendered_defaults(conn.server_state.default_headers)
        if own.count(b"\n") != lines or own.count(b"\r") != lines or defaults is None:
            log.error(
                "the direct predict path made an invalid response head: %r (default headers %r)",
                own,
                conn.server_state.default_headers,
            )
            self.respond(None, failed=True)
            return
        self.started = True
        conn.transport.write(
            b"".join(
                (
                    STATUS_LINES[status],
                    defaults,
                    own,
                    b"content-length: %d\r\n\r\n" % len(out)
                    if self.keep_alive
                    else b"content-length: %d\r\nconnection: close\r\n\r\n" % len(out),
                    out,
                )
            )
        )
        self.complete = True
        conn.response_complete(self)

    async def _run(self, app: Callable[..., Any]) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException:
            log.exception("unhandled error in the ASGI app")
            if not self.started:
                await self._send_500()
            elif not self.complete and not self.disconnected:
                # the answer is cut short: the client must see that (and a client that
                # does not read is aborted, not waited for: _close)
                self.conn._close()
            # (after a complete answer, e.g. Starlette re-raising behind its 500, the
            # connection and the requests queued on it go on)
            return
        if result is not None:
            log.error("the ASGI app returned %r instead of None", result)
            if not self.disconnected:
                self.conn._close()
        elif not self.started and not self.disconnected:
            log.error("the ASGI app returned without starting a response")
            await self._send_500()
        elif not self.complete and not self.disconnected:
            log.error("the ASGI app returned without completing its response")
            self.conn._close()

    async def _send_500(self) -> None:
        self.keep_alive = False
        await self.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": b"Internal Server Error"})

    # -- ASGI --------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.continue_owed:
            self.continue_owed = False
            if not conn.transport.is_closing():
                conn.transport.write(_CONTINUE)
        while True:
            if self.disconnected or self.complete:
                return _DISCONNECT
            if not self.delivered and (self.chunks or not self.more_body):
                chunks = self.chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                more = self.more_body
                self.chunks = []
                self.buffered = 0
                self.delivered = not more
                if conn.flow.read_paused and conn._may_read():
                    conn.flow.resume_reading()
                return {"type": "http.request", "body": body, "more_body": more}
            # nothing yet (a streamed body), or the body is in: wait for the disconnect
            if self.more_body:
                conn._watch()  # time a body that stops arriving
            elif conn.half_closed:  # a watch begun after the end of input: as above
                conn._close()
            self.waiter = conn.loop.create_future()
            if conn.flow.read_paused and conn._may_read():
                conn.flow.resume_reading()
            await self.waiter
            self.waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn.flow.write_paused and not self.disconnected:
            await conn.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got '{kind}'")
            self._start_response(message["status"], message.get("headers", ()))
            self.started = True  # only now: a rejected head still gets the 500 answer
            self.continue_owed = False
            return
        if self.complete:
            raise RuntimeError(f"'{kind}' sent after the response completed")
        if kind != "http.response.body":
            raise RuntimeError(f"expected 'http.response.body', got '{kind}'")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        head = self.head
        if self.scope["method"] == "HEAD":
            out = head
            self.left = 0
        elif self.chunked:
            frame = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            out = head + frame + (b"" if more else b"0\r\n\r\n")
        else:
            if self.left >= 0:  # -1: delimited by the close (see _start_response)
                self.left -= len(body)
                if self.left < 0:
                    raise RuntimeError("response body longer than its Content-Length")
            out = head + body if head else body
        self.head = b""
        if out:
            conn.transport.write(out)
        if not more:
            if self.left > 0:
                raise RuntimeError("response body shorter than its Content-Length")
            self.complete = True
            self.wake()
            conn.response_complete(self)

    def _start_response(self, status: int, headers: Any) -> None:
        conn = self.conn
        if self.more_body:
            # answered before its body is in (a 413, a 401): what the client sends next is
            # that body, or nothing if it waits for a 100 Continue, so no next request can
            # be told apart on this connection (RFC 9110, section 10.1.1)
            self.keep_alive = False
        parts = [STATUS_LINES[status]]
        lines = 2  # the status line and the blank line that ends the head
        length: int | None = None
        close = False
        for name, value in (*conn.server_state.default_headers, *headers):
            key = name.lower()
            if key == b"content-length":
                if length is None:
                    length = int(value)
            elif key == b"transfer-encoding":
                if self.scope["http_version"] == "1.0" or status in _NO_BODY:
                    # HTTP/1.0 has no chunked encoding (RFC 9112, section 6.1): the header
                    # is dropped and the body ends where the connection does (below); a
                    # 204 or 304 has no body at all, so no chunk framing (its last chunk
                    # would be read as the next answer) and no header (RFC 9112, 6.1)
                    continue
                self.chunked = value.lower() == b"chunked"
            elif key == b"connection" and b"close" in value.lower():
                self.keep_alive = False
                close = True
            parts += (key, b": ", value, b"\r\n")
            lines += 1
        if not self.keep_alive and not close:
            parts.append(b"connection: close\r\n")
            lines += 1
        if length is not None and not self.chunked:
            self.left = length
        elif not self.chunked and self.scope["method"] != "HEAD" and status not in _NO_BODY:
            if self.scope["http_version"] == "1.0":
                # no chunked encoding for HTTP/1.0 (RFC 9112, section 6.1): the body ends
                # where the connection does (keep_alive is already off for 1.0)
                self.left = -1
            else:
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
                lines += 1
        parts.append(b"\r\n")
        head = b"".join(parts)
        # A CR or LF inside a name or value (response splitting) shows up as an extra one:
        # three counts over the joined head instead of a search per header.
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise RuntimeError("invalid response header: CR or LF in a name or value")
        self.head = head
        if conn.access_log:
            scope = self.scope
            query = scope["query_string"]
            target = scope["path"] + ("?" + query.decode("ascii") if query else "")
            peer = scope["client"]
            client = f"{peer[0]}:{peer[1]}" if peer else "-"
            conn.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                client,
                scope["method"],
                target,
                scope["http_version"],
                status,
            )
