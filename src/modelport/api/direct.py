"""Native predict requests served straight from the HTTP protocol, not through ASGI.

Under modelport's own protocol (``api/protocol.py``) a ``POST /v1/models/.../predict``
whose body has fully arrived is handed here as (scope, body), and the answer goes back
as (status, headers, body): no ASGI ``receive``/``send`` messages, no ``send`` wrapper per
layer, no coroutine per layer. The steps are the very methods the ASGI layers run, in
the same order, so the two paths cannot drift apart:

1. ``EdgeMiddleware.begin``: the request id (the body limit was enforced by the protocol:
   a body over it never comes here, it goes through the ASGI chain and gets its 413);
2. ``SecurityMiddleware.access/client_of`` and ``SecurityGate.decide``: allow-lists,
   credentials, scope, rate limit, quota (401/403/429 with the same bodies and headers);
3. ``PredictFastPath.answer``: decode, predict through the batcher, encode;
4. ``SecurityMiddleware.record``: usage metering; ``EdgeMiddleware.finish``: security
   headers and the request id.

Requests the ASGI chain would treat differently are not taken (``accepts``): anything but
POST to a native predict path, browser requests (an ``Origin`` header: the CORS layer must
see them), servers with extra middleware, and gates whose stores do network I/O (their
checks run in a thread; see ``SecurityGate.offload``).
"""

from __future__ import annotations

from typing import Any

from modelport.api.errors import error_body, error_parts
from modelport.api.fastpath import _JSON_HEADER, Answer, PredictFastPath
from modelport.api.middleware import EdgeMiddleware
from modelport.api.security import Decision, SecurityMiddleware, credential_of
from modelport.errors import ModelportError


class DirectPredict:
    """The predict fast path as a plain call: (scope, body) in, (status, headers, body) out."""

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

    def accepts(self, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether this request is served here (else the protocol runs the ASGI app)."""
        if method != "POST" or self.fastpath.target(path) is None:
            return False
        return all(key != b"origin" for key, _ in headers)

    async def __call__(self, scope: dict[str, Any], body: bytes) -> Answer | None:
        """The answer, with every header but ``content-length``; None if the client left."""
        rid, _ = self.edge.begin(scope)
        target = self.fastpath.target(scope["path"])
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
                    return self._refused(scope, rid, exc)
                rate_headers = security.admitted(scope, decision, client)
                metered = access.model if access.metered else None
        started = security.clock() if security is not None else 0.0
        answer: Answer | None = None
        try:
            answer = await self.fastpath.answer(scope, body, None, target[0], target[1])
        finally:
            if decision is not None and metered is not None:
                assert security is not None
                status, version = 500, ""
                if answer is not None:
                    status = answer[0]
                    version = next(
                        (v.decode("latin-1") for k, v in answer[1] if k == b"x-model-version"),
                        "",
                    )
                security.record(scope, decision, metered, status, version, started)
        if answer is None:
            return None
        status, headers, out = answer
        headers += rate_headers
        return status, self.edge.finish(scope, rid, headers), out

    def _refused(self, scope: dict[str, Any], rid: bytes, exc: ModelportError) -> Answer:
        """The gate's 401/403/429, as ``handle_modelport_error`` would answer it."""
        request_id = rid.decode()
        status, extra = error_parts(exc, request_id)
        headers = [_JSON_HEADER, *((k.lower().encode(), v.encode()) for k, v in extra.items())]
        body = error_body(scope["path"], request_id, status, exc.code, exc.message)
        return status, self.edge.finish(scope, rid, headers), body
