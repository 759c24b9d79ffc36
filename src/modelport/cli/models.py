"""``modelport models list``, ``predict`` (in-process, no HTTP) and ``runtimes``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
import orjson

from modelport.cli._common import echo_status, model_options, settings_from
from modelport.errors import ModelportError


@click.group()
def models() -> None:
    """Inspect the models a server would serve."""


@models.command("list")
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_models(
    ctx: click.Context,
    /,
    model_files: tuple[Path, ...],
    config_file: Path | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """List configured models, their versions and runtimes (nothing is loaded)."""
    from modelport.bootstrap import build
    from modelport.demo import ensure_demo_repository

    settings = settings_from(ctx, model_files, config_file, **flags)
    try:
        demo = (
            ensure_demo_repository(settings.data_dir, echo_status) if settings.serves_demo else None
        )
        registry = build(settings, demo_repository=demo).registry
    except ModelportError as exc:
        raise click.ClickException(exc.message) from exc
    rows = [
        {"name": name, "version": v.version, "runtime": v.runtime, "artifact": str(v.artifact)}
        for name in registry.names()
        for v in registry.get(name).versions.values()
    ]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    width = max([len(r["name"]) for r in rows] + [4])
    click.echo(f"{'NAME':<{width}}  VERSION  RUNTIME  ARTIFACT")
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['version']:<7}  {r['runtime']:<7}  {r['artifact']}")


@click.command()
@click.argument("name")
@click.option(
    "--input",
    "input_file",
    type=click.File("rb"),
    required=True,
    help="JSON body as for POST /v1/models/NAME/predict ('-' for stdin).",
)
@click.option("--version", "version", help="Version number or alias [default version].")
@click.option("--repository", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--model-file",
    "model_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A model file to load (repeatable); default: the demo models.",
)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.pass_context
def predict(
    ctx: click.Context,
    /,
    name: str,
    input_file: Any,
    version: str | None,
    model_files: tuple[Path, ...],
    config_file: Path | None,
    **flags: Any,
) -> None:
    """Run one prediction in-process (no server) and print the JSON response.

    \b
    Example:
      echo '{"inputs": [[5.1, 3.5, 1.4, 0.2]]}' | modelport predict iris --input -
    """
    from modelport.api.codecs.native import decode, encode, parse_json
    from modelport.bootstrap import build
    from modelport.demo import ensure_demo_repository

    settings = settings_from(ctx, model_files, config_file, **flags)

    async def run() -> dict[str, Any]:
        demo = (
            ensure_demo_repository(settings.data_dir, echo_status) if settings.serves_demo else None
        )
        services = build(settings, demo_repository=demo)
        registry = services.registry
        try:
            registry.get(name)  # unknown name: fail before loading anything
            await registry.load_all()
            served = services.service.target(name, version)
            assert served.signature is not None
            inputs = decode(parse_json(input_file.read()), served.signature)
            result = await services.service.predict(name, version, inputs, served=served)
            return {
                "model": result.model,
                "version": result.version,
                "outputs": encode(result.signature, result.outputs),
            }
        finally:
            await registry.close()

    try:
        body = asyncio.run(run())
    except ModelportError as exc:
        click.secho(f"error ({exc.code}): {exc.message}", fg="red", err=True)
        sys.exit(1)
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


@click.command()
def runtimes() -> None:
    """List model runtimes (built-in and plug-ins) and the files they serve."""
    from modelport.core.discovery import RuntimeTable

    for info in RuntimeTable.discover().infos:
        click.echo(f"{info.name:<10} {', '.join(info.suffixes):<32} {info.origin}")
