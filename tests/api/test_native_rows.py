"""``read_rows``: simdjson reads ``{"inputs": [[...], ...]}`` straight into a float
buffer. It may decline any body (the general path then reads it), but what it accepts
must come out exactly as the general path (orjson + decode + validate) makes it, and it
must never accept a body the general path refuses."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelport.api.codecs import native
from modelport.core.signature import Signature, Task, TensorSpec, validate
from modelport.errors import ModelportError
from tests.api.test_native import assert_error

PAD = b" " * 600  # JSON whitespace: lifts a body over the fast reader's size floor


def _signature(dtype: str, width: int | None = None) -> Signature:
    return Signature((TensorSpec("x", dtype, (-1, width if width else -1)),), ())


def _general(body: bytes, sig: Signature) -> Any:
    """What the general path makes of ``body``: the validated array, or the error."""
    try:
        payload, finite = native.read_json(body)
        with np.errstate(over="ignore"):  # a float32 overflow is then refused as infinite
            arrays, _ = validate(sig, native.decode(payload, sig), finite=finite)
        return arrays["x"]
    except ModelportError as exc:
        return exc


def _agrees(body: bytes, sig: Signature) -> bool:
    """True when the fast reader took ``body`` (and matched the general path)."""
    fast = native.read_rows(body, sig)
    general = _general(body, sig)
    if fast is None:
        return False
    assert not isinstance(general, Exception), f"accepted what the general path refuses: {general}"
    arrays, _ = validate(sig, fast, finite=True)
    got = arrays["x"]
    assert got.dtype == general.dtype and got.shape == general.shape
    assert np.array_equal(got.view(np.uint8), general.view(np.uint8)), (got, general)  # bit-exact
    return True


def test_it_reads_the_common_body_to_the_same_bits_for_float32_and_float64() -> None:
    rows = np.random.default_rng(7).standard_normal((3, 256)).round(6).tolist()
    body = json.dumps({"inputs": rows}).encode()
    assert len(body) >= 512
    for dtype in ("float32", "float64"):
        assert _agrees(body, _signature(dtype, 256))
        assert _agrees(PAD.join([b"{", body[1:]]), _signature(dtype))


@pytest.mark.parametrize(
    "text",
    [
        '{"inputs": [[1, 2], [3]]}',  # ragged
        '{"inputs": [[1, [2]]]}',  # nested one level deeper (as_buffer would flatten it)
        '{"inputs": [[[1, 2]], [[3, 4]]]}',
        '{"inputs": [[1, "2"]]}',  # a string
        '{"inputs": [[1, true]]}',
        '{"inputs": [[1, null]]}',
        '{"inputs": [[1, {"a": 2}]]}',
        '{"inputs": [1, 2]}',  # rows that are not lists
        '{"inputs": []}',
        '{"inputs": [[]]}',
        '{"inputs": [[1, 2]], "inputs": [[5, 6]]}',  # a repeated key: orjson keeps the last
        '{"inputs": [[1, 2]], "extra": 1}',
        '{"instances": [[1, 2]]}',
        '{"inputs": {"x": [[1, 2]]}}',
        '{"inputs": [[NaN, 2]]}',
        '{"inputs": [[Infinity, 2]]}',
        '{"inputs": [[1e400, 2]]}',  # overflows a double
        '{"inputs": [[9007199254740993, 2]]}',  # 2**53 + 1: not an exact double
        '{"inputs": [[18446744073709551616, 2]]}',  # 2**64
        '{"inputs": [[-9223372036854775809, 2]]}',
        '{"inputs": [[01, 2]]}',  # not JSON
        '{"inputs": [[1, 2]],}',
        '{"inputs": [[1, 2]]} trailing',
        '[{"inputs": [[1, 2]]}]',
    ],
)
def test_it_declines_what_is_not_the_plain_case(text: str) -> None:
    body = PAD.join([b"{", text.encode()[1:]]) if text.startswith("{") else text.encode() + PAD
    for dtype in ("float32", "float64"):
        assert native.read_rows(body, _signature(dtype)) is None


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbf{" + PAD + b'"inputs": [[1, 2]]}',  # a BOM: orjson refuses, json reads
        b'{"inputs": [[1, 2]]}' + PAD + b"\x00",
        b"{" + PAD + b'"inputs": [[1, 2\xff]]}',  # not UTF-8
        b"{" + PAD + b'"inp\xffuts": [[1, 2]]}',
        b"{" + PAD + b'"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    ],
)
def test_hostile_bytes_are_left_to_the_general_path(body: bytes) -> None:
    sig = _signature("float32")
    assert native.read_rows(body, sig) is None
    with contextlib.suppress(ModelportError):  # arrays, or the general path's own error
        native.read_inputs(body, sig)


def test_it_leaves_small_bodies_other_dtypes_and_several_inputs_alone() -> None:
    body = b'{"inputs": [[1.5, 2.5]]}'
    assert native.read_rows(body, _signature("float64")) is None  # orjson is faster here
    padded = b"{" + PAD + body[1:]
    assert native.read_rows(padded, _signature("int64")) is None
    two = Signature((TensorSpec("a", "float32", (-1, 2)), TensorSpec("b", "float32", (-1, 2))), ())
    assert native.read_rows(padded, two) is None
    assert native.read_rows(padded, _signature("float64")) is not None


def test_an_escaped_key_is_left_to_the_general_path() -> None:
    body = b"{" + PAD + b'"inp\\u0075ts": [[1, 2]]}'
    assert native.read_rows(body, _signature("float32")) is None
    inputs, _ = native.read_inputs(body, _signature("float32"))
    assert inputs["x"].tolist() == [[1.0, 2.0]]


def test_a_leaked_document_proxy_does_not_wedge_the_reader() -> None:
    body = b"{" + PAD + b'"inputs": [[1, 2]]}'
    wedged = native._Parsers.shared
    held = wedged.parse(body)  # a proxy that outlives its parse: wedged refuses to re-parse
    assert native.read_rows(body, _signature("float64")) is not None
    assert native._Parsers.shared is not wedged  # replaced, so later bodies are fast again
    del held


def test_a_parse_error_keeps_the_shared_parser_and_big_bodies_get_their_own() -> None:
    shared = native._Parsers.shared
    deep = b"{" + PAD + b'"inputs": [[' + b"[" * 1100 + b"]" * 1100 + b"]]}"  # DEPTH_ERROR
    assert native.read_rows(deep, _signature("float64")) is None
    assert native._Parsers.shared is shared
    # with a proxy of the shared parser alive, a body it parsed would swap it out; a body
    # over the cap must not touch it (nor grow its buffers to 15x its size)
    held = shared.parse(b'{"inputs": [[1]]}')
    big = json.dumps({"inputs": [[0.5] * 300_000]}).encode()  # 1.5 MB: over the shared cap
    got = native.read_rows(big, _signature("float32"))
    assert got is not None and got["x"].shape == (1, 300_000)
    assert native._Parsers.shared is shared
    del held


def test_a_long_halfway_number_is_rounded_as_python_does() -> None:
    """A number exactly halfway between two doubles, spelled with 800 more zeros. The
    correct double is the even one, 1.0 (Python's float, simdjson); orjson 3.x has
    returned the odd one, so here the fast reader is held to Python, not to orjson."""
    text = "1.00000000000000011102230246251565404236316680908203125" + "0" * 800
    body = b"{" + PAD + b'"inputs": [[' + text.encode() + b", 2]]}"
    got = native.read_rows(body, _signature("float64"))
    assert got is not None
    assert got["x"].tolist() == [[float(text), 2.0]] == [[1.0, 2.0]]


def test_what_it_reads_is_vouched_finite_and_writable() -> None:
    body = b"{" + PAD + b'"inputs": [[1.5, -2.25], [3, 4e-3]]}'
    for dtype in ("float32", "float64"):
        inputs, finite = native.read_inputs(body, _signature(dtype))
        assert finite and inputs["x"].dtype == np.dtype(dtype) and inputs["x"].flags.writeable
        assert inputs["x"].tolist() == [
            [1.5, -2.25],
            [3.0, np.float32(4e-3) if dtype == "float32" else 4e-3],
        ]


def test_over_http_a_declined_body_gets_the_general_paths_precise_error(
    demo_client: Any,
) -> None:
    from sklearn.datasets import load_digits

    rows = load_digits().data[:5].tolist()
    url = "/v1/models/digits/predict"
    body = json.dumps({"inputs": rows}).encode()
    assert len(body) >= 512 and native._ROWS_START.match(body)  # the fast reader's case
    r = demo_client.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["outputs"]) == 5
    ragged = json.dumps({"inputs": [rows[0], rows[1][:10]]})
    r = demo_client.post(url, content=ragged, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_input", "rows have different lengths")
    nested = json.dumps({"inputs": [[*rows[0][:-1], [1.0]]]})
    r = demo_client.post(url, content=nested, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_input")
    wide = json.dumps({"inputs": [rows[0] + [0.0]]})
    r = demo_client.post(url, content=wide, headers={"content-type": "application/json"})
    assert_error(r, 422, "invalid_input", "expected shape")
    # bodies that start like the fast reader's case but are broken or hostile: each gets
    # the general path's precise error
    text = body.decode()
    for bad, status, code, words in [
        (text[:-3], 400, "malformed_request", "not valid JSON"),  # truncated
        (text.replace(",", ",,", 1), 400, "malformed_request", "not valid JSON"),
        (text.replace("0.0", "NaN", 1), 422, "invalid_input", "NaN or infinite"),
        (text.replace("0.0", "1e999", 1), 422, "invalid_input", "NaN or infinite"),
        (text.replace("0.0", "1e300", 1), 422, "invalid_input", "values must lie in"),
    ]:
        assert len(bad) >= 512 and native._ROWS_START.match(bad.encode())
        r = demo_client.post(url, content=bad, headers={"content-type": "application/json"})
        assert_error(r, status, code, words)
    deep = '{"inputs": [[' + "[" * 5000 + "]" * 5000 + "]]}"  # past simdjson's depth limit
    r = demo_client.post(url, content=deep, headers={"content-type": "application/json"})
    assert r.status_code in (400, 422)
    r = demo_client.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200  # and the server still answers


def _number_text() -> st.SearchStrategy[str]:
    """JSON number text the way clients may write it: long mantissas, halfway cases,
    exponents far out of range, integers with many digits."""
    digits = st.text("0123456789", min_size=1, max_size=30)
    whole = st.one_of(
        st.just("0"), st.builds(lambda a, b: a + b, st.sampled_from("123456789"), digits)
    )
    fraction = st.one_of(st.just(""), st.builds(lambda d: "." + d, digits))
    exponent = st.one_of(
        st.just(""),
        st.builds(
            lambda e, sign, n: e + sign + str(n),
            st.sampled_from("eE"),
            st.sampled_from(["", "+", "-"]),
            st.integers(0, 400),
        ),
    )
    return st.builds(
        lambda sign, w, f, e: sign + w + f + e,
        st.sampled_from(["", "-"]),
        whole,
        fraction,
        exponent,
    )


@settings(max_examples=400, deadline=None)
@given(
    texts=st.lists(_number_text(), min_size=1, max_size=8),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_number_text_reads_to_the_same_bits(texts: list[str], dtype: str) -> None:
    body = b"{" + PAD + b'"inputs": [[' + ", ".join(texts).encode() + b"]]}"
    taken = _agrees(body, _signature(dtype))
    # it declines only values it cannot vouch for (not below 2**53 in magnitude)
    assert taken or any(abs(float(t)) >= 2**53 for t in texts)


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.integers(1, 4).flatmap(
        lambda n: st.integers(1, 6).flatmap(
            lambda w: st.lists(st.lists(numbers, min_size=w, max_size=w), min_size=n, max_size=n)
        )
    ),
    dtype=st.sampled_from(["float32", "float64"]),
    spaces=st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]),
)
def test_whatever_it_accepts_matches_the_general_path(
    rows: list[list[float | int]], dtype: str, spaces: tuple[str, str]
) -> None:
    body = b"{" + PAD + json.dumps({"inputs": rows}, separators=spaces).encode()[1:]
    taken = _agrees(body, _signature(dtype))
    # it declines only values it cannot vouch for (not below 2**53 in magnitude)
    assert taken or any(abs(v) >= 2**53 for row in rows for v in row)


@given(
    st.lists(
        st.lists(
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(float("nan"))),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=200, deadline=None)
def test_the_encoded_label_is_the_one_argmax_picks_even_with_nan(rows: list[list[float]]) -> None:
    """A classifier's label is its best probability's label, by np.argmax's rule: the
    first highest, or the first NaN (a broken model's row must not name a label that
    argmax, and so the model's own label output, would not)."""
    labels = ("a", "b", "c")
    sig = Signature(
        inputs=(TensorSpec("input", "float64", (-1, 2)),),
        outputs=(TensorSpec("probabilities", "float64", (-1, 3), names=labels),),
        task=Task.CLASSIFICATION,
        labels=labels,
    )
    probs = np.asarray(rows, dtype=np.float64)
    out = native.encode(sig, {"probabilities": probs})
    assert [r["label"] for r in out] == [labels[i] for i in np.argmax(probs, axis=1)]
    assert (
        native.encode(sig, {"probabilities": np.asarray([[0.2, np.nan, 0.5]])})[0]["label"] == "b"
    )
