"""The security gate: credentials and client address in, a ``Principal`` (or 401/403/429) out.

``SecurityGate`` holds the policy objects (authenticators, network rules, rate limiter,
quota keeper, meter); ``SecurityMiddleware`` is the pure-ASGI layer that, for every HTTP
request, in this order:

1. lets public paths through (``settings.auth.public_paths``: health, metrics, docs);
2. works out the client address (``X-Forwarded-For`` only from trusted proxies) and applies
   the server-wide allow-list → 403;
3. authenticates ``X-API-Key: <key>`` or ``Authorization: Bearer <key or JWT>`` → 401;
4. applies the credential's own allow-list and the route's scope → 403;
5. charges the rate limit (and, on predict routes, the quota) → 429 with ``Retry-After``;
6. runs the route, adds ``RateLimit-*`` headers, and meters predict routes (key, model,
   version, rows, error, seconds) without waiting on storage.

Routes find the caller in ``request.state.principal``; a predict route may set
``request.state.rows`` (rows predicted) for metering.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelport.api.errors import handle_modelport_error
from modelport.clock import Clock
from modelport.errors import ModelportError
from modelport.policy import scopes
from modelport.policy.auth import (
    AnonymousAuthenticator,
    ApiKeyAuthenticator,
    JwtAuthenticator,
    rejected,
)
from modelport.policy.keys import KeyManager
from modelport.policy.metering import Meter
from modelport.policy.network import NetworkPolicy
from modelport.policy.principal import Principal, PrincipalKind
from modelport.policy.quota import QuotaKeeper
from modelport.policy.ratelimit import RateLimiter, RateStatus
from modelport.policy.wallclock import WallClock
from modelport.settings import Settings
from modelport.state.interfaces import CounterStore, Stores

_PREDICT = re.compile(r"^/v[12]/models/([^/]+)(?:/versions/[^/]+)?/(?:predict|infer)$")
_PUBLIC_ALWAYS = ("/v2/health/live", "/v2/health/ready")
_MODEL_FROM_BODY = ("/v1/embeddings",)
_READ_BY_POST = ("/v2/repository/index",)  # the V2 protocol lists models with a POST
_PEEK_LIMIT = 1 << 20
_ACCESS_CACHE_SIZE = 1024  # distinct (method, path) pairs remembered by the middleware


@dataclass(frozen=True)
class Access:
    """What a request needs: nothing (public), or a scope; predict routes are metered."""

    public: bool = False
    scope: str | None = None
    model: str | None = None
    metered: bool = False
    model_from_body: bool = False


_PUBLIC = Access(public=True)


@functools.lru_cache(maxsize=8)
def _public_rule(public_paths: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact public paths, and the prefixes under which everything is public."""
    exact = frozenset((*_PUBLIC_ALWAYS, *public_paths))
    prefixes = tuple(p.rstrip("/") + "/" for p in public_paths if p != "/")
    return exact, prefixes


def classify(method: str, path: str, public_paths: tuple[str, ...]) -> Access:
    """The access rule for a request, from its method and path alone."""
    exact, prefixes = _public_rule(public_paths)
    if path in exact or path.startswith(prefixes):
        return _PUBLIC
    if method == "OPTIONS":
        return _PUBLIC  # CORS preflight; the CORS layer answers it
    if path == "/admin" or path.startswith("/admin/"):
        return Access(scope=scopes.ADMIN)
    if method == "POST":
        match = _PREDICT.match(path)
        if match:
            model = match.group(1)
            return Access(scope=scopes.predict(model), model=model, metered=True)
        if path in _MODEL_FROM_BODY:
            return Access(metered=True, model_from_body=True)
        if path in _READ_BY_POST:
            return Access(scope=scopes.READ)
    if method in ("GET", "HEAD"):
        return Access(scope=scopes.READ)
    # anything else that changes state, and is not known above, is an admin matter
    return Access(scope=scopes.ADMIN)


