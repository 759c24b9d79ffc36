"""The ``modelport`` command line."""

from __future__ import annotations

import click

from modelport._version import __version__
from modelport.cli.bench import bench
from modelport.cli.keys import keys
from modelport.cli.models import models, predict, runtimes
from modelport.cli.serve import serve
from modelport.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="modelport")
def main() -> None:
    """modelport: serve trained models as a validated, documented, fast HTTP API.

    \b
    Quick start:
      modelport serve                    # demo models (iris, diabetes, digits) on :8000
      modelport serve ./iris.onnx        # your model file, served as "iris" version 1
      modelport serve --repository ./models
    """


main.add_command(serve)
main.add_command(models)
main.add_command(predict)
main.add_command(runtimes)
main.add_command(bench)
main.add_command(keys)
main.add_command(usage)

__all__ = ["main"]
