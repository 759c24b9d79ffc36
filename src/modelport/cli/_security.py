"""``modelport serve`` options for issue 4: auth, state, limits, network, TLS, CORS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def security_options(func: F) -> F:
    """Adds the security flags; their settings paths are in ``_common.FLAG_PATHS``."""
    for option in reversed(
        [
            click.option(
                "--auth",
                type=click.Choice(["none", "keys", "jwt", "keys,jwt", "jwt,keys"]),
                help="Who may call: none, API keys, JWTs, or both [none; "
                "env MODELPORT_AUTH__MODES].",
            ),
            click.option(
                "--insecure",
                is_flag=True,
                help="Allow --auth none on an address other than loopback.",
            ),
            click.option(
                "--state",
                "state_url",
                metavar="URL",
                help="Keys and usage: postgresql://... [SQLite in the data dir].",
            ),
            click.option(
                "--redis",
                metavar="URL",
                help="Share rate-limit and quota counters between servers via Redis.",
            ),
            click.option("--rate-limit", metavar="N/s|N/min", help="Default rate per key."),
            click.option("--quota", metavar="N/day|N/month", help="Default quota per key."),
            click.option(
                "--anonymous-rate",
                metavar="N/s|N/min",
                help="Rate per client address with --auth none.",
            ),
            click.option(
                "--allow-from", metavar="CIDRS", help="Only these IPs/CIDRs may call [any]."
            ),
            click.option(
                "--trusted-proxies",
                metavar="CIDRS",
                help="Proxies whose X-Forwarded-For is believed [none].",
            ),
            click.option("--cors-origins", metavar="ORIGINS", help="Allowed CORS origins [off]."),
            click.option("--ssl-certfile", type=_FILE, help="TLS certificate (PEM)."),
            click.option("--ssl-keyfile", type=_FILE, help="TLS private key (PEM)."),
            click.option(
                "--jwt-public-key", type=_FILE, help="PEM public key for RS256/ES256 JWTs."
            ),
            click.option("--jwt-jwks", type=_FILE, help="JWKS file for RS256/ES256 JWTs."),
            click.option("--jwt-issuer", help="Required JWT 'iss'."),
            click.option("--jwt-audience", help="Required JWT 'aud'."),
            click.option("--jwt-scopes-claim", help="JWT claim holding the scopes [scope]."),
        ]
    ):
        func = option(func)
    return func
