"""Log configuration: plain text for a terminal, JSON lines for machines. Called by the CLI only."""

from __future__ import annotations

import logging
import sys
import time

import orjson


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str = "info", json_logs: bool = False, worker: int | None = None) -> None:
    """``worker``: the HTTP worker process's index under ``serve --workers N``; its lines
    say which worker wrote them ("[w1]", or ``"worker": 1`` in JSON), since every worker
    loads the same models and logs the same start-up."""
    handler = logging.StreamHandler(sys.stderr)
    tag = "" if worker is None else f"[w{worker}] "
    handler.setFormatter(
        JsonFormatter(worker)
        if json_logs
        else logging.Formatter(
            f"%(asctime)s %(levelname)-7s {tag}%(name)s: %(message)s", "%H:%M:%S"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
