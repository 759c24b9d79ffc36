"""CPU pinning helpers: find a process tree's threads and hold them to a CPU set.

``taskset`` sets the affinity of the process it starts, but a library may move its own
threads afterwards (onnxruntime's default intra-op pool pins each worker to a core of its
choosing). ``enforce`` puts every thread of a process tree back on the allowed CPUs and
reports how many had escaped.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _parent_of(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the fields after ")" are fixed.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            parent = _parent_of(int(entry.name))
            if parent is not None:
                parents.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(parents.get(pid, []))
    return found


def threads(pid: int) -> list[int]:
    try:
        return [int(t.name) for t in (PROC / str(pid) / "task").iterdir()]
    except OSError:
        return []


def enforce(root: int, cpus: set[int]) -> int:
    """Set the affinity of every thread under ``root`` to ``cpus``; return how many escaped."""
    escaped = 0
    for pid in descendants(root):
        for tid in threads(pid):
            try:
                if os.sched_getaffinity(tid) != cpus:
                    escaped += 1
                    os.sched_setaffinity(tid, cpus)
            except OSError:
                continue  # the thread ended meanwhile
    return escaped


def count_escaped(root: int, cpus: set[int]) -> int:
    """How many threads under ``root`` may run outside ``cpus`` (nothing is changed)."""
    escaped = 0
    for pid in descendants(root):
        for tid in threads(pid):
            try:
                escaped += os.sched_getaffinity(tid) != cpus
            except OSError:
                continue
    return escaped
