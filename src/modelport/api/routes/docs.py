"""``/openapi.json`` and ``/docs`` (Swagger UI served from the installed package, offline)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from modelport.api.openapi import build_openapi
from modelport.api.responses import json_response
from modelport.api.services import Services

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>modelport API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


def routes(services: Services) -> list[BaseRoute]:
    registry = services.registry

    async def openapi(request: Request) -> Response:
        return json_response(build_openapi(registry))

    async def docs(request: Request) -> Response:
        return HTMLResponse(_PAGE)

    out: list[BaseRoute] = [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
    try:
        import swagger_ui_bundle

        assets = Path(swagger_ui_bundle.swagger_ui_path)
        out.append(Mount("/docs/assets", app=StaticFiles(directory=assets)))
    except ImportError:  # pragma: no cover - a required dependency; the page degrades
        pass
    return out
