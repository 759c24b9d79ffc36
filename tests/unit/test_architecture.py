"""The layering rules, checked by machine (STYLE.md habits 2, 4, 7)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import modelport

SRC = Path(modelport.__file__).parent


def test_core_imports_no_web_framework() -> None:
    code = (
        "import sys, modelport.core.service, modelport.core.registry, modelport.core.batching\n"
        "bad = [m for m in ('starlette', 'uvicorn', 'click', 'prometheus_client', 'fastapi')"
        " if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_only_settings_reads_the_environment() -> None:
    pattern = re.compile(r"os\.environ|getenv\(")
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "settings.py" and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_public_surface_is_declared_and_sorted() -> None:
    assert modelport.__all__ == sorted(modelport.__all__)
    assert set(modelport._EXPORTS) | {"__version__"} == set(modelport.__all__)
    for name in modelport.__all__:
        assert getattr(modelport, name) is not None
