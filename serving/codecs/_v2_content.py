"""V2 tensors <-> model input and output: MLServer's content types, and its MLflow runtime's defaults.

Content types (``parameters.content_type``), as MLServer defines them:

- on an input: ``np`` (an array of the input's shape), ``str`` (BYTES as UTF-8 strings), ``base64``
  (BYTES as base64 text, decoded to bytes), ``datetime`` (ISO 8601 strings as datetimes), ``pd_json``
  (each element a JSON document, for array and object columns);
- on the request: ``pd`` (a DataFrame, one column per input), ``np`` (the one input as an array),
  ``dict`` (MLServer's MLflow runtime: a dict of arrays by input name), and ``str`` / ``base64`` /
  ``datetime`` (the one input decoded so).

With none given, the model's signature decides, as MLServer's MLflow runtime does: a column signature
is ``pd`` with each column decoded by its type (``string`` as ``str``, ``binary`` as ``base64`` when
the data came as JSON text, ``datetime``), a tensor signature ``np`` for one tensor (named or not, as
``/invocations`` hands it over) and ``dict`` for several. Outputs are named as that runtime names
them: a DataFrame's columns and a dict's keys by themselves, an array ``output-1``, unless the output
signature names the one output; a 1-D array gets the batch dimension (``[N, 1]``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
from typing import TYPE_CHECKING, Any

import numpy as np

from modelfmt.errors import PayloadError

if TYPE_CHECKING:
    from modelfmt.serving.codecs._v2_tensors import Tensor
    from modelfmt.signature import Schema

INPUT_TYPES = ("np", "str", "base64", "datetime", "pd_json")
REQUEST_TYPES = ("pd", "np", "dict", "str", "base64", "datetime")
# Request parameters the protocol (and Triton's clients) use themselves: never the model's params.
V2_PARAMETERS = frozenset({
    "content_type", "headers", "binary_data_output", "binary_data", "binary_data_size",
    "priority", "timeout", "sequence_id", "sequence_start", "sequence_end",
})
DEFAULT_OUTPUT = "output-1"  # MLServer's name for a model's one unnamed output
DEFAULT_INPUT_PREFIX = "input-"  # MLServer's metadata names unnamed signature inputs input-0, input-1...


# -- requests ----------------------------------------------------------------------------------
def model_input(inputs: list[Tensor], parameters: dict[str, Any], schema: Schema | None) -> tuple[Any, dict | None]:
    """``(model input, params)`` of a request's tensors; see the module docstring."""
    if not inputs:
        raise PayloadError("the request has no inputs")
    seen: set[str] = set()
    for t in inputs:
        if t.name in seen:
            raise PayloadError(f"input {t.name!r} appears more than once")
        seen.add(t.name)
    kind = parameters.get("content_type") or _default_kind(schema, inputs)
    if kind not in REQUEST_TYPES:
        raise PayloadError(f"unknown request content_type {kind!r}; known: {', '.join(REQUEST_TYPES)}")
    params = {k: v for k, v in parameters.items() if k not in V2_PARAMETERS} or None
    specs = _column_specs(schema)
    if kind == "pd":
        return _frame(inputs, specs, schema), params
    if kind == "dict":
        return {t.name: np.asarray(_decoded(t, specs.get(t.name))) for t in inputs}, params
    if len(inputs) != 1:
        raise PayloadError(f"content_type {kind!r} takes one input; the request has {len(inputs)}: "
                           f"{', '.join(t.name for t in inputs)}")
    tensor = inputs[0]
    # The input's own content type wins over the request's, as in MLServer (it decodes inputs first).
    return _decoded(tensor, None, tensor.parameters.get("content_type") or kind), params


def _default_kind(schema: Schema | None, inputs: list[Tensor]) -> str:
    if schema is None or not schema.inputs:
        return "np" if len(inputs) == 1 else "pd"
    if schema.is_tensor_spec():
        # One tensor is handed over as an array, named or not, as /invocations' JSON codec does.
        return "dict" if len(schema.inputs) > 1 else "np"
    return "pd"


