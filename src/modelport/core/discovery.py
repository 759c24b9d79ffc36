"""Which runtime serves which artifact: a built-in table plus ``modelport.runtimes`` plug-ins.

``RuntimeTable.discover()`` is called once at start-up; runtime modules are imported only
when a model needs them, so a missing extra only matters for the formats actually served.
A plug-in entry point names a class with ``name``, ``suffixes`` and ``load``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, cast

from modelport.core.runtime import Runtime
from modelport.errors import ConfigError

ENTRY_POINT_GROUP = "modelport.runtimes"


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    target: str  # "module:Class"
    suffixes: tuple[str, ...]
    origin: str  # "built-in" or the distribution that provides it


BUILTIN: tuple[RuntimeInfo, ...] = (
    RuntimeInfo(
        "sklearn",
        "modelport.core.runtimes.sklearn:SklearnRuntime",
        (".joblib", ".pkl", ".pickle", ".skops"),
        "built-in",
    ),
    RuntimeInfo("onnx", "modelport.core.runtimes.onnx:OnnxRuntime", (".onnx",), "built-in"),
    RuntimeInfo("python", "modelport.core.runtimes.python:PythonRuntime", (".py",), "built-in"),
)


def _instantiate(target: str) -> Runtime:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return cast(Runtime, getattr(module, attr)())


class RuntimeTable:
    def __init__(self, infos: tuple[RuntimeInfo, ...]) -> None:
        self.infos = infos
        self._instances: dict[str, Runtime] = {}

    @classmethod
    def discover(cls) -> RuntimeTable:
        infos = list(BUILTIN)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            plugin: Any = ep.load()
            infos.append(
                RuntimeInfo(
                    name=str(getattr(plugin, "name", ep.name)),
                    target=ep.value,
                    suffixes=tuple(getattr(plugin, "suffixes", ())),
                    origin=ep.dist.name if ep.dist else "plug-in",
                )
            )
        return cls(tuple(infos))

    def names(self) -> list[str]:
        return [info.name for info in self.infos]

    def for_artifact(self, artifact: Path, wanted: str | None = None) -> str:
        if wanted is not None:
            if wanted not in self.names():
                raise ConfigError(f"unknown runtime {wanted!r}; available: {self.names()}")
            return wanted
        # plug-ins come last in the table but win on a suffix they claim
        for info in reversed(self.infos):
            if artifact.suffix.lower() in info.suffixes:
                return info.name
        raise ConfigError(
            f"{artifact}: no runtime serves '{artifact.suffix}' files; "
            f"known suffixes: {sorted({s for i in self.infos for s in i.suffixes})}"
        )

    def get(self, name: str) -> Runtime:
        if name not in self._instances:
            info = next((i for i in self.infos if i.name == name), None)
            if info is None:
                raise ConfigError(f"unknown runtime {name!r}; available: {self.names()}")
            self._instances[name] = _instantiate(info.target)
        return self._instances[name]
