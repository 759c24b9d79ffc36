"""Result rows, derived ratios and the pass/fail targets of the benchmark."""

from __future__ import annotations

import statistics
from collections.abc import Collection
from dataclasses import dataclass

NOOP_SERVERS = ("noop-uvicorn", "noop-granian", "noop-modelport")
THIRD_PARTY_NOOP = ("noop-uvicorn", "noop-granian")  # (b) without modelport's own protocol


@dataclass
class HttpRow:
    """One wrk measurement of one server (or why there is none)."""

    mode: str
    model: str
    server: str
    connections: int
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    socket_errors: int | None = None
    non2xx: int | None = None
    startup_s: float | None = None
    escaped_threads: int | None = None
    background_cpu: float | None = None
    # CPU time per request: the server's process tree, and the load generator's (wrk,
    # kernel work done in its context included)
    server_cpu_us: float | None = None
    load_cpu_us: float | None = None
    error: str | None = None
    # Index of this row's connection-count block within its (mode, model): (a) round
    # ``block`` was measured just before the block and round ``block + 1`` just after it.
    block: int | None = None

    @property
    def errors(self) -> int | None:
        if self.socket_errors is None or self.non2xx is None:
            return None
        return self.socket_errors + self.non2xx


@dataclass
class InprocRow:
    """(a): the model called directly at one batch size."""

    mode: str
    model: str
    batch: int
    rows_per_s: float | None = None
    us_per_call: float | None = None
    background_cpu: float | None = None
    error: str | None = None
    round: int = 0  # (a) is measured before each connection-count block and after the last


@dataclass
class Target:
    name: str
    measured: str
    wanted: str
    passed: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.passed]


class Results:
    """All rows of one run, with look-ups for the derived numbers."""

    def __init__(self, http: list[HttpRow], inproc: list[InprocRow]) -> None:
        self.http = http
        self.inproc = inproc

    def row(self, mode: str, model: str, server: str, conns: int) -> HttpRow | None:
        for r in self.http:
            key = (r.mode, r.model, r.server, r.connections)
            if key == (mode, model, server, conns) and r.error is None:
                return r
        return None

    def rps(self, mode: str, model: str, server: str, conns: int) -> float | None:
        r = self.row(mode, model, server, conns)
        return r.rps if r else None

    def transport(
        self, mode: str, model: str, conns: int, servers: tuple[str, ...] = NOOP_SERVERS
    ) -> HttpRow | None:
        """(b): the fastest of the no-op servers for this cell."""
        rows = [self.row(mode, model, s, conns) for s in servers]
        measured = [r for r in rows if r is not None and r.rps is not None]
        return max(measured, key=lambda r: r.rps or 0.0) if measured else None

    def inproc_best(
        self, mode: str, model: str, rounds: Collection[int] | None = None
    ) -> float | None:
        """(a): the best rows/s over the batch sizes of each round, averaged over
        ``rounds`` (every round when None)."""
        best: dict[int, float] = {}
        for r in self.inproc:
            if r.mode != mode or r.model != model or r.rows_per_s is None:
                continue
            if rounds is None or r.round in rounds:
                best[r.round] = max(best.get(r.round, 0.0), r.rows_per_s)
        return statistics.fmean(best.values()) if best else None

    def l_model(self, mode: str, model: str, conns: int) -> float | None:
        """L_model for one connection-count block: (a) from the rounds measured just
        before and just after it, so the bound follows the machine's speed at the time
        (these shared machines drift by tens of percent within minutes); from all rounds
        if neither of those two has a figure."""
        blocks = {
            r.block
            for r in self.http
            if (r.mode, r.model, r.connections) == (mode, model, conns) and r.block is not None
        }
        rounds = {b + k for b in blocks for k in (0, 1)}
        around = self.inproc_best(mode, model, rounds or None)
        # both rounds around the block failed: the other rounds are better than nothing
        return around if around is not None else self.inproc_best(mode, model)

    def ratios(self, mode: str, model: str, conns: int) -> dict[str, float | None]:
        mp = self.rps(mode, model, "modelport", conns)
        b = self.transport(mode, model, conns)
        b3 = self.transport(mode, model, conns, THIRD_PARTY_NOOP)
        return {
            "modelport/(c)": _div(mp, self.rps(mode, model, "fastapi", conns)),
            "modelport/(b)": _div(mp, b.rps if b else None),
            "modelport/(b) 3rd-party": _div(mp, b3.rps if b3 else None),
            "modelport/(a)": _div(mp, self.l_model(mode, model, conns)),
        }


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _check(
    name: str,
    value: float | None,
    wanted: float,
    fmt: str,
    wanted_text: str,
    higher_is_better: bool = True,
) -> Target:
    if value is None:
        return Target(name, "not measured", wanted_text, None)
    ok = value >= wanted if higher_is_better else value <= wanted
    return Target(name, format(value, fmt), wanted_text, ok)


