"""MLflow's rules for a type-hinted ``PythonModel.predict``, without MLflow (``mlflow/types/type_hints.py``).

MLflow 3 wraps a ``predict`` whose input hint is ``list[...]`` (of ``str``, ``int``, ``float``, ``bool``,
``bytes``, ``datetime``, ``Any``, ``list``/``dict`` of those, optional fields, or pydantic models):
before each call the input is converted (:func:`convert_data_to_type_hint`: a DataFrame becomes a
list) and validated (:func:`validate_data_against_type_hint`: strictly, ``1`` is not a ``float``;
dicts become the hinted pydantic model). The signature it writes is :func:`schema_from_list_hint`'s,
with ``is_signature_from_type_hint: true`` in ``MLmodel``: such input is not checked against the
signature, only against the hint. One deliberate difference: base64 strings for ``bytes`` and ISO 8601
strings for ``datetime`` are parsed in-line too, not only when served, so the same JSON values score
the same in both.

pydantic is never imported here: a hint can only be a pydantic model once pydantic is loaded.
"""

from __future__ import annotations

import base64
import datetime
import logging
import sys
import typing
from types import UnionType
from typing import Any, Union

from modelfmt.errors import SchemaError
from modelfmt.signature import ColSpec, Schema
from modelfmt.types import AnyType, Array, ColType, DataType, Map, Object, Property

_log = logging.getLogger(__name__)
_NONE = type(None)
_UNIONS = (Union, UnionType)

#: The primitive hints and their column types (MLflow's ``TYPE_HINTS_TO_DATATYPE_MAPPING``).
PRIMITIVES: dict[Any, DataType] = {
    int: DataType.long,
    str: DataType.string,
    bool: DataType.boolean,
    float: DataType.double,
    bytes: DataType.binary,
    datetime.datetime: DataType.datetime,
}


class UnsupportedHintError(SchemaError):
    """A hint MLflow infers no schema from, so it validates nothing against it."""


# -- what a hint is ------------------------------------------------------------------------------
def is_pydantic_model(hint: Any) -> bool:
    """True for a pydantic ``BaseModel`` subclass (pydantic is loaded once such a class exists)."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:
        return False
    try:
        return isinstance(hint, type) and issubclass(hint, pydantic.BaseModel)
    except TypeError:  # list[int] passes isinstance(..., type) but not issubclass
        return False


def hint_repr(hint: Any) -> str:
    """A hint as MLflow names it in messages: ``str``, ``Item``, ``list[dict[str, int]]``."""
    return hint.__name__ if is_pydantic_model(hint) or type(hint) is type else str(hint)


def _no_schema_types() -> tuple:
    import numpy as np
    import pandas as pd

    found: tuple = (pd.DataFrame, pd.Series, np.ndarray)
    sparse = sys.modules.get("scipy.sparse")
    return found + ((sparse.csc_matrix, sparse.csr_matrix) if sparse is not None else ())


def is_type_from_example(hint: Any) -> bool:
    """True for MLflow's ``TypeFromExample`` hint ("the input example's type")."""
    return isinstance(hint, typing.TypeVar) and hint.__name__ == "TypeFromExample"


def _origin(hint: Any) -> Any:
    """``get_origin``, seeing through ``Optional[...]``; other unions are ``Any`` (MLflow's ``_get_origin_type``)."""
    origin = typing.get_origin(hint)
    if origin in _UNIONS:
        args = typing.get_args(hint)
        if _NONE in args and len(args) == 2:
            return _origin(next(a for a in args if a is not _NONE))
        return Any
    return origin


def list_element(hint: Any) -> Any:
    """The element type of a ``list[...]`` hint."""
    args = typing.get_args(hint)
    if _NONE in args:
        raise UnsupportedHintError("Input cannot be Optional type")
    if len(args) != 1:
        raise UnsupportedHintError(f"Type hint `{hint_repr(hint)}` must have exactly one element type")
    return args[0]


def validated_hint(hint: Any) -> Any:
    """``hint`` if MLflow validates input against it (MLflow's ``_get_func_info_if_type_hint_supported``),
    else ``None``: no hint, ``pd.DataFrame``/``np.ndarray``-like hints, ``TypeFromExample``, or a hint
    no schema can be inferred from."""
    if hint is None or is_type_from_example(hint) or hint in _no_schema_types():
        return None
    try:
        schema_from_list_hint(hint)
    except Exception:  # noqa: BLE001 - as MLflow: an unusable hint means "no validation", not a failure
        return None
    return hint


# -- the signature MLflow infers ------------------------------------------------------------------
def schema_from_list_hint(hint: Any) -> Schema:
    """The input schema MLflow infers from a ``list[...]`` hint: one unnamed column of the element's type."""
    if not (hint is list or _origin(hint) is list):
        raise UnsupportedHintError(f"Type hints must be wrapped in list[...]; got `{hint_repr(hint)}`")
    dtype, required = colspec_type(list_element(hint))
    if not required:
        raise UnsupportedHintError("Input cannot be Optional type")
    return Schema([ColSpec(dtype, None, required)])


