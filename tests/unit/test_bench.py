"""``modelport bench`` (cli/bench.py) without a server: its table, and what it reads
from GET /v1/models/NAME, answered by httpx's MockTransport."""

from __future__ import annotations

import importlib

from modelport.cli._loadgen import LoadResult

bench = importlib.import_module("modelport.cli.bench")  # the package's `bench` is the command


def test_a_row_with_failed_requests_is_flagged_and_explained() -> None:
    clean = LoadResult(connections=1, seconds=1.0, latencies_s=[0.001])
    failing = LoadResult(connections=8, seconds=1.0, latencies_s=[0.001], non_2xx=3)
    lines = bench._table([(clean, {}), (failing, {})]).splitlines()
    assert not lines[1].endswith("!")
    assert lines[2].endswith("  !")
    assert lines[3] == bench.FAILED_NOTE
    assert bench.FAILED_NOTE not in bench._table([(clean, {})])
