"""The data ``infer_signature`` is compared on, built the same way in modelfmt's venv and MLflow's.

Imported by path from both sides (tests/test_infer_mlflow.py and infer_signatures.py), so it imports
neither modelfmt nor mlflow: only numpy and pandas, whose versions the test checks are the same.
A case is named ``<dtype>/<container>``; :func:`build_cases` returns them all, in a fixed order.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

# Each dtype is a pandas Series of three values; "_na" variants hold a missing value.
SERIES: dict[str, Callable[[], pd.Series]] = {
    "bool": lambda: pd.Series([True, False, True]),
    **{name: (lambda name=name: pd.Series([1, 2, 3], dtype=name)) for name in (
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64")},
    "float64_na": lambda: pd.Series([1.5, np.nan, 3.0]),
    "float32_na": lambda: pd.Series([1.5, np.nan, 3.0], dtype="float32"),
    # pandas 3 infers its own string dtype for a list of str; "object_str" keeps numpy's object dtype.
    "str": lambda: pd.Series(["a", "bb", "c"]),
    "str_na": lambda: pd.Series(["a", None, "c"]),
    "object_str": lambda: pd.Series(["a", "bb", "c"], dtype=object),
    "object_str_na": lambda: pd.Series(["a", None, "c"], dtype=object),
    "string_python": lambda: pd.Series(["a", "bb", None], dtype="string"),
    "bytes": lambda: pd.Series([b"a", b"bb", b"c"], dtype=object),
    "datetime64": lambda: pd.Series(pd.to_datetime(["2024-01-01", "2024-01-02", "2024-03-01"])),
    "datetime64_na": lambda: pd.Series(pd.to_datetime(["2024-01-01", None, "2024-03-01"])),
    "datetime_objects": lambda: pd.Series([datetime.date(2024, 1, 1), datetime.date(2024, 1, 2),
                                           datetime.date(2024, 1, 3)], dtype=object),
    "category_str": lambda: pd.Series(["a", "b", "a"], dtype="category"),
    "category_int": lambda: pd.Series([1, 2, 1], dtype="category"),
    "Int64": lambda: pd.Series([1, 2, 3], dtype="Int64"),
    "Int64_na": lambda: pd.Series([1, None, 3], dtype="Int64"),
    "Int32": lambda: pd.Series([1, 2, 3], dtype="Int32"),
    "UInt64": lambda: pd.Series([1, 2, 3], dtype="UInt64"),
    "Float64": lambda: pd.Series([1.5, 2.0, 3.0], dtype="Float64"),
    "Float64_na": lambda: pd.Series([1.5, None, 3.0], dtype="Float64"),
    "boolean": lambda: pd.Series([True, False, True], dtype="boolean"),
    "boolean_na": lambda: pd.Series([True, None, False], dtype="boolean"),
    "mixed_int_str": lambda: pd.Series([1, "x", 2], dtype=object),
    "all_none": lambda: pd.Series([None, None, None], dtype=object),
    "list_int": lambda: pd.Series([[1, 2], [3], [4, 5, 6]]),
    "list_str": lambda: pd.Series([["a"], ["b", "c"], []]),
    "list_float_na": lambda: pd.Series([[1.5], None, [2.0, np.nan]]),
    "list_nested": lambda: pd.Series([[[1], [2, 3]], [[4]], [[5]]]),
    "dict": lambda: pd.Series([{"k": 1, "s": "a"}, {"k": 2, "s": "b"}, {"k": 3, "s": "c"}]),
    "ndarray_items": lambda: pd.Series([np.array([1.0, 2.0]), np.array([3.0]), np.array([4.0, 5.0])]),
}


def _array(s: pd.Series) -> np.ndarray:
    return s.to_numpy()


def _stacked(s: pd.Series) -> np.ndarray:
    a = s.to_numpy()
    if a.dtype == object:
        out = np.empty((len(a), 2), dtype=object)
        out[:, 0], out[:, 1] = a, a
        return out
    return np.stack([a, a], axis=1)


# Each container turns one dtype's Series into the data given to infer_signature.
CONTAINERS: dict[str, Callable[[pd.Series], Any]] = {
    "dataframe": lambda s: pd.DataFrame({"x": s, "y": s.iloc[::-1].reset_index(drop=True)}),
    "series": lambda s: s.rename("x"),
    "series_unnamed": lambda s: s,
    "ndarray1d": _array,
    "ndarray2d": _stacked,
    "dict_of_arrays": lambda s: {"a": _array(s), "b": _stacked(s)},
    "list": lambda s: s.tolist(),
}

# Shapes that are not about one dtype: the records and dict-of-values forms MLflow takes, scalars,
# a str-dtype numpy array (what np.array(["a", "b"]) gives), and a classifier's object-array labels.
EXTRA: dict[str, Callable[[], Any]] = {
    "numpy_unicode/ndarray1d": lambda: np.array(["setosa", "virginica"]),
    "numpy_unicode/ndarray2d": lambda: np.array([["a", "bb"], ["c", "d"]]),
    "numpy_bytes/ndarray1d": lambda: np.array([b"a", b"bb"]),
    "numpy_datetime_s/ndarray1d": lambda: np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[s]"),
    "numpy_timedelta/ndarray1d": lambda: np.array([1, 2], dtype="timedelta64[s]"),
    "numpy_complex/ndarray1d": lambda: np.array([1 + 2j, 3j]),
    "numpy_float16/ndarray1d": lambda: np.array([1.0, 2.0], dtype="float16"),
    "object_labels/ndarray1d": lambda: np.array(["spam", "ham", "spam"], dtype=object),
    "object_ints/ndarray1d": lambda: np.array([1, 2], dtype=object),
    "records/list": lambda: [{"a": 1, "b": "x", "c": [1.0]}, {"a": 2, "b": None, "c": [2.0, 3.0]}],
    "records_missing_key/list": lambda: [{"a": 1, "b": "x"}, {"a": 2}],
    "values/dict": lambda: {"a": "x", "b": ["y", "z"], "c": 1.5, "d": None, "e": {"f": 1}},
    "empty/list": lambda: [],
    "str/scalar": lambda: "hello",
    "int/scalar": lambda: 3,
    "float/scalar": lambda: 2.5,
    "bool/scalar": lambda: True,
    "bytes/scalar": lambda: b"raw",
    "list_of_lists/list": lambda: [[1.0, 2.0], [3.0, 4.0]],
    "empty_frame/dataframe": lambda: pd.DataFrame({"a": pd.Series([], dtype="float64")}),
    "int_colnames/dataframe": lambda: pd.DataFrame({0: [1.0], 1: [2.0]}),
}


def build_cases() -> dict[str, Any]:
    """Every case by name, freshly built (infer_signature may not mutate what it is given, but fresh
    data keeps one case from leaking into the next)."""
    cases: dict[str, Any] = {}
    for dtype, make in SERIES.items():
        for container, wrap in CONTAINERS.items():
            cases[f"{dtype}/{container}"] = wrap(make())
    for name, make_extra in EXTRA.items():
        cases[name] = make_extra()
    return cases


def versions() -> dict[str, str]:
    """The library versions the cases were built with (both sides must agree)."""
    return {"numpy": np.__version__, "pandas": pd.__version__}


def PARAMS_INPUT() -> pd.DataFrame:  # noqa: N802 - a constant's maker
    """The input that params cases are inferred beside."""
    return pd.DataFrame({"a": [1.0]})


# Params dicts, inferred beside PARAMS_INPUT.
PARAMS: dict[str, Callable[[], dict]] = {
    "scalars": lambda: {"k": 3, "t": 0.5, "name": "a", "on": True},
    "binary": lambda: {"raw": b"x"},
    "numpy_scalars": lambda: {"i32": np.int32(2), "f32": np.float32(0.5), "i64": np.int64(7)},
    "int8": lambda: {"i8": np.int8(1)},
    "lists": lambda: {"names": ["a", "b"], "ks": [1, 2], "mixed": [1, 2.5], "flags": [True, False]},
    "empty_list": lambda: {"e": []},
    "datetimes": lambda: {"when": datetime.datetime(2024, 1, 2, 3, 4, 5), "days": [datetime.date(2024, 1, 1)]},
    "ndarray": lambda: {"v": np.array([1.0, 2.0])},
}


def build_params() -> dict[str, dict]:
    """Every params case by name."""
    return {name: make() for name, make in PARAMS.items()}
