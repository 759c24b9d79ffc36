"""Operations: liveness, readiness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.api.responses import json_response
from modelport.api.services import Services


def routes(services: Services) -> list[BaseRoute]:
    registry = services.registry

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if registry.all_ready():
            return json_response({"status": "ready"})
        states = {
            f"{name}/{v.version}": v.state.value
            for name in registry.names()
            for v in registry.get(name).versions.values()
        }
        return json_response({"status": "not_ready", "versions": states}, status=503)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
