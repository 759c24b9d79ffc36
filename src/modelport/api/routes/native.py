"""Native v1 API: list and describe models, predict on rows / columns / records."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.api.codecs.native import decode, encode, parse_json
from modelport.api.responses import dumps, json_response
from modelport.api.services import Services
from modelport.core.registry import ServedModel, ServedVersion
from modelport.errors import InvalidInput, UnsupportedMediaType

# curl -d sends form-urlencoded by default; the body is still JSON, so we accept it.
_JSON_TYPES = (b"application/json", b"application/x-www-form-urlencoded", b"text/json")


def check_json_content_type(request: Request) -> None:
    for key, value in request.scope["headers"]:
        if key == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            if media in _JSON_TYPES or media.endswith(b"+json"):
                return
            raise UnsupportedMediaType(
                f"content type '{media.decode('latin-1')}' is not supported here; "
                "send application/json"
            )


def request_timeout(request: Request) -> float | None:
    raw = request.headers.get("x-request-timeout")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput("header X-Request-Timeout must be a number of seconds") from None
    if not 0 < value <= 3600:
        raise InvalidInput("header X-Request-Timeout must be between 0 and 3600 seconds")
    return value


def version_info(sv: ServedVersion) -> dict[str, Any]:
    info: dict[str, Any] = {"version": sv.version, "state": sv.state.value, "runtime": sv.runtime}
    if sv.error:
        info["error"] = sv.error
    if sv.signature is not None:
        info["signature"] = sv.signature.to_dict()
    if sv.batcher is not None:
        policy = sv.batcher.policy
        info["batching"] = {
            "max_batch_size": policy.max_batch_size,
            "max_delay_ms": policy.max_delay_s * 1000,
            "max_queue": policy.max_queue,
            "queued": sv.batcher.queued,
            "stats": sv.batcher.stats.to_dict(),
        }
    return info


def model_info(model: ServedModel, detail: bool) -> dict[str, Any]:
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
        info["versions"] = [version_info(v) for v in model.versions.values()]
    else:
        info["versions"] = [
            {"version": v.version, "state": v.state.value, "runtime": v.runtime}
            for v in model.versions.values()
        ]
    return info


def routes(services: Services) -> list[BaseRoute]:
    registry = services.registry
    service = services.service

    async def list_models(request: Request) -> Response:
        return json_response(
            {"models": [model_info(registry.get(n), detail=False) for n in registry.names()]}
        )

    async def describe_model(request: Request) -> Response:
        return json_response(model_info(registry.get(request.path_params["name"]), detail=True))

    async def predict(request: Request) -> Response:
        params = request.path_params
        name: str = params["name"]
        version: str | None = params.get("version")
        served = service.target(name, version)
        assert served.signature is not None
        check_json_content_type(request)
        timeout = request_timeout(request)
        inputs = decode(parse_json(await request.body()), served.signature)
        result = await service.predict(name, version, inputs, timeout_s=timeout, served=served)
        body = {
            "model": result.model,
            "version": result.version,
            "request_id": request.scope["state"]["request_id"],
            "outputs": encode(result.signature, result.outputs),
        }
        return Response(
            dumps(body),
            media_type="application/json",
            headers={"X-Model-Version": result.version},
        )

    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{name}", describe_model, methods=["GET"]),
        Route("/v1/models/{name}/predict", predict, methods=["POST"]),
        Route("/v1/models/{name}/versions/{version}/predict", predict, methods=["POST"]),
    ]
