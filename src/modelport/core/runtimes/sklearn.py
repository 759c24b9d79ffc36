"""scikit-learn estimators and pipelines from joblib/pickle files or the safe skops format."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelport.core.runtime import BaseLoadedModel, ModelConfig
from modelport.core.signature import NamedArrays, Signature, Task, TensorSpec
from modelport.errors import ConfigError, MissingExtra, ValueOutOfRange

try:
    import joblib
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtra("sklearn", "joblib") from exc

if TYPE_CHECKING:
    from modelport.core.runtimes._linear import LinearPlan

log = logging.getLogger("modelport.runtime.sklearn")

# Estimators fitted on a DataFrame warn on every call with numpy rows; modelport has
# checked the column order itself, so the warning says nothing here. It is filtered
# process-wide when such a model loads: ``warnings.catch_warnings`` around each call would
# swap the process-wide filter list from several threads (scikit-learn enters it too).
_NO_NAMES = "X does not have valid feature names"

INPUT = "input"
# scikit-learn's refusal of NaN or infinity reaching an estimator ("Input X contains NaN.",
# "Input contains infinity or a value too large for dtype('float64')."): the data's fault,
# e.g. a finite but huge value that a scaler step turned into infinity
_NOT_FINITE = re.compile(r"^Input (\w+ )?contains (NaN|infinity)")
_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_SAFE_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class SklearnModel(BaseLoadedModel):
    def __init__(
        self, estimator: Any, signature: Signature, name: str = "", compiled: bool = True
    ) -> None:
        self._estimator = estimator
        self.signature = signature
        self._proba = signature.task is Task.CLASSIFICATION and hasattr(estimator, "predict_proba")
        self._classes = np.asarray(getattr(estimator, "classes_", []))
        if hasattr(input_end(estimator), "feature_names_in_"):
            warnings.filterwarnings("ignore", message=_NO_NAMES, category=UserWarning)
        self.plan: LinearPlan | None = None
        self._name = name or type(estimator).__name__
        self._warned_not_finite = False
        if compiled:
            self.plan = self._compile(self._name)

    def _compile(self, name: str) -> LinearPlan | None:
        """Linear pipelines run as plain numpy (``_linear.py``) when that matches bit for bit."""
        n_features = getattr(input_end(self._estimator), "n_features_in_", None)
        if not isinstance(n_features, int | np.integer) or n_features < 1:
            return None
        try:  # scikit-learn itself is needed only by models that are scikit-learn's
            from modelport.core.runtimes._linear import compile_linear
        except ImportError:
            return None
        method = "predict_proba" if self._proba else "predict"
        plan = compile_linear(self._estimator, method, int(n_features))
        if isinstance(plan, str):
            log.debug("%s: scikit-learn runs every batch (%s)", name, plan)
            return None
        log.info(
            "%s: %s runs as numpy without scikit-learn's per-call checks (equal bit for bit "
            "on probe batches; options: {compile: false} in model.yaml turns this off)",
            name,
            " -> ".join(plan.names),
        )
        return plan

    def _refused_not_finite(self, exc: ValueError) -> None:
        """The client gets a 422; the model's owner is told once, since a step that makes
        NaN or infinity from ordinary values (``log`` of 0, say) is the model's fault."""
        if not self._warned_not_finite:
            self._warned_not_finite = True
            log.warning(
                "%s: NaN or infinity reached the estimator, answered as a 422 "
                "value_out_of_range (scikit-learn: %s); a step may make them from ordinary "
                "values; logged once per model",
                self._name,
                exc,
            )

    def predict(self, inputs: NamedArrays) -> NamedArrays:
        x = inputs[INPUT]
        if self.plan is not None and self.plan.takes(x):
            out = self.plan.run(x)
        else:
            method = self._estimator.predict_proba if self._proba else self._estimator.predict
            try:
                out = np.asarray(method(x))
            except ValueError as exc:
                if _NOT_FINITE.match(str(exc)):
                    self._refused_not_finite(exc)
                    raise ValueOutOfRange(
                        "a step of the model produced NaN or infinity from these values "
                        "(e.g. a value too large to scale, or outside a function's domain)"
                    ) from exc
                raise
        if self._proba:
            return {"label": self._classes[np.argmax(out, axis=1)], "probabilities": out}
        return {"prediction": out}


