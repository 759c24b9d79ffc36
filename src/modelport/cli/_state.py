"""Options shared by ``keys`` and ``usage``: which state store to open."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from modelport.errors import ModelportError
from modelport.settings import Settings, load_settings
from modelport.state.backends import open_stores
from modelport.state.interfaces import Stores

F = TypeVar("F", bound=Callable[..., Any])


def state_options(func: F) -> F:
    """--data-dir, --state, --config: the same store a running ``modelport serve`` uses."""
    for option in reversed(
        [
            click.option(
                "--data-dir",
                type=click.Path(file_okay=False, path_type=Path),
                help="The server's data dir (SQLite state.db inside) [env MODELPORT_DATA_DIR; "
                "default ./.modelport].",
            ),
            click.option(
                "--state",
                "state_url",
                metavar="URL",
                help="postgresql://... or sqlite:///path instead of the data dir "
                "[env MODELPORT_STATE__URL].",
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


def settings_for(
    data_dir: Path | None, state_url: str | None, config_file: Path | None
) -> Settings:
    flags: dict[str, Any] = {}
    if data_dir is not None:
        flags["data_dir"] = data_dir
    if state_url is not None:
        flags["state"] = {"url": state_url}
    try:
        return load_settings(flags, config_file=config_file)
    except ModelportError as exc:
        raise click.UsageError(exc.message) from exc


@contextmanager
def opened(settings: Settings) -> Iterator[Stores]:
    try:
        stores = open_stores(settings.state, settings.data_dir)
    except ModelportError as exc:
        raise click.ClickException(exc.message) from exc
    try:
        yield stores
    except ModelportError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        stores.close()


def local_actor() -> str:
    """Who runs the command, for the audit log."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
