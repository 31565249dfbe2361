"""Run by MLflow's venv: load models saved by modelfmt with MLflow 3.x and report what MLflow sees.

Usage: python load_ours.py SPEC.json OUT.json

SPEC.json: ``{"models": [{"name": ..., "path": ..., "params": {...} or null, "input_split": ...}, ...]}``;
``input_split`` (``{"columns": [...], "data": [...]}``) is scored instead of the input example if given.
OUT.json: whether modelfmt is importable here, and per model: MLflow's predictions on the input
example it reads back, the example's kind, the input and params schemas as MLflow parses them, and
what ``mlflow.models.validate_serving_input`` answers for ``serving_input_example.json``. A failing
step is recorded as ``"<step>_error": "ExcType: message"`` so the test can show it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.models import Model, validate_serving_input  # noqa: E402


def _plain(value):
    """Predictions and examples as JSON values."""
    if isinstance(value, pd.DataFrame):
        return value.to_numpy().tolist()
    if isinstance(value, (pd.Series, np.ndarray)):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def inspect_model(path: str, params: dict | None, input_split: dict | None) -> dict:
    out: dict = {}
    meta = Model.load(path)
    example = None
    try:
        example = meta.load_input_example(path)
        out["example_kind"] = type(example).__name__
        out["example"] = _plain(example)
        if isinstance(example, pd.DataFrame):
            out["example_columns"] = [str(c) for c in example.columns]
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["example_error"] = _error(e)
    schema = meta.get_input_schema()
    out["input_schema"] = schema.to_dict() if schema is not None else None
    pschema = meta.get_params_schema()
    out["params_schema"] = pschema.to_dict() if pschema is not None else None
    try:
        model = mlflow.pyfunc.load_model(path)
        data = pd.DataFrame(input_split["data"], columns=input_split["columns"]) if input_split else example
        out["predictions"] = _plain(model.predict(data, params=params))
    except Exception as e:  # noqa: BLE001
        out["predict_error"] = _error(e)
    serving = os.path.join(path, "serving_input_example.json")
    if os.path.isfile(serving):
        try:
            with open(serving) as f:
                out["serving_predictions"] = _plain(validate_serving_input(path, f.read()))
        except Exception as e:  # noqa: BLE001
            out["serving_error"] = _error(e)
    return out


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    report = {
        "mlflow_version": mlflow.__version__,
        "modelfmt_importable": _importable("modelfmt"),
        "flavors_importable": _importable("modelfmt.flavors.pyfunc"),
        "models": {},
    }
    for m in spec["models"]:
        try:
            report["models"][m["name"]] = inspect_model(m["path"], m.get("params"), m.get("input_split"))
        except Exception as e:  # noqa: BLE001
            report["models"][m["name"]] = {"error": _error(e)}
    with open(sys.argv[2], "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
