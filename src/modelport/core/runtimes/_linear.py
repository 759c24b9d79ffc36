"""Linear scikit-learn models run as the numpy arithmetic scikit-learn itself performs.

A call to ``predict_proba`` on a scaler + logistic-regression pipeline costs scikit-learn
~250 µs whatever the batch (measured with 1.9: input validation in every step, dataframe
detection, namespace dispatch), of which ~10 µs is arithmetic. For the estimators below
modelport runs the same numpy operations, in the same order, itself, and makes only the
checks that can fail on a batch its signature check has let through (see the last
paragraph): ~8 µs for one row, ~20 µs for 128 (docs/benchmarks.md).

Covered: a bare estimator or a ``Pipeline`` of per-feature scalers (``StandardScaler``,
``MinMaxScaler``, ``MaxAbsScaler``, ``RobustScaler``, ``"passthrough"``) ending in
``LogisticRegression`` (``predict_proba``) or ``LinearRegression``, ``Ridge``, ``Lasso``,
``ElasticNet`` (``predict``). Exact classes only: a subclass may compute something else.

The plan is never trusted on its own: ``compile_linear`` runs scikit-learn and the plan on
the same probe batches and keeps the plan only if every output is equal bit for bit; any
difference (another scikit-learn version doing the arithmetic differently, say) means
scikit-learn runs every batch as before.

What scikit-learn refuses, the plan refuses or leaves to scikit-learn. A batch that is not
float64, 2-D, with the fitted number of features and at least one row (possible when
model.yaml declares its own signature) is handed to scikit-learn (``LinearPlan.takes``).
Otherwise the plan raises ``ValueOutOfRange`` (a ``ValueError``, as scikit-learn's refusal
is, and a 422 for the caller rather than a model failure) where a value would reach the
estimator as NaN or infinity (given, where the signature allows it, or made by a step that
overflows) or a clipping scaler as infinity, the one step that could hide one. (Under
scikit-learn's ``assume_finite`` it would answer NaN there instead; the plan still raises.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from modelport.core.runtimes.sklearn import input_end
from modelport.errors import ValueOutOfRange

Step = Callable[[np.ndarray], np.ndarray]

_REGRESSORS = (LinearRegression, Ridge, Lasso, ElasticNet)
PROBE_BATCHES = (1, 2, 7, 64, 200)
PROBE_MAX_VALUES = 1_000_000  # a probe batch of a very wide model gets fewer rows


class _Clip:
    """A clipping step: scikit-learn refuses infinity at each step's input, and clipping is
    the one step that could turn an infinity (given, or made by an earlier step) finite."""

    def __init__(self, step: Step, name: str) -> None:
        self.step = step
        self.name = name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if np.isinf(x).any():
            raise ValueError(f"{self.name} got infinity")
        return self.step(x)


@dataclass(frozen=True)
class LinearPlan:
    """``run(x)`` gives what scikit-learn's ``method`` gives for a float64 batch ``x`` of
    shape (rows >= 1, n_features); ``takes(x)`` says whether ``x`` is such a batch."""

    method: str  # "predict_proba" or "predict"
    names: tuple[str, ...]  # the steps, for the log
    n_features: int
    transforms: tuple[Step, ...]
    head: Step

    def takes(self, x: np.ndarray) -> bool:
        shape = x.shape
        return (
            x.dtype == np.float64
            and len(shape) == 2
            and shape[1] == self.n_features
            and shape[0] > 0
        )

    def run(self, x: np.ndarray) -> np.ndarray:
        # Overflow is expected arithmetic here, not a fault to warn about: a scaler's
        # overflow to infinity is refused below, and a softmax over huge logits still
        # gives probabilities (exp of -inf is 0), as scikit-learn's does.
        with np.errstate(over="ignore", invalid="ignore"):
            for step in self.transforms:  # each makes a new array: x is never written
                x = step(x)
            if not np.isfinite(x).all():  # what the estimator's own input check refuses
                refused = np.flatnonzero(~np.isfinite(x).all(axis=1))  # rows map 1:1
                raise ValueOutOfRange(
                    f"{self.names[-1]} got NaN or infinity: a value is NaN or infinite, or "
                    "too large to scale (the scaled value overflows float64)",
                    rows=tuple(refused.tolist()),
                )
            return self.head(x)


def _dense(*arrays: Any) -> bool:
    return all(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in arrays)


def _shift_scale(shift: Any, scale: Any) -> list[Step] | None:
    """``(x - shift) / scale``, either part optional (None): StandardScaler, RobustScaler."""
    if not _dense(*(a for a in (shift, scale) if a is not None)):
        return None
    if shift is not None and scale is not None:
        return [lambda x: (x - shift) / scale]
    if shift is not None:
        return [lambda x: x - shift]
    if scale is not None:
        return [lambda x: x / scale]
    return []  # neither: the identity (no step writes to its input, so no copy is needed)


def _scaler(est: Any) -> list[Step] | None:
    """The steps for one fitted scaler, or None if it is not one the plan covers."""
    kind = type(est)
    if kind is StandardScaler:
        return _shift_scale(
            est.mean_ if est.with_mean else None, est.scale_ if est.with_std else None
        )
    if kind is RobustScaler:
        return _shift_scale(
            est.center_ if est.with_centering else None,
            est.scale_ if est.with_scaling else None,
        )
    if kind is MinMaxScaler:
        mul, add = est.scale_, est.min_
        if not _dense(mul, add):
            return None
        if getattr(est, "clip", False):
            low, high = (float(v) for v in est.feature_range)
            return [_Clip(lambda x: np.clip(x * mul + add, low, high), "MinMaxScaler")]
        return [lambda x: x * mul + add]
    if kind is MaxAbsScaler:
        scale = est.scale_
        if not _dense(scale):
            return None
        if getattr(est, "clip", False):
            return [_Clip(lambda x: np.clip(x / scale, -1.0, 1.0), "MaxAbsScaler")]
        return [lambda x: x / scale]
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


def plan_linear(estimator: Any, method: str, n_features: int) -> LinearPlan | str:
    """The plan for ``estimator.method``, or the reason there is none."""
    steps = estimator.steps if type(estimator) is Pipeline else [("", estimator)]
    *before, (_, last) = steps
    transforms: list[Step] = []
    names: list[str] = []
    for _, step in before:
        if step is None or step == "passthrough":
            continue
        steps_of = _scaler(step)
        if steps_of is None:
            return f"{type(step).__name__} is not a scaler modelport runs itself"
        transforms += steps_of
        names.append(type(step).__name__)
    head = _head(last, method)
    if head is None:
        return f"{type(last).__name__}.{method} is not one modelport runs itself"
    names.append(type(last).__name__)
    return LinearPlan(method, tuple(names), n_features, tuple(transforms), head)


def probe_rows(estimator: Any, n_features: int, rows: int, seed: int = 0) -> np.ndarray:
    """Rows around the data the first step was fitted on (if it says), plus wide ones."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n_features))
    first = input_end(estimator)  # past any "passthrough" steps
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
    try:
        plan = plan_linear(estimator, method, n_features)
    except Exception as exc:  # e.g. a pickle from a scikit-learn without an attribute
        return f"cannot read the fitted estimator: {type(exc).__name__}: {exc}"
    if isinstance(plan, str):
        return plan
    reference = getattr(estimator, method)
    for i, wanted in enumerate(PROBE_BATCHES):
        rows = max(1, min(wanted, PROBE_MAX_VALUES // n_features))
        x = probe_rows(estimator, n_features, rows, seed=i)
        try:
            expected = np.asarray(reference(x.copy()))
            got = plan.run(x.copy())
        except Exception as exc:  # a probe scikit-learn refuses proves nothing either way
            return f"probe batch of {rows} rows failed: {type(exc).__name__}: {exc}"
        if expected.dtype != got.dtype or not np.array_equal(expected, got):
            return f"its output differs from scikit-learn's on a probe batch of {rows} rows"
    return plan
