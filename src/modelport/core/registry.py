"""Names → versions → loaded models, aliases, and each version's lifecycle.

Lifecycle: ``loading → ready → draining → unloaded`` (or ``failed``). A version is only
served once ``ready``; the registry owns that state. Loading does the blocking I/O in a
thread so the server answers ``/healthz`` (and a 503 ``/readyz``) while models load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from modelport.clock import Clock
from modelport.core.batching import Batcher, BatchPolicy
from modelport.core.busy import BusyBoard
from modelport.core.discovery import RuntimeTable
from modelport.core.executors import Executor, LendingExecutor, choose_executor
from modelport.core.repository import ModelSource, latest
from modelport.core.runtime import Isolation, LoadedModel, ModelConfig
from modelport.core.signature import Signature, TensorSpec
from modelport.core.signature_spec import apply_feature_names, signature_from_mapping
from modelport.errors import ConfigError, ModelNotFound, ModelNotReady, VersionNotFound
from modelport.settings import DRAIN_TIMEOUT_S, BatchingSettings, ExecutorSettings

log = logging.getLogger("modelport.registry")

# a model file up to this size gets a lone-row session by default (a second copy of its
# weights in each worker); larger ones only where model.yaml sets ``lone_row_threads``
LONE_MAX_BYTES = 64 * 1024 * 1024
# What clients are told of a version that failed to load. Its error can quote file paths
# and the model's internals, so it goes to the log and the admin API (scope admin) only.
LOAD_FAILED_REASON = "the load failed; the server log says why"


def _size(artifact: Path) -> int:
    """A model file's size; a directory counts as too large to copy (no lone session)."""
    return artifact.stat().st_size if artifact.is_file() else LONE_MAX_BYTES + 1


class ExecutorFactory(Protocol):
    """Starts an isolated executor for one version (``core/process_executor.py``); with
    ``board``, its batches mark this HTTP worker busy for the others."""

    def __call__(
        self, runtime: str, artifact: Path, config: ModelConfig, board: BusyBoard | None = None
    ) -> Awaitable[tuple[Signature, Executor]]: ...


class VersionState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    DRAINING = "draining"
    UNLOADED = "unloaded"


@dataclass
class ServedVersion:
    model: str
    version: str
    runtime: str
    artifact: Path
    state: VersionState = VersionState.LOADING
    signature: Signature | None = None
    batcher: Batcher | None = None
    executor: Executor | None = None
    error: str | None = None
    preloaded: LoadedModel | None = None  # a model object handed in directly (tests, embedding)

    @property
    def reason(self) -> str | None:
        """Why this version is not served, as clients may read it (never the load error)."""
        return LOAD_FAILED_REASON if self.state is VersionState.FAILED else None

    def unready_message(self) -> str:
        """A client's message for a request this version cannot serve (not ready)."""
        reason = f": {self.reason}" if self.reason else ""
        return f"model '{self.model}' version {self.version} is {self.state.value}{reason}"


@dataclass
class ServedModel:
    name: str
    config: ModelConfig
    versions: dict[str, ServedVersion] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    default_version: str | None = None

    def ready_versions(self) -> list[str]:
        return [v for v, sv in self.versions.items() if sv.state is VersionState.READY]

    def resolve_name(self, ref: str | None) -> str:
        """A version number, an alias, ``latest``, or None (the default) → a version key."""
        if ref is None:
            ref = self.default_version or "latest"
        if ref in self.versions:
            return ref
        if ref in self.aliases:
            return self.aliases[ref]
        if ref == "latest":
            if len(self.versions) == 1:  # the common case, asked on every request
                return next(iter(self.versions))
            candidates = self.ready_versions() or list(self.versions)
            if candidates:
                return latest(candidates)
        raise VersionNotFound(
            f"model '{self.name}' has no version or alias '{ref}'; versions: "
            f"{sorted(self.versions)}, aliases: {sorted(self.aliases)}"
        )


def effective_signature(
    inferred: Signature, config: ModelConfig, features: tuple[str, ...] | None, where: str
) -> Signature:
    signature = inferred
    if config.signature:
        signature = signature_from_mapping(config.signature, where, base=inferred)
    signature = apply_feature_names(signature, features)
    if config.labels:
        probs = [o for o in signature.outputs if o.name == "probabilities"]
        if probs and probs[0].shape[-1] not in (-1, len(config.labels)):
            raise ConfigError(
                f"{where}: 'labels' lists {len(config.labels)} classes but the model "
                f"outputs {probs[0].shape[-1]}"
            )
        outputs = tuple(
            TensorSpec(o.name, o.dtype, o.shape, names=config.labels)
            if o.name == "probabilities"
            else o
            for o in signature.outputs
        )
        signature = replace(signature, outputs=outputs, labels=config.labels)
    return signature


