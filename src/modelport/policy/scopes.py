"""Scopes: ``predict:<model>`` (``*`` wildcards), ``read`` (metadata), ``admin``; ``*`` is all.

``require(principal, "predict:iris")`` raises ``Forbidden`` unless a granted scope matches.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from modelport.errors import Forbidden, InvalidInput

READ = "read"
ADMIN = "admin"
PREDICT_PREFIX = "predict:"
_VALID = re.compile(r"^(\*|read|admin|predict:[A-Za-z0-9_.*-]+)$")


def predict(model: str) -> str:
    return f"{PREDICT_PREFIX}{model}"


@functools.lru_cache(maxsize=1024)
def _pattern(granted: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(granted).replace(r"\*", ".*") + "$")


def allows(granted: Iterable[str], needed: str) -> bool:
    """True if any granted scope matches ``needed`` (``*`` matches any run of characters)."""
    for scope in granted:
        if scope == needed or scope == "*":  # "*" alone (anonymous callers): no regex
            return True
        if "*" in scope and _pattern(scope).match(needed):
            return True
    return False


def require(granted: Iterable[str], needed: str) -> None:
    if not allows(granted, needed):
        raise Forbidden(f"this credential lacks the scope {needed!r}")


def parse(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"predict:iris, read"`` → ``("predict:iris", "read")``; raises ``InvalidInput``."""
    parts = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    out: list[str] = []
    for part in parts:
        if not _VALID.match(part):
            raise InvalidInput(
                f"unknown scope {part!r}: use predict:<model> (with * wildcards), read, admin or *"
            )
        if part not in out:
            out.append(part)
    if not out:
        raise InvalidInput("at least one scope is needed")
    return tuple(out)
