"""Native v1 API: list and describe models. Predict is served by ``api/fastpath.py``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.api.responses import json_response
from modelport.api.services import Services
from modelport.core.registry import ServedModel, ServedVersion
from modelport.observe.worker_stats import Snapshot, combined


def version_info(sv: ServedVersion, siblings: list[Snapshot] | None = None) -> dict[str, Any]:
    """One version's state, signature and batching; with several HTTP workers
    (``siblings``: their published counters) the batch statistics are all of theirs."""
    info: dict[str, Any] = {"version": sv.version, "state": sv.state.value, "runtime": sv.runtime}
    if sv.reason:  # the load error itself: the log and GET /admin/models
        info["error"] = sv.reason
    if sv.signature is not None:
        info["signature"] = sv.signature.to_dict()
    if sv.batcher is not None:
        policy = sv.batcher.policy
        stats, workers = sv.batcher.stats, 1
        if siblings is not None:
            stats, workers = combined(siblings, sv.model, sv.version, stats)
        info["batching"] = {
            "max_batch_size": policy.max_batch_size,
            "max_delay_ms": policy.max_delay_s * 1000,
            "max_queue": policy.max_queue,
            "queued": sv.batcher.queued,  # this worker's queue, now
            "stats": stats.to_dict() | {"workers": workers},
        }
    return info


def model_info(
    model: ServedModel, detail: bool, siblings: list[Snapshot] | None = None
) -> dict[str, Any]:
    try:
        default: str | None = model.resolve_name(None)
    except Exception:
        default = None
    info: dict[str, Any] = {
        "name": model.name,
        "default_version": default,
        "aliases": model.aliases,
        "ready": bool(model.ready_versions()),
    }
    if model.config.description:
        info["description"] = model.config.description
    if detail:
        info["metadata"] = model.config.metadata
        info["versions"] = [version_info(v, siblings) for v in model.versions.values()]
    else:
        info["versions"] = [
            {"version": v.version, "state": v.state.value, "runtime": v.runtime}
            for v in model.versions.values()
        ]
    return info


def routes(services: Services) -> list[BaseRoute]:
    registry = services.registry

    async def list_models(request: Request) -> Response:
        return json_response(
            {"models": [model_info(registry.get(n), detail=False) for n in registry.names()]}
        )

    async def describe_model(request: Request) -> Response:
        model = registry.get(request.path_params["name"])
        board = services.stats_board
        siblings = board.siblings() if board is not None else None  # once per request
        return json_response(model_info(model, detail=True, siblings=siblings))

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{name}", describe_model, methods=["GET"]),
    ]