def _column_specs(schema: Schema | None) -> dict[str, Any]:
    """Input name -> column spec of a column signature (unnamed columns as MLServer names them)."""
    if schema is None or not schema.inputs or schema.is_tensor_spec():
        return {}
    return {s.name if s.name is not None else f"{DEFAULT_INPUT_PREFIX}{i}": s for i, s in enumerate(schema.inputs)}


def _decoded(tensor: Tensor, spec: Any, content_type: str | None = None) -> Any:
    """One input's value by its content type (given, the input's own, else its column's type)."""
    kind = content_type or tensor.parameters.get("content_type") or _column_kind(tensor, spec)
    if kind not in INPUT_TYPES:
        raise PayloadError(f"input {tensor.name!r}: unknown content_type {kind!r}; known: {', '.join(INPUT_TYPES)}")
    if kind == "np":
        return tensor.data
    if tensor.datatype != "BYTES":
        raise PayloadError(f"input {tensor.name!r}: content_type {kind!r} takes BYTES data, got {tensor.datatype}")
    values = tensor.data.reshape(-1).tolist()
    convert = {"str": _text, "base64": _unbase64, "datetime": _datetime, "pd_json": _json}[kind]
    return [convert(tensor.name, v) for v in values]


def _column_kind(tensor: Tensor, spec: Any) -> str:
    from modelfmt.types import DataType

    t = getattr(spec, "type", None)
    if tensor.datatype != "BYTES" or t is None:
        return "np"
    if t == DataType.string:
        return "str"
    if t == DataType.datetime:
        return "datetime"
    if t == DataType.binary:
        # Text (JSON) is base64, as MLServer's metadata says of binary columns; binary data is the bytes.
        return "base64" if any(isinstance(v, str) for v in tensor.data.reshape(-1).tolist()) else "np"
    if isinstance(t, DataType):
        return "np"
    return "pd_json"  # arrays, objects, maps


def _text(name: str, v: Any) -> str:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(f"input {name!r}: element {v[:20]!r} is not UTF-8 text (content_type 'str')") from None
    return v


def _unbase64(name: str, v: Any) -> bytes:
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"input {name!r}: element {v!r:.40} is not base64 (content_type 'base64')") from None


def _datetime(name: str, v: Any) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(_text(name, v))
    except ValueError:
        raise PayloadError(
            f"input {name!r}: element {v!r:.40} is not an ISO 8601 date (content_type 'datetime')"
        ) from None


def _json(name: str, v: Any) -> Any:
    from modelfmt.jsonenc import loads

    try:
        return loads(v)
    except ValueError:
        raise PayloadError(f"input {name!r}: element {v!r:.40} is not JSON (content_type 'pd_json')") from None


def _frame(inputs: list[Tensor], specs: dict[str, Any], schema: Schema | None) -> Any:
    """A DataFrame, one column per input; rows of a ``[N, k]`` input become lists (k > 1)."""
    import pandas as pd

    if len(inputs) == 1 and schema is not None and schema.inputs and not schema.has_input_names():
        value = _decoded(inputs[0], None)
        if isinstance(value, np.ndarray) and value.ndim == 2 and value.shape[1] == len(schema.inputs) > 1:
            return value  # all the unnamed columns in one [N, k] tensor: the model's rows as sent
    columns: dict[str, Any] = {}
    rows = None
    for t in inputs:
        value = _column(t, _decoded(t, specs.get(t.name)))
        if rows is not None and len(value) != rows:
            raise PayloadError(f"input {t.name!r} has {len(value)} rows, input {inputs[0].name!r} {rows}: "
                               "the columns of a table have as many rows each")
        rows = len(value)
        columns[t.name] = value
    fast = _numeric_block(columns, schema)
    return fast if fast is not None else pd.DataFrame(columns)


