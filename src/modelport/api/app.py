"""The app factory: explicit dependencies, a literal route table, pure-ASGI middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from modelport.api.errors import handle_http_exception, handle_modelport_error, handle_unexpected
from modelport.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from modelport.api.routes import docs, native, ops, v2
from modelport.api.services import Services
from modelport.errors import ModelportError

log = logging.getLogger("modelport.api")


def create_app(services: Services) -> Starlette:
    """Build the ASGI app. Models load in the background after start-up (see ``/readyz``)."""
    routes = [
        *ops.routes(services),
        *native.routes(services),
        *v2.routes(services),
        *docs.routes(services),
    ]
    middleware = [
        Middleware(RequestIdMiddleware),
        Middleware(BodyLimitMiddleware, limit=services.settings.server.body_limit_bytes),
        *services.extras.get("middleware", []),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for start in services.startup:
            await start()
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

    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ModelportError: handle_modelport_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )
