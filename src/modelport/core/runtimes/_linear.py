"""Linear scikit-learn models run as the numpy arithmetic scikit-learn itself performs.

A call to ``predict_proba`` on a scaler + logistic-regression pipeline costs scikit-learn
~250 µs whatever the batch (measured with 1.9: input validation in every step, dataframe
detection, namespace dispatch), of which ~10 µs is arithmetic. modelport has already checked
the batch against the signature (dtype, shape, finiteness), so for the estimators below it
runs the same numpy operations, in the same order, itself: ~6 µs for one row, ~12 µs for 64.

Covered: a bare estimator or a ``Pipeline`` of per-feature scalers (``StandardScaler``,
``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``, or ``"passthrough"``) ending in
``LogisticRegression`` (``predict_proba``) or ``LinearRegression``, ``Ridge``, ``Lasso``,
``ElasticNet`` (``predict``). Exact classes only: a subclass may compute something else.

The plan is never trusted on its own: ``compile_linear`` runs scikit-learn and the plan on
the same probe batches and keeps the plan only if every output is equal bit for bit; any
difference (another scikit-learn version doing the arithmetic differently, say) means
scikit-learn runs every batch as before. The one check scikit-learn makes between steps
that the signature cannot make, that the scaled values are finite, the plan makes too and
fails the batch with a ``ValueError`` as scikit-learn does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

Step = Callable[[np.ndarray], np.ndarray]

_REGRESSORS = (LinearRegression, Ridge, Lasso, ElasticNet)
PROBE_BATCHES = (1, 2, 7, 64, 200)


@dataclass(frozen=True)
class LinearPlan:
    """``run(x)`` gives what scikit-learn's ``method`` gives for a float64 batch ``x``."""

    method: str  # "predict_proba" or "predict"
    names: tuple[str, ...]  # the steps, for the log
    transforms: tuple[Step, ...]
    head: Step

    def run(self, x: np.ndarray) -> np.ndarray:
        for step in self.transforms:  # each makes a new array: the caller's x is never written
            x = step(x)
        if not np.isfinite(x).all():
            # what the estimator's own input check refuses (e.g. a scale that overflows)
            raise ValueError(f"{self.names[-1]} got NaN or infinity from the steps before it")
        return self.head(x)


def _dense(*arrays: Any) -> bool:
    return all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in arrays)


def _scaler(est: Any) -> Step | None:
    kind = type(est)
    if kind is StandardScaler:
        mean = est.mean_ if est.with_mean else None
        scale = est.scale_ if est.with_std else None
        if not _dense(*(a for a in (mean, scale) if a is not None)):
            return None
        if mean is not None and scale is not None:
            return lambda x: (x - mean) / scale
        if mean is not None:
            return lambda x: x - mean
        if scale is not None:
            return lambda x: x / scale
        return lambda x: x.copy()
    if kind is MinMaxScaler:
        mul, add = est.scale_, est.min_
        if not _dense(mul, add):
            return None
        if est.clip:
            low, high = (float(v) for v in est.feature_range)
            return lambda x: np.clip(x * mul + add, low, high)
        return lambda x: x * mul + add
    if kind is MaxAbsScaler:
        scale = est.scale_
        if not _dense(scale):
            return None
        if getattr(est, "clip", False):
            return lambda x: np.clip(x / scale, -1.0, 1.0)
        return lambda x: x / scale
    if kind is RobustScaler:
        center = est.center_ if est.with_centering else None
        scale = est.scale_ if est.with_scaling else None
        if not _dense(*(a for a in (center, scale) if a is not None)):
            return None
        if center is not None and scale is not None:
            return lambda x: (x - center) / scale
        if center is not None:
            return lambda x: x - center
        if scale is not None:
            return lambda x: x / scale
        return lambda x: x.copy()
    return None


def _softmax(d: np.ndarray) -> np.ndarray:
    d -= d.max(axis=1).reshape((-1, 1))
    np.exp(d, out=d)
    d /= d.sum(axis=1).reshape((-1, 1))
    return d


def _binary(d: np.ndarray) -> np.ndarray:
    p = expit(d, out=d)
    return np.stack([1 - p, p], axis=1)


def _head(est: Any, method: str) -> Step | None:
    coef, intercept = getattr(est, "coef_", None), getattr(est, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype != np.float64:
        return None  # sparse (``sparsify()``) or unfitted
    if type(est) is LogisticRegression and method == "predict_proba":
        if coef.ndim != 2 or not _dense(np.asarray(intercept)):
            return None
        weights = coef.T
        if len(est.classes_) <= 2:
            if coef.shape[0] != 1:
                return None
            return lambda x: _binary((x @ weights + intercept).reshape((-1,)))
        return lambda x: _softmax(x @ weights + intercept)
    if type(est) in _REGRESSORS and method == "predict":
        weights = coef if coef.ndim == 1 else coef.T
        return lambda x: x @ weights + intercept
    return None


def plan_linear(estimator: Any, method: str) -> LinearPlan | str:
    """The plan for ``estimator.method``, or the reason there is none."""
    steps = estimator.steps if type(estimator) is Pipeline else [("", estimator)]
    *before, (_, last) = steps
    transforms: list[Step] = []
    names: list[str] = []
    for _, step in before:
        if step is None or step == "passthrough":
            continue
        fn = _scaler(step)
        if fn is None:
            return f"{type(step).__name__} is not a scaler modelport runs itself"
        transforms.append(fn)
        names.append(type(step).__name__)
    head = _head(last, method)
    if head is None:
        return f"{type(last).__name__}.{method} is not one modelport runs itself"
    names.append(type(last).__name__)
    return LinearPlan(method, tuple(names), tuple(transforms), head)


def probe_rows(estimator: Any, n_features: int, rows: int, seed: int = 0) -> np.ndarray:
    """Rows around the data the first step was fitted on (if it says), plus wide ones."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n_features))
    first = estimator.steps[0][1] if type(estimator) is Pipeline else estimator
    centre: Any = getattr(first, "mean_", getattr(first, "center_", None))
    spread: Any = getattr(first, "scale_", None)
    fitted = isinstance(centre, np.ndarray) and isinstance(spread, np.ndarray)
    if fitted and centre.shape == spread.shape == (n_features,):
        x = centre + x * spread
    x[::5] *= 1e3  # some rows far outside the fitted range
    x[1::7] = 0.0
    return x


def compile_linear(estimator: Any, method: str, n_features: int) -> LinearPlan | str:
    """A plan checked bit for bit against ``estimator.method`` on probe batches, or why not."""
    plan = plan_linear(estimator, method)
    if isinstance(plan, str):
        return plan
    reference = getattr(estimator, method)
    for i, rows in enumerate(PROBE_BATCHES):
        x = probe_rows(estimator, n_features, rows, seed=i)
        try:
            with warnings.catch_warnings():  # e.g. fitted on a DataFrame, called with numpy
                warnings.simplefilter("ignore")
                expected = np.asarray(reference(x.copy()))
            got = plan.run(x.copy())
        except Exception as exc:  # a probe scikit-learn refuses proves nothing either way
            return f"probe batch of {rows} rows failed: {type(exc).__name__}: {exc}"
        if expected.dtype != got.dtype or not np.array_equal(expected, got):
            return f"its output differs from scikit-learn's on a probe batch of {rows} rows"
    return plan