def _throughput_targets(res: Results, model: str, conns: int) -> list[Target]:
    mode = "pinned"
    ratios = res.ratios(mode, model, conns)
    where = f"{model} pinned {conns} conns"
    if model == "m1":
        return [
            _check(f"{where}: modelport/(c)", ratios["modelport/(c)"], 8, ".2f", ">= 8x"),
            _check(f"{where}: modelport/(b)", ratios["modelport/(b)"], 0.40, ".0%", ">= 40%"),
            _check(
                f"{where}: modelport/(b), (b) on uvicorn or granian only",
                ratios["modelport/(b) 3rd-party"],
                0.40,
                ".0%",
                ">= 40% (for reference)",
            ),
        ]
    mp = res.rps(mode, model, "modelport", conns)
    b = res.transport(mode, model, conns)
    l_model = res.l_model(mode, model, conns)
    bound = None
    if b and b.rps and l_model:
        bound = 1.0 / (1.0 / l_model + 1.0 / b.rps)
    return [
        _check(f"{where}: modelport/(c)", ratios["modelport/(c)"], 4, ".2f", ">= 4x"),
        _check(
            f"{where}: modelport / (1/(1/L_model + 1/L_transport))",
            _div(mp, bound),
            0.60,
            ".0%",
            ">= 60%" + (f" (bound {bound:,.0f} req/s)" if bound else ""),
        ),
    ]


def unpinned_bound(pinned: HttpRow | None) -> float | None:
    """The most that unpinned / pinned can be, from the pinned run's CPU per request.

    Pinned, the server has a core of its own: s µs of CPU per request gives 1/s req/s.
    Unpinned, the server and the load generator (w µs per request) share both cores: at
    best 2/(s + w) req/s. The ratio is at most 2s/(s + w), so it can reach 1.5 only while
    s >= 3w: a server that gets cheaper per request lowers its own ceiling.

    Assumes what this harness sets up: two CPUs unpinned, and a pinned server that keeps
    its core busy (req/s = 1/s; the 64-connection runs measure 0.99+ of a core)."""
    if pinned is None or not pinned.server_cpu_us or pinned.load_cpu_us is None:
        return None
    s, w = pinned.server_cpu_us, pinned.load_cpu_us
    return 2 * s / (s + w)


def _latency_targets(
    res: Results, modes: list[str], models: list[str], conns: list[int]
) -> list[Target]:
    out: list[Target] = []
    for mode in modes:
        for model in models:
            if 64 in conns:
                r = res.row(mode, model, "modelport", 64)
                tail = _div(r.p99_ms, r.p50_ms) if r else None
                out.append(
                    _check(
                        f"{model} {mode} 64 conns: modelport p99/p50",
                        tail,
                        4,
                        ".2f",
                        "<= 4",
                        higher_is_better=False,
                    )
                )
            if 1 in conns:
                mp = res.row(mode, model, "modelport", 1)
                c = res.row(mode, model, "fastapi", 1)
                rel = _div(mp.p50_ms, c.p50_ms) if mp and c else None
                out.append(
                    _check(
                        f"{model} {mode} 1 conn: modelport p50 / (c) p50",
                        rel,
                        1,
                        ".2f",
                        "<= 1",
                        higher_is_better=False,
                    )
                )
    return out


def targets(res: Results, modes: list[str], models: list[str], conns: list[int]) -> list[Target]:
    """Every target of the issue that this run's configuration can decide."""
    out: list[Target] = []
    if "pinned" in modes and 64 in conns:
        for model in models:
            out += _throughput_targets(res, model, 64)
    out += _latency_targets(res, modes, models, conns)
    if {"pinned", "unpinned"} <= set(modes) and 64 in conns:
        for model in models:
            gain = _div(
                res.rps("unpinned", model, "modelport", 64),
                res.rps("pinned", model, "modelport", 64),
            )
            target = _check(
                f"{model} 64 conns: modelport unpinned / pinned", gain, 1.5, ".2f", ">= 1.5x"
            )
            bound = unpinned_bound(res.row("pinned", model, "modelport", 64))
            if bound is not None and target.passed is not None:
                target.measured += f" (CPU bound {bound:.2f})"
            out.append(target)
    mp_rows = [r for r in res.http if r.server == "modelport"]
    failed = [r for r in mp_rows if r.error is not None]
    errors = sum(r.errors or 0 for r in mp_rows)
    ok = None if not mp_rows or len(failed) == len(mp_rows) else (errors == 0 and not failed)
    measured = f"{errors} errors" + (f", {len(failed)} runs failed" if failed else "")
    out.append(Target("modelport: zero errors (socket + non-2xx), all runs", measured, "0", ok))
    return out
