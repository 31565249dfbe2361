"""``application/vnd.apache.arrow.stream``: Arrow IPC bodies in, and typed Arrow tables out.

A request body is an Arrow IPC stream (``pyarrow.ipc.new_stream``; the IPC *file* format, which starts
with ``ARROW1``, is read too). Its columns keep their Arrow types up to the model: no JSON round trip,
no text. They are mapped to the signature's types by the one casting policy (:mod:`modelfmt.casting`,
through :func:`modelfmt.serving.codecs._tables.conform_frame`), as Parquet bodies are; what the policy
refuses is left as it came, for enforcement to refuse naming the column. A tensor-spec model gets the
columns as one 2-D array (one tensor) or one array per column (named tensors).

Answers (``Accept: application/vnd.apache.arrow.stream`` here, Parquet in :mod:`.parquet`) are tables
built by :func:`predictions_table`, typed as the model returned them: an int64 prediction stays int64,
a DataFrame keeps its columns and dtypes. One-dimensional predictions are one column ``prediction``
(the name ``modelfmt predict`` writes), a 2-D array one column per output (``0``, ``1``...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelfmt.errors import PayloadError
from modelfmt.serving.codecs._registry import MLFLOW, register_decoder, register_encoder
from modelfmt.serving.codecs._tables import Plan, conform_frame, plan_for

if TYPE_CHECKING:
    from modelfmt.signature import Schema

ARROW = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"
PREDICTION = "prediction"


@register_decoder(MLFLOW, ARROW, ARROW_FILE)
def decode(body: bytes, schema: Schema | None = None) -> tuple[Any, None]:
    """Read an Arrow IPC body into model input in the signature's types; Arrow carries no params."""
    return input_from_table(read_table(body), plan_for(schema)), None


@register_encoder(MLFLOW, ARROW)
def encode(predictions: Any) -> bytes:
    """``predictions`` as an Arrow IPC stream of one table (see :func:`predictions_table`)."""
    import pyarrow as pa

    table = predictions_table(predictions)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_table(body: bytes) -> Any:
    """The ``pyarrow.Table`` an Arrow IPC stream (or IPC file) body holds."""
    import pyarrow as pa

    try:
        buf = pa.py_buffer(body)
        if body[:6] == b"ARROW1":
            return pa.ipc.open_file(buf).read_all()
        return pa.ipc.open_stream(buf).read_all()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise PayloadError(
            f"the body is not an Arrow IPC stream ({e}); send a table written by pyarrow.ipc.new_stream"
        ) from None


def input_from_table(table: Any, plan: Plan) -> Any:
    """Model input from an Arrow table: a DataFrame whose columns take the signature's types, or the
    tensors of a tensor-spec model (one 2-D array of all columns, or one array per named tensor)."""
    if plan.kind == "tensors":
        return _tensors(table, plan)
    return conform_frame(frame_from_table(table), plan)


def frame_from_table(table: Any) -> Any:
    """``table`` as a DataFrame; Arrow strings become Python strings (object columns), as JSON's do,
    and a pandas index stored in the schema's metadata comes back as the index."""
    try:
        return table.to_pandas()
    except (ValueError, TypeError, NotImplementedError) as e:
        raise PayloadError(f"cannot read the table's columns: {e}") from None


def _tensors(table: Any, plan: Plan) -> Any:
    import numpy as np

    from modelfmt.serving.codecs._tables import conform_array

    def column(i: int) -> Any:
        col = table.column(i)
        try:
            arr = col.to_numpy()
        except (ValueError, TypeError, NotImplementedError) as e:
            raise PayloadError(f"column {table.column_names[i]!r}: cannot read it as an array ({e})") from None
        if arr.dtype == object and len(arr) and isinstance(arr[0], np.ndarray):
            arr = np.stack(arr)  # a list column: one row per tensor row
        return arr

    specs = plan.tensors
    if len(specs) == 1:
        spec = specs[0]
        if table.num_columns == 1:
            arr = column(0)
        else:
            arr = np.column_stack([column(i) for i in range(table.num_columns)])
        return conform_array(arr, spec.dtype) if arr.dtype.kind in "iuf" else arr
    by_name = {s.name: s for s in specs}
    out = {}
    for i, name in enumerate(table.column_names):
        arr = column(i)
        spec = by_name.get(name)
        out[name] = conform_array(arr, spec.dtype) if spec is not None and arr.dtype.kind in "iuf" else arr
    return out


# -- answers ------------------------------------------------------------------------------------
def predictions_table(predictions: Any) -> Any:
    """A ``pyarrow.Table`` of ``predictions``, typed as the model returned them.

    DataFrame: its columns (names as text, the index dropped). Series: one column, its name or
    ``prediction``. dict: one column per key. Array or list: one column ``prediction`` when 1-D, one
    column per output (``0``, ``1``...) when 2-D; deeper arrays keep each row as a fixed-size list.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if isinstance(predictions, pd.DataFrame):
        df = predictions
        if not all(isinstance(c, str) for c in df.columns):
            df = df.set_axis([str(c) for c in df.columns], axis=1)
        return pa.Table.from_pandas(df, preserve_index=False)
    if isinstance(predictions, pd.Series):
        name = PREDICTION if predictions.name is None else str(predictions.name)
        return pa.table({name: _array(predictions)})
    if isinstance(predictions, dict):
        return pa.table({str(k): _array(v) for k, v in predictions.items()})
    if isinstance(predictions, (list, tuple)):
        try:
            arr = np.asarray(predictions)
        except ValueError:  # ragged rows
            return pa.table({PREDICTION: pa.array(list(predictions))})
        if arr.dtype == object:
            return pa.table({PREDICTION: pa.array(list(predictions))})
        predictions = arr
    if np.isscalar(predictions):
        predictions = np.asarray([predictions])
    arr = np.asarray(predictions)
    if arr.ndim == 2:
        return pa.table({str(i): _array(arr[:, i]) for i in range(arr.shape[1])})
    return pa.table({PREDICTION: _array(arr)})


def _array(values: Any) -> Any:
    """One Arrow column of ``values``: numpy dtypes kept; rows of arrays as fixed-size lists."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    if isinstance(values, pd.Series):
        return pa.Array.from_pandas(values)
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim <= 1:
        return pa.array(arr.reshape(-1) if arr.ndim == 0 else arr)
    flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
    column = flat
    for size in reversed(arr.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column
