"""Markdown for the run: environment, tables, ratios, targets; and the docs page update."""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable
from pathlib import Path

from results import HttpRow, Results, Target

SERVER_LABELS = {
    "noop-uvicorn": "(b) no-op, uvicorn",
    "noop-granian": "(b) no-op, granian",
    "noop-modelport": "(b) no-op, modelport's protocol",
    "fastapi": "(c) FastAPI tutorial",
    "modelport": "(d) modelport",
}

DOC_HEADER = """# Benchmarks

Written by `benchmarks/run.py` (`--help` for the options). What it measures and how to read
the tables: the top of `docs/benchmarks.md` in the modelport repository.
"""

NOISY_CPUS = 0.15
BEGIN = "<!-- BEGIN RUN {label} -->"
END = "<!-- END RUN {label} -->"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return format(value, ".2f" if value >= 0.1 else ".4f")


def _table(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return lines


def _notes(escaped: int | None, background: float | None) -> str:
    notes = []
    if escaped:
        notes.append(f"{escaped} thread(s) re-pinned")
    if background is not None and background >= NOISY_CPUS:
        notes.append(f"noisy: {background:.2f} CPU busy elsewhere")
    return "; ".join(notes)


def _http_cells(r: HttpRow) -> list[str]:
    if r.error is not None:
        return ["—", "—", "—", "—", "—", "—", f"error: {r.error[:160]}"]
    note = _notes(r.escaped_threads, r.background_cpu)
    return [
        _num(r.rps, ",.0f"),
        _num(r.p50_ms, ".2f"),
        _num(r.p99_ms, ".2f"),
        str(r.errors),
        _num(r.server_cpu_us, ".1f"),
        _num(r.load_cpu_us, ".1f"),
        note,
    ]


def http_table(res: Results, mode: str) -> list[str]:
    rows = []
    for r in res.http:
        if r.mode == mode:
            label = SERVER_LABELS.get(r.server, r.server)
            rows.append([r.model, str(r.connections), label, *_http_cells(r)])
    head = [
        "model",
        "conns",
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "server µs/req",
        "wrk µs/req",
        "note",
    ]
    return _table(head, rows)


def inproc_table(res: Results) -> list[str]:
    """(a), one line per mode, model and batch size: the median over the rounds, with the
    slowest and fastest round beside it."""
    cells: dict[tuple[str, str, int], list[float]] = {}
    rows, failed = [], []
    for r in res.inproc:
        if r.error is not None:
            failed.append(
                [r.mode, r.model, "—", "—", "—", "—", str(r.round), f"error: {r.error[:160]}"]
            )
        elif r.rows_per_s is not None:
            cells.setdefault((r.mode, r.model, r.batch), []).append(r.rows_per_s)
    for (mode, model, batch), rates in cells.items():
        median = statistics.median(rates)
        rows.append(
            [
                mode,
                model,
                str(batch),
                _num(median, ",.0f"),
                f"{min(rates):,.0f} to {max(rates):,.0f}",
                _num(batch / median * 1e6, ",.1f"),
                str(len(rates)),
                "",
            ]
        )
    head = ["mode", "model", "batch", "rows/s (median)", "range", "µs/call", "rounds", "note"]
    return _table(head, rows + failed)


def ratio_table(res: Results, modes: list[str], models: list[str], conns: list[int]) -> list[str]:
    rows = []
    for mode in modes:
        for model in models:
            for c in conns:
                ratios = res.ratios(mode, model, c)
                b = res.transport(mode, model, c)
                rows.append(
                    [
                        mode,
                        model,
                        str(c),
                        *(_ratio(v) for v in ratios.values()),
                        b.server if b else "—",
                        _num(res.l_model(mode, model, c), ",.0f"),
                    ]
                )
    head = [
        "mode",
        "model",
        "conns",
        "modelport/(c)",
        "modelport/(b)",
        "modelport/(b) 3rd-party",
        "modelport/(a)",
        "(b) from",
        "L_model (a), rows/s",
    ]
    return _table(head, rows)


def noise_line(res: Results) -> str:
    loads = [r.background_cpu for r in res.http if r.background_cpu is not None]
    if not loads:
        return "Background CPU: not measured."
    noisy = sum(v >= NOISY_CPUS for v in loads)
    return (
        f"Background CPU (other processes) during the HTTP runs: median "
        f"{statistics.median(loads):.2f}, max {max(loads):.2f} CPUs; {noisy} of "
        f"{len(loads)} runs at or above {NOISY_CPUS} CPU are marked noisy."
    )


def target_lines(targets: list[Target]) -> list[str]:
    return [f"- **{t.verdict}** {t.name}: {t.measured} (target {t.wanted})" for t in targets]


def section(
    label: str,
    meta: dict[str, str],
    res: Results,
    modes: list[str],
    models: list[str],
    conns: list[int],
    targets: list[Target],
) -> str:
    lines = [BEGIN.format(label=label), f"## Run `{label}`: {meta['date']}", ""]
    lines += [f"Command: `{meta['command']}`", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items() if key not in ("date", "command")]
    lines += ["", noise_line(res), "", "### (a) in-process", "", *inproc_table(res)]
    for mode in modes:
        lines += ["", f"### HTTP, {mode}", "", *http_table(res, mode)]
    lines += ["", "### Ratios", ""]
    lines += [
        "req/s over req/s. (a) = L_model: the best in-process rows/s over the batch sizes,",
        "averaged over the two (a) rounds measured just before and just after that",
        "connection-count block.",
        "",
    ]
    lines += ratio_table(res, modes, models, conns)
    lines += ["", "### Targets", "", *target_lines(targets), "", END.format(label=label)]
    return "\n".join(lines) + "\n"


def write_doc(path: Path, label: str, text: str) -> None:
    """Replace this label's section in ``path`` (or append it); create the page if needed."""
    doc = path.read_text() if path.exists() else DOC_HEADER
    pattern = re.compile(
        re.escape(BEGIN.format(label=label)) + r".*?" + re.escape(END.format(label=label)) + r"\n?",
        re.DOTALL,
    )
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
