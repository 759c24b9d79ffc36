"""The hot path: ``POST /v1/models/{name}[/versions/{version}]/predict`` as plain ASGI.

Starlette's router, ``Request`` and ``Response`` objects cost more per request than the
prediction itself once batching amortises the model (see docs/benchmarks.md), so the one
route that carries the traffic is served here directly; every other route stays in the
Starlette app this wraps. Same codec, same service, same error table.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.api.codecs.native import encode, read_inputs
from modelport.api.errors import error_body, error_parts
from modelport.api.protocol import ON_DISCONNECT
from modelport.api.responses import dumps
from modelport.core.service import InferenceService, Pending, Prediction
from modelport.core.signature import NamedArrays
from modelport.errors import InvalidInput, ModelportError, UnsupportedMediaType

log = logging.getLogger("modelport.api")

_PREDICT_PATH = re.compile(r"^/v1/models/([^/]+)(?:/versions/([^/]+))?/predict$")
_JSON_TYPES = (b"application/json", b"application/x-www-form-urlencoded", b"text/json")
_JSON_HEADER = (b"content-type", b"application/json")
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
_UNSEEN = object()
_TARGET_CACHE_SIZE = 1024
WATCH_AFTER_S = 0.02  # how long a request waits before we watch for its client leaving


def check_content_type(value: bytes | None) -> None:
    """JSON only; curl's default form type is accepted because the body is still JSON."""
    if value is None:
        return
    media = value.split(b";", 1)[0].strip().lower()
    if media in _JSON_TYPES or media.endswith(b"+json"):
        return
    raise UnsupportedMediaType(
        f"content type '{media.decode('latin-1')}' is not supported here; send application/json"
    )


def parse_timeout(raw: bytes | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput("header X-Request-Timeout must be a number of seconds") from None
    if not 0 < value <= 3600:
        raise InvalidInput("header X-Request-Timeout must be between 0 and 3600 seconds")
    return value


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


class PredictFastPath:
    """Serves native predict requests; passes everything else to ``app``."""

    def __init__(self, app: ASGIApp, service: InferenceService) -> None:
        self.app = app
        self.service = service
        # path -> (model, version) for predict paths, None for the rest
        self._targets: dict[str, Any] = {}

    def target(self, path: str) -> tuple[str, str | None] | None:
        """(model, version or None) when ``path`` is a native predict path."""
        target = self._targets.get(path, _UNSEEN)
        if target is _UNSEEN:
            match = _PREDICT_PATH.match(path)
            target = match.groups() if match is not None else None
            if len(self._targets) >= _TARGET_CACHE_SIZE:
                self._targets.clear()  # paths come from clients: stay bounded
            self._targets[path] = target
        return target  # type: ignore[no-any-return]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = self.target(scope["path"])
            if target is not None:
                if scope["method"] == "POST":
                    answer = await self.answer(scope, receive, target[0], target[1])
                    if answer is not None:
                        await _send(send, *answer)
                    return
                rid = scope["state"]["request_id"]
                message = f"{scope['method']} is not allowed here; use POST"
                body = error_body(scope["path"], rid, 405, "method_not_allowed", message)
                await _send(send, 405, [_JSON_HEADER, (b"allow", b"POST")], body)
                return
        await self.app(scope, receive, send)

    async def answer(
        self, scope: Scope, receive: Receive, name: str, version: str | None
    ) -> Answer | None:
        """The response to one predict request (body read from ``receive``), or None if
        its client went away."""
        try:
            pending = self.prepare(scope, await read_body(receive), name, version)
            outputs = await self._wait(scope, receive, pending.future)
            if outputs is None:
                return None  # the client went away; nobody to answer
            return self.render(scope, pending.result(outputs))
        except Exception as exc:
            return self.failure(scope, exc)

    # The steps of ``answer``, also called one by one by api/direct.py, which waits with a
    # callback instead of a task.
    def prepare(self, scope: Scope, body: bytes, name: str, version: str | None) -> Pending:
        """Check, decode, validate and queue the request; raises ``ModelportError``."""
        content_type = timeout_raw = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"x-request-timeout":
                timeout_raw = value
        served = self.service.target(name, version)
        assert served.signature is not None
        check_content_type(content_type)
        timeout = parse_timeout(timeout_raw)
        inputs, finite = read_inputs(body, served.signature)
        return self.service.enqueue(
            name, version, inputs, timeout_s=timeout, served=served, finite=finite
        )

    @staticmethod
    def render(scope: Scope, result: Prediction) -> Answer:
        state = scope["state"]
        state["rows"] = result.rows  # read by usage metering, with the version
        state["model_version"] = result.version
        body = dumps(
            {
                "model": result.model,
                "version": result.version,
                "request_id": state["request_id"],
                "outputs": encode(result.signature, result.outputs),
            }
        )
        return 200, [_JSON_HEADER, (b"x-model-version", result.version.encode())], body

    @staticmethod
    def failure(scope: Scope, exc: BaseException) -> Answer:
        request_id: str = scope["state"]["request_id"]
        if isinstance(exc, ModelportError):
            status, extra = error_parts(exc, request_id)
            headers = [_JSON_HEADER, *((k.lower().encode(), v.encode()) for k, v in extra.items())]
            return (
                status,
                headers,
                error_body(scope["path"], request_id, status, exc.code, exc.message),
            )
        log.error("unhandled error for request %s", request_id, exc_info=exc)
        return 500, [_JSON_HEADER], error_body(scope["path"], request_id, 500, "internal", "")

    async def _wait(
        self, scope: Scope, receive: Receive, future: asyncio.Future[NamedArrays]
    ) -> NamedArrays | None:
        """The outputs, or None if the client disconnected first (the queued request is
        withdrawn, so the batcher drops it before inference).

        Under modelport's own HTTP protocol the server calls us back when the client goes
        away (the ``ON_DISCONNECT`` scope extension), which costs nothing per request.
        Under another ASGI server, finding out takes a task waiting in ``receive()``, which
        costs as much as the rest of the request path; so that watch starts only once a
        request has waited ``WATCH_AFTER_S``.
        """
        gone = False

        def cancel() -> None:
            nonlocal gone
            if not future.done():
                gone = True
                future.cancel()

        def on_watch_done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled():
                cancel()

        register = scope.get("extensions", {}).get(ON_DISCONNECT)
        watch: asyncio.Future[None] | None = None
        timer: asyncio.TimerHandle | None = None
        if register is not None:
            register(cancel)
        else:

            def start_watch() -> None:
                nonlocal watch
                watch = asyncio.ensure_future(_disconnected(receive))
                watch.add_done_callback(on_watch_done)

            timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watch)
        try:
            return await future
        except asyncio.CancelledError:
            if gone:
                return None
            future.cancel()  # this request's task was cancelled: leave the queue too
            raise
        finally:
            if register is not None:
                register(None)
            if timer is not None:
                timer.cancel()
            if watch is not None:
                watch.cancel()


async def _disconnected(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
