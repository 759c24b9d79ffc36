"""Response hardening: security headers on every response, and CORS (off unless configured)."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.settings import SecuritySettings

_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
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


class SecurityHeadersMiddleware:
    """Adds the headers above (and HSTS over TLS; ``no-store`` on admin answers)."""

    def __init__(self, app: ASGIApp, hsts_max_age_s: int = 31_536_000) -> None:
        self.app = app
        self._hsts = (
            (b"strict-transport-security", f"max-age={hsts_max_age_s}".encode())
            if hsts_max_age_s > 0
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tls = scope.get("scheme") == "https"
        admin = scope["path"].startswith("/admin")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = [h for h in _ALWAYS if h[0] not in present]
                if b"content-security-policy" not in present:
                    html = any(
                        k.lower() == b"content-type" and v.startswith(b"text/html")
                        for k, v in headers
                    )
                    extra.append(_CSP_PAGE if html else _CSP_API)
                if tls and self._hsts is not None:
                    extra.append(self._hsts)
                if admin and b"cache-control" not in present:
                    extra.append(_NO_STORE)
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


def hardening_middleware(security: SecuritySettings) -> list[Middleware]:
    """The hardening layers for ``security``, outermost first."""
    layers: list[Middleware] = []
    if security.security_headers:
        layers.append(Middleware(SecurityHeadersMiddleware, hsts_max_age_s=security.hsts_max_age_s))
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
