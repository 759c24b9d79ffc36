"""The audit trail: one log line per admin action (who, what, on what, when) on
the ``modelport.audit`` logger. Never pass secrets in: key ids and names only."""

from __future__ import annotations

import datetime as dt
import json
import logging

log = logging.getLogger("modelport.audit")


def audit(actor: str, action: str, target: str = "", *, at: float, **details: object) -> None:
    """``audit("key:abc", "keys.revoke", "def", at=clock.now())`` → one JSON log line."""
    entry = {
        "audit": action,
        "actor": actor,
        "target": target,
        "at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds"),
        **details,
    }
    log.info("audit %s", json.dumps(entry, sort_keys=True, default=str))
