"""Build and override signatures from plain mappings (model.yaml, a custom model's attribute)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelport.core.signature import ContentKind, Signature, Task, TensorSpec
from modelport.errors import ConfigError


def spec_from_mapping(raw: Mapping[str, Any], where: str) -> TensorSpec:
    try:
        names = raw.get("names")
        value_range = raw.get("range")
        return TensorSpec(
            name=str(raw["name"]),
            dtype=str(raw.get("dtype", "float32")),
            shape=tuple(int(d) for d in raw.get("shape", (-1,))),
            names=tuple(str(n) for n in names) if names is not None else None,
            kind=ContentKind(raw.get("kind", "tensor")),
            allow_nonfinite=bool(raw.get("allow_nonfinite", False)),
            value_range=(float(value_range[0]), float(value_range[1]))
            if value_range is not None
            else None,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"{where}: invalid tensor spec {dict(raw)!r}: {exc}") from exc


def signature_from_mapping(
    raw: Mapping[str, Any], where: str, base: Signature | None = None
) -> Signature:
    """A signature from a mapping; fields it does not give are taken from ``base``."""

    def specs(key: str) -> tuple[TensorSpec, ...] | None:
        items = raw.get(key)
        if items is None:
            return None
        if not isinstance(items, Sequence):
            raise ConfigError(f"{where}: '{key}' must be a list of tensor specs")
        return tuple(spec_from_mapping(item, where) for item in items)

    inputs = specs("inputs") or (base.inputs if base else None)
    outputs = specs("outputs") or (base.outputs if base else None)
    if not inputs or outputs is None:
        raise ConfigError(f"{where}: a signature needs 'inputs' and 'outputs'")
    labels = raw.get("labels")
    try:
        task = Task(raw["task"]) if "task" in raw else (base.task if base else Task.GENERIC)
    except ValueError as exc:
        raise ConfigError(f"{where}: unknown task {raw['task']!r}") from exc
    return Signature(
        inputs=inputs,
        outputs=outputs,
        task=task,
        labels=tuple(str(x) for x in labels) if labels else (base.labels if base else None),
    )


def apply_feature_names(signature: Signature, names: Sequence[str] | None) -> Signature:
    """Attach feature names to a single 2-D input (used for model.yaml ``features:``)."""
    if not names:
        return signature
    spec = signature.single_input
    if spec is None or len(spec.shape) != 2:
        raise ConfigError("'features' applies only to a model with one 2-D input")
    if spec.shape[1] not in (-1, len(names)):
        raise ConfigError(
            f"'features' lists {len(names)} names but the model takes {spec.shape[1]} features"
        )
    new = TensorSpec(
        name=spec.name,
        dtype=spec.dtype,
        shape=(spec.shape[0], len(names)),
        names=tuple(names),
        kind=ContentKind.TABLE,
        allow_nonfinite=spec.allow_nonfinite,
        value_range=spec.value_range,
    )
    return Signature(
        inputs=(new,), outputs=signature.outputs, task=signature.task, labels=signature.labels
    )
