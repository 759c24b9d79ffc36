"""``modelport bench``: drive a model over HTTP at several concurrencies and print a table."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import orjson

from modelport.cli._bench_server import BenchServer, sigterm_exits
from modelport.cli._common import echo_status
from modelport.cli._loadgen import LoadResult, run_load


def _example_body(url: str, name: str) -> bytes:
    """One row built from the model's signature (mid-range values where a range is known)."""
    info = httpx.get(f"{url}/v1/models/{name}", timeout=10).raise_for_status().json()
    version = next(v for v in info["versions"] if v["state"] == "ready")
    inputs = version["signature"]["inputs"]

    def row(spec: dict[str, Any]) -> Any:
        shape = [d if d > 0 else 1 for d in spec["shape"][1:]]
        lo, hi = spec.get("range", [0.0, 1.0])
        value: Any = "text" if spec["dtype"] in ("str", "object") else (lo + hi) / 2
        for d in reversed(shape):
            value = [value] * d
        return value

    if len(inputs) == 1:
        return orjson.dumps({"inputs": [row(inputs[0])]})
    return orjson.dumps({"inputs": {s["name"]: [row(s)] for s in inputs}})


def _model_ready(url: str, name: str, headers: dict[str, str]) -> bool:
    """Whether the model's default version is ready: False while the server starts or
    loads it; a ClickException if it never will be (failed, unknown). Other models'
    states do not matter, as they would with /readyz."""
    try:
        response = httpx.get(f"{url}/v1/models/{name}", headers=headers, timeout=5)
    except httpx.TransportError:
        return False  # not listening yet
    if response.status_code == 404:
        raise click.ClickException(f"the server has no model {name!r}")
    if response.status_code != 200:
        raise click.ClickException(
            f"GET /v1/models/{name} answered {response.status_code}: {response.text}"
        )
    info = response.json()
    version = next((v for v in info["versions"] if v["version"] == info["default_version"]), None)
    if version is not None and version["state"] == "failed":
        raise click.ClickException(
            f"model {name} version {version['version']} failed to load: {version.get('error')}"
        )
    return version is not None and version["state"] == "ready"


FAILED_NOTE = "! some requests failed: req/s, p50 and p99 count the 2xx answers only"


def _table(rows: list[tuple[LoadResult, dict[str, Any]]]) -> str:
    lines = [
        f"{'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'non-2xx':>7} {'mean batch':>10}"
    ]
    flagged = False
    for r, stats in rows:
        failed = bool(r.errors or r.non_2xx)
        flagged |= failed
        lines.append(
            f"{r.connections:>5} {r.rate:>9.0f} {r.percentile_ms(0.5):>8.2f} "
            f"{r.percentile_ms(0.99):>8.2f} {r.errors:>6} {r.non_2xx:>7} "
            f"{stats.get('mean_batch_rows', 0):>10.2f}" + ("  !" if failed else "")
        )
    if flagged:
        lines.append(FAILED_NOTE)
    return "\n".join(lines)


def _batch_stats(url: str, name: str) -> dict[str, Any]:
    info = httpx.get(f"{url}/v1/models/{name}", timeout=10).json()
    ready = [v for v in info["versions"] if v["state"] == "ready" and "batching" in v]
    return ready[0]["batching"]["stats"] if ready else {}


def _delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    batches = after.get("batches", 0) - before.get("batches", 0)
    rows = after.get("rows", 0) - before.get("rows", 0)
    return {"mean_batch_rows": rows / batches if batches else 0.0}


@click.command()
@click.argument("name")
@click.argument(
    "model_files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--url", help="Benchmark a running server instead of starting one.")
