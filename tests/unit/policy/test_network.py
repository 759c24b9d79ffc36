from __future__ import annotations

import pytest

from modelport.errors import Forbidden
from modelport.policy.network import NetworkPolicy, parse_networks


def test_forwarded_for_ignored_from_untrusted_peer() -> None:
    policy = NetworkPolicy(trusted_proxies=["10.0.0.0/8"])
    assert policy.client_address("203.0.113.9", "10.1.1.1") == "203.0.113.9"
    assert policy.client_address("203.0.113.9", None) == "203.0.113.9"


def test_forwarded_for_walks_trusted_hops_from_the_right() -> None:
    policy = NetworkPolicy(trusted_proxies=["10.0.0.0/8"])
    # client forged "1.2.3.4"; the real client is 198.51.100.7, added by our proxy chain
    chain = "1.2.3.4, 198.51.100.7, 10.0.0.2"
    assert policy.client_address("10.0.0.1", chain) == "198.51.100.7"
    assert policy.client_address("10.0.0.1", "10.0.0.3") == "10.0.0.3"
    assert policy.client_address("10.0.0.1", "garbage, 198.51.100.7") == "198.51.100.7"
    assert policy.client_address("10.0.0.1", "198.51.100.7, garbage") == "10.0.0.1"
    assert policy.client_address("::ffff:10.0.0.1", "198.51.100.7") == "198.51.100.7"
    assert policy.client_address(None) == "unknown"


def test_check_server_and_key_allow_lists() -> None:
    policy = NetworkPolicy(allow_from=["10.0.0.0/8", "127.0.0.1"])
    policy.check("10.2.3.4")
    policy.check("127.0.0.1")
    with pytest.raises(Forbidden):
        policy.check("192.168.1.1")
    with pytest.raises(Forbidden):
        policy.check("unknown")
    per_key = parse_networks(["10.1.0.0/16"])
    policy.check("10.1.2.3", per_key)
    with pytest.raises(Forbidden):
        policy.check("10.2.3.4", per_key)
    NetworkPolicy().check("8.8.8.8")  # no lists: everyone


def test_check_exposure() -> None:
    from modelport.errors import ConfigError
    from modelport.policy.network import check_exposure

    check_exposure("127.0.0.1", auth_enabled=False, insecure=False)
    check_exposure("::1", auth_enabled=False, insecure=False)
    check_exposure("localhost", auth_enabled=False, insecure=False)
    check_exposure("0.0.0.0", auth_enabled=True, insecure=False)
    check_exposure("0.0.0.0", auth_enabled=False, insecure=True)
    with pytest.raises(ConfigError, match="--auth none"):
        check_exposure("0.0.0.0", auth_enabled=False, insecure=False)
    with pytest.raises(ConfigError):
        check_exposure("192.168.1.10", auth_enabled=False, insecure=False)
