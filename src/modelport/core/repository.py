"""Model artifacts on disk: single files, or a repository ``NAME/VERSION/artifact``.

models/
  iris/
    model.yaml        optional: runtime, signature, features, labels, batching, aliases
    1/model.joblib
    2/model.onnx
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelport.core.runtime import BatchingOverrides, Isolation, ModelConfig
from modelport.errors import ConfigError

CONFIG_FILE = "model.yaml"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CONFIG_KEYS = {
    "runtime",
    "signature",
    "features",
    "labels",
    "batching",
    "isolation",
    "threads",
    "description",
    "metadata",
    "aliases",
    "trusted_types",
    "options",
    "default_version",
}


@dataclass(frozen=True)
class VersionSource:
    version: str
    artifact: Path


@dataclass(frozen=True)
class ModelSource:
    name: str
    config: ModelConfig
    versions: tuple[VersionSource, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    features: tuple[str, ...] | None = None
    default_version: str | None = None


def check_name(name: str, what: str = "model name") -> str:
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use letters, digits, '_', '-', '.' (max 128 chars)"
        )
    return name


def parse_config(raw: Mapping[str, Any], where: str) -> tuple[ModelConfig, dict[str, Any]]:
    unknown = set(raw) - _CONFIG_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_CONFIG_KEYS)}"
        )
    batching = raw.get("batching") or {}
    if not isinstance(batching, Mapping):
        raise ConfigError(f"{where}: 'batching' must be a mapping")
    try:
        overrides = BatchingOverrides(**batching)
        isolation = Isolation(raw.get("isolation", "thread"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    labels = raw.get("labels")
    config = ModelConfig(
        runtime=raw.get("runtime"),
        signature=raw.get("signature"),
        batching=overrides,
        isolation=isolation,
        threads=raw.get("threads"),
        labels=tuple(str(x) for x in labels) if labels else None,
        description=str(raw.get("description", "")),
        metadata=dict(raw.get("metadata") or {}),
        trusted_types=tuple(raw.get("trusted_types") or ()),
        options=dict(raw.get("options") or {}),
    )
    extra = {
        "aliases": {str(k): str(v) for k, v in (raw.get("aliases") or {}).items()},
        "features": tuple(str(f) for f in raw["features"]) if raw.get("features") else None,
        "default_version": str(raw["default_version"]) if raw.get("default_version") else None,
    }
    return config, extra


def _read_config(path: Path) -> Mapping[str, Any]:
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must hold a mapping")
    return raw


def _source(name: str, folder_config: Path, versions: list[VersionSource]) -> ModelSource:
    config, extra = parse_config(_read_config(folder_config), str(folder_config))
    return ModelSource(
        name=check_name(name),
        config=config,
        versions=tuple(versions),
        aliases=extra["aliases"],
        features=extra["features"],
        default_version=extra["default_version"],
    )


def from_files(paths: Iterable[Path]) -> list[ModelSource]:
    """Each file served under its stem, version 1; ``STEM.yaml`` beside it is its model.yaml."""
    sources: dict[str, ModelSource] = {}
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such model file")
        name = path.stem
        if name in sources:
            raise ConfigError(f"two model files share the name {name!r}")
        sources[name] = _source(name, path.with_suffix(".yaml"), [VersionSource("1", path)])
    return list(sources.values())


def _artifact_in(folder: Path) -> Path:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix not in (".yaml", ".yml", ".md", ".json", ".txt")
    )
    preferred = [p for p in files if p.stem == "model"]
    if len(preferred) == 1:
        return preferred[0]
    if len(files) == 1:
        return files[0]
    raise ConfigError(
        f"{folder}: expected one model artifact (or one named model.*), "
        f"found {[p.name for p in files]}"
    )


def _version_key(v: str) -> tuple[int, int | str]:
    return (0, int(v)) if v.isdigit() else (1, v)


def from_repository(root: Path) -> list[ModelSource]:
    if not root.is_dir():
        raise ConfigError(f"{root}: repository folder not found")
    sources = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [
            VersionSource(check_name(v.name, "version"), _artifact_in(v))
            for v in sorted(
                (p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                key=lambda p: _version_key(p.name),
            )
        ]
        if not versions:
            raise ConfigError(f"{model_dir}: no version folders (expected {model_dir}/1/...)")
        sources.append(_source(model_dir.name, model_dir / CONFIG_FILE, versions))
    return sources


def latest(versions: Iterable[str]) -> str:
    return max(versions, key=_version_key)
