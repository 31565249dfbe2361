"""``application/vnd.apache.parquet``: a table as ``DataFrame.to_parquet()`` writes it (MLflow 3.x reads these).

Parquet carries its own column types; they are mapped to the signature's by the one casting policy
(:mod:`modelfmt.casting`), as JSON numbers are: float64 narrowed for a ``float`` column, int32 widened
for a ``long``, int64 fitted into an ``integer``. What the policy refuses is left as it came, for
enforcement to refuse naming the column. Nulls arrive as NaN (floats), ``<NA>`` (pandas' nullable
integers, refused in integer columns as missing values) or ``None``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelfmt.errors import PayloadError
from modelfmt.serving.codecs._registry import MLFLOW, register_decoder
from modelfmt.serving.codecs._tables import conform_frame, plan_for

if TYPE_CHECKING:
    from modelfmt.signature import Schema

PARQUET = "application/vnd.apache.parquet"


@register_decoder(MLFLOW, PARQUET)
def decode(body: bytes, schema: Schema | None = None) -> tuple[Any, None]:
    """Read a Parquet body into a DataFrame, its columns in the signature's types; Parquet carries no params."""
    return conform_frame(read_frame(body), plan_for(schema)), None


def read_frame(body: bytes) -> Any:
    """The DataFrame a Parquet body holds (its pandas index too, when it was written with one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.py_buffer(body))
        return table.to_pandas()
    except (pa.ArrowException, OSError, ValueError, TypeError) as e:
        raise PayloadError(
            f"the body is not valid Parquet ({e}); send a table written by DataFrame.to_parquet()"
        ) from None
