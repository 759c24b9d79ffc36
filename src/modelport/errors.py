"""The modelport error tree. No HTTP in here: status codes live in ``api/errors.py``.

ModelportError                 code
├── InvalidInput               invalid_input        the request does not fit the signature
│   ├── EmptyBatch             empty_batch
│   ├── BatchTooLarge          batch_too_large
│   └── ValueOutOfRange        value_out_of_range   NaN/infinity the model refuses; may name rows
├── MalformedRequest           malformed_request    the body cannot be parsed at all
├── UnsupportedMediaType       unsupported_media_type
├── PayloadTooLarge            payload_too_large
├── NotFound
│   ├── ModelNotFound          model_not_found
│   └── VersionNotFound        version_not_found
├── ModelNotReady              model_not_ready
├── Unauthenticated            unauthenticated
├── Forbidden                  forbidden
├── RateLimited                rate_limited         carries retry_after, RateLimit-* headers
│   └── QuotaExceeded          quota_exceeded       a per-period quota is used up
├── Overloaded                 overloaded           queue full; carries retry_after
├── DeadlineExceeded           deadline_exceeded
├── WorkerFailed               worker_failed        a model worker died or raised; plain data
├── ModelFailed                model_failed         the model's own code raised
├── ConfigError                config_error         bad settings, model.yaml or artifact
└── MissingExtra               missing_extra        an optional dependency is not installed
"""

from __future__ import annotations

import math


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


class ValueOutOfRange(InvalidInput, ValueError):
    """A value the model cannot compute with: NaN or infinity reaching an estimator that
    refuses them, given (where the signature allows it) or made by a preprocessing step
    that overflows on a finite but huge value. A ``ValueError`` too, as scikit-learn's
    own refusal is. ``rows``: where the refusing code knows them, the batch's rows it
    refused (0-based), so that the batcher can answer the other requests without
    splitting the batch; empty when unknown."""

    code = "value_out_of_range"

    def __init__(self, message: str, rows: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.rows = rows


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
    """No credential, or one that is unknown, expired, revoked or tampered with.

    The message is the same for all of these, so a caller cannot tell which."""

    code = "unauthenticated"
    headers = {"WWW-Authenticate": 'Bearer realm="modelport"'}


class Forbidden(ModelportError):
    code = "forbidden"


class RateLimited(ModelportError):
    """Too many requests. ``headers`` carries ``RateLimit-*`` values for the transport."""

    code = "rate_limited"

    def __init__(
        self,
        message: str,
        retry_after: float,
        *,
        limit: int | None = None,
        remaining: int | None = None,
        reset: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
        self.headers: dict[str, str] = {}
        if limit is not None:
            self.headers["RateLimit-Limit"] = str(limit)
            self.headers["RateLimit-Remaining"] = str(max(0, remaining or 0))
            self.headers["RateLimit-Reset"] = str(max(1, math.ceil(reset or retry_after)))


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
