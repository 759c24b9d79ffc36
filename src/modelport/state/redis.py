"""Shared counters in Redis (``--redis URL``): several server processes enforce one limit.

Each operation is one Lua script, so the read-refill-take-write step is atomic in Redis.
The bucket script mirrors ``interfaces.take_tokens`` line by line.
"""

from __future__ import annotations

from typing import Any

from modelport.errors import MissingExtra, Overloaded
from modelport.state.interfaces import BucketResult

_TAKE = """
local cost, rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local data = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens, updated = tonumber(data[1]), tonumber(data[2])
local level
if tokens == nil then
  level = burst
  updated = now
else
  local elapsed = now - updated
  if elapsed < 0 then elapsed = 0 end
  level = math.min(burst, tokens + elapsed * rate)
end
local allowed, retry = 0, 0
if level >= cost then
  level = level - cost
  allowed = 1
else
  retry = (cost - level) / rate
end
local reset = (burst - level) / rate
if updated < now then updated = now end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', level),
  'u', string.format('%.17g', updated))
redis.call('PEXPIRE', KEYS[1], math.ceil(reset * 1000) + 1000)
return {allowed, string.format('%.17g', level), string.format('%.17g', retry),
  string.format('%.17g', reset)}
"""

_INCR = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


class RedisCounterStore:
    """``CounterStore`` on a Redis server; every name is stored under ``prefix:``."""

    def __init__(self, url: str, prefix: str = "modelport") -> None:
        try:
            import redis
        except ImportError as exc:
            raise MissingExtra("redis", "redis") from exc
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.prefix = prefix
        self._client: Any = redis.Redis.from_url(url, socket_timeout=2.0)
        self._take = self._client.register_script(_TAKE)
        self._incr = self._client.register_script(_INCR)

    def take(self, name: str, cost: float, rate: float, burst: float, now: float) -> BucketResult:
        try:
            allowed, level, retry, reset = self._take(
                keys=[f"{self.prefix}:rl:{name}"], args=[cost, rate, burst, repr(now)]
            )
        except self._errors as exc:
            raise Overloaded(
                f"the rate-limit store is unavailable ({type(exc).__name__})"
            ) from None
        return BucketResult(bool(allowed), float(level), float(retry), float(reset))

    def incr(self, name: str, amount: int, ttl_s: float, initial: int = 0) -> int:
        try:
            value = self._incr(
                keys=[f"{self.prefix}:q:{name}"],
                args=[amount, initial, max(1, int(ttl_s * 1000))],
            )
        except self._errors as exc:
            raise Overloaded(f"the quota store is unavailable ({type(exc).__name__})") from None
        return int(value)

    def delete_all(self) -> int:
        """Remove every key under the prefix (tests, uninstall)."""
        names = list(self._client.scan_iter(match=f"{self.prefix}:*", count=1000))
        return int(self._client.delete(*names)) if names else 0

    def close(self) -> None:
        self._client.close()
