"""The app factory: explicit dependencies, a literal route table, pure-ASGI middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from modelport.api.errors import handle_http_exception, handle_modelport_error, handle_unexpected
from modelport.api.fastpath import PredictFastPath
from modelport.api.hardening import hardening_middleware  # security (issue 4)
from modelport.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from modelport.api.routes import admin, docs, native, ops, v2
from modelport.api.services import Services
from modelport.errors import ModelportError

log = logging.getLogger("modelport.api")


def create_app(services: Services) -> ASGIApp:
    """Build the ASGI app. Models load in the background after start-up (see ``/readyz``).

    Outside in: request id → body limit → extra middleware (security) → the predict fast
    path → the Starlette app with every other route, its exception handlers and lifespan.
    """
    routes = [
        *ops.routes(services),
        *native.routes(services),
        *v2.routes(services),
        *docs.routes(services),
        # security (issue 4): /admin/keys, /admin/usage
        *(admin.routes(services.security) if services.security is not None else []),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for start in services.startup:
            await start()
        if not services.load_in_background:
            await services.registry.load_all()  # accept connections only once loaded
        loading = asyncio.create_task(services.registry.load_all(), name="load-models")
        try:
            yield
        finally:
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
    app: ASGIApp = PredictFastPath(starlette, services.service)
    if services.security is not None:  # security (issue 4): 401/403/429 before any route
        app = services.security.middleware(app)
    for middleware in reversed(services.extras.get("middleware", [])):
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    app = BodyLimitMiddleware(app, limit=services.settings.server.body_limit_bytes)
    app = RequestIdMiddleware(app)
    # security (issue 4): security headers and CORS, outermost so every answer gets them
    for layer in reversed(hardening_middleware(services.settings.security)):
        app = layer.cls(app, *layer.args, **layer.kwargs)
    return app
