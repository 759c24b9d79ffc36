"""``modelport serve``."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from pathlib import Path
from typing import Any

import click

from modelport.cli._common import echo_status, model_options, settings_from
from modelport.cli._security import security_options  # security (issue 4)
from modelport.errors import ModelportError
from modelport.settings import Settings


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
@click.option(
    "--shutdown-timeout",
    type=float,
    help="After SIGINT/SIGTERM, seconds open requests may finish [10]; running batches then "
    "get server.drain_timeout_s [5].",
)
@click.option("--max-batch-size", type=int, help="Rows per batch, all models [128].")
@click.option(
    "--max-delay-ms", type=float, help="Extra wait to fill a batch [0: a lone request never waits]."
)
@click.option("--max-queue", type=int, help="Queued requests per model before 503 [4096].")
@click.option("--threads", type=int, help="Inference threads per model version [1].")
@click.option(
    "--executor",
    type=click.Choice(["auto", "thread", "inline"]),
    help="Where predict runs [auto: a thread when the runtime releases the GIL "
    "(ONNX), else on the event loop].",
)
@click.option(
    "--workers",
    metavar="N|auto",
    help="HTTP worker processes sharing the port; each loads its own copy of the models "
    "[auto: one per usable core for small models when limits are shared or off, else 1].",
)
@security_options  # security (issue 4)
@click.pass_context
def serve(
    ctx: click.Context,
    /,
    model_files: tuple[Path, ...],
    config_file: Path | None,
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
      modelport serve --repository ./models --host 0.0.0.0 --auth keys
    """
    import uvicorn

    from modelport.api.app import create_app
    from modelport.bootstrap import build, plan_workers
    from modelport.cli._workers import reuse_port_supported, run_workers
    from modelport.demo import ensure_demo_repository
    from modelport.observe.logging import configure
    from modelport.policy.network import check_exposure  # security (issue 4)
    from modelport.settings import publish_for_workers

    settings = settings_from(ctx, model_files, config_file, **flags)
    configure(settings.server.log_level, settings.server.json_logs)
    # security (issue 4): no unauthenticated server on a reachable address, unless asked
    try:
        check_exposure(settings.server.host, settings.auth.enabled, settings.security.insecure)
    except ModelportError as exc:
        raise click.ClickException(exc.message) from exc
    try:
        demo = (
            ensure_demo_repository(settings.data_dir, echo_status) if settings.serves_demo else None
        )
        services = build(settings, demo_repository=demo)
    except ModelportError as exc:
        raise click.ClickException(exc.message) from exc
    plan = plan_workers(settings, services.registry)
    auto = settings.server.workers == "auto"
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"workers": plan.count})}
    )
    server = settings.server
    if plan.count > 1:
        # Each worker process builds its own services from the same resolved settings.
        if demo is not None:
            settings = settings.model_copy(update={"repository": demo, "demo": False})
        publish_for_workers(settings)
        target: Any = "modelport.cli.serve:worker_app"
    else:
        services.tune_gc = settings.server.gc_tuning
        target = create_app(services)
    tls = settings.security  # security (issue 4)
    scheme = "https" if tls.ssl_certfile else "http"
    names = ", ".join(services.registry.names())
    workers = f" with {plan.count} HTTP workers ({plan.reason})" if plan.count > 1 else ""
    if plan.count == 1 and auto:
        logging.getLogger("modelport").info("one HTTP process: %s", plan.reason)

    def announce(port: int) -> None:
        base = f"{scheme}://{_address(server.host, port)}"
        echo_status(f"serving {names} on {base}{workers}  (docs: {base}/docs)")

    sharing = plan.count > 1 and reuse_port_supported()
    # --port 0 in one process: bind first, so the line shows the port the system chose
    # (several workers sharing the port get theirs from the supervisor, once bound)
    chosen = _bind(server.host) if plan.count == 1 and server.port == 0 else None
    if chosen is not None:
        announce(chosen.getsockname()[1])
    elif not sharing:
        announce(server.port)
    logging.getLogger("uvicorn.error").setLevel(server.log_level.upper())
    options = uvicorn_options(settings)
    if plan.count == 1:
        _serve_alone(target, options, [chosen] if chosen is not None else None)
    elif sharing:  # a socket per worker: connections spread evenly
        try:
            status = run_workers(
                plan.count,
                {"app": target, "factory": True, **options},
                server.host,
                server.port,
                on_bound=announce,
                worker_stop_s=server.longest_stop_s,
            )
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {_address(server.host, server.port)}: {exc}"
            ) from exc
        if status:
            raise SystemExit(status)
    else:  # no SO_REUSEPORT here: uvicorn's workers, accepting from one shared socket
        uvicorn.run(target, factory=True, workers=plan.count, **options)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What ``modelport serve`` hands uvicorn (besides the app and sockets)."""
    from modelport.api.protocol import HttpProtocol

    server, tls = settings.server, settings.security
    return {
        "host": server.host,
        "port": server.port,
        "log_level": server.log_level,
        "access_log": server.access_log,
        "loop": "uvloop",
        "http": HttpProtocol,
        "log_config": None,
        # open requests' share of a graceful stop; the registry's drain follows
        "timeout_graceful_shutdown": server.shutdown_timeout_s,
        # security (issue 4): TLS; the client address comes from the gate's trusted-proxy
        # rule, so uvicorn must not rewrite it from X-Forwarded-For on its own
        "ssl_certfile": str(tls.ssl_certfile) if tls.ssl_certfile else None,
        "ssl_keyfile": str(tls.ssl_keyfile) if tls.ssl_keyfile else None,
        "proxy_headers": False,
        "server_header": False,
    }


def _serve_alone(target: Any, options: dict[str, Any], sockets: list[socket.socket] | None) -> None:
    """One process: uvicorn's server until SIGINT or SIGTERM, then a graceful shutdown
    and exit status 0, as the multi-worker supervisor gives (``run_workers``).

    uvicorn catches both signals, shuts down, then raises the signal again for the
    handler that was in place before it. For SIGTERM that was the default, which ended
    the process by the signal (status 143, -15 to a parent) after a clean stop; here it is
    ``stop``. ``stop`` also covers a SIGTERM that arrives before uvicorn's handler is in
    place: the server then shuts down as soon as it has started."""
    import uvicorn

    runner = uvicorn.Server(uvicorn.Config(target, **options))

    def stop(signum: int, frame: Any) -> None:
        runner.should_exit = True

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: shut down, as uvicorn.run
            runner.run(sockets=sockets)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not runner.started:  # as uvicorn.run does when start-up fails
        raise SystemExit(3)


def _address(host: str, port: int) -> str:
    """host:port as a URL spells it: an IPv6 address in brackets ([::1]:8000)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(host: str) -> socket.socket:
    """A listening-ready socket on ``host`` and a port the system picks."""
    from modelport.cli._workers import tcp_socket

    sock = tcp_socket(host)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {_address(host, 0)}: {exc}") from exc
    sock.set_inheritable(True)
    return sock


def worker_app() -> Any:
    """App factory run in each HTTP worker process of ``modelport serve --workers N``."""
    from modelport.api.app import create_app
    from modelport.bootstrap import build
    from modelport.cli import _workers
    from modelport.core.busy import BusyBoard
    from modelport.observe.logging import configure
    from modelport.observe.worker_stats import StatsBoard, snapshot_of
    from modelport.settings import settings_for_worker

    settings = settings_for_worker()
    slot = _workers.slot
    configure(
        settings.server.log_level,
        settings.server.json_logs,
        worker=slot.index if slot is not None else None,
    )
    busy = BusyBoard.open(slot.stats_dir, slot.index) if slot is not None else None
    services = build(settings, board=busy)
    services.load_in_background = False
    services.tune_gc = settings.server.gc_tuning
    if slot is not None and slot.stats_dir is not None:  # share batch statistics
        board = StatsBoard(slot.stats_dir, slot.index)
        registry = services.registry

        async def publish() -> None:
            board.start(lambda: snapshot_of(registry))

        services.stats_board = board
        services.startup.append(publish)
        services.shutdown.append(board.stop)
    return create_app(services)
