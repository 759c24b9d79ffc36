"""Network rules: server-wide and per-key allow-lists, and which peer to believe about the
client address (``X-Forwarded-For`` counts only when the direct peer is a trusted proxy)."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from modelport.errors import ConfigError, Forbidden
from modelport.policy.principal import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


@functools.lru_cache(maxsize=4096)  # the same few client addresses, over and over
def parse_address(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def contains(networks: Sequence[Network], address: Address | None) -> bool:
    return address is not None and any(address in net for net in networks)


class NetworkPolicy:
    """``client_address(peer, x_forwarded_for)`` and ``check(address, per_key)``."""

    def __init__(self, allow_from: Iterable[str] = (), trusted_proxies: Iterable[str] = ()) -> None:
        self._allow = parse_networks(allow_from)
        self._trusted = parse_networks(trusted_proxies)

    def client_address(self, peer: str | None, forwarded_for: str | None = None) -> str:
        """The caller's address. Walks ``X-Forwarded-For`` from the right while each hop is a
        trusted proxy; the first untrusted hop is the client. Ignored unless the peer is trusted."""
        if not peer:
            return "unknown"
        if not self._trusted or not forwarded_for:
            return peer
        address = parse_address(peer)
        if address is None or not contains(self._trusted, address):
            return peer
        for hop in reversed([h for h in forwarded_for.split(",") if h.strip()]):
            parsed = parse_address(hop)
            if parsed is None:
                break  # garbage in the chain: trust nothing further left
            address = parsed
            if not contains(self._trusted, parsed):
                break
        return str(address)

    def check(self, client: str, per_key: Sequence[Network] = ()) -> None:
        """Raises ``Forbidden`` unless ``client`` is inside both the server-wide and the
        credential's own allow-list (an empty list allows every address)."""
        if self._allow and not contains(self._allow, parse_address(client)):
            raise Forbidden("requests from this address are not allowed")
        if per_key and not contains(per_key, parse_address(client)):
            raise Forbidden("this credential may not be used from this address")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    address = parse_address(host)
    return address is not None and address.is_loopback


def check_exposure(host: str, auth_enabled: bool, insecure: bool) -> None:
    """Refuse to serve without authentication on an address other machines can reach."""
    if auth_enabled or insecure or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host} with --auth none: anyone who can reach this address "
        "could call every model and the admin API. Use --auth keys (and create a key with "
        "`modelport keys create`), bind to 127.0.0.1, or pass --insecure if this network "
        "is already protected."
    )
