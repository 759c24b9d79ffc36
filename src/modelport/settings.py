"""One typed, frozen settings object: flags > ``MODELPORT_*`` env > config file > defaults.

This is the only module that reads the environment or config files. Components receive
only their slice (``Batcher(policy=settings.batching...)``), never the whole object.

Environment variables: ``MODELPORT_<FIELD>`` for top-level fields (``MODELPORT_DATA_DIR``)
and ``MODELPORT_<SECTION>__<FIELD>`` for nested ones (``MODELPORT_SERVER__PORT``); a few
common ones have short aliases (``MODELPORT_PORT``, ``MODELPORT_HOST``, ``MODELPORT_LOG_LEVEL``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

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
    # no inf or nan: HTTP workers read the settings back from JSON, which has neither
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# The timeouts of stopping must agree, so they are derived from two settings (defaults
# here; core's constructors default to them too). A graceful stop of a serving process:
# open requests get ``shutdown_timeout_s`` to finish, then each model version's running
# batches get ``drain_timeout_s``, then an isolated model's executor waits as long for a
# batch still running and as long again for its worker processes to exit before it kills
# them. ``longest_stop_s`` adds that up; a worker process defers a SIGTERM sent to the
# whole process group that long, and the multi-worker supervisor waits a little longer
# for its HTTP workers before it kills them.
SHUTDOWN_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 5.0
LOAD_TIMEOUT_S = 300.0


def longest_stop_s(shutdown_timeout_s: float, drain_timeout_s: float) -> float:
    """The longest a graceful stop of one serving process takes, signal to exit (see above)."""
    return shutdown_timeout_s + 3 * drain_timeout_s


# with the default timeouts (a process executor's SIGTERM grace; ``modelport bench``)
LONGEST_STOP_S = longest_stop_s(SHUTDOWN_TIMEOUT_S, DRAIN_TIMEOUT_S)


class ServerSettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int | Literal["auto"] = Field(
        "auto",
        description="HTTP worker processes sharing the port; auto: one per usable core when "
        "that is safe (small models, limits shared or off), else 1 (docs/architecture.md)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False
    json_logs: bool = False
    body_limit_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(30.0, gt=0, description="default deadline per request")
    gc_tuning: bool = Field(
        True,
        description="serving processes: fewer cyclic-GC passes and start-up objects frozen "
        "out of them once models load (cuts p99 ~8x under load; docs/benchmarks.md)",
    )
    shutdown_timeout_s: float = Field(
        SHUTDOWN_TIMEOUT_S,
        gt=0,
        le=3600,
        description="graceful shutdown: after SIGINT/SIGTERM, how long open requests may "
        "finish before their connections are closed",
    )
    drain_timeout_s: float = Field(
        DRAIN_TIMEOUT_S,
        gt=0,
        le=3600,
        description="then, per model version, how long running batches may finish before its "
        "executor stops (isolated models' workers get as long again to exit before they are "
        "killed); at most shutdown_timeout_s, which is its default where shorter than 5 s",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise ValueError("workers must be a number from 1 to 64, or 'auto'") from None
        if not 1 <= count <= 64:
            raise ValueError("workers must be a number from 1 to 64, or 'auto'")
        return count

    @model_validator(mode="before")
    @classmethod
    def _default_drain(cls, data: Any) -> Any:
        """A shutdown window shorter than the drain's default shortens the drain too: only a
        drain given explicitly can be too long for it."""
        if not isinstance(data, Mapping) or data.get("drain_timeout_s") is not None:
            return data
        try:
            shutdown = float(data["shutdown_timeout_s"])
        except (KeyError, TypeError, ValueError):  # absent, or the field's check words it
            return data
        if 0 < shutdown < DRAIN_TIMEOUT_S:
            return {**data, "drain_timeout_s": shutdown}
        return data

    @model_validator(mode="after")
    def _check_drain(self) -> ServerSettings:
        if self.drain_timeout_s > self.shutdown_timeout_s:
            raise ValueError(
                f"drain_timeout_s ({self.drain_timeout_s:g} s) is longer than "
                f"shutdown_timeout_s ({self.shutdown_timeout_s:g} s): running batches would "
                "get longer than the requests waiting for them; lower the first or raise "
                "the second"
            )
        return self

    @property
    def worker_count(self) -> int:
        """The number of HTTP processes once resolved (``auto`` before that counts as 1)."""
        return self.workers if isinstance(self.workers, int) else 1

    @property
    def longest_stop_s(self) -> float:
        """The longest a graceful stop of one serving process takes (``longest_stop_s``)."""
        return longest_stop_s(self.shutdown_timeout_s, self.drain_timeout_s)


class BatchingSettings(_Frozen):
    """Defaults for every model; model.yaml can override them per model."""

    enabled: bool = True
    max_batch_size: int = Field(128, ge=1)
    max_delay_ms: float = Field(0.0, ge=0, description="extra wait to fill a batch; 0 = none")
    preferred_batch_size: int | None = Field(None, ge=1)
    max_queue: int = Field(4096, ge=1)
    max_request_rows: int = Field(10_000, ge=1, description="rows allowed in one request")


class ExecutorSettings(_Frozen):
    mode: Literal["auto", "thread", "inline"] = Field(
        "auto",
        description="auto: a thread pool for models that release the GIL when this process "
        "has more than one core to itself, else inline on the event loop",
    )
    threads: int = Field(1, ge=1, le=64, description="inference threads per model version")
    process_workers: int = Field(
        1, ge=1, le=64, description="worker processes for isolation: process"
    )
    load_timeout_s: float = Field(
        LOAD_TIMEOUT_S,
        gt=0,
        description="isolation: process: a worker that has not loaded its model by then is "
        "killed and the version fails to load (a load in the server's own process cannot "
        "be stopped, so it has no timeout)",
    )
    runtime_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="threads one model's runtime may use per batch (onnxruntime intra-op); "
        "default: the usable cores divided by the HTTP workers",
    )
    lend_idle_cores: bool = Field(
        True,
        description="with several HTTP workers, a one-row batch runs on every core while "
        "the other workers are idle (ONNX models up to 64 MiB: a second session each)",
    )


# ── security (issue 4): auth, limits, state, network ─────────────────────────────────────
AuthMode = Literal["none", "keys", "jwt"]
RATE_PATTERN = r"^\s*\d+(\.\d+)?\s*/\s*(s|sec|second|min|minute|h|hour)\s*$"
QUOTA_PATTERN = r"^\s*\d+\s*/\s*(day|month)\s*$"


def _split_csv(value: Any) -> Any:
    """Env vars and flags give ``"a,b"``; the settings hold ``("a", "b")``."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _check_networks(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return values


