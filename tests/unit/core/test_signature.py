from __future__ import annotations

import numpy as np
import pytest

from modelport.core.signature import Signature, TensorSpec, validate
from modelport.errors import BatchTooLarge, EmptyBatch, InvalidInput

SIG = Signature(
    inputs=(TensorSpec("input", "float64", (-1, 4), names=("a", "b", "c", "d")),),
    outputs=(TensorSpec("y", "float64", (-1,)),),
)


def test_casts_ints_to_float_and_counts_rows() -> None:
    arrays, rows = validate(SIG, {"input": np.array([[1, 2, 3, 4], [5, 6, 7, 8]])})
    assert rows == 2
    assert arrays["input"].dtype == np.float64


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([[1.0, 2.0, 3.0]]), "expected shape [N, 4], received [1, 3]"),
        (np.array([1.0, 2.0, 3.0, 4.0]), "expected shape [N, 4], received [4]"),
        (np.array([["a", "b", "c", "d"]]), "expected float64 numbers, received strings"),
        (np.array([[True, False, True, False]]), "received booleans"),
        (np.array([[1.0, np.nan, 3.0, 4.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf, 3.0, 4.0]]), "NaN or infinite"),
        (np.array([[None, 1, 2, 3]], dtype=object), "received mixed values"),
    ],
)
def test_rejects_with_a_precise_message(value: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(SIG, {"input": value})


def test_missing_and_unknown_inputs_are_named() -> None:
    with pytest.raises(
        InvalidInput, match=r"missing input\(s\) \['input'\]; unknown input\(s\) \['x'\]"
    ):
        validate(SIG, {"x": np.zeros((1, 4))})


def test_empty_batch_and_row_limit() -> None:
    with pytest.raises(EmptyBatch):
        validate(SIG, {"input": np.zeros((0, 4))})
    with pytest.raises(BatchTooLarge, match="holds 11 rows; at most 10"):
        validate(SIG, {"input": np.zeros((11, 4))}, max_rows=10)


def test_integer_input_refuses_fractions_and_overflow() -> None:
    sig = Signature(inputs=(TensorSpec("i", "int8", (-1,)),), outputs=())
    assert validate(sig, {"i": np.array([1.0, 2.0])})[0]["i"].dtype == np.int8
    with pytest.raises(InvalidInput, match="received fractions"):
        validate(sig, {"i": np.array([1.5])})
    with pytest.raises(InvalidInput, match="out of range for int8"):
        validate(sig, {"i": np.array([1000])})


def test_value_range_and_nonfinite_opt_in() -> None:
    sig = Signature(
        inputs=(TensorSpec("x", "float32", (-1, 2), value_range=(0, 16), allow_nonfinite=True),),
        outputs=(),
    )
    with pytest.raises(InvalidInput, match=r"must lie in \[0, 16\]"):
        validate(sig, {"x": np.array([[0, 17]])})
    nan_ok = Signature(
        inputs=(TensorSpec("x", "float32", (-1,), allow_nonfinite=True),), outputs=()
    )
    validate(nan_ok, {"x": np.array([np.nan])})


def test_multi_input_row_counts_must_agree() -> None:
    sig = Signature(
        inputs=(TensorSpec("a", "float32", (-1, 2)), TensorSpec("b", "float32", (-1,))),
        outputs=(),
    )
    with pytest.raises(InvalidInput, match="has 3 rows but other inputs have 2"):
        validate(sig, {"a": np.zeros((2, 2)), "b": np.zeros(3)})


def test_finite_values_whose_sum_would_overflow_are_accepted() -> None:
    big = np.finfo(np.float32).max
    sig = Signature(inputs=(TensorSpec("x", "float32", (-1, 2)),), outputs=())
    arrays, _ = validate(sig, {"x": np.array([[big, big]], dtype=np.float32)})
    assert np.isfinite(arrays["x"]).all()
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        validate(sig, {"x": np.array([[big, np.inf]], dtype=np.float32)})
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        validate(sig, {"x": np.array([[np.inf, -np.inf]], dtype=np.float32)})  # sum is NaN


def test_inputs_vouched_finite_skip_the_scan_only_where_no_cast_can_overflow() -> None:
    f64 = Signature(inputs=(TensorSpec("x", "float64", (-1,)),), outputs=())
    f32 = Signature(inputs=(TensorSpec("x", "float32", (-1,)),), outputs=())
    # the caller's word is taken for float64 (the scan is what it saves)...
    arrays, _ = validate(f64, {"x": np.array([np.nan])}, finite=True)
    assert np.isnan(arrays["x"][0])
    # ...but not without it, and never for a narrowing cast that overflows
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        validate(f64, {"x": np.array([np.nan])})
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(InvalidInput, match="NaN or infinite"),
    ):
        validate(f32, {"x": np.array([1e39])}, finite=True)
    # an input that arrives in the spec's own dtype is not cast: the caller's word holds
    arrays, _ = validate(f32, {"x": np.array([np.nan], dtype=np.float32)}, finite=True)
    assert np.isnan(arrays["x"][0])
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        validate(f32, {"x": np.array([np.nan], dtype=np.float32)})


def test_float64_json_values_that_overflow_float32_are_refused() -> None:
    sig = Signature(inputs=(TensorSpec("x", "float32", (-1,)),), outputs=())
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(InvalidInput, match="NaN or infinite"),
    ):
        validate(sig, {"x": np.array([1e39])})
