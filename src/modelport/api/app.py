"""The app factory: explicit dependencies, a literal route table, pure-ASGI middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from modelport.api import gc_policy
from modelport.api.direct import DirectPredict
from modelport.api.errors import handle_http_exception, handle_modelport_error, handle_unexpected
from modelport.api.fastpath import PredictFastPath
from modelport.api.hardening import cors_middleware, response_headers  # security (issue 4)
from modelport.api.middleware import EdgeMiddleware, payload_too_large
from modelport.api.routes import admin, docs, native, ops, v2
from modelport.api.services import Services
from modelport.errors import ModelportError

log = logging.getLogger("modelport.api")


def create_app(services: Services) -> ASGIApp:
    """Build the ASGI app. Models load in the background after start-up (see ``/readyz``).

    Outside in: the edge (request id, body limit, security headers) → CORS if configured →
    extra middleware → the security gate → the predict fast path → the Starlette app with
    every other route, its exception handlers and lifespan.
    """
    routes = [
        *ops.routes(services),
        *native.routes(services),
        *v2.routes(services),
        *docs.routes(services),
        # security (issue 4): /admin/keys, /admin/usage; /admin/models (load errors)
        *(
            admin.routes(services.security, services.registry)
            if services.security is not None
            else []
        ),
    ]

    async def load_all() -> None:
        await services.registry.load_all()
        if services.tune_gc:
            gc_policy.freeze()  # what is alive now lives as long as the process

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if services.tune_gc:
            gc_policy.raise_thresholds()
        for start in services.startup:
            await start()
        loading: asyncio.Task[None] | None = None
        if services.load_in_background:
            loading = asyncio.create_task(load_all(), name="load-models")
        else:
            await load_all()  # accept connections only once loaded
        try:
            yield
        finally:
            if loading is not None:
                if not loading.done():
                    loading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loading
            await services.registry.close()
            for stop in reversed(services.shutdown):
                await stop()

    starlette = Starlette(
        routes=routes,
        exception_handlers={
            ModelportError: handle_modelport_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
    fastpath = PredictFastPath(starlette, services.service)
    app: ASGIApp = fastpath
    gate_layer = None
    if services.security is not None:  # security (issue 4): 401/403/429 before any route
        app = gate_layer = services.security.middleware(app)
    extras = services.extras.get("middleware", [])
    for middleware in reversed(extras):
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    limit = services.settings.server.body_limit_bytes
    too_large = payload_too_large(limit)
    # security (issue 4): CORS answers preflights before the gate asks for credentials, and
    # wraps the edge's early 413 as well so that a browser can read it
    for layer in reversed(cors_middleware(services.settings.security)):
        app = layer.cls(app, *layer.args, **layer.kwargs)
        too_large = layer.cls(too_large, *layer.args, **layer.kwargs)
    # outermost: request id, body limit and security headers, so every answer gets them
    edge = EdgeMiddleware(
        app,
        body_limit=limit,
        headers=response_headers(services.settings.security),
        too_large=too_large,
    )
    # The same steps without ASGI, for modelport's HTTP protocol (api/direct.py); not when
    # extra middleware must see every request, or the gate's checks run in a thread.
    offload = services.security is not None and services.security.offload
    if not extras and not offload:
        edge.direct = DirectPredict(edge, gate_layer, fastpath)
    return edge
