"""Run by MLflow's venv (no modelfmt): save type-hinted PythonModels with MLflow 3.x and score them.

Usage: python save_type_hint_models.py OUT_DIR

Saves OUT_DIR/<name>/ for each model in MODELS (each hint with and without an input example), then
writes OUT_DIR/expected.json: per model, the signature MLflow wrote, and MLflow's answer to each case
in CASES: ``predict`` cases call ``mlflow.pyfunc.load_model(path).predict`` on a value (or on a
DataFrame built from it); ``serve`` cases parse a JSON body as ``mlflow models serve`` does and predict
in MLflow's serving mode (``_validate_serving_input``); ``example`` is the model's own
``serving_input_example.json``. Each answer is ``{"value": ...}`` or ``{"error": "ExcType: message"}``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import warnings
from typing import Any, Optional, Union

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pydantic  # noqa: E402
from mlflow.models.utils import _validate_serving_input  # noqa: E402
from mlflow.types.type_hints import TypeFromExample  # noqa: E402

OUT = sys.argv[1]
REQS = ["numpy", "pandas", "cloudpickle", "pydantic"]


def _show(value):
    """A value and its Python type, so that a test sees what reached the model, not only its text."""
    if isinstance(value, dict):
        return {k: _show(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_show(v) for v in value]
    return f"{type(value).__name__}:{value}"


# -- models as users write them (defined in __main__, so cloudpickle stores them by value) ----------
class Item(pydantic.BaseModel):
    name: str
    qty: int
    tags: list[str] = []
    price: Optional[float] = None  # noqa: UP045 - as users write optional pydantic fields


class ListStr(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[str], params=None) -> list[str]:
        return [s.upper() + "!" for s in model_input]


class ListDictStr(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[dict[str, str]], params=None) -> list[str]:
        return [json.dumps(_show(d), sort_keys=True) for d in model_input]


class ListDictAny(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[dict[str, Any]], params=None) -> list[str]:
        return [json.dumps(_show(d), sort_keys=True) for d in model_input]


class ListListFloat(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[list[float]], params=None) -> list[float]:
        return [float(sum(row)) + len(row) / 10 for row in model_input]


class DictStrInt(mlflow.pyfunc.PythonModel):
    """Not a list hint: MLflow saves it without validating data against the hint."""

    def predict(self, model_input: dict[str, int], params=None) -> list[str]:
        if isinstance(model_input, pd.DataFrame):
            return [f"frame:{list(model_input.columns)}:{model_input.to_numpy().tolist()}"]
        return [json.dumps(_show(model_input), sort_keys=True)]


class ListItem(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[Item], params=None) -> list[str]:
        return [
            f"{type(i).__name__}:{i.name}x{i.qty}:{','.join(i.tags)}:{i.price}" for i in model_input
        ]


class ListInt(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[int], params=None) -> list[str]:
        return [f"{type(n).__name__}:{n * 2}" for n in model_input]


class ListUnion(mlflow.pyfunc.PythonModel):
    """A union of several types is "any": MLflow checks nothing inside it."""

    def predict(self, model_input: list[Union[int, str]], params=None) -> list[str]:  # noqa: UP007
        return [f"{type(v).__name__}:{v}" for v in model_input]


class ListDatetime(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[datetime.datetime], params=None) -> list[str]:
        return [f"{type(t).__name__}:{t.isoformat()}" for t in model_input]


class ListBytes(mlflow.pyfunc.PythonModel):
    def predict(self, model_input: list[bytes], params=None) -> list[str]:
        return [f"{type(b).__name__}:{b.hex()}" for b in model_input]


class FromExample(mlflow.pyfunc.PythonModel):
    """``TypeFromExample``: the input takes the input example's type (here a list)."""

    def predict(self, model_input: TypeFromExample, params=None) -> list[str]:
        return [f"{type(model_input).__name__}:{_show(model_input)}"]


def list_dict_str_function(model_input: list[dict[str, str]]) -> list[str]:
    return [",".join(f"{k}={v}" for k, v in sorted(d.items())) for d in model_input]


