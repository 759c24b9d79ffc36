"""``modelport serve``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from modelport.cli._common import echo_status, model_options, settings_from
from modelport.errors import ModelportError


@click.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to bind.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option("--json-logs", is_flag=True, help="Log JSON lines instead of text.")
@click.option("--body-limit", type=int, help="Largest request body in bytes [16 MiB].")
@click.option("--request-timeout", type=float, help="Default per-request deadline, seconds [30].")
@click.option("--max-batch-size", type=int, help="Rows per batch, all models [128].")
@click.option(
    "--max-delay-ms", type=float, help="Extra wait to fill a batch [0: a lone request never waits]."
)
@click.option("--max-queue", type=int, help="Queued requests per model before 503 [4096].")
@click.option("--threads", type=int, help="Inference threads per model version [1].")
@click.pass_context
def serve(
    ctx: click.Context,
    /,
    model_files: tuple[Path, ...],
    config_file: Path | None,
    json_logs: bool,
    **flags: Any,
) -> None:
    """Serve models over HTTP.

    \b
    With no MODEL_FILES and no --repository, serves the demo models iris, diabetes and
    digits, built on first start from scikit-learn's bundled datasets.

    \b
    Examples:
      modelport serve
      modelport serve ./iris.onnx ./churn.joblib --port 9000
      modelport serve --repository ./models --host 0.0.0.0
    """
    import uvicorn

    from modelport.api.app import create_app
    from modelport.bootstrap import build
    from modelport.demo import ensure_demo_repository
    from modelport.observe.logging import configure

    settings = settings_from(ctx, model_files, config_file, **flags)
    configure(settings.server.log_level, json_logs)
    try:
        demo = (
            ensure_demo_repository(settings.data_dir, echo_status) if settings.serves_demo else None
        )
        services = build(settings, demo_repository=demo)
    except ModelportError as exc:
        raise click.ClickException(exc.message) from exc
    app = create_app(services)
    server = settings.server
    base = f"http://{server.host}:{server.port}"
    names = ", ".join(services.registry.names())
    echo_status(f"serving {names} on {base}  (docs: {base}/docs)")
    logging.getLogger("uvicorn.error").setLevel(server.log_level.upper())
    uvicorn.run(
        app,
        host=server.host,
        port=server.port,
        log_level=server.log_level,
        access_log=server.access_log,
        loop="uvloop",
        http="httptools",
        log_config=None,
        timeout_graceful_shutdown=10,
    )
