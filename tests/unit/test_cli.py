"""The CLI in-process (click's CliRunner): help, version, models list, predict, bad flags."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from modelport._version import __version__
from modelport.cli import main


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.output


def test_version_and_help() -> None:
    code, out = run("--version")
    assert code == 0 and __version__ in out
    code, out = run("--help")
    assert code == 0 and "serve" in out and "bench" in out
    code, out = run("serve", "--help")
    assert code == 0 and "--data-dir" in out and "--repository" in out and "--port" in out


def test_models_list_and_runtimes(demo_data_dir: Path) -> None:
    code, out = run("models", "list", "--data-dir", str(demo_data_dir), "--json")
    assert code == 0
    rows = json.loads(out[out.index("[") :])
    assert {r["name"] for r in rows} == {"iris", "diabetes", "digits"}
    code, out = run("runtimes")
    assert code == 0 and "sklearn" in out and ".onnx" in out


def test_predict_in_process(demo_data_dir: Path) -> None:
    code, out = run(
        "predict",
        "iris",
        "--input",
        "-",
        "--data-dir",
        str(demo_data_dir),
        stdin='{"inputs": [[5.1, 3.5, 1.4, 0.2]]}',
    )
    assert code == 0, out
    body = json.loads(out[out.index("{") :])
    assert body["outputs"][0]["label"] == "setosa"


def test_predict_reports_bad_input_and_unknown_model(demo_data_dir: Path) -> None:
    code, out = run(
        "predict",
        "iris",
        "--input",
        "-",
        "--data-dir",
        str(demo_data_dir),
        stdin='{"inputs": [[1, 2]]}',
    )
    assert code == 1 and "invalid_input" in out and "expected shape [N, 4]" in out
    code, out = run("predict", "rose", "--input", "-", "--data-dir", str(demo_data_dir), stdin="{}")
    assert code == 1 and "model_not_found" in out


def test_bad_settings_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("server: {port: many}\n")
    result = CliRunner().invoke(main, ["models", "list", "--config", str(bad)])
    assert result.exit_code == 2 and "server.port" in result.output


def test_bench_validates_its_flags() -> None:
    result = CliRunner().invoke(main, ["bench", "iris", "-c", "1,x"])
    assert result.exit_code == 2 and "--concurrency" in result.output
    result = CliRunner().invoke(main, ["bench", "iris", "--header", "novalue", "--url", "http://x"])
    assert result.exit_code == 2 and "--header" in result.output


def test_bench_refuses_a_run_with_nothing_to_measure_or_a_url_it_cannot_load() -> None:
    for flags in (["-d", "0"], ["-d", "-1"], ["--warmup", "-1"]):
        result = CliRunner().invoke(main, ["bench", "iris", "--url", "http://x", *flags])
        assert result.exit_code == 2, (flags, result.output)
        assert flags[0] in result.output
    result = CliRunner().invoke(main, ["bench", "iris", "--url", "https://127.0.0.1:8443"])
    assert result.exit_code == 2 and "use an http:// URL" in result.output


def test_bench_says_when_the_server_cannot_be_reached() -> None:
    from modelport._process import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(main, ["bench", "iris", "--url", url, "-d", "0.1"])
    assert result.exit_code == 1
    assert f"Error: cannot reach the server at {url}" in result.output


def test_serve_gives_uvicorn_the_graceful_shutdown_setting() -> None:
    from modelport.cli.serve import uvicorn_options
    from modelport.settings import load_settings

    settings = load_settings({"server": {"shutdown_timeout_s": 3}}, env={})
    assert uvicorn_options(settings)["timeout_graceful_shutdown"] == 3.0
