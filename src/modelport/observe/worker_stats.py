"""Batch statistics of every HTTP worker, whichever worker answers the request for them.

With several HTTP workers (``modelport serve --workers N``, the default on a multi-core
machine) each process batches its own requests and counts its own batches, and a
connection reaches one of them by the kernel's hash. Read alone, one worker's counters
are a share of the truth that changes with the connection. So each worker writes a
snapshot of its counters to a file of its own in a directory the supervisor made (on
tmpfs where there is one), at most once a second and only when they changed, and a
worker describing a model adds its siblings' latest snapshots to its own live counters.

The counting itself stays in process memory: nothing crosses processes on the request
path. A sibling's figures are about one publishing interval old (the timer runs on its
event loop, which an inline batch may hold up). A restarted worker starts again from
zero, as its process does, so the totals drop by what the dead one had counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from modelport.core.batching import BatchStats
from modelport.core.registry import Registry

log = logging.getLogger("modelport.workers")

Snapshot = dict[str, dict[str, Any]]  # "model/version" -> BatchStats fields
_FIELDS = frozenset(f.name for f in fields(BatchStats))


def _key(model: str, version: str) -> str:
    return f"{model}/{version}"


class StatsBoard:
    """One worker's view of the shared directory: publish its own, read the others'.

    Best effort throughout: statistics never stop a worker from serving. A directory that
    disappears (``systemd-logind``'s ``RemoveIPC`` empties ``/dev/shm`` for a user whose
    last session ends) is made again; other failures are logged once.
    """

    def __init__(self, directory: Path, index: int, interval_s: float = 1.0) -> None:
        self.directory = directory
        self.interval_s = interval_s
        self._own = directory / f"worker-{index}.json"
        self._last: Snapshot | None = None
        self._task: asyncio.Task[None] | None = None
        self._collect: Callable[[], Snapshot] = dict
        self._complained = False

    def publish(self, snapshot: Snapshot) -> bool:
        """Write ``snapshot`` if it changed since the last write; True if written."""
        if snapshot == self._last:
            return False
        tmp = self._own.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(snapshot))
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(snapshot))
        os.replace(tmp, self._own)  # readers see the old file or the new one, never half
        self._last = snapshot
        return True

    def _try_publish(self, collect: Callable[[], Snapshot]) -> None:
        try:
            self.publish(collect())
        except Exception:
            if not self._complained:  # once: it would repeat every interval
                log.exception("cannot publish batch statistics to %s", self.directory)
                self._complained = True

    def siblings(self) -> list[Snapshot]:
        """The latest snapshot of every other worker that has written one."""
        found = []
        try:
            paths = sorted(self.directory.glob("worker-*.json"))
        except OSError:
            return []
        for path in paths:
            if path == self._own:
                continue
            try:
                raw = json.loads(path.read_text())
            except (OSError, ValueError):  # gone with a stopping server, or unreadable
                continue
            if isinstance(raw, dict):
                found.append(raw)
        return found

    def start(self, collect: Callable[[], Snapshot]) -> None:
        """Publish ``collect()`` now and then every interval, until ``stop``."""
        self._collect = collect
        self._try_publish(collect)  # at once: replaces a dead predecessor's file
        self._task = asyncio.get_running_loop().create_task(self._run(collect))

    async def _run(self, collect: Callable[[], Snapshot]) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._try_publish(collect)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._try_publish(self._collect)  # the last counts, for siblings still answering


def combined(
    siblings: list[Snapshot], model: str, version: str, own: BatchStats
) -> tuple[BatchStats, int]:
    """``own`` plus each sibling's counters for this version (``siblings``: read once per
    request with ``StatsBoard.siblings``), and how many workers' counters that is."""
    parts = [own]
    key = _key(model, version)
    for snapshot in siblings:
        raw = snapshot.get(key)
        if isinstance(raw, dict):
            parts.append(BatchStats(**{k: v for k, v in raw.items() if k in _FIELDS}))
    return BatchStats.combine(parts), len(parts)


def snapshot_of(registry: Registry) -> Snapshot:
    """This worker's counters for every version that has a batcher."""
    return {
        _key(name, sv.version): asdict(sv.batcher.stats)
        for name in registry.names()
        for sv in registry.get(name).versions.values()
        if sv.batcher is not None
    }