def credential_of(scope: Scope) -> str | None:
    api_key: bytes | None = None
    authorization: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            api_key = value
        elif name == b"authorization":
            authorization = value
    if api_key is not None:
        return api_key.decode("latin-1").strip()
    if authorization is not None:
        kind, _, token = authorization.decode("latin-1").strip().partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return token.strip()
        return ""  # present but not a bearer credential: rejected like an unknown one
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


@dataclass(slots=True)  # one per request: a frozen dataclass's __init__ costs 4x
class Decision:
    principal: Principal
    rate: RateStatus | None


class SecurityGate:
    """The policy objects for one server, and their lifecycle (``start``/``stop``)."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        counters: CounterStore,
        *,
        wall: Clock | None = None,
        offload: bool = False,
    ) -> None:
        """``wall`` is wall-clock time (a ``ManualClock`` in tests). ``offload`` runs the
        policy checks in a worker thread: set it when a store does network I/O."""
        self.settings = settings
        self.stores = stores
        self.counters = counters
        self.wall: Clock = wall or WallClock()
        self.offload = offload
        auth = settings.auth
        self.public_paths = auth.public_paths
        self.enabled = auth.enabled
        self.keys: ApiKeyAuthenticator | None = (
            ApiKeyAuthenticator(stores.keys, self.wall, settings.limits)
            if "keys" in auth.modes
            else None
        )
        self.jwt: JwtAuthenticator | None = (
            JwtAuthenticator.from_settings(auth, settings.limits, self.wall)
            if "jwt" in auth.modes
            else None
        )
        self.anonymous = AnonymousAuthenticator(settings.limits)
        self.network = NetworkPolicy(
            settings.security.allow_from, settings.security.trusted_proxies
        )
        self.limiter = RateLimiter(counters, self.wall)
        self.quotas = QuotaKeeper(counters, stores.usage, self.wall)
        self.meter = Meter(
            stores.usage, self.wall, also=[self.keys.flush_last_used] if self.keys else []
        )
        self.manager = KeyManager(stores.keys, self.wall)

    # ── lifecycle ────────────────────────────────────────────────────────────────────
    async def start(self) -> None:
        self.meter.start(self.settings.state.usage_flush_interval_s)

    async def stop(self) -> None:
        """Flush usage and last-used times, then close the stores."""
        try:
            await self.meter.aclose()
        finally:
            close_counters: Callable[[], None] | None = getattr(self.counters, "close", None)
            if close_counters is not None:
                close_counters()
            self.stores.close()

    # ── the decision, as plain calls (no ASGI) ───────────────────────────────────────
    def authenticate(self, credential: str | None, client: str) -> Principal:
        if not self.enabled:
            return self.anonymous.authenticate(client)
        if not credential:
            raise rejected()
        if credential.startswith("mp_"):
            if self.keys is None:
                raise rejected()
            return self.keys.authenticate(credential)
        if self.jwt is None:
            raise rejected()
        return self.jwt.authenticate(credential)

    def decide(self, access: Access, credential: str | None, client: str) -> Decision:
        self.network.check(client)
        principal = self.authenticate(credential, client)
        self.network.check(client, principal.allow_from)
        if access.scope is not None:
            scopes.require(principal.scopes, access.scope)
        status = None
        if principal.rate is not None:
            status = self.limiter.charge(f"p:{principal.id}", principal.rate)
        if access.metered and principal.quota is not None:
            self.quotas.charge(principal.id, principal.quota)
        return Decision(principal, status)

    async def decide_async(self, access: Access, credential: str | None, client: str) -> Decision:
        if self.offload:
            return await asyncio.to_thread(self.decide, access, credential, client)
        return self.decide(access, credential, client)

    def middleware(self, app: ASGIApp) -> SecurityMiddleware:
        return SecurityMiddleware(app, self)


async def _peek_model(receive: Receive) -> tuple[Receive, str | None]:
    """Read the (small) JSON body for its ``model`` field, then replay it to the route."""
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False) or len(body) > _PEEK_LIMIT:
            break
    model: str | None = None
    try:
        payload: Any = orjson.loads(body)
        if isinstance(payload, dict) and isinstance(payload.get("model"), str):
            model = payload["model"]
    except orjson.JSONDecodeError:
        model = None

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay, model


class SecurityMiddleware:
    """Pure-ASGI enforcement of a ``SecurityGate`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, gate: SecurityGate, clock: Clock | None = None) -> None:
        self.app = app
        self.gate = gate
        self._perf: Callable[[], float] = clock.now if clock is not None else time.perf_counter
        # classify() is pure, and a server sees few distinct paths; bounded because paths
        # come from clients
        self._access: dict[tuple[str, str], Access] = {}

    # ── the steps, as plain calls (the ASGI path below and api/direct.py share them) ──
    def clock(self) -> float:
        """Seconds, for the inference time metered when the route does not report one."""
        return self._perf()

    def access(self, method: str, path: str) -> Access:
        key = (method, path)
        access = self._access.get(key)
        if access is None:
            access = classify(method, path, self.gate.public_paths)
            if len(self._access) >= _ACCESS_CACHE_SIZE:
                self._access.clear()
            self._access[key] = access
        return access

    def client_of(self, scope: Scope) -> str:
        peer = scope.get("client")
        return self.gate.network.client_address(
            peer[0] if peer else None, _header(scope, b"x-forwarded-for")
        )

    @staticmethod
    def admitted(scope: Scope, decision: Decision, client: str) -> list[tuple[bytes, bytes]]:
        """Record the caller for the route; returns the ``RateLimit-*`` headers to add."""
        state: dict[str, Any] = scope.setdefault("state", {})
        state["principal"] = decision.principal
        state["client_address"] = client
        if decision.rate is None:
            return []
        return [(k.lower().encode(), v.encode()) for k, v in decision.rate.headers().items()]

    def record(
        self,
        scope: Scope,
        decision: Decision,
        model: str,
        status: int,
        version: str,
        started: float,
    ) -> None:
        """Meter one answered predict request (no I/O: the meter flushes in batches)."""
        state = scope["state"]
        seconds = state.get("inference_s")
        self.gate.meter.record(
            decision.principal.usage_id,
            model,
            version or str(state.get("model_version", "")),
            int(state.get("rows", 0)),
            status >= 400,
            float(self._perf() - started if seconds is None else seconds),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self.access(scope["method"], scope["path"])
        if access.public:
            await self.app(scope, receive, send)
            return
        client = self.client_of(scope)
        model = access.model
        try:
            if access.model_from_body:
                receive, model = await _peek_model(receive)
                if model is None:
                    access = Access(scope=scopes.predict("*"), metered=True)
                else:
                    access = Access(scope=scopes.predict(model), model=model, metered=True)
            decision = await self.gate.decide_async(access, credential_of(scope), client)
        except ModelportError as exc:
            response = await handle_modelport_error(Request(scope), exc)
            await response(scope, receive, send)
            return
        rate_headers = self.admitted(scope, decision, client)
        status = 500
        version = ""

        async def send_with_headers(message: Message) -> None:
            nonlocal status, version
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                for key, value in headers:
                    if key == b"x-model-version":
                        version = value.decode("latin-1")
                if rate_headers:
                    message["headers"] = headers + rate_headers
            await send(message)

        started = self._perf()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if access.metered and model is not None:
                self.record(scope, decision, model, status, version, started)


def principal_of(request: Request) -> Principal:
    """The caller the gate let in (routes behind the gate only)."""
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        return Principal(id="anon:unknown", kind=PrincipalKind.ANONYMOUS, scopes=frozenset())
    return principal


def build_gate(
    settings: Settings,
    *,
    stores: Stores | None = None,
    counters: CounterStore | None = None,
    wall: Clock | None = None,
) -> SecurityGate:
    """Open the configured stores and build the gate (the composition root calls this)."""
    from modelport.state.backends import open_counters, open_stores

    state = settings.state
    remote = bool(state.redis_url) or (state.url or "").startswith(("postgres", "postgresql"))
    stores = stores or open_stores(state, settings.data_dir)
    counters = counters or open_counters(state)
    return SecurityGate(settings, stores, counters, wall=wall, offload=remote)
