"""``application/vnd.apache.parquet``: a table as ``DataFrame.to_parquet()`` writes it (MLflow 3.x reads these).

Parquet carries its own column types; they are mapped to the signature's by the one casting policy
(:mod:`modelfmt.casting`), as JSON numbers are: float64 narrowed for a ``float`` column, int32 widened
for a ``long``, int64 fitted into an ``integer``. What the policy refuses is left as it came, for
enforcement to refuse naming the column. Nulls arrive as NaN (floats), ``<NA>`` (pandas' nullable
integers, refused in integer columns as missing values) or ``None``.

Answers in Parquet (``Accept: application/vnd.apache.parquet``) are the typed table of
:func:`modelfmt.serving.codecs.arrow.predictions_table`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelfmt.errors import PayloadError
from modelfmt.serving.codecs._registry import MLFLOW, register_decoder, register_encoder
from modelfmt.serving.codecs._tables import plan_for
from modelfmt.serving.codecs.arrow import input_from_table, predictions_table

if TYPE_CHECKING:
    from modelfmt.signature import Schema

PARQUET = "application/vnd.apache.parquet"


@register_decoder(MLFLOW, PARQUET)
def decode(body: bytes, schema: Schema | None = None) -> tuple[Any, None]:
    """Read a Parquet body into a DataFrame, its columns in the signature's types; Parquet carries no params."""
    return input_from_table(read_table(body), plan_for(schema)), None


@register_encoder(MLFLOW, PARQUET)
def encode(predictions: Any) -> bytes:
    """``predictions`` as a Parquet file of one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(predictions_table(predictions), sink)
    return sink.getvalue().to_pybytes()


def read_table(body: bytes) -> Any:
    """The ``pyarrow.Table`` a Parquet body holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(pa.py_buffer(body))
    except (pa.ArrowException, OSError, ValueError, TypeError) as e:
        raise PayloadError(
            f"the body is not valid Parquet ({e}); send a table written by DataFrame.to_parquet()"
        ) from None

