from __future__ import annotations

from pathlib import Path

import pytest

from modelport.errors import ConfigError
from modelport.settings import load_settings


def test_defaults() -> None:
    s = load_settings(env={})
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8000)
    assert s.server.body_limit_bytes == 16 * 1024 * 1024
    assert s.serves_demo


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "modelport.yaml"
    config.write_text("server: {port: 9001, host: 0.0.0.0}\nbatching: {max_batch_size: 7}\n")
    env = {"MODELPORT_PORT": "9002", "MODELPORT_BATCHING__MAX_DELAY_MS": "3"}
    s = load_settings({"server": {"port": 9003}}, config_file=config, env=env)
    assert s.server.port == 9003  # flag
    assert s.server.host == "0.0.0.0"  # file
    assert s.batching.max_batch_size == 7  # file
    assert s.batching.max_delay_ms == 3.0  # env
    assert load_settings(config_file=config, env=env).server.port == 9002  # env over file


def test_config_file_from_env_and_data_dir(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data_dir: /srv/mp\n")
    s = load_settings(env={"MODELPORT_CONFIG": str(config)})
    assert s.data_dir == Path("/srv/mp")
    assert load_settings(env={"MODELPORT_DATA_DIR": "/x"}).data_dir == Path("/x")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODELPORT_PORT": "eighty"}, "server.port"),
        ({"MODELPORT_PORT": "70000"}, "server.port"),
        ({"MODELPORT_SERVER__COLOUR": "red"}, "server.colour"),
        ({"MODELPORT_BATCHING__MAX_BATCH_SIZE": "0"}, "batching.max_batch_size"),
    ],
)
def test_invalid_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config_file=bad, env={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(config_file=tmp_path / "missing.yaml", env={})


def test_settings_are_frozen() -> None:
    s = load_settings(env={})
    with pytest.raises(Exception, match="frozen"):
        s.server.port = 1  # type: ignore[misc]


def test_shutdown_and_load_timeouts_come_from_settings() -> None:
    s = load_settings(env={})
    assert (s.server.shutdown_timeout_s, s.server.drain_timeout_s) == (10.0, 5.0)
    assert s.executors.load_timeout_s == 300.0
    # requests, then batches, then an isolated model's stuck batch and its workers' exit
    assert s.server.longest_stop_s == 25.0
    env = {
        "MODELPORT_SERVER__SHUTDOWN_TIMEOUT_S": "20",
        "MODELPORT_SERVER__DRAIN_TIMEOUT_S": "2",
        "MODELPORT_EXECUTORS__LOAD_TIMEOUT_S": "60",
    }
    s = load_settings(env=env)
    assert (s.server.shutdown_timeout_s, s.server.drain_timeout_s) == (20.0, 2.0)
    assert s.executors.load_timeout_s == 60.0
    assert s.server.longest_stop_s == 26.0


def test_a_drain_longer_than_the_graceful_shutdown_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"drain_timeout_s \(12 s\) is longer than shutdown"):
        load_settings({"server": {"drain_timeout_s": 12}}, env={})
    with pytest.raises(ConfigError, match=r"drain_timeout_s \(4 s\) is longer than shutdown"):
        load_settings({"server": {"shutdown_timeout_s": 3, "drain_timeout_s": 4}}, env={})
    # a short window with the drain left to its default shortens the drain
    short = load_settings(env={"MODELPORT_SERVER__SHUTDOWN_TIMEOUT_S": "3"}).server
    assert (short.shutdown_timeout_s, short.drain_timeout_s) == (3.0, 3.0)
    with pytest.raises(ConfigError, match=r"server\.shutdown_timeout_s"):
        load_settings({"server": {"shutdown_timeout_s": 0}}, env={})


@pytest.mark.parametrize(
    ("variable", "setting"),
    [
        ("MODELPORT_EXECUTORS__LOAD_TIMEOUT_S", "executors.load_timeout_s"),
        ("MODELPORT_SERVER__REQUEST_TIMEOUT_S", "server.request_timeout_s"),
        ("MODELPORT_BATCHING__MAX_DELAY_MS", "batching.max_delay_ms"),
    ],
)
def test_an_infinite_number_is_refused_at_start_up(variable: str, setting: str) -> None:
    """HTTP workers read the settings back from JSON (``publish_for_workers``), which has no
    infinity: one let through here became null there, and every worker failed to start
    (``--workers 2`` exited 1 after a crash loop of tracebacks)."""
    with pytest.raises(ConfigError, match=setting):
        load_settings(env={variable: "inf"})