def _numeric_block(columns: dict[str, Any], schema: Schema | None) -> Any:
    """The common body, every column of a named numeric signature in one dtype: one 2-D block in schema
    order (what /invocations' JSON codec builds, so enforcement has nothing to redo); else ``None``."""
    import pandas as pd

    from modelfmt.serving.codecs._tables import conform_array, plan_for

    if schema is None or not schema.has_input_names() or schema.is_tensor_spec():
        return None
    plan = plan_for(schema)
    if not plan.numeric or len(columns) != len(plan.names) or set(columns) != set(plan.names):
        return None
    arrays = []
    for name in plan.names:
        value, dtype = columns[name], plan.dtypes[name]
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iuf":
            return None
        arrays.append(conform_array(value, dtype))
    if len({a.dtype for a in arrays}) != 1 or arrays[0].dtype != plan.dtypes[plan.names[0]]:
        return None
    return pd.DataFrame(np.column_stack(arrays), columns=plan.column_index(), copy=False)


def _column(tensor: Tensor, value: Any) -> Any:
    if not isinstance(value, np.ndarray):
        return value
    if value.ndim == 0:
        return value.reshape(1)
    if value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1):
        return value.reshape(-1)
    return list(value.reshape(value.shape[0], -1)) if value.ndim == 2 else list(value)


# -- responses ---------------------------------------------------------------------------------
def output_tensors(predictions: Any, output_schema: Schema | None) -> list[Tensor]:
    """The output tensors of ``predictions``; see the module docstring for the names."""
    import pandas as pd

    names = output_schema.input_names() if output_schema is not None and output_schema.inputs else []
    if isinstance(predictions, pd.DataFrame):
        return [_tensor(str(c), predictions[c].to_numpy()) for c in predictions.columns]
    if isinstance(predictions, pd.Series):
        name = predictions.name if isinstance(predictions.name, str) else _one_name(names)
        return [_tensor(name, predictions.to_numpy())]
    if isinstance(predictions, dict):
        return [_tensor(str(k), v) for k, v in predictions.items()]
    return [_tensor(_one_name(names), predictions)]


def _one_name(names: list[str]) -> str:
    return names[0] if len(names) == 1 else DEFAULT_OUTPUT


def _tensor(name: str, value: Any) -> Tensor:
    from modelfmt.serving.codecs._v2_tensors import Tensor

    arr = _array(value)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)  # the batch dimension, as MLServer adds it
    datatype, arr = _datatype_of(name, arr)
    return Tensor(name, datatype, list(arr.shape), arr)


def _array(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "to_numpy"):  # pandas extension arrays, Series
        return value.to_numpy()
    try:
        return np.asarray(value)
    except ValueError:  # ragged lists: one JSON document per row
        arr = np.empty(len(value), dtype=object)
        arr[:] = list(value)
        return arr


def _datatype_of(name: str, arr: Any) -> tuple[str, Any]:
    from modelfmt.serving.codecs._v2_tensors import DATATYPES

    kind = arr.dtype.kind
    if kind in "biuf":
        for datatype, dtype in DATATYPES.items():
            if dtype is not None and dtype.kind != "O" and dtype == arr.dtype:
                return datatype, arr
        return "FP64", arr.astype(np.float64)  # float128 and the like
    if kind == "M":
        return "BYTES", _objects(np.datetime_as_string(arr, unit="auto"))
    if kind in "US":
        return "BYTES", arr.astype(object)
    return "BYTES", _objects(_element_text(v) for v in arr.reshape(-1).tolist()).reshape(arr.shape)


def _objects(values: Any) -> Any:
    items = list(np.asarray(values, dtype=object).reshape(-1)) if isinstance(values, np.ndarray) else list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(values.shape) if isinstance(values, np.ndarray) else out


def _element_text(v: Any) -> Any:
    """An object element as BYTES: strings and bytes as they are, dates in ISO 8601, None as "",
    anything else (lists, dicts, numbers) as its JSON text."""
    if isinstance(v, (str, bytes)):
        return v
    if v is None:
        return ""
    if hasattr(v, "isoformat"):
        return v.isoformat()
    from modelfmt.jsonenc import dumps

    return dumps(v).decode("utf-8")
