"""Native predict requests served straight from the HTTP protocol, not through ASGI.

Under modelport's own protocol (``api/protocol.py``) a ``POST /v1/models/.../predict``
whose body has fully arrived is handed to ``DirectPredict.start`` as (scope, body) inside
the protocol's own callback, and the answer goes back through ``respond`` as (status,
headers, body). No ASGI ``receive``/``send`` messages, no ``send`` wrapper per layer, and
no task: the request is validated and queued at once, and the batch future's done
callback renders and writes the answer. The steps are the very methods the ASGI layers
run, in the same order, so the two paths cannot drift apart:

1. ``EdgeMiddleware.begin``: the request id (the body limit was enforced by the protocol:
   a body over it never comes here, it goes through the ASGI chain and gets its 413);
2. ``SecurityMiddleware.access/client_of/admitted`` and ``SecurityGate.decide``:
   allow-lists, credentials, scope, rate limit, quota (same 401/403/429 answers);
3. ``PredictFastPath.prepare`` (decode, validate, queue), then ``render`` or ``failure``;
4. ``SecurityMiddleware.record``: usage metering; ``EdgeMiddleware.finish``: security
   headers and the request id.

A client that leaves while its request is queued withdraws it (the protocol's
``ON_DISCONNECT`` callback cancels the batch future; the batcher drops it before
inference). Requests the ASGI chain would treat differently are not taken (``accepts``
and the protocol): anything but POST to a native predict path, browser requests (an
``Origin`` header: the CORS layer must see them), ``Expect: 100-continue``, bodies over
the limit, servers with extra middleware, and gates whose stores do network I/O (their
checks run in a thread; see ``SecurityGate.offload``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from modelport.api.errors import error_body, error_parts
from modelport.api.fastpath import _JSON_HEADER, Answer, PredictFastPath
from modelport.api.middleware import EdgeMiddleware
from modelport.api.protocol import ON_DISCONNECT
from modelport.api.security import Decision, SecurityMiddleware, credential_of
from modelport.core.signature import NamedArrays
from modelport.errors import ModelportError


class DirectPredict:
    """The predict fast path as plain calls: (scope, body) in, (status, headers, body) out."""

    def __init__(
        self,
        edge: EdgeMiddleware,
        security: SecurityMiddleware | None,
        fastpath: PredictFastPath,
    ) -> None:
        self.edge = edge
        self.security = security
        self.fastpath = fastpath
        self.body_limit = edge.body_limit

    def accepts(self, method: str, path: str, browser: bool) -> bool:
        """Whether this request is served here (else the protocol runs the ASGI app).
        ``browser``: it carries an ``Origin`` header, which the CORS layer must see."""
        return not browser and method == "POST" and self.fastpath.target(path) is not None

    def start(
        self, scope: dict[str, Any], body: bytes, respond: Callable[[Answer | None], None]
    ) -> None:
        """Serve one request. ``respond`` is called exactly once: now (refused, invalid,
        overloaded) or when its batch is done, with the answer (every header but
        ``content-length``), or with None if the client left first. No task is made: the
        rest runs in the batch future's done callback."""
        edge = self.edge
        fastpath = self.fastpath
        rid, _ = edge.begin(scope)
        target = fastpath.target(scope["path"])
        assert target is not None  # see accepts()
        security = self.security
        decision: Decision | None = None
        rate_headers: list[tuple[bytes, bytes]] = []
        metered: str | None = None
        if security is not None:
            access = security.access(scope["method"], scope["path"])
            if not access.public:
                try:
                    client = security.client_of(scope)
                    decision = security.gate.decide(access, credential_of(scope), client)
                except ModelportError as exc:
                    respond(self._refused(scope, rid, exc))
                    return
                rate_headers = security.admitted(scope, decision, client)
                metered = access.model if access.metered else None
        started = security.clock() if security is not None else 0.0

        def finish(answer: Answer | None) -> None:
            if decision is not None and metered is not None:
                assert security is not None
                # a lost client is recorded as the ASGI gate does: 500; the version of a
                # served request is in the state (PredictFastPath.render puts it there)
                status = 500 if answer is None else answer[0]
                security.record(scope, decision, metered, status, "", started)
            if answer is None:
                respond(None)
                return
            status, headers, out = answer
            headers += rate_headers
            respond((status, edge.finish(scope, rid, headers, api=True), out))

        try:
            pending = fastpath.prepare(scope, body, target[0], target[1])
        except Exception as exc:
            finish(fastpath.failure(scope, exc))
            return
        future = pending.future
        register = scope["extensions"][ON_DISCONNECT]
        register(future.cancel)  # the client left: withdraw from the queue

        def done(fut: asyncio.Future[NamedArrays]) -> None:
            register(None)
            if fut.cancelled():
                finish(None)
                return
            try:
                answer = fastpath.render(scope, pending.result(fut.result()))
            except Exception as exc:
                answer = fastpath.failure(scope, exc)
            finish(answer)

        future.add_done_callback(done)

    def _refused(self, scope: dict[str, Any], rid: bytes, exc: ModelportError) -> Answer:
        """The gate's 401/403/429, as ``handle_modelport_error`` would answer it."""
        request_id = rid.decode()
        status, extra = error_parts(exc, request_id)
        headers = [_JSON_HEADER, *((k.lower().encode(), v.encode()) for k, v in extra.items())]
        body = error_body(scope["path"], request_id, status, exc.code, exc.message)
        return status, self.edge.finish(scope, rid, headers), body
