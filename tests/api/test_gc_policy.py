"""``modelport serve`` tunes the collector of its own process (never a test's): thresholds
up at start-up, start-up objects frozen once the models have loaded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import gc, json, sys, time
    from starlette.testclient import TestClient
    from modelport.api.app import create_app
    from modelport.testing import FakeModel, build_test_services

    services = build_test_services({"m": FakeModel()}, data_dir=sys.argv[1])
    services.tune_gc = sys.argv[2] == "on"
    default, before = gc.get_threshold(), gc.get_freeze_count()
    with TestClient(create_app(services)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        while services.tune_gc and gc.get_freeze_count() == before and time.monotonic() < deadline:
            time.sleep(0.05)  # freezing follows the load in the same task
        print(json.dumps({"default": default, "threshold": gc.get_threshold(),
                          "frozen": gc.get_freeze_count() - before}))
    """
)


def _run(tmp_path: Path, mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / mode), mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_serving_process_raises_thresholds_and_freezes_after_load(tmp_path: Path) -> None:
    from modelport.api.gc_policy import THRESHOLDS

    tuned = _run(tmp_path, "on")
    assert tuple(tuned["threshold"]) == THRESHOLDS  # type: ignore[arg-type]
    assert isinstance(tuned["frozen"], int) and tuned["frozen"] > 10_000


def test_an_app_built_elsewhere_leaves_the_collector_alone(tmp_path: Path) -> None:
    plain = _run(tmp_path, "off")
    assert plain["threshold"] == plain["default"]
    assert plain["frozen"] == 0
