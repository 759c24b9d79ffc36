"""Linear scikit-learn models run as numpy (core/runtimes/_linear.py): same bits, or not at all."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import (
    MaxAbsScaler,
    MinMaxScaler,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from modelport.core.runtime import ModelConfig
from modelport.core.runtimes import _linear
from modelport.core.runtimes._linear import LinearPlan, compile_linear
from modelport.core.runtimes.sklearn import SklearnModel, SklearnRuntime, _infer_signature
from modelport.errors import ConfigError, InvalidInput, ValueOutOfRange

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
DIAB_X, DIAB_Y = load_diabetes(return_X_y=True)

SCALERS: list[Any] = [
    StandardScaler(),
    StandardScaler(with_mean=False),
    StandardScaler(with_std=False),
    MinMaxScaler(),
    MinMaxScaler(feature_range=(-1, 2), clip=True),
    MaxAbsScaler(),
    MaxAbsScaler(clip=True),
    RobustScaler(),
    RobustScaler(with_centering=False),
    RobustScaler(with_scaling=False),
    RobustScaler(with_centering=False, with_scaling=False),
    StandardScaler(with_mean=False, with_std=False),
]
# iris, and rows far outside it (so that the clipping scalers clip)
WIDE_X = np.vstack([IRIS_X, IRIS_X * 4 - 10, -IRIS_X * 7])


def _classifiers() -> list[Any]:
    binary = (IRIS_Y > 0).astype(int)
    named = np.array(["setosa", "versicolor", "virginica"])[IRIS_Y]
    cases = []
    for scaler in SCALERS:
        cases.append(
            (
                f"{scaler}-multiclass",
                make_pipeline(scaler, LogisticRegression(max_iter=3000)),
                IRIS_X,
                IRIS_Y,
            )
        )
    cases += [
        ("bare-multiclass", LogisticRegression(max_iter=3000), IRIS_X, IRIS_Y),
        ("bare-binary", LogisticRegression(max_iter=3000), IRIS_X, binary),
        ("scaled-binary", make_pipeline(StandardScaler(), LogisticRegression()), IRIS_X, binary),
        ("string-labels", make_pipeline(StandardScaler(), LogisticRegression()), IRIS_X, named),
        ("no-intercept", LogisticRegression(fit_intercept=False, max_iter=3000), IRIS_X, IRIS_Y),
        (
            "two-scalers",
            make_pipeline(MinMaxScaler(), StandardScaler(), LogisticRegression()),
            IRIS_X,
            IRIS_Y,
        ),
        (
            "passthrough",
            make_pipeline(StandardScaler(), "passthrough", LogisticRegression()),
            IRIS_X,
            IRIS_Y,
        ),
        (
            "none-step",
            Pipeline([("s", StandardScaler()), ("skip", None), ("lr", LogisticRegression())]),
            IRIS_X,
            IRIS_Y,
        ),
    ]
    return [pytest.param(*case, id=case[0]) for case in cases]


def _regressors() -> list[Any]:
    two_targets = np.stack([DIAB_Y, DIAB_Y * 0.5 + 3], axis=1)
    cases = [
        ("linear", make_pipeline(StandardScaler(), LinearRegression()), DIAB_X, DIAB_Y),
        ("ridge-2-targets", make_pipeline(RobustScaler(), Ridge()), DIAB_X, two_targets),
        ("lasso", Lasso(alpha=0.1), DIAB_X, DIAB_Y),
        ("elasticnet", make_pipeline(MaxAbsScaler(), ElasticNet(alpha=0.01)), DIAB_X, DIAB_Y),
        ("no-intercept", LinearRegression(fit_intercept=False), DIAB_X, DIAB_Y),
    ]
    return [pytest.param(*case, id=case[0]) for case in cases]


def _model(estimator: Any, **kwargs: Any) -> SklearnModel:
    return SklearnModel(estimator, _infer_signature(estimator, Path("m.joblib")), "m", **kwargs)


def _compiled(case: str, estimator: Any) -> SklearnModel:
    model = _model(estimator)
    assert isinstance(model.plan, LinearPlan), case  # declining would make a test vacuous
    return model


@pytest.mark.parametrize(("case", "est", "x", "y"), _classifiers())
def test_classifiers_compile_and_match_scikit_learn_bit_for_bit(
    case: str, est: Any, x: np.ndarray, y: np.ndarray
) -> None:
    model = _compiled(case, est.fit(x, y))
    got = model.predict({"input": WIDE_X})
    assert np.array_equal(got["probabilities"], est.predict_proba(WIDE_X))
    assert got["probabilities"].dtype == np.float64
    want = est.classes_[np.argmax(est.predict_proba(WIDE_X), axis=1)]
    assert np.array_equal(got["label"], want)


@pytest.mark.parametrize(("case", "est", "x", "y"), _regressors())
def test_regressors_compile_and_match_scikit_learn_bit_for_bit(
    case: str, est: Any, x: np.ndarray, y: np.ndarray
) -> None:
    model = _compiled(case, est.fit(x, y))
    got = model.predict({"input": x})["prediction"]
    assert got.shape == est.predict(x).shape
    assert np.array_equal(got, est.predict(x))


_IRIS = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(IRIS_X, IRIS_Y)
_IRIS_PLAN = compile_linear(_IRIS, "predict_proba", 4)


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 70), st.just(4)),
        elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    )
)
def test_any_finite_batch_gets_scikit_learns_bits(x: np.ndarray) -> None:
    assert isinstance(_IRIS_PLAN, LinearPlan)
    before = x.copy()
    got = _IRIS_PLAN.run(x)
    assert np.array_equal(x, before)  # the caller's array is never written
    assert np.array_equal(got, _IRIS.predict_proba(x))


@pytest.mark.parametrize(
    ("est", "method", "reason"),
    [
        (
            make_pipeline(PolynomialFeatures(), LogisticRegression(max_iter=3000)),
            "predict_proba",
            "PolynomialFeatures is not a scaler",
        ),
        (LogisticRegression(max_iter=3000), "predict", "LogisticRegression.predict is not"),
        (
            make_pipeline(StandardScaler(), type("MyLR", (LogisticRegression,), {})(max_iter=3000)),
            "predict_proba",
            "MyLR.predict_proba is not",
        ),
    ],
)
def test_what_it_does_not_cover_is_left_to_scikit_learn(est: Any, method: str, reason: str) -> None:
    est.fit(IRIS_X, IRIS_Y)
    got = compile_linear(est, method, 4)
    assert isinstance(got, str)
    assert reason in got


def test_sparse_coefficients_are_left_to_scikit_learn() -> None:
    est = LogisticRegression(max_iter=3000).fit(IRIS_X, IRIS_Y).sparsify()
    assert compile_linear(est, "predict_proba", 4) == (
        "LogisticRegression.predict_proba is not one modelport runs itself"
    )


def test_a_plan_that_differs_by_one_ulp_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def nudged(d: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.exp(d - d.max(axis=1).reshape((-1, 1)))
        out /= out.sum(axis=1).reshape((-1, 1))
        out[0, 0] = np.nextafter(out[0, 0], 2.0)
        return out

    monkeypatch.setattr(_linear, "_softmax", nudged)
    got = compile_linear(_IRIS, "predict_proba", 4)
    assert got == "its output differs from scikit-learn's on a probe batch of 1 rows"


def test_a_step_that_overflows_fails_the_batch_as_scikit_learn_does() -> None:
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(IRIS_X, IRIS_Y)
    model = _model(est)
    assert model.plan is not None
    est[0].scale_[:] = 1e-300  # the plan holds the same array: both now overflow on 1e10
    x = np.full((2, 4), 1e10)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="infinity"):
        est.predict_proba(x)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="LogisticRegression got"):
        model.predict({"input": x})


def test_nan_passed_through_a_scaler_is_refused_as_scikit_learn_refuses_it() -> None:
    model = _model(make_pipeline(StandardScaler(), LogisticRegression()).fit(IRIS_X, IRIS_Y))
    assert model.plan is not None
    x = np.array([[1.0, np.nan, 2.0, 3.0]])  # a signature that allows NaN lets it through
    with pytest.raises(ValueError):
        model._estimator.predict_proba(x)
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.predict({"input": x})


def test_compile_false_and_batches_the_plan_does_not_take_use_scikit_learn() -> None:
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(IRIS_X, IRIS_Y)
    assert _model(est, compiled=False).plan is None
    model = _model(est)
    assert model.plan is not None

    def not_here(x: np.ndarray) -> np.ndarray:
        raise AssertionError("the plan ran")

    model.plan = dataclasses.replace(model.plan, transforms=(not_here,))
    # A model.yaml signature may declare its own dtype or shape: scikit-learn then gets the
    # batch (the plan above would raise) and computes or refuses it in its own words.
    x32 = IRIS_X[:5].astype(np.float32)
    assert np.array_equal(model.predict({"input": x32})["probabilities"], est.predict_proba(x32))
    with pytest.raises(ValueError, match="expecting 4 features"):
        model.predict({"input": IRIS_X[:3, :1]})
    with pytest.raises(ValueError, match="Expected 2D array"):
        model.predict({"input": IRIS_X[0]})
    with pytest.raises(ValueError, match="0 sample"):
        model.predict({"input": IRIS_X[:0]})


def test_a_model_fitted_on_a_dataframe_called_with_rows_does_not_warn(tmp_path: Path) -> None:
    """scikit-learn warns on every numpy call to a DataFrame-fitted model; modelport checked
    the columns itself and filters that one warning (pytest here turns warnings into
    errors, so a warning would fail the test), with the plan and without it."""
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(IRIS_X, columns=["a", "b", "c", "d"])
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(frame, IRIS_Y)
    for compiled in (True, False):
        model = _model(est, compiled=compiled)
        assert (model.plan is not None) is compiled
        got = model.predict({"input": IRIS_X[:3]})["probabilities"]
        assert np.array_equal(got, est.predict_proba(frame[:3]))


@pytest.mark.parametrize(
    ("steps", "x"),
    [
        # a step overflows to infinity and a clipping scaler would hide it
        ([StandardScaler(), MinMaxScaler(clip=True)], [[1.7e308, 1, 1, 1]]),
        # infinity given (a model.yaml signature may allow it) straight to a clipping scaler
        ([MinMaxScaler(clip=True)], [[np.inf, 1, 1, 1]]),
        ([MaxAbsScaler(clip=True)], [[1, -np.inf, 1, 1]]),
    ],
)
def test_infinity_is_refused_before_a_clipping_scaler_as_scikit_learn_does(
    steps: list[Any], x: list[list[float]]
) -> None:
    est = make_pipeline(*steps, LogisticRegression(max_iter=1000)).fit(IRIS_X, IRIS_Y)
    model = _model(est)
    assert model.plan is not None
    batch = np.array(x)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="infinity"):
        est.predict_proba(batch)
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="Scaler got infinity"):
        model.predict({"input": batch})


def test_scalers_fitted_in_float32_and_failing_probes_are_left_to_scikit_learn() -> None:
    est = make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=1000))
    est.fit(IRIS_X.astype(np.float32), IRIS_Y)  # its scale_ is float32: other arithmetic
    assert compile_linear(est, "predict_proba", 4) == (
        "MinMaxScaler is not a scaler modelport runs itself"
    )

    def refuses(x: np.ndarray) -> np.ndarray:
        raise ValueError("nope")

    fitted = make_pipeline(StandardScaler(), LogisticRegression()).fit(IRIS_X, IRIS_Y)
    fitted.predict_proba = refuses
    got = compile_linear(fitted, "predict_proba", 4)
    assert got == "probe batch of 1 rows failed: ValueError: nope"


def test_the_runtime_logs_the_choice_and_checks_the_option(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import joblib

    path = tmp_path / "iris.joblib"
    joblib.dump(_IRIS, path)
    with caplog.at_level(logging.INFO, logger="modelport.runtime.sklearn"):
        model = SklearnRuntime().load(path, ModelConfig())
    assert model.plan is not None
    assert f"{path}: StandardScaler -> LogisticRegression runs as numpy" in caplog.text
    off = SklearnRuntime().load(path, ModelConfig(options={"compile": False}))
    assert off.plan is None
    with pytest.raises(ConfigError, match=r"options\.compile must be true or false"):
        SklearnRuntime().load(path, ModelConfig(options={"compile": "yes"}))


def test_a_huge_finite_value_is_refused_as_out_of_range_without_a_warning() -> None:
    """Overflow in the plan is arithmetic, not a fault: no RuntimeWarning (this suite turns
    warnings into errors, as a strict embedding application may), and the refusal is an
    input error (a 422), not a model failure."""
    model = _model(make_pipeline(StandardScaler(), LogisticRegression()).fit(IRIS_X, IRIS_Y))
    assert model.plan is not None
    with pytest.raises(ValueOutOfRange, match="too large to scale") as raised:
        model.predict({"input": np.array([[1.7e308, 0.0, 0.0, 0.0]])})
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, InvalidInput)
    assert raised.value.rows == (0,)
    batch = np.zeros((4, 4))
    batch[1, 0] = batch[3, 1] = 1.7e308  # features whose scale is below 1: they overflow
    with pytest.raises(ValueOutOfRange) as raised:
        model.predict({"input": batch})
    assert raised.value.rows == (1, 3)  # the batcher answers the other rows' requests
    # scaled fine, but the logits overflow: the softmax still gives probabilities
    out = model.predict({"input": np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.07e307]])})
    assert np.isfinite(out["probabilities"]).all()
    assert out["probabilities"][1].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # scikit-learn's own
def test_without_the_plan_scikit_learn_s_refusal_of_an_overflow_is_out_of_range_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``compile: false`` (or a model the plan does not cover): scikit-learn's scaler turns
    1.7e308 into infinity and its estimator refuses it with a ValueError, which is the data's
    fault (a 422), as the plan's refusal is. Other ValueErrors stay model failures."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(IRIS_X, IRIS_Y)
    model = _model(pipeline, compiled=False)
    assert model.plan is None
    with caplog.at_level(logging.WARNING, logger="modelport.runtime.sklearn"):
        for _ in range(2):
            with pytest.raises(ValueOutOfRange, match="produced NaN or infinity") as raised:
                model.predict({"input": np.array([[1.7e308, 0.0, 0.0, 0.0]])})
    assert "contains infinity" in str(raised.value.__cause__)
    # the model's owner hears of it once: the step may be the model's fault
    assert caplog.text.count("m: NaN or infinity reached the estimator") == 1
    wrong_width = {"input": np.zeros((1, 3))}  # only the plan's signature check stops this
    with pytest.raises(ValueError, match="features") as other:
        model.predict(wrong_width)
    assert not isinstance(other.value, InvalidInput)
