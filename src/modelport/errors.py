"""The modelport error tree. No HTTP in here: status codes live in ``api/errors.py``.

    ModelportError                 code
    ├── InvalidInput               invalid_input        the request does not fit the signature
    │   └── EmptyBatch             empty_batch
    │   └── BatchTooLarge          batch_too_large
    ├── MalformedRequest           malformed_request    the body cannot be parsed at all
    ├── UnsupportedMediaType       unsupported_media_type
    ├── PayloadTooLarge            payload_too_large
    ├── NotFound
    │   ├── ModelNotFound          model_not_found
    │   └── VersionNotFound        version_not_found
    ├── ModelNotReady              model_not_ready
    ├── Unauthenticated            unauthenticated
    ├── Forbidden                  forbidden
    ├── RateLimited                rate_limited         carries retry_after (seconds)
    │   └── QuotaExceeded          quota_exceeded
    ├── Overloaded                 overloaded           queue full; carries retry_after
    ├── DeadlineExceeded           deadline_exceeded
    ├── WorkerFailed               worker_failed        a model worker died or raised; plain data
    ├── ModelFailed                model_failed         the model's own code raised
    ├── ConfigError                config_error         bad settings, model.yaml or artifact
    └── MissingExtra               missing_extra        an optional dependency is not installed
"""

from __future__ import annotations


class ModelportError(Exception):
    """Base of every error modelport raises on purpose."""

    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ModelportError):
    """The request parsed, but does not match the model's signature."""

    code = "invalid_input"


class EmptyBatch(InvalidInput):
    code = "empty_batch"


class BatchTooLarge(InvalidInput):
    code = "batch_too_large"


class MalformedRequest(ModelportError):
    """The body is not valid JSON (or not the documented shape at all)."""

    code = "malformed_request"


class UnsupportedMediaType(ModelportError):
    code = "unsupported_media_type"


class PayloadTooLarge(ModelportError):
    code = "payload_too_large"


class NotFound(ModelportError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class ModelNotReady(ModelportError):
    code = "model_not_ready"


class Unauthenticated(ModelportError):
    code = "unauthenticated"


class Forbidden(ModelportError):
    code = "forbidden"


class RateLimited(ModelportError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    code = "quota_exceeded"


class Overloaded(ModelportError):
    code = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ModelportError):
    code = "deadline_exceeded"


class WorkerFailed(ModelportError):
    """A worker process died or raised. ``kind`` is the original class path, as a string."""

    code = "worker_failed"

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class ModelFailed(ModelportError):
    """The model's own predict raised. The original message is kept for logs only."""

    code = "model_failed"


class ConfigError(ModelportError):
    code = "config_error"


class MissingExtra(ConfigError):
    """An optional dependency is missing; the message carries the pip command."""

    code = "missing_extra"

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"the {module!r} package is needed for this feature: pip install 'modelport[{extra}]'"
        )
        self.extra = extra