class Registry:
    def __init__(
        self,
        runtimes: RuntimeTable,
        batching: BatchingSettings,
        executors: ExecutorSettings,
        clock: Clock,
        process_factory: ExecutorFactory | None = None,
        runtime_threads: int | None = None,
        cpu_share: int | None = None,
        board: BusyBoard | None = None,
        lone_threads: int | None = None,
        drain_grace_s: float = DRAIN_TIMEOUT_S,
    ) -> None:
        """``runtime_threads``: the default for a runtime's own thread pool (onnxruntime's
        ``intra_op_threads``) where model.yaml does not set one. ``cpu_share``: the cores
        this process has to itself (``executors.mode: auto`` picks with it). ``board``: the
        HTTP workers' shared busy board; with it, ``lone_threads`` is the default for
        ``lone_row_threads`` (a one-row batch borrows the idle workers' cores) for models
        of at most ``LONE_MAX_BYTES`` on disk, since it costs a second session.
        ``drain_grace_s``: how long ``close`` lets a version's running batches finish
        before stopping its executor (``server.drain_timeout_s``, which a process
        executor's stop timeout follows)."""
        self._drain_grace_s = drain_grace_s
        self._runtimes = runtimes
        self._runtime_threads = runtime_threads
        self._cpu_share = cpu_share
        self._board = board
        self._lone_threads = lone_threads if board is not None else None
        self._batching = batching
        self._executors = executors
        self._clock = clock
        self._process_factory = process_factory
        self._models: dict[str, ServedModel] = {}
        self._features: dict[str, tuple[str, ...] | None] = {}

    # ── reading ──────────────────────────────────────────────────────────────
    def names(self) -> list[str]:
        return sorted(self._models)

    def served(self) -> list[tuple[ModelConfig, ServedVersion]]:
        """Every registered version with its model's config (planning, not serving)."""
        return [(m.config, v) for m in self._models.values() for v in m.versions.values()]

    def get(self, name: str) -> ServedModel:
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(f"no model named '{name}'; available: {self.names()}") from None

    def resolve(self, name: str, ref: str | None = None) -> ServedVersion:
        model = self.get(name)
        version = model.versions[model.resolve_name(ref)]
        if version.state is not VersionState.READY:
            raise ModelNotReady(version.unready_message())
        return version

    def all_ready(self) -> bool:
        return bool(self._models) and all(
            sv.state is VersionState.READY
            for m in self._models.values()
            for sv in m.versions.values()
        )

    # ── loading ──────────────────────────────────────────────────────────────
    def add_sources(self, sources: list[ModelSource]) -> None:
        """Register what will be served (state ``loading``) without doing any I/O yet."""
        for source in sources:
            if source.name in self._models:
                raise ConfigError(f"model {source.name!r} is configured twice")
            model = ServedModel(
                name=source.name,
                config=source.config,
                aliases=dict(source.aliases),
                default_version=source.default_version,
            )
            for vs in source.versions:
                runtime = self._runtimes.for_artifact(vs.artifact, source.config.runtime)
                model.versions[vs.version] = ServedVersion(
                    source.name, vs.version, runtime, vs.artifact
                )
            for alias, target in model.aliases.items():
                if target not in model.versions:
                    raise ConfigError(
                        f"model {source.name!r}: alias {alias!r} points at missing "
                        f"version {target!r}"
                    )
            default = model.default_version
            if (
                default is not None
                and default not in model.versions
                and default not in model.aliases
            ):
                raise ConfigError(
                    f"model {source.name!r}: default_version {default!r} is neither a version "
                    "nor an alias"
                )
            self._models[source.name] = model
            self._features[source.name] = source.features

    def add_object(
        self, name: str, model: LoadedModel, version: str = "1", config: ModelConfig | None = None
    ) -> None:
        """Serve an already-built model object (no artifact, no runtime lookup)."""
        served = self._models.setdefault(
            name, ServedModel(name=name, config=config or ModelConfig())
        )
        served.versions[version] = ServedVersion(
            name, version, "object", Path("<object>"), preloaded=model
        )
        self._features.setdefault(name, None)

    async def load_all(self) -> None:
        """Load every registered version; failures are recorded, not raised."""
        for model in list(self._models.values()):
            for version in model.versions.values():
                if version.state is VersionState.LOADING:
                    await self._load(model, version)

    def _policy(self, config: ModelConfig, slots: int) -> BatchPolicy:
        b, o = self._batching, config.batching
        enabled = b.enabled if o.enabled is None else o.enabled
        max_batch = o.max_batch_size or b.max_batch_size
        return BatchPolicy(
            max_batch_size=max_batch if enabled else 1,
            max_delay_s=(o.max_delay_ms if o.max_delay_ms is not None else b.max_delay_ms) / 1000,
            preferred_batch_size=o.preferred_batch_size or b.preferred_batch_size,
            max_queue=o.max_queue or b.max_queue,
            concurrency=slots,
        )

    async def _thread_executor(
        self, runtime_name: str, artifact: Path, config: ModelConfig, label: str
    ) -> tuple[Signature, Executor]:
        runtime = self._runtimes.get(runtime_name)
        defaults: dict[str, Any] = {}
        if self._runtime_threads is not None:
            defaults["intra_op_threads"] = self._runtime_threads
        if self._lone_threads is not None and _size(artifact) <= LONE_MAX_BYTES:
            defaults["lone_row_threads"] = self._lone_threads
        options = {**defaults, **config.options}
        if self._board is None:  # nothing would ever pick a lone-row session: do not build one
            options["lone_row_threads"] = 0
        config = replace(config, options=options)
        loaded = await asyncio.to_thread(runtime.load, artifact, config)
        return loaded.signature, await self._in_process(loaded, config, artifact.stem, label)

    async def _in_process(
        self, loaded: LoadedModel, config: ModelConfig, name: str, label: str
    ) -> Executor:
        """Warm ``loaded`` up and pick the executor it runs on in this process."""
        await asyncio.to_thread(loaded.warmup)
        threads = config.threads or self._executors.threads
        return choose_executor(
            loaded, self._executors.mode, threads, name, self._cpu_share, self._board, label
        )

    async def _load(self, model: ServedModel, version: ServedVersion) -> None:
        where = f"{model.name} v{version.version}"
        try:
            if model.config.isolation is Isolation.PROCESS:
                if self._process_factory is None:
                    raise ConfigError("process isolation is not available in this server")
                # its executor never lends: no lone-row session in the worker processes
                no_lone = {**model.config.options, "lone_row_threads": 0}
                inferred, executor = await self._process_factory(
                    version.runtime,
                    version.artifact,
                    replace(model.config, options=no_lone),
                    board=self._board,
                )
            elif version.preloaded is not None:
                inferred = version.preloaded.signature
                executor = await self._in_process(
                    version.preloaded, model.config, model.name, where
                )
            else:
                inferred, executor = await self._thread_executor(
                    version.runtime, version.artifact, model.config, where
                )
            version.executor = executor  # stopped below if the rest fails
            version.signature = effective_signature(
                inferred, model.config, self._features.get(model.name), where
            )
            lending = executor if isinstance(executor, LendingExecutor) else None
            version.batcher = Batcher(
                executor.run,
                self._policy(model.config, executor.slots),
                self._clock,
                run_part=lending.run_part if lending is not None else None,
            )
            if lending is not None:
                lending.stats = version.batcher.stats
            version.state = VersionState.READY
            log.info("loaded %s (%s) from %s", where, version.runtime, version.artifact)
        except Exception as exc:
            version.state = VersionState.FAILED
            version.error = str(exc)
            log.error("failed to load %s from %s: %s", where, version.artifact, exc)
            await self._stop_executor(version)

    @staticmethod
    async def _stop_executor(version: ServedVersion) -> None:
        """Stop the executor of a version that failed after it started: a failed version
        is never served, and its worker processes would otherwise run until shutdown."""
        executor, version.executor = version.executor, None
        if executor is None:
            return
        try:
            await executor.close()
        except Exception:
            log.exception("stopping the executor of %s v%s failed", version.model, version.version)

    async def close(self) -> None:
        """Drain and stop every version at once; returns even if an isolated model (a process
        executor) is stuck: a thread cannot be stopped, so a stuck in-process model still
        holds its drain."""
        versions = [v for model in self._models.values() for v in model.versions.values()]
        await asyncio.gather(*(self._close_version(v) for v in versions))

    async def _close_version(self, version: ServedVersion) -> None:
        if version.state is VersionState.READY:
            version.state = VersionState.DRAINING
        # The batcher waits for its running batches, and a stuck model never ends one: after
        # the grace the executor is closed anyway, since only it can kill a stuck worker
        # (failing the batch, which ends the drain).
        drain = asyncio.ensure_future(version.batcher.close()) if version.batcher else None
        if drain is not None:
            await asyncio.wait([drain], timeout=self._drain_grace_s)
        if version.executor is not None:
            await version.executor.close()
        if drain is not None:
            await drain
        version.state = VersionState.UNLOADED
