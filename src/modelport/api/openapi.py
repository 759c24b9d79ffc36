"""The OpenAPI document: the real body shapes, with examples built from the served models."""

from __future__ import annotations

from typing import Any

from modelport._version import __version__
from modelport.core.registry import Registry, VersionState
from modelport.core.signature import Signature, Task

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string", "examples": ["invalid_input"]},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }
    },
    "example": {
        "error": {
            "code": "invalid_input",
            "request_id": "3f2a9c1e-1f",
            "message": "input 'input': expected shape [N, 4], received [1, 3]",
        }
    },
}

_PREDICT_REQUEST = {
    "description": "One of three forms: rows, columns (one list per feature) or records.",
    "oneOf": [
        {
            "title": "rows",
            "type": "object",
            "required": ["inputs"],
            "properties": {"inputs": {"type": "array", "items": {"type": "array", "items": {}}}},
        },
        {
            "title": "columns or named inputs",
            "type": "object",
            "required": ["inputs"],
            "properties": {"inputs": {"type": "object", "additionalProperties": {"type": "array"}}},
        },
        {
            "title": "records",
            "type": "object",
            "required": ["instances"],
            "properties": {"instances": {"type": "array", "items": {"type": "object"}}},
        },
    ],
}

_PREDICT_RESPONSE = {
    "type": "object",
    "required": ["model", "version", "request_id", "outputs"],
    "properties": {
        "model": {"type": "string"},
        "version": {"type": "string"},
        "request_id": {"type": "string"},
        "outputs": {
            "type": "array",
            "description": "One entry per input row. Classifier: {label, probabilities}; "
            "regressor: {prediction}; other models: {output_name: value}.",
            "items": {"type": "object"},
        },
    },
}

_V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}},
    },
}


def _examples(signature: Signature, model: str) -> dict[str, Any]:
    spec = signature.single_input
    if spec is None or len(spec.shape) != 2 or spec.shape[1] <= 0:
        return {}
    width = spec.shape[1]
    row = [round(0.1 * (i + 1), 2) for i in range(width)]
    if model == "iris":
        row = [5.1, 3.5, 1.4, 0.2]
    out: dict[str, Any] = {
        f"{model}-rows": {"summary": f"{model}: rows", "value": {"inputs": [row]}},
    }
    if spec.names:
        out[f"{model}-records"] = {
            "summary": f"{model}: records",
            "value": {"instances": [dict(zip(spec.names, row, strict=True))]},
        }
        out[f"{model}-columns"] = {
            "summary": f"{model}: columns",
            "value": {"inputs": {n: [v] for n, v in zip(spec.names, row, strict=True)}},
        }
    return out


def _response_example(signature: Signature, model: str) -> dict[str, Any] | None:
    if signature.task is Task.CLASSIFICATION and signature.labels:
        n = len(signature.labels)
        probs = {label: round(1 / n, 3) for label in signature.labels}
        entry: dict[str, Any] = {"label": signature.labels[0], "probabilities": probs}
    elif signature.task is Task.REGRESSION:
        entry = {"prediction": 152.13}
    else:
        return None
    return {"model": model, "version": "1", "request_id": "3f2a9c1e-1f", "outputs": [entry]}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "Malformed JSON",
        404: "Unknown model or version",
        413: "Body too large",
        415: "Unsupported content type",
        422: "Input does not match the signature",
        500: "The model raised",
        503: "Overloaded or not ready",
        504: "Deadline passed",
    }
    return {
        str(c): {
            "description": words[c],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for c in codes
    }


def build_openapi(registry: Registry) -> dict[str, Any]:
    req_examples: dict[str, Any] = {}
    resp_examples: dict[str, Any] = {}
    for name in registry.names():
        for version in registry.get(name).versions.values():
            if version.state is VersionState.READY and version.signature is not None:
                req_examples.update(_examples(version.signature, name))
                example = _response_example(version.signature, name)
                if example is not None:
                    resp_examples[name] = {"summary": name, "value": example}
                break
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": f"model name; served: {', '.join(registry.names())}",
    }
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "version number or alias",
    }
    timeout_header = {
        "name": "X-Request-Timeout",
        "in": "header",
        "required": False,
        "schema": {"type": "number"},
        "description": "deadline in seconds",
    }
    predict_op = {
        "summary": "Predict",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictRequest"},
                    **({"examples": req_examples} if req_examples else {}),
                }
            },
        },
        "responses": {
            "200": {
                "description": "One output per input row",
                "headers": {"X-Model-Version": {"schema": {"type": "string"}}},
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/PredictResponse"},
                        **({"examples": resp_examples} if resp_examples else {}),
                    }
                },
            },
            **_errors(400, 404, 413, 415, 422, 500, 503, 504),
        },
    }
    v2_infer = {
        "summary": "Open Inference Protocol infer (JSON; binary tensor extension supported)",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "properties": {
                            "id": {"type": "string"},
                            "inputs": {
                                "type": "array",
                                "items": {"$ref": "#/components/schemas/V2Tensor"},
                            },
                            "outputs": {"type": "array", "items": {"type": "object"}},
                            "parameters": {"type": "object"},
                        },
                    },
                    "example": {
                        "inputs": [
                            {
                                "name": "input",
                                "shape": [1, 4],
                                "datatype": "FP64",
                                "data": [5.1, 3.5, 1.4, 0.2],
                            }
                        ]
                    },
                }
            },
        },
        "responses": {
            "200": {
                "description": "Output tensors",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "model_name": {"type": "string"},
                                "model_version": {"type": "string"},
                                "id": {"type": "string"},
                                "outputs": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/V2Tensor"},
                                },
                            },
                        }
                    }
                },
            },
            "400": {"description": 'V2 error {"error": message}'},
            "404": {"description": 'V2 error {"error": message}'},
        },
    }
    get_json = {
        "200": {
            "description": "OK",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelport",
            "version": __version__,
            "description": "Model inference API: native v1 JSON and the Open Inference "
            "Protocol (KServe V2).",
        },
        "paths": {
            "/v1/models": {"get": {"summary": "List models", "responses": get_json}},
            "/v1/models/{name}": {
                "get": {
                    "summary": "Describe a model: versions, signature, state, batch statistics",
                    "parameters": [name_param],
                    "responses": {**get_json, **_errors(404)},
                }
            },
            "/v1/models/{name}/predict": {
                "post": {**predict_op, "parameters": [name_param, timeout_header]}
            },
            "/v1/models/{name}/versions/{version}/predict": {
                "post": {
                    **predict_op,
                    "summary": "Predict with a pinned version or alias",
                    "parameters": [name_param, version_param, timeout_header],
                }
            },
            "/v2/models/{name}/infer": {"post": {**v2_infer, "parameters": [name_param]}},
            "/v2/models/{name}/versions/{version}/infer": {
                "post": {**v2_infer, "parameters": [name_param, version_param]}
            },
            "/v2/models/{name}": {
                "get": {
                    "summary": "V2 model metadata",
                    "parameters": [name_param],
                    "responses": get_json,
                }
            },
            "/v2/health/live": {"get": {"summary": "V2 liveness", "responses": get_json}},
            "/v2/health/ready": {"get": {"summary": "V2 readiness", "responses": get_json}},
            "/healthz": {"get": {"summary": "Alive", "responses": get_json}},
            "/readyz": {
                "get": {
                    "summary": "200 when every configured model is loaded, else 503",
                    "responses": get_json,
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "PredictRequest": _PREDICT_REQUEST,
                "PredictResponse": _PREDICT_RESPONSE,
                "V2Tensor": _V2_TENSOR,
            }
        },
    }
