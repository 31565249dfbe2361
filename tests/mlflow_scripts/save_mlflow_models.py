"""Run by MLflow's venv (no modelfmt): save one model of each kind modelfmt must read, with MLflow 3.x.

Usage: python save_mlflow_models.py OUT_DIR

Writes OUT_DIR/<name>/ model directories and OUT_DIR/expected.json: for each model, MLflow's own
predictions on the model's input example (loaded back by MLflow), for modelfmt to match.
"""

from __future__ import annotations

import json
import operator
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

t0 = time.time()
import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import mlflow.sklearn  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from sklearn.datasets import load_diabetes  # noqa: E402
from sklearn.linear_model import ElasticNet, LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402

OUT = sys.argv[1]
# Fixed requirements skip MLflow's requirement inference, which imports each model in a subprocess.
REQS = ["scikit-learn", "numpy", "pandas", "cloudpickle"]


# -- PythonModels as users write them (defined in __main__, so cloudpickle stores them by value) ----
class WithContext(mlflow.pyfunc.PythonModel):
    """predict(self, context, model_input, params=None) with a file and a directory artifact."""

    def load_context(self, context):
        with open(context.artifacts["coef"]) as f:
            self.coef = json.load(f)["coef"]
        with open(os.path.join(context.artifacts["extra"], "offset.txt")) as f:
            self.offset = float(f.read())

    def predict(self, context, model_input, params=None):
        return model_input["x"].to_numpy() * self.coef + self.offset


class NoContext(mlflow.pyfunc.PythonModel):
    """MLflow 3's predict(self, model_input, params=None), without context."""

    def predict(self, model_input, params=None):
        return np.asarray(model_input).sum(axis=1)


class SumAB(mlflow.pyfunc.PythonModel):
    """Reads columns a and b; the example's all-null column gets MLflow's 'any' type."""

    def predict(self, model_input, params=None):
        return (model_input["a"] + model_input["b"]).to_numpy()


class TypeHinted(mlflow.pyfunc.PythonModel):
    """A list[str] hint: MLflow wraps predict with helpers from mlflow.pyfunc.utils.data_validation."""

    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() + "!" for s in model_input]


class WithParams(mlflow.pyfunc.PythonModel):
    """Uses inference params checked against a params schema."""

    def predict(self, context, model_input, params=None):
        params = params or {}
        return (model_input["x"] * params.get("scale", 1.0) + params.get("shift", 0)).to_numpy()


class HoldsMlflowObject(mlflow.pyfunc.PythonModel):
    """Holds an instance of an MLflow class that modelfmt has no stand-in for."""

    def __init__(self):
        from mlflow.types import ColSpec, Schema

        self.schema = Schema([ColSpec("double", "x")])

    def predict(self, context, model_input, params=None):
        return model_input


def shout(model_input: list[str]) -> list[str]:
    return [s.upper() + "?" for s in model_input]


def _pins():
    import cloudpickle
    import skops
    import sklearn

    return [f"mlflow=={mlflow.__version__}", f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}",
            f"numpy=={np.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def _expected(path, params=None):
    model = mlflow.pyfunc.load_model(path)
    example = mlflow.models.Model.load(path).load_input_example(path)
    pred = model.predict(example, params=params) if params else model.predict(example)
    return np.asarray(pred).tolist()


