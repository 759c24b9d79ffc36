"""Admin API (scope ``admin``, enforced by the security gate): API keys and usage.

    GET    /admin/keys                    list (never secrets or hashes)
    POST   /admin/keys                    create → 201 {"id", "key", ...}; the key is shown once
    GET    /admin/keys/{id}               one key
    DELETE /admin/keys/{id}               revoke (also POST /admin/keys/{id}/revoke)
    POST   /admin/keys/{id}/rotate        new secret, same id → {"id", "key", ...}
    GET    /admin/usage?since=&key=&format=json|csv
    GET    /admin/models                  every version's state, artifact and load error

Clients see a version that failed to load as ``failed`` with a generic reason; its error
(which can quote file paths and the model's internals) is in the log and here. Every change
writes an audit line (who, what, when) to the ``modelport.audit`` logger.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from modelport.api.responses import json_response
from modelport.api.security import SecurityGate, principal_of
from modelport.core.registry import Registry
from modelport.errors import InvalidInput, MalformedRequest
from modelport.policy import keys as key_rules
from modelport.policy.audit import audit
from modelport.policy.metering import export_csv, export_dicts


def _optional_str(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string")
    return value


def _str_list(payload: dict[str, Any], name: str) -> list[str]:
    value = payload.get(name, [])
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"'{name}' must be a list of strings or a comma-separated string")
    return list(value)


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        payload = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedRequest("the body must be a JSON object")
    return payload


def routes(gate: SecurityGate, registry: Registry) -> list[BaseRoute]:
    manager = gate.manager
    wall = gate.wall

    def actor(request: Request) -> str:
        return principal_of(request).id

    async def list_keys(request: Request) -> Response:
        now = wall.now()
        records = await asyncio.to_thread(manager.list)
        return json_response({"keys": [key_rules.describe(r, now) for r in records]})

    async def create_key(request: Request) -> Response:
        payload = await _json_object(request)
        name = payload.get("name")
        if not isinstance(name, str):
            raise InvalidInput("'name' is required and must be a string")
        burst = payload.get("burst")
        if burst is not None and (not isinstance(burst, int) or isinstance(burst, bool)):
            raise InvalidInput("'burst' must be an integer")
        issued = await asyncio.to_thread(
            manager.create,
            name,
            _str_list(payload, "scopes"),
            rate=_optional_str(payload, "rate"),
            burst=burst,
            quota=_optional_str(payload, "quota"),
            expires=_optional_str(payload, "expires"),
            allow_from=_str_list(payload, "allow_from"),
        )
        audit(actor(request), "keys.create", issued.record.id, at=wall.now(), name=name)
        return json_response(issued.to_dict(), status=201)

    async def get_key(request: Request) -> Response:
        record = await asyncio.to_thread(manager.get, request.path_params["key_id"])
        return json_response(key_rules.describe(record, wall.now()))

    async def revoke_key(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        record = await asyncio.to_thread(manager.revoke, key_id)
        audit(actor(request), "keys.revoke", key_id, at=wall.now())
        return json_response(key_rules.describe(record, wall.now()))

    async def rotate_key(request: Request) -> Response:
        key_id = request.path_params["key_id"]
        issued = await asyncio.to_thread(manager.rotate, key_id)
        audit(actor(request), "keys.rotate", key_id, at=wall.now())
        return json_response(issued.to_dict())

    async def usage(request: Request) -> Response:
        since = request.query_params.get("since")
        if since is not None:
            try:
                since = dt.date.fromisoformat(since).isoformat()
            except ValueError:
                raise InvalidInput("'since' must be a date, YYYY-MM-DD") from None
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise InvalidInput("'format' must be json or csv")
        key_id = request.query_params.get("key")
        await asyncio.to_thread(gate.meter.flush)  # include what is still in memory
        rows = await asyncio.to_thread(gate.stores.usage.query, since, key_id)
        audit(actor(request), "usage.export", key_id or "*", at=wall.now(), since=since)
        if fmt == "csv":
            return Response(export_csv(rows), media_type="text/csv")
        return json_response(export_dicts(rows))

    async def models(request: Request) -> Response:
        return json_response(
            {
                "versions": [
                    {
                        "model": version.model,
                        "version": version.version,
                        "state": version.state.value,
                        "runtime": version.runtime,
                        "artifact": str(version.artifact),
                        "error": version.error,
                    }
                    for name in registry.names()
                    for version in registry.get(name).versions.values()
                ]
            }
        )

    return [
        Route("/admin/models", models, methods=["GET"]),
        Route("/admin/keys", list_keys, methods=["GET"]),
        Route("/admin/keys", create_key, methods=["POST"]),
        Route("/admin/keys/{key_id}", get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
        Route("/admin/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
        Route("/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
        Route("/admin/usage", usage, methods=["GET"]),
    ]
