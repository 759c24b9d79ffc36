"""Response hardening: security headers on every response, and CORS (off unless configured)."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from modelport.settings import SecuritySettings

# Every answer (OWASP's REST list: no MIME sniffing, no framing, CSP that loads nothing).
_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]
# Only browser documents (docs, playground) can use these; on JSON they would only cost
# bytes and header checks on every prediction.
_PAGE_ONLY = [
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
# API answers (JSON, binary) load nothing; HTML pages (docs, playground) load their own assets
_CSP_API = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_CSP_PAGE = (
    b"content-security-policy",
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'",
)
_NO_STORE = (b"cache-control", b"no-store")


class ResponseHeaders:
    """The headers above for one response (plus HSTS over TLS, ``no-store`` on admin
    answers), worked out in one pass over the headers the app set. Applied by the outermost
    layer (``api.middleware.EdgeMiddleware``) so that every answer gets them."""

    def __init__(self, hsts_max_age_s: int = 31_536_000) -> None:
        self._hsts = (
            (b"strict-transport-security", f"max-age={hsts_max_age_s}".encode())
            if hsts_max_age_s > 0
            else None
        )
        self._names = frozenset(k for k, _ in (*_ALWAYS, *_PAGE_ONLY, _CSP_API))
        self._api = [*_ALWAYS, _CSP_API]  # the common case, built once
        self._api_tls = [*self._api, self._hsts] if self._hsts is not None else self._api
        self._page = [*_ALWAYS, *_PAGE_ONLY, _CSP_PAGE]

    def for_api(self, tls: bool) -> list[tuple[bytes, bytes]]:
        """``extra`` for a JSON answer that sets none of these headers itself and is not an
        admin page (the direct predict path's answers): no scan of its headers needed."""
        return self._api_tls if tls else self._api

    def extra(
        self, headers: list[tuple[bytes, bytes]], tls: bool, admin: bool
    ) -> list[tuple[bytes, bytes]]:
        """The headers to add to a response that already carries ``headers``."""
        present: set[bytes] = set()
        html = False
        for key, value in headers:
            key = key.lower()
            present.add(key)
            if key == b"content-type" and value.startswith(b"text/html"):
                html = True
        extra = self._page if html else self._api
        if not present.isdisjoint(self._names):  # the app set some itself: keep its values
            extra = [h for h in extra if h[0] not in present]
        if tls and self._hsts is not None:
            extra = [*extra, self._hsts]
        if admin and b"cache-control" not in present:
            extra = [*extra, _NO_STORE]
        return extra


def response_headers(security: SecuritySettings) -> ResponseHeaders | None:
    if not security.security_headers:
        return None
    return ResponseHeaders(security.hsts_max_age_s)


def cors_middleware(security: SecuritySettings) -> list[Middleware]:
    """The CORS layer, when ``security.cors_origins`` allows any origin."""
    layers: list[Middleware] = []
    if security.cors_origins:
        layers.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(security.cors_origins),
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=[
                    "Authorization",
                    "X-API-Key",
                    "Content-Type",
                    "X-Request-Id",
                    "X-Request-Timeout",
                    "Inference-Header-Content-Length",
                ],
                expose_headers=[
                    "X-Request-Id",
                    "X-Model-Version",
                    "Retry-After",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                    "Inference-Header-Content-Length",
                ],
                max_age=600,
            )
        )
    return layers
