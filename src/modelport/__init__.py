"""modelport: serve trained models as a secure, versioned, observable, fast HTTP API."""

from modelport._version import __version__
from modelport.api.app import create_app
from modelport.bootstrap import build
from modelport.core.runtime import LoadedModel, ModelConfig, Runtime
from modelport.core.service import InferenceService
from modelport.core.signature import Signature, TensorSpec
from modelport.errors import ModelportError
from modelport.settings import Settings, load_settings

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