def colspec_type(hint: Any) -> tuple[ColType, bool]:
    """The column type of one element hint and whether it is required (``Optional[...]`` is not)."""
    if hint is Any:
        return AnyType(), True
    if hint in PRIMITIVES:
        return PRIMITIVES[hint], True
    if is_pydantic_model(hint):
        return _object_type(hint), True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return Array(colspec_type(list_element(hint))[0]), True
    if origin is dict:
        if len(args) != 2 or args[0] is not str:
            raise UnsupportedHintError(f"Dictionary type hints must be dict[str, ...]; got `{hint_repr(hint)}`")
        return Map(colspec_type(args[1])[0]), True
    if origin in _UNIONS:
        rest = [a for a in args if a is not _NONE]
        if len(rest) == 1 and len(args) == 2:
            return colspec_type(rest[0])[0], False
        return AnyType(), _NONE not in args
    raise UnsupportedHintError(f"Unsupported type hint `{hint_repr(hint)}`")


def _object_type(model: Any) -> Object:
    props = []
    for name, field in model.model_fields.items():
        if field.annotation is None:
            raise UnsupportedHintError(f"field {name!r} of {model.__name__} has no type annotation")
        dtype, required = colspec_type(field.annotation)
        props.append(Property(name, dtype, required))
    return Object(props)


# -- conversion (MLflow's _convert_data_to_type_hint) ----------------------------------------------
def convert_data_to_type_hint(data: Any, hint: Any) -> Any:
    """A DataFrame as the list a ``list[...]`` hint asks for; any other input unchanged.

    Rows become dicts for ``list[dict]`` and pydantic element hints (a frame whose one column is
    ``0`` holds the dicts themselves); any other element hint takes the first column's values.
    """
    import pandas as pd

    if not isinstance(data, pd.DataFrame) or hint is pd.DataFrame:
        return data
    if _origin(hint) is not list:
        raise SchemaError(
            f"Only `list[...]` type hint supports pandas DataFrame input with a single column. "
            f"But got {hint_repr(hint)}."
        )
    element = list_element(hint)
    if element is dict or is_pydantic_model(element):
        result = data.iloc[:, 0].tolist() if list(data.columns) == [0] else data.to_dict(orient="records")
    else:
        if len(data.columns) != 1:
            _log.warning("a list[...] hint takes one column; %d given, the first one is used", len(data.columns))
        result = data.iloc[:, 0].tolist()
    return sanitize(result)


def sanitize(data: Any) -> Any:
    """Arrays as lists and NaN as ``None``, all the way down (what a frame cell may hold)."""
    import numpy as np

    if isinstance(data, np.ndarray):
        data = data.tolist()
    if isinstance(data, list):
        return [sanitize(v) for v in data]
    if isinstance(data, dict):
        return {k: sanitize(v) for k, v in data.items()}
    if isinstance(data, float) and np.isnan(data):
        return None
    return data


# -- validation (MLflow's _validate_data_against_type_hint) -------------------------------------------
def check(data: Any, hint: Any) -> Any:
    """``data`` converted to ``hint`` and validated against it, as MLflow's ``predict`` wrapper does;
    every failure is a :class:`SchemaError` worded as MLflow words it."""
    try:
        return validate_data_against_type_hint(convert_data_to_type_hint(data, hint), hint)
    except SchemaError:
        raise
    except ValueError as e:  # text that is no datetime or base64: MLflow's wrapper names the hint
        raise SchemaError(f"Failed to validate the input data against the type hint `{hint}`. Error: {e}") from None


def validate_data_against_type_hint(data: Any, hint: Any) -> Any:
    """``data`` checked against ``hint``, strictly; dicts for a pydantic hint become its instances.

    Raises :class:`SchemaError` with MLflow's message naming the offending elements.
    """
    if is_pydantic_model(hint):
        return _validate_pydantic(data, hint)
    if hint is Any:
        return data
    if hint in PRIMITIVES:
        data = _parse_primitive(data, hint)
        if isinstance(data, hint):
            return data
        raise SchemaError(f"Expected type {hint_repr(hint)}, but got {type(data).__name__}")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return _validate_list(data, args[0])
    if origin is dict:
        return _validate_dict(data, args[1])
    if origin in _UNIONS:
        if _NONE in args:
            if data is None:
                return data
            if len(args) == 2:
                return validate_data_against_type_hint(data, next(a for a in args if a is not _NONE))
        return data  # a union of several types is "any", as in MLflow
    raise UnsupportedHintError(f"Unsupported type hint `{hint_repr(hint)}`")


def _parse_primitive(data: Any, hint: Any) -> Any:
    """JSON has neither bytes nor datetimes: base64 and ISO 8601 text stand for them, as in MLflow's server.

    Text that does not parse raises ``ValueError`` (not :class:`SchemaError`): as in MLflow, it fails the
    whole input, named by :func:`check`'s caller, rather than being listed as one invalid element.
    """
    if not isinstance(data, str):
        return data
    if hint is bytes:
        return base64.b64decode(data.replace("\n", ""), validate=True)  # MLflow's examples wrap lines
    if hint is datetime.datetime:
        return datetime.datetime.fromisoformat(data)
    return data


