"""The one table from domain errors to HTTP status, and the one place error bodies are built.

Native routes answer ``{"error": {"code", "message", "request_id"}}``; V2 routes (``/v2/...``)
answer the Open Inference Protocol shape ``{"error": "message"}``. 5xx messages are replaced
by a generic sentence plus the request id: details go to the log, never to the client.
"""

from __future__ import annotations

import logging
import math

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelport import errors as e
from modelport.api.responses import dumps

log = logging.getLogger("modelport.api")

_STATUS: dict[type[e.ModelportError], int] = {
    e.MalformedRequest: 400,
    e.Unauthenticated: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.PayloadTooLarge: 413,
    e.UnsupportedMediaType: 415,
    e.InvalidInput: 422,
    e.RateLimited: 429,
    e.ModelFailed: 500,
    e.ConfigError: 500,
    e.WorkerFailed: 503,
    e.Overloaded: 503,
    e.ModelNotReady: 503,
    e.DeadlineExceeded: 504,
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "rate_limited",
}


def status_for(exc: e.ModelportError) -> int:
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


_UNMASKED_5XX = frozenset({"overloaded", "model_not_ready", "worker_failed", "deadline_exceeded"})


def error_body(path: str, request_id: str, status: int, code: str, message: str) -> bytes:
    """The JSON error body for ``path`` (V2 shape under /v2), with 5xx details masked."""
    if status >= 500 and code not in _UNMASKED_5XX:
        message = f"internal error while serving the request; quote request id {request_id}"
    if path.startswith("/v2"):
        return dumps({"error": message})
    return dumps({"error": {"code": code, "message": message, "request_id": request_id}})


def error_parts(exc: e.ModelportError, request_id: str) -> tuple[int, dict[str, str]]:
    """Status and extra headers for a domain error; logs 5xx with the request id."""
    status = status_for(exc)
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    extra = getattr(exc, "headers", None)
    if isinstance(extra, dict):
        headers.update({str(k): str(v) for k, v in extra.items()})
    if status >= 500:
        log.error("request %s failed: %s: %s", request_id, exc.code, exc.message)
    return status, headers


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = error_body(request.url.path, request_id_of(request), status, code, message)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def handle_modelport_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.ModelportError)
    status, headers = error_parts(exc, request_id_of(request))
    return error_response(request, status, exc.code, exc.message, headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}"
    return error_response(request, exc.status_code, code, message, dict(exc.headers or {}))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error for request %s", request_id_of(request), exc_info=exc)
    return error_response(request, 500, "internal", "")
