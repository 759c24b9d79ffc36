"""``modelport bench``: drive a model over HTTP at several concurrencies and print a table."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import orjson

from modelport.cli import _bench_model as model
from modelport.cli._bench_server import BenchServer, sigterm_exits
from modelport.cli._common import echo_status
from modelport.cli._loadgen import LoadResult, check_url, run_load

FAILED_NOTE = "! some requests failed: req/s, p50 and p99 count the 2xx answers only"


Row = tuple[LoadResult, float | None]  # a level's result and its mean batch (None: unknown)


def _table(rows: list[Row]) -> str:
    lines = [
        f"{'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
        f"{'non-2xx':>7} {'mean batch':>10}"
    ]
    flagged = False
    for r, batch in rows:
        failed = bool(r.errors or r.non_2xx)
        flagged |= failed
        lines.append(
            f"{r.connections:>5} {r.rate:>9.0f} {r.percentile_ms(0.5):>8.2f} "
            f"{r.percentile_ms(0.99):>8.2f} {r.errors:>6} {r.non_2xx:>7} "
            + (f"{batch:>10.2f}" if batch is not None else f"{'-':>10}")
            + ("  !" if failed else "")
        )
    if flagged:
        lines.append(FAILED_NOTE)
    return "\n".join(lines)


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
@click.option(
    "-d",
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds per level.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="Warm-up seconds per level.",
)
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

    if url is not None:
        _check_url(url)
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
                with model.client(url, extra) as http:
                    server.wait_ready(lambda: model.model_ready(http, name))
            url = url.rstrip("/")
            try:
                rows = _measure(url, name, levels, duration, warmup, input_file, extra)
            except httpx.TransportError as exc:
                raise click.ClickException(f"cannot reach the server at {url}: {exc}") from exc
        finally:
            if server is not None:
                # a SIGTERM from here on would cut the clean-up short: it runs to its end
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                server.stop()
    _report(rows, as_json)


def _check_url(url: str) -> None:
    try:
        check_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None


def _measure(
    url: str,
    name: str,
    levels: list[int],
    duration: float,
    warmup: float,
    input_file: Any,
    extra: dict[str, str],
) -> list[Row]:
    """Run each level (warm-up, then the measured run) and read the batch statistics of
    the served default version around the measured run."""
    with model.client(url, extra) as http:
        version = model.served_version(model.describe(http, name))
        body = input_file.read() if input_file is not None else model.example_body(version)
        target = f"{url}/v1/models/{name}/predict"
        check = http.post(
            target, content=body, headers={"content-type": "application/json"}, timeout=30
        )
        if check.status_code != 200:
            raise click.ClickException(f"a test request failed ({check.status_code}): {check.text}")

        def stats() -> model.Stats | None:
            return model.settled(lambda: model.batch_stats(http, name, version["version"]))

        rows: list[Row] = []
        for level in levels:
            if warmup:
                asyncio.run(run_load(target, body, level, warmup, extra))
            before = stats()
            result = _run_level(target, body, level, duration, extra)
            rows.append((result, model.mean_batch(stats(), before)))
    return rows


def _run_level(
    target: str, body: bytes, level: int, duration: float, extra: dict[str, str]
) -> LoadResult:
    with click.progressbar(
        length=int(duration * 10), label=f"{level:>4} connections", file=sys.stderr
    ) as bar:
        done = [0]

        def tick(elapsed: float) -> None:
            step = int(elapsed * 10) - done[0]
            if step > 0:
                bar.update(step)
                done[0] += step

        return asyncio.run(run_load(target, body, level, duration, extra, tick))


def _report(rows: list[Row], as_json: bool) -> None:
    if not as_json:
        click.echo(_table(rows))
        return
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
                    "mean_batch_rows": batch,
                }
                for r, batch in rows
            ],
            option=orjson.OPT_INDENT_2,
        ).decode()
    )
