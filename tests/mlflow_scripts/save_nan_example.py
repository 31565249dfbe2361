"""Run by MLflow's venv: save sklearn models whose input examples hold NaN, as MLflow 3 writes them.

Usage: python save_nan_example.py OUT_DIR

MLflow writes input_example.json with Python's json (allow_nan), so a missing float is the bare
literal ``NaN``, which strict JSON parsers refuse. Writes OUT_DIR/<name>/ for each model and
OUT_DIR/expected.json: MLflow's predictions on each model's own input example, as MLflow reads it back.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow.pyfunc  # noqa: E402
import mlflow.sklearn  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402


def main() -> None:
    out = sys.argv[1]
    X = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 1.5, 2.5, 0.0]})
    y = 2 * X["a"] - X["b"]
    model = make_pipeline(SimpleImputer(), LinearRegression()).fit(X, y)
    examples = {
        "sk_nan_frame": pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [np.nan, 1.0, 2.0]}),
        "sk_nan_ndarray": np.array([[1.0, np.nan], [np.nan, 2.0]]),
    }
    expected = {}
    for name, example in examples.items():
        path = os.path.join(out, name)
        # cloudpickle: the trust list for skops is another matter, kept out of this test's way.
        mlflow.sklearn.save_model(model if name == "sk_nan_frame" else _fit_array(X, y), path,
                                  input_example=example, serialization_format="cloudpickle")
        loaded = mlflow.pyfunc.load_model(path)
        preds = loaded.predict(mlflow.models.Model.load(path).load_input_example(path))
        expected[name] = np.asarray(preds).tolist()
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f)


def _fit_array(X: pd.DataFrame, y: pd.Series):
    return make_pipeline(SimpleImputer(), LinearRegression()).fit(X.to_numpy(), y.to_numpy())


if __name__ == "__main__":
    main()