# name -> (python_model, input example or None)
MODELS = {
    "list_str": (ListStr(), ["ab", "cd"]),
    "list_dict_str": (ListDictStr(), [{"a": "x", "b": "y"}, {"a": "z", "b": "w"}]),
    "list_dict_any": (ListDictAny(), [{"a": 1, "b": "s"}, {"a": 2.5, "b": "t"}]),
    "list_list_float": (ListListFloat(), [[1.0, 2.0], [3.0, 4.5, 6.0]]),
    "dict_str_int": (DictStrInt(), {"a": 1, "b": 2}),
    "list_item": (ListItem(), [{"name": "pen", "qty": 2, "tags": ["office"]}, {"name": "ink", "qty": 1}]),
    "function_list_dict_str": (list_dict_str_function, [{"k": "v"}]),
    "list_int": (ListInt(), [1, 2]),
    "list_union": (ListUnion(), [1, "a"]),
    "list_datetime": (ListDatetime(), [datetime.datetime(2024, 1, 2, 3, 4, 5)]),
    "list_bytes": (ListBytes(), [b"ab", b"\x00\xff"]),
    "from_example": (FromExample(), ["p", "q"]),
}

# name -> cases: {"id", "kind": "predict"|"serve", ...}; "as": "frame" builds pd.DataFrame(value).
CASES = {
    "list_str": [
        {"id": "list", "kind": "predict", "value": ["x", "yz"]},
        {"id": "frame", "kind": "predict", "value": {"s": ["a", "b"]}, "as": "frame"},
        {"id": "not_str", "kind": "predict", "value": [1, 2]},
        {"id": "inputs", "kind": "serve", "body": {"inputs": ["q", "rs"]}},
        {"id": "split", "kind": "serve", "body": {"dataframe_split": {"columns": ["s"], "data": [["m"], ["n"]]}}},
        {"id": "records", "kind": "serve", "body": {"dataframe_records": [{"s": "m"}]}},
        {"id": "bad_inputs", "kind": "serve", "body": {"inputs": [1, 2]}},
    ],
    "list_dict_str": [
        {"id": "list", "kind": "predict", "value": [{"a": "p", "b": "q"}]},
        {"id": "frame", "kind": "predict", "value": [{"a": "p", "b": "q"}, {"a": "r", "b": "s"}], "as": "frame"},
        {"id": "not_str", "kind": "predict", "value": [{"a": 1}]},
        {"id": "inputs", "kind": "serve", "body": {"inputs": [{"a": "p"}, {"b": "q", "c": "r"}]}},
        {"id": "records", "kind": "serve", "body": {"dataframe_records": [{"a": "p", "b": "q"}]}},
        {"id": "bad_inputs", "kind": "serve", "body": {"inputs": [{"a": 5}]}},
    ],
    "list_dict_any": [
        {"id": "list", "kind": "predict", "value": [{"a": 1, "b": [1, 2], "c": None}]},
        {"id": "frame", "kind": "predict", "value": [{"a": 1, "b": "x"}, {"a": 3, "b": "y"}], "as": "frame"},
        {"id": "inputs", "kind": "serve", "body": {"inputs": [{"a": 1, "b": {"c": True}}, {"z": "s"}]}},
        {"id": "records", "kind": "serve", "body": {"dataframe_records": [{"a": 1.5, "b": "x"}]}},
    ],
    "list_list_float": [
        {"id": "list", "kind": "predict", "value": [[1.5, 2.0], [0.5]]},
        {"id": "ints", "kind": "predict", "value": [[1, 2]]},
        {"id": "inputs", "kind": "serve", "body": {"inputs": [[1.5, 2.0], [7.0]]}},
        {"id": "inputs_ints", "kind": "serve", "body": {"inputs": [[1, 2], [3]]}},
        {"id": "bad_inputs", "kind": "serve", "body": {"inputs": [["a"]]}},
    ],
    "dict_str_int": [
        {"id": "dict", "kind": "predict", "value": {"a": 5, "b": 6}},
        {"id": "inputs", "kind": "serve", "body": {"inputs": {"a": 3, "b": 4}}},
    ],
    "list_item": [
        {"id": "list", "kind": "predict", "value": [{"name": "cup", "qty": 3, "price": 2.5}]},
        {"id": "frame", "kind": "predict", "value": [{"name": "cup", "qty": 3}], "as": "frame"},
        {"id": "missing_field", "kind": "predict", "value": [{"name": "cup"}]},
        {"id": "wrong_type", "kind": "predict", "value": [{"name": "cup", "qty": "3"}]},
        {"id": "inputs", "kind": "serve", "body": {"inputs": [{"name": "cup", "qty": 3, "tags": ["a", "b"]}]}},
        {"id": "records", "kind": "serve", "body": {"dataframe_records": [{"name": "cup", "qty": 3}]}},
        {"id": "bad_inputs", "kind": "serve", "body": {"inputs": [{"name": "cup", "qty": "many"}]}},
    ],
    "function_list_dict_str": [
        {"id": "list", "kind": "predict", "value": [{"x": "1", "y": "2"}]},
        {"id": "inputs", "kind": "serve", "body": {"inputs": [{"x": "1"}]}},
    ],
    "list_int": [
        {"id": "list", "kind": "predict", "value": [1, 2]},
        {"id": "bools", "kind": "predict", "value": [True]},
        {"id": "floats", "kind": "predict", "value": [1.5]},
        {"id": "frame", "kind": "predict", "value": {"n": [3, 4]}, "as": "frame"},
        {"id": "inputs", "kind": "serve", "body": {"inputs": [5, 6]}},
        {"id": "bad_inputs", "kind": "serve", "body": {"inputs": ["5"]}},
    ],
    "list_union": [
        {"id": "list", "kind": "predict", "value": [1, "a", 2.5, None]},
        {"id": "inputs", "kind": "serve", "body": {"inputs": [1, "b", [1]]}},
    ],
    "list_datetime": [
        {"id": "text", "kind": "predict", "value": ["2024-01-02T03:04:05"]},
        {"id": "inputs", "kind": "serve", "body": {"inputs": ["2024-01-02T03:04:05", "2025-06-07"]}},
        {"id": "bad_inputs", "kind": "serve", "body": {"inputs": ["yesterday"]}},
    ],
    "list_bytes": [
        {"id": "inputs", "kind": "serve", "body": {"inputs": ["aGVsbG8=", "AP8="]}},
    ],
    "from_example": [
        {"id": "list", "kind": "predict", "value": ["a", "b"]},
        {"id": "frame", "kind": "predict", "value": {"s": ["a", "b"]}, "as": "frame"},
        {"id": "inputs", "kind": "serve", "body": {"inputs": ["x", "y"]}},
        {"id": "split", "kind": "serve", "body": {"dataframe_split": {"columns": [0], "data": [["x"], ["y"]]}}},
    ],
}


