"""Run ``wrk`` (closed loop, one thread) with ``post.lua`` and parse its summary line."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "post.lua"
MARKER = "BENCH_JSON "


class LoadError(RuntimeError):
    """wrk failed or printed no summary."""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    non2xx: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non2xx


def wrk(
    url: str, body: Path, connections: int, seconds: float, cpu_prefix: list[str]
) -> LoadResult:
    duration = f"-d{max(1, round(seconds))}s"
    argv = [
        *cpu_prefix,
        "wrk",
        "-t1",
        f"-c{connections}",
        duration,
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]
    env = os.environ | {"BENCH_BODY": str(body)}
    proc = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return _parse(json.loads(line[len(MARKER) :]))
    raise LoadError(f"wrk rc={proc.returncode}: {(proc.stderr or proc.stdout)[-300:]}")


def _parse(raw: dict[str, int]) -> LoadResult:
    socket_errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        socket_errors=socket_errors,
        non2xx=raw["status"],
    )
