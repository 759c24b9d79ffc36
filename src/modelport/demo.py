"""Demo models built from scikit-learn's bundled datasets (no download), cached in the data dir.

Stored in the skops format, which loads without executing code (unlike pickle).

iris      LogisticRegression pipeline, 4 named features, labels setosa/versicolor/virginica
diabetes  Ridge regression, 10 named features
digits    LogisticRegression on 8x8 grayscale images flattened to 64 values (0-16)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from modelport.errors import MissingExtra

DEMO_MODELS = ("iris", "diabetes", "digits")
_IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _build_iris() -> tuple[Any, dict[str, Any]]:
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    labels = np.asarray(data.target_names)[data.target]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(data.data, labels)
    return model, {
        "description": "Iris species from flower measurements (cm); scikit-learn bundled data.",
        "features": _IRIS_FEATURES,
        "metadata": {"dataset": "sklearn.datasets.load_iris", "task": "classification"},
    }


def _build_diabetes() -> tuple[Any, dict[str, Any]]:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    data = load_diabetes()
    model = Ridge(alpha=0.1).fit(data.data, data.target)
    return model, {
        "description": "Diabetes disease progression one year after baseline (regression); "
        "features are mean-centred and scaled as in scikit-learn's bundled data.",
        "features": list(data.feature_names),
        "metadata": {"dataset": "sklearn.datasets.load_diabetes", "task": "regression"},
    }


def _build_digits() -> tuple[Any, dict[str, Any]]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_digits()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        data.data, data.target
    )
    return model, {
        "description": "Handwritten digit 0-9 from an 8x8 grayscale image, flattened row by "
        "row into 64 values from 0 (white) to 16 (black).",
        "signature": {
            "inputs": [
                {
                    "name": "input",
                    "dtype": "float64",
                    "shape": [-1, 64],
                    "kind": "image",
                    "range": [0, 16],
                }
            ]
        },
        "labels": [str(i) for i in range(10)],
        "metadata": {
            "dataset": "sklearn.datasets.load_digits",
            "task": "classification",
            "image_shape": [8, 8],
        },
    }


_BUILDERS: dict[str, Callable[[], tuple[Any, dict[str, Any]]]] = {
    "iris": _build_iris,
    "diabetes": _build_diabetes,
    "digits": _build_digits,
}


def ensure_demo_repository(
    data_dir: Path, progress: Callable[[str], None] = lambda _msg: None
) -> Path:
    """Build any missing demo model into ``data_dir/demo`` and return that repository path."""
    try:
        from skops import io as skops_io
    except ImportError as exc:
        raise MissingExtra("sklearn", "skops") from exc
    root = data_dir / "demo"
    for name in DEMO_MODELS:
        artifact = root / name / "1" / "model.skops"
        config = root / name / "model.yaml"
        if artifact.exists() and config.exists():
            continue
        progress(f"building demo model '{name}' from scikit-learn's bundled dataset")
        model, meta = _BUILDERS[name]()
        artifact.parent.mkdir(parents=True, exist_ok=True)
        tmp = artifact.with_suffix(".tmp")
        skops_io.dump(model, tmp)
        tmp.replace(artifact)
        config.write_text(yaml.safe_dump(meta, sort_keys=False))
    return root
