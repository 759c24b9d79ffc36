"""(c) Tutorial-style FastAPI app: pydantic body, sync ``def`` endpoint, ``model.predict``.

The model file comes from ``argv[1]`` or the ``BENCH_MODEL`` environment variable; a
``.joblib`` file is a scikit-learn estimator, a ``.onnx`` file runs in onnxruntime.
Serve with one worker:  ``BENCH_MODEL=m1_iris.joblib uvicorn baselines.fastapi_app:app``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel


class Features(BaseModel):
    features: list[float]


def _model_path() -> str:
    path = os.environ.get("BENCH_MODEL") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not path:
        raise SystemExit("set BENCH_MODEL to a .joblib or .onnx model file")
    return path


MODEL_PATH = _model_path()
app = FastAPI(title="tutorial baseline")

if MODEL_PATH.endswith(".onnx"):
    import onnxruntime as ort

    session = ort.InferenceSession(MODEL_PATH)

    @app.post("/predict")
    def predict(body: Features) -> dict[str, Any]:
        x = np.array([body.features], dtype=np.float32)
        output = session.run(None, {"input": x})[0]
        return {"outputs": output[0].tolist()}

else:
    import joblib

    model = joblib.load(MODEL_PATH)

    @app.post("/predict")
    def predict(body: Features) -> dict[str, Any]:
        proba = model.predict_proba([body.features])[0]
        label = model.classes_[int(np.argmax(proba))]
        return {"label": str(label), "probabilities": proba.tolist()}


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
