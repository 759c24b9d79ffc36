"""``Principal``: who is calling, what they may do and how much — plain data."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum

from modelport.policy.quota import Quota
from modelport.policy.ratelimit import Rate

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PrincipalKind(Enum):
    KEY = "key"
    JWT = "jwt"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``id`` is safe to log: a key id, ``jwt:<sub>`` or
    ``anon:<address>``; it is the unit of rate limits, quotas and usage."""

    id: str
    kind: PrincipalKind
    scopes: frozenset[str]
    name: str = ""
    rate: Rate | None = None
    quota: Quota | None = None
    allow_from: tuple[Network, ...] = field(default=())

    @property
    def usage_id(self) -> str:
        """The id usage is recorded under (``anonymous`` for every anonymous caller)."""
        return "anonymous" if self.kind is PrincipalKind.ANONYMOUS else self.id
