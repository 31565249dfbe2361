"""Run by MLflow's venv (no modelfmt): log and register sklearn models on a running MLflow tracking server.

Usage: MLFLOW_TRACKING_URI=http://127.0.0.1:PORT python registry_models.py OUT_JSON

Registers two versions of model ``diabetes_ridge`` (a Ridge, alpha=0.1 then alpha=10), sets alias
``champion`` on version 1, moves version 2 to stage Production, and writes OUT_JSON: the run ids, the
model names, the input example (split orient) and MLflow's own predictions of each version loaded back
through ``models:/`` (``mlflow.pyfunc.load_model``), for modelfmt to match.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import mlflow.sklearn  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402

OUT = sys.argv[1]
NAME = "diabetes_ridge"
REQS = ["scikit-learn", "numpy", "pandas"]

X, y = load_diabetes(return_X_y=True, as_frame=True)
example = X.iloc[[0, 60, 120]]
mlflow.set_experiment("modelfmt-registry")
client = MlflowClient()
runs = []
for alpha in (0.1, 10.0):
    with mlflow.start_run() as run:
        model = Ridge(alpha=alpha).fit(X, y)
        mlflow.sklearn.log_model(model, name="model", input_example=example, pip_requirements=REQS,
                                 registered_model_name=NAME)
        runs.append(run.info.run_id)

client.set_registered_model_alias(NAME, "champion", "1")
client.transition_model_version_stage(NAME, "2", "Production")

predictions = {}
for uri in (f"models:/{NAME}/1", f"models:/{NAME}/2"):
    predictions[uri] = mlflow.pyfunc.load_model(uri).predict(example).tolist()
out = {
    "name": NAME, "runs": runs,
    "example": json.loads(example.to_json(orient="split", index=False)),
    "predictions": predictions,
    "download_uris": {v: client.get_model_version_download_uri(NAME, v) for v in ("1", "2")},
    "sources": {v: client.get_model_version(NAME, v).source for v in ("1", "2")},
}
with open(OUT, "w") as f:
    json.dump(out, f)
