"""One typed, frozen settings object, built once: flags > ``MODELPORT_*`` env > config file > defaults.

This is the only module that reads the environment or config files. Components receive
only their slice (``Batcher(policy=settings.batching...)``), never the whole object.

Environment variables: ``MODELPORT_<FIELD>`` for top-level fields (``MODELPORT_DATA_DIR``)
and ``MODELPORT_<SECTION>__<FIELD>`` for nested ones (``MODELPORT_SERVER__PORT``); a few
common ones have short aliases (``MODELPORT_PORT``, ``MODELPORT_HOST``, ``MODELPORT_LOG_LEVEL``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelport.errors import ConfigError

_ENV_PREFIX = "MODELPORT_"
_ENV_ALIASES = {
    "MODELPORT_HOST": ("server", "host"),
    "MODELPORT_PORT": ("server", "port"),
    "MODELPORT_LOG_LEVEL": ("server", "log_level"),
    "MODELPORT_WORKERS": ("server", "workers"),
    "MODELPORT_BODY_LIMIT": ("server", "body_limit_bytes"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="HTTP worker processes sharing the port")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    body_limit_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(30.0, gt=0, description="default deadline per request")


class BatchingSettings(_Frozen):
    """Defaults for every model; model.yaml can override them per model."""

    enabled: bool = True
    max_batch_size: int = Field(128, ge=1)
    max_delay_ms: float = Field(0.0, ge=0, description="extra wait to fill a batch; 0 = none")
    preferred_batch_size: int | None = Field(None, ge=1)
    max_queue: int = Field(4096, ge=1)
    max_request_rows: int = Field(10_000, ge=1, description="rows allowed in one request")


class ExecutorSettings(_Frozen):
    threads: int = Field(1, ge=1, le=64, description="inference threads per model version")
    process_workers: int = Field(1, ge=1, le=64, description="worker processes for isolation: process")


class Settings(_Frozen):
    data_dir: Path = Path("./.modelport")
    models: tuple[Path, ...] = ()
    repository: Path | None = None
    demo: bool = True
    server: ServerSettings = ServerSettings()
    batching: BatchingSettings = BatchingSettings()
    executors: ExecutorSettings = ExecutorSettings()

    @property
    def serves_demo(self) -> bool:
        return self.demo and not self.models and self.repository is None


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(_ENV_PREFIX) or name == "MODELPORT_CONFIG":
            continue
        path = _ENV_ALIASES.get(name) or tuple(
            part.lower() for part in name[len(_ENV_PREFIX) :].split("__")
        )
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    if isinstance(tree.get("models"), str):
        tree["models"] = [p for p in tree["models"].split(os.pathsep) if p]
    return tree


def _from_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return loaded


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings. ``flags`` is a nested mapping of values the user set explicitly."""
    env = os.environ if env is None else env
    if config_file is None and env.get("MODELPORT_CONFIG"):
        config_file = Path(env["MODELPORT_CONFIG"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged = _deep_merge(merged, _from_file(config_file))
    merged = _deep_merge(merged, _from_env(env))
    merged = _deep_merge(merged, dict(flags or {}))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
