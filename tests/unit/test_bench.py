"""``modelport bench`` (cli/bench.py) without a server: its table, and what it reads
from GET /v1/models/NAME, answered by httpx's MockTransport."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

import click
import httpx
import pytest

from modelport.cli import _bench_model as model
from modelport.cli._loadgen import LoadResult

bench = importlib.import_module("modelport.cli.bench")  # the package's `bench` is the command


def test_a_row_with_failed_requests_is_flagged_and_explained() -> None:
    clean = LoadResult(connections=1, seconds=1.0, latencies_s=[0.001])
    failing = LoadResult(connections=8, seconds=1.0, latencies_s=[0.001], non_2xx=3)
    lines = bench._table([(clean, 1.0), (failing, 1.0)]).splitlines()
    assert not lines[1].endswith("!")
    assert lines[2].endswith("  !")
    assert lines[3] == bench.FAILED_NOTE
    assert bench.FAILED_NOTE not in bench._table([(clean, 1.0)])


def _info(default: str = "2", **v2: Any) -> dict[str, Any]:
    """GET /v1/models/m: version 1 and version 2 (the default unless said otherwise)."""

    def version(number: str, dtype: str, batches: int, rows: int) -> dict[str, Any]:
        return {
            "version": number,
            "state": "ready",
            "signature": {"inputs": [{"name": "x", "dtype": dtype, "shape": [-1, 2]}]},
            "batching": {"stats": {"batches": batches, "rows": rows, "workers": 1}},
        }

    return {
        "name": "m",
        "default_version": default,
        "versions": [version("1", "float32", 1, 1), version("2", "int64", 10, 40) | v2],
    }


def _client(handler: Callable[[httpx.Request], httpx.Response], **headers: str) -> httpx.Client:
    return model.client("http://bench.test", headers, transport=httpx.MockTransport(handler))


def test_every_read_carries_the_headers_given_with_header() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("x-api-key") != "K":
            return httpx.Response(401, json={"error": {"code": "unauthenticated"}})
        return httpx.Response(200, json=_info())

    with _client(handler, **{"X-API-Key": "K"}) as http:
        assert model.describe(http, "m")["name"] == "m"
        assert model.batch_stats(http, "m", "2") == {"batches": 10, "rows": 40, "workers": 1}
        assert model.model_ready(http, "m")
    with _client(handler) as http, pytest.raises(click.ClickException) as refused:
        model.describe(http, "m")
    assert "--header 'X-API-Key: ...'" in refused.value.message


def test_a_failed_statistics_read_shows_a_dash_instead_of_losing_the_results() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "m"})  # no "versions"

    with _client(handler) as http:
        assert model.batch_stats(http, "m", "2") is None
    result = LoadResult(connections=1, seconds=1.0, latencies_s=[0.001])
    assert model.mean_batch(None, {"batches": 1, "rows": 1}) is None
    assert bench._table([(result, None)]).splitlines()[1].endswith("-")


def test_the_served_default_version_gives_the_body_and_the_statistics() -> None:
    """Not the first version listed: version 2 (int64 inputs) is the default."""
    with _client(lambda request: httpx.Response(200, json=_info())) as http:
        version = model.served_version(model.describe(http, "m"))
        assert version["version"] == "2"
        assert model.batch_stats(http, "m", version["version"])["batches"] == 10  # type: ignore[index]
    assert json.loads(model.example_body(version)) == {"inputs": [[0, 0]]}  # int, not 0.5


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ({"dtype": "int64", "range": [0, 9]}, 4),  # round(4.5): an int
        ({"dtype": "uint8", "range": [10, 20]}, 15),
        ({"dtype": "bool"}, True),
        ({"dtype": "float32", "range": [0.0, 3.0]}, 1.5),
        ({"dtype": "str"}, "text"),
    ],
)
def test_the_example_value_fits_the_dtype(spec: dict[str, Any], value: Any) -> None:
    body = model.example_body({"signature": {"inputs": [{"name": "x", "shape": [-1], **spec}]}})
    (sent,) = json.loads(body)["inputs"]
    assert sent == value and type(sent) is type(value)


@pytest.mark.parametrize(
    ("status", "v2", "message"),
    [
        (404, {}, "the server at http://bench.test has no model 'm'"),
        (200, {"state": "failed", "error": "bad file"}, "model m version 2 is failed: bad file"),
        (200, {"state": "loading"}, "model m version 2 is loading"),
    ],
)
def test_a_model_that_cannot_be_benchmarked_is_a_clear_error(
    status: int, v2: dict[str, Any], message: str
) -> None:
    answer = httpx.Response(status, json=_info(**v2))
    with _client(lambda request: answer) as http, pytest.raises(click.ClickException) as failed:
        model.served_version(model.describe(http, "m"))
    assert failed.value.message == message


def test_readiness_waits_for_the_model_and_gives_up_only_on_its_failure() -> None:
    answers = iter([httpx.ConnectError("refused"), _info(state="loading"), _info()])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(200, json=answer)

    with _client(handler) as http:
        assert [model.model_ready(http, "m") for _ in range(3)] == [False, False, True]
    failed = _info(state="failed", error="no such file")
    with (
        _client(lambda request: httpx.Response(200, json=failed)) as http,
        pytest.raises(click.ClickException, match="no such file"),
    ):
        model.model_ready(http, "m")


def test_statistics_of_several_workers_are_read_until_two_reads_agree() -> None:
    """Workers publish at most once a second: a read right after the run misses some of
    the last batches, a read a publishing interval later has them."""
    reads = iter([{"batches": 5, "workers": 2}, {"batches": 7, "workers": 2}] + [
        {"batches": 8, "workers": 2}] * 2)  # fmt: skip
    slept: list[float] = []
    assert model.settled(lambda: next(reads), slept.append) == {"batches": 8, "workers": 2}
    assert slept == [model.PUBLISH_WAIT_S] * 3
    one = {"batches": 5, "workers": 1}  # one worker: its own live counters, read once
    assert model.settled(lambda: one, slept.append) == one and len(slept) == 3
