"""The security sections of Settings: parsing from env strings, validation, secret handling."""

from __future__ import annotations

import pytest

from modelport.errors import ConfigError
from modelport.settings import Settings, load_settings


def test_env_strings_become_tuples() -> None:
    s = load_settings(
        env={
            "MODELPORT_AUTH__MODES": "keys,jwt",
            "MODELPORT_AUTH__JWT_SECRET": "x" * 32,
            "MODELPORT_SECURITY__ALLOW_FROM": "10.0.0.0/8, 127.0.0.1",
            "MODELPORT_SECURITY__CORS_ORIGINS": "https://a.example",
            "MODELPORT_LIMITS__DEFAULT_RATE": "100/min",
            "MODELPORT_STATE__URL": "postgresql://u:p@db/x",
        }
    )
    assert s.auth.modes == ("keys", "jwt") and s.auth.enabled
    assert s.security.allow_from == ("10.0.0.0/8", "127.0.0.1")
    assert s.security.cors_origins == ("https://a.example",)
    assert s.limits.default_rate == "100/min"
    assert not load_settings(env={}).auth.enabled  # default: none


@pytest.mark.parametrize(
    "flags",
    [
        {"auth": {"modes": "none,keys"}},
        {"auth": {"modes": "jwt"}},  # jwt needs a secret or a key file
        {"auth": {"modes": "passwords"}},
        {"security": {"allow_from": "not-an-ip"}},
        {"security": {"ssl_certfile": "cert.pem"}},  # without the key file
        {"limits": {"default_rate": "fast"}},
        {"limits": {"default_quota": "10/week"}},
        {"state": {"url": "mysql://x"}},
    ],
)
def test_bad_security_settings_are_config_errors(flags: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_settings(flags, env={})


def test_jwt_secret_is_masked_except_for_workers() -> None:
    s = load_settings({"auth": {"modes": "jwt", "jwt_secret": "topsecret-value"}}, env={})
    assert "topsecret-value" not in repr(s)
    assert "topsecret-value" not in s.model_dump_json()
    handed = Settings.model_validate_json(s.model_dump_json(context={"reveal_secrets": True}))
    assert handed == s
    assert handed.auth.jwt_secret is not None
    assert handed.auth.jwt_secret.get_secret_value() == "topsecret-value"