class AuthSettings(_Frozen):
    """Who may call: ``modes`` is ``("none",)`` or any of ``keys`` and ``jwt``."""

    modes: tuple[AuthMode, ...] = ("none",)
    public_paths: tuple[str, ...] = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
    jwt_secret: SecretStr | None = Field(None, description="HS256 shared secret")
    jwt_public_key_file: Path | None = Field(None, description="PEM public key (RS256/ES256)")
    jwt_jwks_file: Path | None = Field(None, description="JWKS file (RS256/ES256)")
    jwt_algorithms: tuple[str, ...] = Field(
        (), description="allowed algorithms; default: HS256 with a secret, RS256+ES256 with keys"
    )
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_scopes_claim: str = "scope"
    jwt_leeway_s: float = Field(30.0, ge=0, le=600)

    _csv = field_validator("modes", "public_paths", "jwt_algorithms", mode="before")(_split_csv)

    @field_serializer("jwt_secret", when_used="json")
    def _dump_secret(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        """Masked in JSON unless ``context={"reveal_secrets": True}`` (handing settings to
        worker processes); a masked dump must never come back as the real secret."""
        if value is None:
            return None
        if isinstance(info.context, dict) and info.context.get("reveal_secrets"):
            return value.get_secret_value()
        return "**********"

    @model_validator(mode="after")
    def _check_modes(self) -> AuthSettings:
        if not self.modes:
            raise ValueError("auth modes must not be empty; use 'none' to disable auth")
        if "none" in self.modes and len(self.modes) > 1:
            raise ValueError("auth mode 'none' cannot be combined with 'keys' or 'jwt'")
        if "jwt" in self.modes and not (
            self.jwt_secret or self.jwt_public_key_file or self.jwt_jwks_file
        ):
            raise ValueError(
                "auth mode 'jwt' needs jwt_secret, jwt_public_key_file or jwt_jwks_file"
            )
        return self

    @property
    def enabled(self) -> bool:
        return "none" not in self.modes


class LimitsSettings(_Frozen):
    """Defaults for keys created without their own limits; ``None`` means unlimited."""

    default_rate: str | None = Field(None, pattern=RATE_PATTERN, description="e.g. 100/s, 600/min")
    default_burst: int | None = Field(None, ge=1)
    anonymous_rate: str | None = Field(
        None, pattern=RATE_PATTERN, description="per client address when no credential is needed"
    )
    anonymous_burst: int | None = Field(None, ge=1)
    default_quota: str | None = Field(None, pattern=QUOTA_PATTERN, description="e.g. 10000/day")


class StateSettings(_Frozen):
    """Where keys and usage live, and where shared counters live."""

    url: str | None = Field(
        None, description="postgresql://... or sqlite:///path; default: SQLite in the data dir"
    )
    redis_url: str | None = Field(
        None, description="shared rate-limit counters; default in-process"
    )
    postgres_schema: str = Field("modelport", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    redis_prefix: str = "modelport"
    usage_flush_interval_s: float = Field(1.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(
            ("postgresql://", "postgres://", "sqlite:///", "memory:")
        ):
            raise ValueError("state url must start with postgresql://, sqlite:/// or memory:")
        return value


class SecuritySettings(_Frozen):
    """Network allow-lists, trusted proxies, TLS, CORS, response headers."""

    insecure: bool = Field(False, description="allow auth 'none' on a non-loopback address")
    allow_from: tuple[str, ...] = Field((), description="server-wide allowed IPs/CIDRs; empty=all")
    trusted_proxies: tuple[str, ...] = Field((), description="peers whose X-Forwarded-For counts")
    cors_origins: tuple[str, ...] = Field((), description="allowed CORS origins; empty=CORS off")
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    security_headers: bool = True
    hsts_max_age_s: int = Field(31_536_000, ge=0, description="sent only over TLS")

    _csv = field_validator("allow_from", "trusted_proxies", "cors_origins", mode="before")(
        _split_csv
    )

    @field_validator("allow_from", "trusted_proxies")
    @classmethod
    def _check_nets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_networks(value)

    @model_validator(mode="after")
    def _check_tls(self) -> SecuritySettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        return self


class Settings(_Frozen):
    data_dir: Path = Path("./.modelport")
    models: tuple[Path, ...] = ()
    repository: Path | None = None
    demo: bool = True
    server: ServerSettings = ServerSettings()
    batching: BatchingSettings = BatchingSettings()
    executors: ExecutorSettings = ExecutorSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitsSettings = LimitsSettings()
    state: StateSettings = StateSettings()
    security: SecuritySettings = SecuritySettings()

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
        if not name.startswith(_ENV_PREFIX) or name in ("MODELPORT_CONFIG", _WORKER_ENV):
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


_WORKER_ENV = "MODELPORT_WORKER_SETTINGS"


def publish_for_workers(settings: Settings) -> None:
    """Hand the resolved settings to HTTP worker processes (they inherit the environment)."""
    os.environ[_WORKER_ENV] = settings.model_dump_json(context={"reveal_secrets": True})


def settings_for_worker() -> Settings:
    """The settings the parent ``modelport serve`` resolved (see ``publish_for_workers``)."""
    raw = os.environ.get(_WORKER_ENV)
    if raw is None:
        raise ConfigError(f"{_WORKER_ENV} is not set: start workers with `modelport serve`")
    return Settings.model_validate_json(raw)
