"""Models the server tests save and serve (pickled by value, so the server needs no test code).

No tests here: this module only defines the models and their save helpers.
"""

from __future__ import annotations

import time

import cloudpickle
import numpy as np
import pandas as pd

from modelfmt.flavors import pyfunc
from modelfmt.signature import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema, TensorSpec


class ChaosModel(pyfunc.PythonModel):
    """Column ``x`` (double). x < 0 raises, 100 <= x < 200 sleeps x - 100 seconds, x == 999 returns an
    object no JSON can hold; the ``shape`` param picks the output's shape, ``scale`` multiplies."""

    def predict(self, context, model_input, params=None):
        params = params or {}
        x = model_input["x"].to_numpy()
        if (x < 0).any():
            raise ValueError("x must not be negative")
        if (x == 999).any():
            return object()
        slow = x[(x >= 100) & (x < 200)]
        if slow.size:
            time.sleep(float(slow.max() - 100))
        y = x * params.get("scale", 1.0)
        shape = params.get("shape", "list")
        if shape == "frame":
            return pd.DataFrame({"y": y, "label": ["big" if v > 1 else "small" for v in y]})
        if shape == "series":
            return pd.Series(y, name="y")
        if shape == "dict":
            return {"y": y, "n": np.array([len(y)])}
        if shape == "matrix":
            return np.stack([x, y], axis=1)
        return y


class TensorModel(pyfunc.PythonModel):
    """A (-1, 3) float32 tensor in, the row sums out (float32)."""

    def predict(self, context, model_input, params=None):
        assert model_input.dtype == np.float32, model_input.dtype
        return model_input.sum(axis=1)


class RaisingModel(pyfunc.PythonModel):
    """Column ``kind`` (string). Every call reads the artifact ``weights`` (a number; a deleted file is
    an OSError); a row ``ok`` scores that number, any other row raises for real, as a model would:
    ValueError, TypeError, KeyError, IndexError, RuntimeError, ImportError (a library not installed),
    MemoryError (numpy cannot allocate), OSError (a missing file), ``ours`` (a TypeError raised inside
    modelfmt's own code)."""

    def predict(self, context, model_input, params=None):
        with open(context.artifacts["weights"]) as f:
            weight = float(f.read())
        for kind in model_input["kind"]:
            if kind == "ValueError":
                float("not a number")
            elif kind == "TypeError":
                len(5)
            elif kind == "KeyError":
                model_input["no such column"]
            elif kind == "IndexError":
                [][0]
            elif kind == "RuntimeError":
                raise RuntimeError("the model gave up")
            elif kind == "ImportError":
                import a_library_that_is_not_installed  # noqa: F401
            elif kind == "MemoryError":
                np.empty(2**50, dtype=np.uint8)  # 1 PiB: more than any address space
            elif kind == "OSError":
                open("/nonexistent/modelfmt/table.csv")
            elif kind == "ours":
                from modelfmt.jsonenc import dumps

                dumps(object())
        return np.full(len(model_input), weight)


cloudpickle.register_pickle_by_value(__import__(__name__))


def save_chaos(path: str) -> str:
    signature = ModelSignature(
        Schema([ColSpec("double", "x")]),
        None,
        ParamSchema([ParamSpec("shape", "string", "list"), ParamSpec("scale", "double", 1.0)]),
    )
    pyfunc.save_model(path, ChaosModel(), signature=signature, input_example=pd.DataFrame({"x": [0.0, 1.0]}))
    return path


def save_tensor(path: str) -> str:
    signature = ModelSignature(Schema([TensorSpec("float32", (-1, 3))]))
    pyfunc.save_model(path, TensorModel(), signature=signature, input_example=np.zeros((2, 3), dtype=np.float32))
    return path


def save_raising(path: str, weights_dir: str) -> str:
    """A :class:`RaisingModel` at ``path``; its artifact is ``<path>/artifacts/weights.txt`` (2.0)."""
    import os

    os.makedirs(weights_dir, exist_ok=True)
    weights = os.path.join(weights_dir, "weights.txt")
    with open(weights, "w") as f:
        f.write("2.0")
    signature = ModelSignature(Schema([ColSpec("string", "kind")]))
    pyfunc.save_model(
        path, RaisingModel(), artifacts={"weights": weights}, signature=signature,
        input_example=pd.DataFrame({"kind": ["ok"]}),
    )
    return path
