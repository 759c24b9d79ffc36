"""Log lines: plain or JSON, and under ``serve --workers N`` tagged with the worker."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from modelport.observe.logging import configure


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _line(capsys: pytest.CaptureFixture[str]) -> str:
    logging.getLogger("modelport.registry").info("loaded iris v1 (sklearn)")
    return capsys.readouterr().err.strip()


@pytest.mark.usefixtures("restore_root")
def test_a_worker_tags_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", json_logs=False, worker=1)
    assert _line(capsys).endswith(" INFO    [w1] modelport.registry: loaded iris v1 (sklearn)")
    configure("info", json_logs=True, worker=0)
    entry = json.loads(_line(capsys))
    assert entry["worker"] == 0 and entry["message"] == "loaded iris v1 (sklearn)"


@pytest.mark.usefixtures("restore_root")
def test_one_process_has_no_tag(capsys: pytest.CaptureFixture[str]) -> None:
    configure("info", json_logs=False)
    assert _line(capsys).endswith(" INFO    modelport.registry: loaded iris v1 (sklearn)")
    configure("info", json_logs=True)
    assert "worker" not in json.loads(_line(capsys))
