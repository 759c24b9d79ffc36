"""Open Inference Protocol (KServe V2 / Triton) over REST: health, metadata, infer, index.

Works unmodified with NVIDIA's ``tritonclient.http`` (JSON and binary tensor data). Errors
use the V2 shape ``{"error": "message"}`` (``api/errors.py``). Readiness answers follow
the protocol: 200 means ready, a 4xx means not (unknown model 404, otherwise 400).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport._version import __version__
from modelport.api.codecs import v2 as codec
from modelport.api.errors import error_response
from modelport.api.responses import json_response
from modelport.api.services import Services
from modelport.core.registry import ServedModel, ServedVersion, VersionState
from modelport.core.signature import TensorSpec
from modelport.errors import MalformedRequest, ModelNotReady

EXTENSIONS = ["binary_tensor_data", "classification"]

# Triton's repository index states.
_INDEX_STATE = {
    VersionState.LOADING: "LOADING",
    VersionState.READY: "READY",
    VersionState.FAILED: "UNAVAILABLE",
    VersionState.DRAINING: "UNLOADING",
    VersionState.UNLOADED: "UNAVAILABLE",
}


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": codec.datatype_of(spec.np_dtype),
        "shape": list(spec.shape),
    }


def _version_order(version: str) -> tuple[int, int, str]:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def model_metadata(model: ServedModel, served: ServedVersion) -> dict[str, Any]:
    if served.signature is None:
        raise ModelNotReady(
            f"model '{model.name}' version {served.version} is {served.state.value}; "
            "its metadata is known once it has loaded"
        )
    return {
        "name": model.name,
        "versions": sorted(model.versions, key=_version_order),
        "platform": served.runtime,
        "inputs": [_tensor_metadata(s) for s in served.signature.inputs],
        "outputs": [_tensor_metadata(s) for s in served.signature.outputs],
    }


def model_config(model: ServedModel, served: ServedVersion) -> dict[str, Any]:
    """A Triton-style model configuration (``tritonclient`` ``get_model_config``)."""
    meta = model_metadata(model, served)
    batch = served.batcher.policy.max_batch_size if served.batcher is not None else 0
    assert served.signature is not None

    def spec(s: TensorSpec) -> dict[str, Any]:
        batched = bool(s.shape) and s.shape[0] == -1
        dims = list(s.shape[1:] if batched else s.shape)
        return {
            "name": s.name,
            "data_type": "TYPE_" + codec.datatype_of(s.np_dtype).replace("BYTES", "STRING"),
            "dims": dims,
        }

    return {
        "name": model.name,
        "platform": meta["platform"],
        "backend": meta["platform"],
        "max_batch_size": batch,
        "input": [spec(s) for s in served.signature.inputs],
        "output": [spec(s) for s in served.signature.outputs],
    }


def routes(services: Services) -> list[BaseRoute]:
    registry = services.registry
    service = services.service
    body_limit = services.settings.server.body_limit_bytes

    def _served(request: Request) -> tuple[ServedModel, ServedVersion]:
        model = registry.get(request.path_params["name"])
        return model, model.versions[model.resolve_name(request.path_params.get("version"))]

    async def server_metadata(request: Request) -> Response:
        return json_response(
            {"name": "modelport", "version": __version__, "extensions": EXTENSIONS}
        )

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        if registry.all_ready():
            return json_response({"ready": True})
        return error_response(request, 400, "not_ready", "not every model version is ready")

    async def metadata(request: Request) -> Response:
        return json_response(model_metadata(*_served(request)))

    async def config(request: Request) -> Response:
        return json_response(model_config(*_served(request)))

    async def model_ready(request: Request) -> Response:
        model, served = _served(request)
        if served.state is VersionState.READY:
            return json_response({"name": model.name, "version": served.version, "ready": True})
        return error_response(request, 400, "model_not_ready", served.unready_message())

    async def infer(request: Request) -> Response:
        name: str = request.path_params["name"]
        version: str | None = request.path_params.get("version")
        served = service.target(name, version)
        assert served.signature is not None
        headers = request.headers
        body = codec.decompress(await request.body(), headers.get("content-encoding"), body_limit)
        parsed = codec.decode_request(body, headers.get("inference-header-content-length"))
        codec.check_outputs(parsed, served.signature)
        inputs = codec.model_inputs(parsed.inputs, served.signature)
        result = await service.predict(
            name, version, inputs, timeout_s=parsed.timeout_s, served=served
        )
        request.scope["state"]["rows"] = result.rows  # read by usage metering
        labels = {s.name: s.names for s in result.signature.outputs if s.names is not None}
        content, header_size = codec.encode_response(
            model=result.model,
            version=result.version,
            outputs=result.outputs,
            request=parsed,
            labels=labels,
        )
        if header_size is None:
            return Response(
                content,
                media_type="application/json",
                headers={"X-Model-Version": result.version},
            )
        return Response(
            content,
            media_type="application/octet-stream",
            headers={
                "Inference-Header-Content-Length": str(header_size),
                "X-Model-Version": result.version,
            },
        )

    async def repository_index(request: Request) -> Response:
        body = await request.body()
        only_ready = False
        if body.strip():
            payload = codec.parse_json_object(body, "the repository index request")
            flag = payload.get("ready", False)
            if not isinstance(flag, bool):
                raise MalformedRequest("'ready' must be true or false")
            only_ready = flag
        index = []
        for name in registry.names():
            for served in sorted(
                registry.get(name).versions.values(), key=lambda v: _version_order(v.version)
            ):
                if only_ready and served.state is not VersionState.READY:
                    continue
                entry = {
                    "name": name,
                    "version": served.version,
                    "state": _INDEX_STATE[served.state],
                }
                if served.reason:  # the load error itself: the log and GET /admin/models
                    entry["reason"] = served.reason
                index.append(entry)
        return json_response(index)

    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/models/{name}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/config", config, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/config", config, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]
