"""What ``modelport bench`` reads about the model it drives, from GET /v1/models/NAME:
the served default version, an example request body, and the batch statistics.

Every read goes through one ``httpx.Client`` carrying the user's ``--header`` values, so
a server with API keys answers these as it answers the predictions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click
import httpx
import orjson

Stats = dict[str, Any]

# Workers publish their batch counters at most once a second (observe/worker_stats.py);
# a little more than that lets the last ones land before the next read.
PUBLISH_WAIT_S = 1.2
SETTLE_TRIES = 5


def client(
    url: str, headers: dict[str, str], transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    return httpx.Client(base_url=url, headers=headers, timeout=10, transport=transport)


def describe(http: httpx.Client, name: str) -> dict[str, Any]:
    """The model's description; a ClickException that says why if the server refuses."""
    response = http.get(f"/v1/models/{name}")
    status = response.status_code
    if status == 404:
        raise click.ClickException(f"the server at {http.base_url} has no model {name!r}")
    if status in (401, 403):
        raise click.ClickException(
            f"the server refused GET /v1/models/{name} ({status}); pass a key with "
            "--header 'X-API-Key: ...'"
        )
    if status != 200:
        raise click.ClickException(f"GET /v1/models/{name} answered {status}: {response.text}")
    info: dict[str, Any] = response.json()
    return info


def default_version(info: dict[str, Any]) -> dict[str, Any] | None:
    """The entry of the version a request without a version goes to."""
    return next(
        (v for v in info.get("versions", []) if v.get("version") == info.get("default_version")),
        None,
    )


def served_version(info: dict[str, Any]) -> dict[str, Any]:
    """The default version, which must be ready to be benchmarked."""
    version = default_version(info)
    if version is None:
        raise click.ClickException(f"model {info.get('name')} has no default version to serve")
    if version["state"] != "ready":
        error = f": {version['error']}" if version.get("error") else ""
        raise click.ClickException(
            f"model {info.get('name')} version {version['version']} is {version['state']}{error}"
        )
    return version


def model_ready(http: httpx.Client, name: str) -> bool:
    """Whether the model's default version is ready: False while the server starts or
    loads it; a ClickException if it never will be (failed, unknown). Other models do
    not matter (/readyz would wait for all of them)."""
    try:
        info = describe(http, name)
    except httpx.TransportError:
        return False  # not listening yet
    version = default_version(info)
    if version is not None and version["state"] == "failed":
        served_version(info)  # raises, with the loading error
    return version is not None and version["state"] == "ready"


def _value(spec: dict[str, Any]) -> Any:
    """A mid-range value of the input's dtype (its declared range, else 0..1)."""
    dtype = spec["dtype"]
    if dtype in ("str", "object"):
        return "text"
    if dtype == "bool":
        return True
    lo, hi = spec.get("range", [0.0, 1.0])
    if dtype.startswith(("int", "uint")):
        return round((lo + hi) / 2)  # 0.5 would be refused for an integer input
    return (lo + hi) / 2


def example_body(version: dict[str, Any]) -> bytes:
    """One row built from the version's signature."""
    inputs = version["signature"]["inputs"]

    def row(spec: dict[str, Any]) -> Any:
        value = _value(spec)
        for d in reversed([d if d > 0 else 1 for d in spec["shape"][1:]]):
            value = [value] * d
        return value

    if len(inputs) == 1:
        return orjson.dumps({"inputs": [row(inputs[0])]})
    return orjson.dumps({"inputs": {s["name"]: [row(s)] for s in inputs}})


def batch_stats(http: httpx.Client, name: str, version: str) -> Stats | None:
    """The version's batch counters, or None if they cannot be read (no batching, a
    server that refuses or changed): the table shows "-" rather than losing the run."""
    try:
        info = describe(http, name)
        entry = next(v for v in info["versions"] if v["version"] == version)
        stats: Stats = entry["batching"]["stats"]
    except (httpx.HTTPError, click.ClickException, ValueError, KeyError, TypeError, StopIteration):
        return None
    return stats


def settled(
    read: Callable[[], Stats | None], sleep: Callable[[float], None] = time.sleep
) -> Stats | None:
    """``read()`` once with one worker. With several, a worker sees its siblings' counters
    up to a publishing interval late, so read again PUBLISH_WAIT_S apart until two reads
    agree (at most SETTLE_TRIES more): then every worker's last counts are in."""
    stats = read()
    if stats is None or stats.get("workers", 1) <= 1:
        return stats
    for _ in range(SETTLE_TRIES):
        sleep(PUBLISH_WAIT_S)
        again = read()
        if again is None or again == stats:
            return again
        stats = again
    return stats


def mean_batch(after: Stats | None, before: Stats | None) -> float | None:
    """Rows per batch between two reads; None if either read failed."""
    if after is None or before is None:
        return None
    batches = after.get("batches", 0) - before.get("batches", 0)
    rows = after.get("rows", 0) - before.get("rows", 0)
    return rows / batches if batches else 0.0