def _load_skops(path: Path, config: ModelConfig) -> Any:
    try:
        from skops import io as skops_io
    except ImportError as exc:
        raise MissingExtra("sklearn", "skops") from exc
    untrusted = skops_io.get_untrusted_types(file=path)
    refused = [
        t
        for t in untrusted
        if not t.startswith(_SAFE_MODULE_PREFIXES) and t not in config.trusted_types
    ]
    if refused:
        raise ConfigError(
            f"{path.name}: the skops file references types outside scikit-learn/numpy/scipy: "
            f"{refused}; list them under 'trusted_types' in model.yaml if you trust them"
        )
    return skops_io.load(path, trusted=untrusted)


def input_end(estimator: Any) -> Any:
    """The estimator that sees the raw rows: a Pipeline's first step that is not
    "passthrough" or None (scikit-learn's own ``Pipeline.n_features_in_`` and
    ``feature_names_in_`` read its first step, which a passthrough step lacks), looking
    into nested pipelines; the estimator itself when it is not a Pipeline."""
    found = _first_real_step(estimator)
    return estimator if found is None else found


def _first_real_step(estimator: Any) -> Any:
    steps = getattr(estimator, "steps", None)
    if not isinstance(steps, list | tuple):
        return estimator
    for _, step in steps:
        if step is None or (isinstance(step, str) and step == "passthrough"):
            continue
        found = _first_real_step(step)
        if found is not None:  # None: a nested pipeline of passthrough steps only
            return found
    return None


def _infer_signature(estimator: Any, path: Path) -> Signature:
    first = input_end(estimator)
    n_features = getattr(first, "n_features_in_", None)
    names = getattr(first, "feature_names_in_", None)
    if n_features is None:
        raise ConfigError(
            f"{path.name}: the estimator is not fitted or does not expose n_features_in_; "
            "give the signature in model.yaml"
        )
    inputs = (
        TensorSpec(
            name=INPUT,
            dtype="float64",
            shape=(-1, int(n_features)),
            names=tuple(str(n) for n in names) if names is not None else None,
        ),
    )
    classes = getattr(estimator, "classes_", None)
    if classes is not None and hasattr(estimator, "predict_proba"):
        labels = tuple(str(c) for c in classes)
        label_dtype = "int64" if np.asarray(classes).dtype.kind in "iu" else "str"
        return Signature(
            inputs=inputs,
            outputs=(
                TensorSpec("label", label_dtype, (-1,)),
                TensorSpec("probabilities", "float64", (-1, len(labels)), names=labels),
            ),
            task=Task.CLASSIFICATION,
            labels=labels,
        )
    n_targets = getattr(estimator, "n_outputs_", 1)
    shape = (-1,) if n_targets == 1 else (-1, int(n_targets))
    return Signature(
        inputs=inputs,
        outputs=(TensorSpec("prediction", "float64", shape),),
        task=Task.REGRESSION if classes is None else Task.GENERIC,
    )


class SklearnRuntime:
    name = "sklearn"

    def load(self, artifact: Path, config: ModelConfig) -> SklearnModel:
        if artifact.suffix == ".skops":
            estimator = _load_skops(artifact, config)
        elif artifact.suffix in _PICKLE_SUFFIXES:
            log.warning(
                "loading %s with pickle: pickles execute code when loaded; only serve files "
                "you trust (the .skops format avoids this)",
                artifact.name,
            )
            try:
                estimator = joblib.load(artifact)
            except Exception as exc:
                raise ConfigError(f"{artifact.name}: cannot unpickle: {exc}") from exc
        else:
            raise ConfigError(f"{artifact.name}: not a scikit-learn artifact")
        if not hasattr(estimator, "predict"):
            raise ConfigError(f"{artifact.name}: the object has no predict method")
        compiled = config.options.get("compile", True)
        if not isinstance(compiled, bool):
            raise ConfigError(f"{artifact.name}: options.compile must be true or false")
        signature = _infer_signature(estimator, artifact)
        return SklearnModel(estimator, signature, str(artifact), compiled)