def _validate_pydantic(data: Any, hint: Any) -> Any:
    import pydantic

    if isinstance(data, pydantic.BaseModel):
        values = data.model_dump()
    elif isinstance(data, dict):
        values = data
    else:
        raise SchemaError(
            f"Expecting example to be a dictionary or pydantic model instance for Pydantic type hint, got {type(data)}"
        )
    try:
        hint.model_validate(values, strict=True)  # strict, as MLflow: "3" is not an int
    except pydantic.ValidationError as e:
        raise SchemaError(
            f"Data doesn't match type hint, error: {e}. Expected fields in the type hint: "
            f"{hint.model_fields}; passed data: {values}."
        ) from None
    return hint(**values) if isinstance(data, dict) else data


def _validate_list(data: Any, element: Any) -> list:
    if not isinstance(data, list):
        raise SchemaError(f"Expected list, but got {type(data).__name__}")
    invalid, result = [], []
    for item in data:
        try:
            result.append(validate_data_against_type_hint(item, element))
        except SchemaError as e:
            invalid.append((str(item), e.message))
    if invalid:
        shown = f"{invalid[:5]} ... (truncated)" if len(invalid) > 5 else invalid
        raise SchemaError(
            f"Failed to validate data against type hint `list[{hint_repr(element)}]`, invalid elements: {shown}"
        )
    return result


def _validate_dict(data: Any, value_hint: Any) -> dict:
    if not isinstance(data, dict):
        raise SchemaError(f"Expected dict, but got {type(data).__name__}")
    invalid, result = {}, {}
    for key, value in data.items():
        if not isinstance(key, str):
            invalid[str(key)] = f"Key must be a string, got {type(key).__name__}"
            continue
        try:
            result[key] = validate_data_against_type_hint(value, value_hint)
        except SchemaError as e:
            invalid[key] = e.message
    if invalid:
        hint = f"dict[str, {hint_repr(value_hint)}]"
        raise SchemaError(f"Failed to validate data against type hint `{hint}`, invalid elements: {invalid}")
    return result


def convert_to_example_format(data: Any, example: Any) -> Any:
    """A DataFrame (checked against the signature the example gave) back in the input example's form, for
    a ``TypeFromExample`` hint (MLflow's ``_convert_dataframe_to_example_format``): a Series, a scalar,
    a dict (one row), a list of the first column's values, or a list of row dicts."""
    import numpy as np
    import pandas as pd

    if not isinstance(data, pd.DataFrame) or isinstance(example, pd.DataFrame):
        return data
    if isinstance(example, pd.Series):
        series = data.iloc[:, 0]
        series.name = example.name
        return series
    if np.isscalar(example):
        return data.iloc[0, 0]
    if isinstance(example, dict):
        return data.to_dict(orient="records")[0] if len(data) == 1 else data
    if isinstance(example, list):
        if len(data.columns) == 1 and all(np.isscalar(x) for x in example):
            return data.iloc[:, 0].tolist()
        return data.to_dict(orient="records")
    return data


# -- MLflow's older conversion in its pyfunc wrapper (_PythonModelPyfuncWrapper._convert_input) ---------
_LIST_STR = (list[str], typing.List[str])  # noqa: UP006 - both spellings, as MLflow lists them
_LIST_DICT_STR = (
    list[dict[str, str]],
    list[typing.Dict[str, str]],  # noqa: UP006
    typing.List[dict[str, str]],  # noqa: UP006
    typing.List[typing.Dict[str, str]],  # noqa: UP006
)


def convert_frame_input(data: Any, hint: Any, schema: Schema | None) -> Any:
    """What MLflow's pyfunc wrapper hands ``predict`` for a DataFrame under a ``list[str]`` or
    ``list[dict[str, str]]`` hint (kept by MLflow for older models): the first string column's values,
    or rows as dicts. ``schema`` is the model's input schema. Anything else passes unchanged."""
    import pandas as pd

    if not isinstance(data, pd.DataFrame) or hint is None:
        return data
    if hint in _LIST_STR:
        column = _first_string_column(data)
        if column is None:
            raise SchemaError("Expected model input to contain at least one string column")
        return data[column].tolist()
    if hint in _LIST_DICT_STR:
        if schema is not None and len(schema.inputs) == 1 and schema.inputs[0].name is None:
            column = _first_string_column(data)
            if column is not None:
                return data[[column]].to_dict(orient="records")
            if len(data.columns) == 1:
                return data.to_dict("list")[0]
        return data.to_dict(orient="records")
    return data


def _first_string_column(df: Any) -> Any:
    if df.empty:
        return None
    return next((c for c, v in df.iloc[0].items() if isinstance(v, str)), None)