def _plain(value):
    if isinstance(value, pd.DataFrame):
        return value.to_numpy().tolist()
    if isinstance(value, (pd.Series, np.ndarray)):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _answer(call):
    try:
        return {"value": _plain(call())}
    except Exception as e:  # noqa: BLE001 - recorded for the test to compare with ours
        return {"error": f"{type(e).__name__}: {e}"}


def _score(path: str, case: dict) -> dict:
    if case["kind"] == "serve":
        return _answer(lambda: _validate_serving_input(path, json.dumps(case["body"])))
    value = pd.DataFrame(case["value"]) if case.get("as") == "frame" else case["value"]
    return _answer(lambda: mlflow.pyfunc.load_model(path).predict(value))


def save_all() -> None:
    expected: dict = {"_mlflow_version": mlflow.__version__}
    for name, (python_model, example) in MODELS.items():
        for suffix, input_example in (("_ex", example), ("_noex", None)):
            path = f"{OUT}/{name}{suffix}"
            try:
                mlflow.pyfunc.save_model(path, python_model=python_model, input_example=input_example,
                                         pip_requirements=REQS)
            except Exception as e:  # noqa: BLE001 - a hint MLflow refuses is recorded, not fatal
                expected[name + suffix] = {"save_error": f"{type(e).__name__}: {e}"}
                continue
            report: dict = {"cases": {c["id"]: _score(path, c) for c in CASES[name]}}
            serving = os.path.join(path, "serving_input_example.json")
            if os.path.isfile(serving):
                with open(serving) as f:
                    report["cases"]["example"] = _answer(lambda f=f, path=path: _validate_serving_input(path, f.read()))
            meta = mlflow.models.Model.load(path)
            report["signature"] = meta.signature.to_dict() if meta.signature else None
            expected[name + suffix] = report
    with open(f"{OUT}/cases.json", "w") as f:
        json.dump(CASES, f)
    with open(f"{OUT}/expected.json", "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    save_all()