@click.option("--repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-c",
    "--concurrency",
    default="1,16,64",
    show_default=True,
    help="Comma-separated connection counts.",
)
@click.option("-d", "--duration", default=10.0, show_default=True, help="Seconds per level.")
@click.option("--warmup", default=2.0, show_default=True, help="Warm-up seconds per level.")
@click.option(
    "--input",
    "input_file",
    type=click.File("rb"),
    help="Request body (native JSON); default: one row built from the signature.",
)
@click.option(
    "--header", "headers", multiple=True, help="Extra header 'Name: value' (e.g. an API key)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(
    name: str,
    model_files: tuple[Path, ...],
    url: str | None,
    repository: Path | None,
    data_dir: Path | None,
    concurrency: str,
    duration: float,
    warmup: float,
    input_file: Any,
    headers: tuple[str, ...],
    as_json: bool,
) -> None:
    """Load-test model NAME over HTTP and print req/s, p50, p99 and batch sizes.

    \b
    Starts `modelport serve` with MODEL_FILES / --repository (or the demo models) on a
    free local port, unless --url points at a running server.

    \b
    Examples:
      modelport bench iris                           # the demo iris model
      modelport bench churn ./churn.onnx -c 1,32 -d 5
      modelport bench iris --url http://127.0.0.1:8000 --header 'X-API-Key: mp_...'
    """
    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter("use numbers like 1,16,64", param_hint="--concurrency") from None
    if not levels or min(levels) < 1 or max(levels) > 1024:
        raise click.BadParameter("each level must be 1..1024", param_hint="--concurrency")
    extra: dict[str, str] = {}
    for header in headers:
        key, sep, value = header.partition(":")
        if not sep:
            raise click.BadParameter(
                f"expected 'Name: value', got {header!r}", param_hint="--header"
            )
        extra[key.strip()] = value.strip()

    server: BenchServer | None = None
    with sigterm_exits():
        try:
            if url is None:
                serve_args = [str(p) for p in model_files]
                if repository is not None:
                    serve_args += ["--repository", str(repository)]
                if data_dir is not None:
                    serve_args += ["--data-dir", str(data_dir)]
                echo_status("starting modelport serve for the benchmark")
                server = BenchServer.serve(serve_args)
                url = server.url
                server.wait_ready(lambda: _model_ready(server.url, name, extra))
            rows = _measure(url.rstrip("/"), name, levels, duration, warmup, input_file, extra)
        finally:
            if server is not None:
                server.stop()
    _report(rows, as_json)


def _measure(
    url: str,
    name: str,
    levels: list[int],
    duration: float,
    warmup: float,
    input_file: Any,
    extra: dict[str, str],
) -> list[tuple[LoadResult, dict[str, Any]]]:
    """Run each level (warm-up, then the measured run) and read the batch statistics."""
    body = input_file.read() if input_file is not None else _example_body(url, name)
    target = f"{url}/v1/models/{name}/predict"
    check = httpx.post(
        target, content=body, headers={"content-type": "application/json", **extra}, timeout=30
    )
    if check.status_code != 200:
        raise click.ClickException(f"a test request failed ({check.status_code}): {check.text}")
    rows = []
    for level in levels:
        asyncio.run(run_load(target, body, level, warmup, extra))
        before = _batch_stats(url, name)
        with click.progressbar(
            length=int(duration * 10), label=f"{level:>4} connections", file=sys.stderr
        ) as bar:
            done = [0]

            def tick(elapsed: float, bar: Any = bar, done: list[int] = done) -> None:
                step = int(elapsed * 10) - done[0]
                if step > 0:
                    bar.update(step)
                    done[0] += step

            result = asyncio.run(run_load(target, body, level, duration, extra, tick))
        rows.append((result, _delta(_batch_stats(url, name), before)))
    return rows


def _report(rows: list[tuple[LoadResult, dict[str, Any]]], as_json: bool) -> None:
    if as_json:
        click.echo(
            orjson.dumps(
                [
                    {
                        "connections": r.connections,
                        "requests": r.requests,
                        "req_per_s": r.rate,
                        "p50_ms": r.percentile_ms(0.5),
                        "p99_ms": r.percentile_ms(0.99),
                        "errors": r.errors,
                        "non_2xx": r.non_2xx,
                        **stats,
                    }
                    for r, stats in rows
                ],
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    else:
        click.echo(_table(rows))
