"""Open Inference Protocol (KServe V2) routes — placeholder until the V2 router lands."""

from __future__ import annotations

from starlette.routing import BaseRoute

from modelport.api.services import Services


def routes(services: Services) -> list[BaseRoute]:
    return []
