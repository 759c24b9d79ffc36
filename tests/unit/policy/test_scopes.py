from __future__ import annotations

import pytest

from modelport.errors import Forbidden, InvalidInput
from modelport.policy import scopes


@pytest.mark.parametrize(
    ("granted", "needed", "ok"),
    [
        (["predict:iris"], "predict:iris", True),
        (["predict:iris"], "predict:iris2", False),
        (["predict:*"], "predict:anything", True),
        (["predict:iris-*"], "predict:iris-v2", True),
        (["predict:iris-*"], "predict:digits", False),
        (["predict:*"], "read", False),
        (["read"], "admin", False),
        (["*"], "admin", True),
        (["predict:ir.s"], "predict:iris", False),  # dots are literal, not regex
        ([], "read", False),
    ],
)
def test_allows(granted: list[str], needed: str, ok: bool) -> None:
    assert scopes.allows(granted, needed) is ok


def test_require_raises_forbidden_naming_the_scope() -> None:
    with pytest.raises(Forbidden, match="predict:iris"):
        scopes.require(["read"], scopes.predict("iris"))
    scopes.require(["read"], scopes.READ)


def test_parse() -> None:
    assert scopes.parse("predict:iris, read read") == ("predict:iris", "read")
    assert scopes.parse(["admin"]) == ("admin",)
    for bad in ("", "write", "predict:", "predict:a b/c"):
        with pytest.raises(InvalidInput):
            scopes.parse(bad)
