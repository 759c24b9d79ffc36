"""Fast JSON responses (orjson, numpy-aware)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, option=_OPTS)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type="application/json")
