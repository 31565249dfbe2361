"""Run by MLflow's venv: save stock tree models and a preprocessing pipeline with ``mlflow.sklearn``
(skops, MLflow 3.18's default), and load models saved by modelfmt, reporting MLflow's predictions.

Usage:
    python trust_models.py save OUT_DIR      # OUT_DIR/<name>/ (MLflow models), <name>.parquet (input)
    python trust_models.py load SPEC.json    # SPEC: {"models": {name: {"path", "input"}}}

Both write ``<OUT_DIR or SPEC's folder>/mlflow_results.json``: per model, MLflow's predictions on its
input, or ``"error": "ExcType: message"``.
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
import skops.io  # noqa: E402


def frames():
    """Numeric features, and a frame with a string column and missing values in both kinds."""
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(120, 4)), columns=["a", "b", "c", "d"])
    y = (X["a"] + X["b"] > 0).astype(int)
    yr = X["a"] * 2 + X["c"]
    mixed = pd.DataFrame({
        "city": pd.Series(rng.choice(["paris", "rome", "oslo"], 120), dtype=object),
        "size": rng.normal(size=120),
        "age": rng.integers(18, 80, 120).astype(float),
    })
    mixed.loc[[3, 17], "city"] = None
    mixed.loc[[5, 40], "size"] = np.nan
    y_mixed = ((mixed["city"] == "rome") | (mixed["size"] > 0.5)).astype(int)
    return X, y, yr, mixed, y_mixed


def models():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y, yr, mixed, y_mixed = frames()
    prep = ColumnTransformer([
        ("cat", Pipeline([("imp", SimpleImputer(strategy="constant", fill_value="missing")),
                          ("oh", OneHotEncoder(handle_unknown="ignore"))]), ["city"]),
        ("num", Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]), ["size", "age"]),
    ])
    return {
        "rf": (RandomForestClassifier(n_estimators=8, random_state=0).fit(X, y), X.head(20)),
        "hgb": (HistGradientBoostingRegressor(max_iter=15, random_state=0).fit(X, yr), X.head(20)),
        "pipe": (Pipeline([("prep", prep), ("clf", LogisticRegression())]).fit(mixed, y_mixed), mixed.head(20)),
    }


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _predict(path: str, data: pd.DataFrame) -> dict:
    try:
        preds = mlflow.pyfunc.load_model(path).predict(data)
        return {"predictions": np.asarray(preds).tolist()}
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"error": _error(e)}


def save(out_dir: str) -> None:
    results = {}
    for name, (model, data) in models().items():
        path = os.path.join(out_dir, name)
        # MLflow refuses to save what skops would refuse to load; it needs the list, and writes it to MLmodel.
        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        mlflow.sklearn.save_model(model, path, serialization_format="skops", skops_trusted_types=untrusted)
        file = os.path.join(out_dir, f"{name}.parquet")
        data.to_parquet(file)
        # Scored as read back (None in a string column reads as NaN), as the test scores it.
        results[name] = {"untrusted": untrusted, **_predict(path, pd.read_parquet(file))}
    with open(os.path.join(out_dir, "mlflow_results.json"), "w") as f:
        json.dump(results, f)


def load(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    results = {name: _predict(m["path"], pd.read_parquet(m["input"])) for name, m in spec["models"].items()}
    with open(os.path.join(os.path.dirname(spec_path), "mlflow_results.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    {"save": save, "load": load}[sys.argv[1]](sys.argv[2])
