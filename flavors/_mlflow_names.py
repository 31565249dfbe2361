"""Load pickles that name MLflow classes, without MLflow: each known name maps to a stand-in here.

An MLflow ``PythonModel`` pickle refers to ``mlflow.pyfunc.model.PythonModel`` as its base class and,
since MLflow 3, to helpers that wrap ``predict`` with type-hint validation. Any other ``mlflow.*`` name
is refused with an error naming it rather than importing MLflow.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

from modelfmt.errors import PredictionError, UnsafeModelError


class MlflowException(PredictionError):
    """Stand-in for ``mlflow.exceptions.MlflowException`` raised by unpickled MLflow helpers."""

    def __init__(self, message: Any = "", error_code: Any = None, **kwargs: Any) -> None:
        super().__init__(str(message))


class FuncInfo:
    """Stand-in for MLflow's record of a ``predict`` type hint and its argument name."""

    def __init__(self, input_type_hint: Any = None, input_param_name: str = "model_input") -> None:
        self.input_type_hint = input_type_hint
        self.input_param_name = input_param_name


class _TypeHints:
    """Stand-in for ``mlflow.models.signature._TypeHints``."""

    def __init__(self, input_: Any = None, output: Any = None) -> None:
        self.input = input_
        self.output = output


def _convert_to_hint(data: Any, hint: Any) -> Any:
    """Turn the enforced input into what a ``predict`` type hint asks for (a subset of MLflow's rules)."""
    import typing

    import numpy as np
    import pandas as pd

    origin = typing.get_origin(hint)
    if hint is pd.DataFrame and not isinstance(data, pd.DataFrame):
        return pd.DataFrame(data)
    if origin is list or hint is list:
        if isinstance(data, pd.DataFrame):
            if len(data.columns) == 1:
                return data.iloc[:, 0].tolist()
            return data.to_dict(orient="records")
        if isinstance(data, (pd.Series, np.ndarray)):
            return data.tolist()
    return data


def _validate_model_input(args: tuple, kwargs: dict, index: int, type_hint: Any, param_name: str) -> tuple:
    """Stand-in for MLflow's wrapper helper: converts the model input to the hinted type."""
    if param_name in kwargs:
        kwargs[param_name] = _convert_to_hint(kwargs[param_name], type_hint)
    elif len(args) > index:
        args = args[:index] + (_convert_to_hint(args[index], type_hint),) + args[index + 1 :]
    return args, kwargs


def _stand_ins() -> dict[tuple[str, str], Any]:
    from flavors import pyfunc

    return {
        ("mlflow.pyfunc.model", "PythonModel"): pyfunc.PythonModel,
        ("mlflow.pyfunc.model", "PythonModelContext"): pyfunc.PythonModelContext,
        ("mlflow.pyfunc", "PythonModel"): pyfunc.PythonModel,
        ("mlflow.pyfunc.utils.data_validation", "FuncInfo"): FuncInfo,
        ("mlflow.pyfunc.utils.data_validation", "_validate_model_input"): _validate_model_input,
        ("mlflow.models.signature", "_TypeHints"): _TypeHints,
        ("mlflow.exceptions", "MlflowException"): MlflowException,
    }


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: IO[bytes], mapping: dict) -> None:
        super().__init__(f)
        self._mapping = mapping

    def find_class(self, module: str, name: str) -> Any:
        if module == "mlflow" or module.startswith("mlflow."):
            try:
                return self._mapping[(module, name)]
            except KeyError:
                raise UnsafeModelError(
                    f"the pickle refers to {module}.{name}, an MLflow name modelfmt has no stand-in for; "
                    "load this model with MLflow, or re-save it without that class"
                ) from None
        return super().find_class(module, name)


def load_pickle(f: IO[bytes]) -> Any:
    """Unpickle ``f`` (a cloudpickle file), mapping MLflow names to modelfmt stand-ins."""
    return _Unpickler(f, _stand_ins()).load()