def save_all():
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X, y = X.iloc[:200], y.iloc[:200]
    saved = {}

    enet = ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y)
    # Default format (skops); pins like MLflow's own, mlflow included.
    mlflow.sklearn.save_model(enet, f"{OUT}/sk_skops", input_example=X.head(3), pip_requirements=_pins())
    saved["sk_skops"] = {}
    # A skops model with a type outside skops' default trusted set, trusted by its MLmodel.
    pipe = make_pipeline(FunctionTransformer(operator.neg), Ridge()).fit(X, y)
    mlflow.sklearn.save_model(pipe, f"{OUT}/sk_skops_untrusted", input_example=X.head(2), pip_requirements=REQS,
                              skops_trusted_types=["_operator.neg"])
    saved["sk_skops_untrusted"] = {}
    logreg = LogisticRegression(max_iter=500).fit(X, y > y.median())
    mlflow.sklearn.save_model(
        logreg, f"{OUT}/sk_cloudpickle", serialization_format="cloudpickle",
        input_example=X.head(4), pyfunc_predict_fn="predict_proba", pip_requirements=REQS,
    )
    saved["sk_cloudpickle"] = {}

    art = f"{OUT}/_artifacts"
    os.makedirs(f"{art}/extra_dir", exist_ok=True)
    with open(f"{art}/coef.json", "w") as f:
        json.dump({"coef": 3.0}, f)
    with open(f"{art}/extra_dir/offset.txt", "w") as f:
        f.write("0.5")
    xdf = pd.DataFrame({"x": [1.0, 2.0, 4.0]})
    mlflow.pyfunc.save_model(
        f"{OUT}/pf_context", python_model=WithContext(), input_example=xdf, pip_requirements=REQS,
        artifacts={"coef": f"{art}/coef.json", "extra": f"{art}/extra_dir"},
    )
    saved["pf_context"] = {}
    mlflow.pyfunc.save_model(
        f"{OUT}/pf_nocontext", python_model=NoContext(), pip_requirements=REQS,
        input_example=pd.DataFrame({"a": [1.0, 2.0], "b": [10.0, 20.0]}),
    )
    saved["pf_nocontext"] = {}
    mlflow.pyfunc.save_model(
        f"{OUT}/pf_ndarray", python_model=NoContext(), pip_requirements=REQS,
        input_example=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
    )
    saved["pf_ndarray"] = {}
    mlflow.pyfunc.save_model(
        f"{OUT}/pf_typehint", python_model=TypeHinted(), input_example=["ab", "cd"], pip_requirements=REQS
    )
    saved["pf_typehint"] = {}
    sig = infer_signature(xdf, xdf["x"].to_numpy(), params={"scale": 2.0, "shift": 0})
    mlflow.pyfunc.save_model(
        f"{OUT}/pf_params", python_model=WithParams(), signature=sig,
        input_example=(xdf, {"scale": 3.0}), pip_requirements=REQS,
    )
    saved["pf_params"] = {"scale": 3.0}

    # A model class from a module shipped with code_paths: the pickle names the module.
    sys.path.insert(0, f"{art}/src")
    os.makedirs(f"{art}/src", exist_ok=True)
    with open(f"{art}/src/mf_shipped_code.py", "w") as f:
        f.write(
            "import mlflow.pyfunc\n\n"
            "class Shipped(mlflow.pyfunc.PythonModel):\n"
            "    def predict(self, context, model_input, params=None):\n"
            "        return (model_input['x'] * 10).to_numpy()\n"
        )
    from mf_shipped_code import Shipped

    mlflow.pyfunc.save_model(
        f"{OUT}/pf_code_paths", python_model=Shipped(), input_example=xdf, pip_requirements=REQS,
        code_paths=[f"{art}/src/mf_shipped_code.py"],
    )
    saved["pf_code_paths"] = {}
    # A plain function as python_model (MLflow wraps it in _FunctionPythonModel), type-hinted.
    mlflow.pyfunc.save_model(f"{OUT}/pf_function", python_model=shout, input_example=["x", "yz"], pip_requirements=REQS)
    saved["pf_function"] = {}
    # python_model.pkl compressed, as MLFLOW_LOG_MODEL_COMPRESSION asks.
    os.environ["MLFLOW_LOG_MODEL_COMPRESSION"] = "lzma"
    mlflow.pyfunc.save_model(f"{OUT}/pf_compressed", python_model=NoContext(), pip_requirements=REQS,
                             input_example=pd.DataFrame({"a": [1.0, 2.0], "b": [10.0, 20.0]}))
    del os.environ["MLFLOW_LOG_MODEL_COMPRESSION"]
    saved["pf_compressed"] = {}
    mlflow.pyfunc.save_model(f"{OUT}/pf_any_column", python_model=SumAB(), pip_requirements=REQS,
                             input_example=pd.DataFrame({"a": [1.0, 2.0], "b": [10.0, 20.0], "note": [None, None]}))
    saved["pf_any_column"] = {}
    mlflow.pyfunc.save_model(f"{OUT}/pf_unmappable", python_model=HoldsMlflowObject(), pip_requirements=REQS)

    expected = {name: _expected(f"{OUT}/{name}", params) for name, params in saved.items()}
    expected["_seconds"] = time.time() - t0
    expected["_mlflow_version"] = mlflow.__version__
    with open(f"{OUT}/expected.json", "w") as f:
        json.dump(expected, f)


if __name__ == "__main__":
    save_all()
