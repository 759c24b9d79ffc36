"""modelport: serve trained models as a secure, versioned, observable, fast HTTP API.

Names are resolved lazily so that ``import modelport.core`` stays free of the web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelport._version import __version__

if TYPE_CHECKING:
    from modelport.api.app import create_app
    from modelport.bootstrap import build
    from modelport.core.runtime import LoadedModel, ModelConfig, Runtime
    from modelport.core.service import InferenceService
    from modelport.core.signature import Signature, TensorSpec
    from modelport.errors import ModelportError
    from modelport.settings import Settings, load_settings

_EXPORTS = {
    "InferenceService": "modelport.core.service",
    "LoadedModel": "modelport.core.runtime",
    "ModelConfig": "modelport.core.runtime",
    "ModelportError": "modelport.errors",
    "Runtime": "modelport.core.runtime",
    "Settings": "modelport.settings",
    "Signature": "modelport.core.signature",
    "TensorSpec": "modelport.core.signature",
    "build": "modelport.bootstrap",
    "create_app": "modelport.api.app",
    "load_settings": "modelport.settings",
}

__all__ = [
    "InferenceService",
    "LoadedModel",
    "ModelConfig",
    "ModelportError",
    "Runtime",
    "Settings",
    "Signature",
    "TensorSpec",
    "__version__",
    "build",
    "create_app",
    "load_settings",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")
