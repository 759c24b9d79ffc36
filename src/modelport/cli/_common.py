"""Options shared by commands that load models, and flags → settings translation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from modelport.errors import ModelportError
from modelport.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

# flag name → path in the settings tree
FLAG_PATHS: dict[str, tuple[str, ...]] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "workers": ("server", "workers"),
    "log_level": ("server", "log_level"),
    "json_logs": ("server", "json_logs"),
    "body_limit": ("server", "body_limit_bytes"),
    "request_timeout": ("server", "request_timeout_s"),
    "shutdown_timeout": ("server", "shutdown_timeout_s"),
    "data_dir": ("data_dir",),
    "repository": ("repository",),
    "max_batch_size": ("batching", "max_batch_size"),
    "max_delay_ms": ("batching", "max_delay_ms"),
    "max_queue": ("batching", "max_queue"),
    "threads": ("executors", "threads"),
    "executor": ("executors", "mode"),
    # security (issue 4)
    "auth": ("auth", "modes"),
    "insecure": ("security", "insecure"),
    "state_url": ("state", "url"),
    "redis": ("state", "redis_url"),
    "allow_from": ("security", "allow_from"),
    "trusted_proxies": ("security", "trusted_proxies"),
    "cors_origins": ("security", "cors_origins"),
    "ssl_certfile": ("security", "ssl_certfile"),
    "ssl_keyfile": ("security", "ssl_keyfile"),
    "jwt_public_key": ("auth", "jwt_public_key_file"),
    "jwt_jwks": ("auth", "jwt_jwks_file"),
    "jwt_issuer": ("auth", "jwt_issuer"),
    "jwt_audience": ("auth", "jwt_audience"),
    "jwt_scopes_claim": ("auth", "jwt_scopes_claim"),
    "rate_limit": ("limits", "default_rate"),
    "quota": ("limits", "default_quota"),
    "anonymous_rate": ("limits", "anonymous_rate"),
}


def model_options(func: F) -> F:
    """MODELS..., --repository, --data-dir, --config: where the models come from."""
    for option in reversed(
        [
            click.argument(
                "model_files",
                nargs=-1,
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
            ),
            click.option(
                "--repository",
                type=click.Path(exists=True, file_okay=False, path_type=Path),
                help="Model repository folder: NAME/VERSION/artifact [+ NAME/model.yaml].",
            ),
            click.option(
                "--data-dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="Where demo models and state live [env MODELPORT_DATA_DIR; "
                "default ./.modelport].",
            ),
            click.option(
                "--config",
                "config_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="YAML settings file [env MODELPORT_CONFIG].",
            ),
        ]
    ):
        func = option(func)
    return func


def settings_from(
    ctx: click.Context, model_files: tuple[Path, ...], config_file: Path | None, **flags: Any
) -> Settings:
    tree: dict[str, Any] = {}
    for name, value in flags.items():
        if name not in FLAG_PATHS or ctx.get_parameter_source(name) in (
            ParameterSource.DEFAULT,
            None,
        ):
            continue
        node = tree
        path = FLAG_PATHS[name]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if model_files:
        tree["models"] = list(model_files)
    try:
        return load_settings(tree, config_file=config_file)
    except ModelportError as exc:
        raise click.UsageError(exc.message) from exc


def echo_status(message: str) -> None:
    click.secho(f"• {message}", fg="cyan", err=True)
