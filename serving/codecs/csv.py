"""``text/csv``: a header row of column names, then one line per row (``DataFrame.to_csv(index=False)``)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from modelfmt.errors import PayloadError
from modelfmt.serving.codecs._registry import CSV, MLFLOW, register_decoder
from modelfmt.serving.codecs._tables import conform_frame, plan_for

if TYPE_CHECKING:
    from modelfmt.signature import Schema


@register_decoder(MLFLOW, CSV)
def decode(body: bytes, schema: Schema | None = None) -> tuple[Any, None]:
    """Parse a CSV body into a DataFrame; CSV carries no params."""
    import pandas as pd

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError(f"the CSV body is not valid UTF-8: {e}") from None
    plan = plan_for(schema)
    # Columns declared as strings stay strings ("007" is not 7); numbers are read as numbers and then
    # take their declared widths, so a bad cell is reported by schema enforcement with its column.
    dtype = {name: str for name in plan.strings | plan.binary if isinstance(name, str)} or None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=dtype)
    except pd.errors.EmptyDataError:
        raise PayloadError("the CSV body has no header row: send column names on the first line") from None
    except (pd.errors.ParserError, ValueError, UnicodeError) as e:
        raise PayloadError(f"the body is not valid CSV: {str(e).strip()}") from None
    if not isinstance(df.index, pd.RangeIndex):
        # pandas takes the extra leading fields of rows longer than the header as an index.
        raise PayloadError("the body is not valid CSV: rows have more fields than the header has names")
    return conform_frame(df, plan), None
