"""``modelport usage export``: usage per key, model, version and day, as CSV or JSON."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import click
import orjson

from modelport.cli._state import opened, settings_for, state_options
from modelport.policy.metering import export_csv, export_dicts


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD") from None


@click.group()
def usage() -> None:
    """Usage metering: requests, rows, errors and inference time per key, model and day."""


@usage.command("export")
@click.option("--since", callback=_date, metavar="DATE", help="First day, YYYY-MM-DD (UTC).")
@click.option("--key", "key_id", help="Only this key id.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option("--output", "-o", type=click.File("w"), default="-", help="File to write [stdout].")
@state_options
def export(
    since: str | None,
    key_id: str | None,
    fmt: str,
    output: io.TextIOBase,
    data_dir: Path | None,
    state_url: str | None,
    config_file: Path | None,
) -> None:
    """Export usage. A running server writes its counts every second and at shutdown.

    \b
    Examples:
      modelport usage export --since 2024-01-01 --format csv > usage.csv
      modelport usage export --format json --key KEY_ID
    """
    settings = settings_for(data_dir, state_url, config_file)
    with opened(settings) as stores:
        rows = stores.usage.query(since=since, key_id=key_id)
    if fmt == "json":
        output.write(orjson.dumps(export_dicts(rows), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        output.write(export_csv(rows))
