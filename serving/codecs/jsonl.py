"""``application/jsonl`` (also ``application/x-ndjson``): JSON Lines, one row object per line.

Each non-blank line is one JSON object, a row as in MLflow's ``dataframe_records``; the lines are read
by the JSON codec's ``dataframe_records`` path, so a row means the same in both (types by the signature,
base64 for binary columns, booleans never numbers). JSON Lines carries no params. A line that is not a
JSON object is named by its number.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from modelfmt.errors import PayloadError
from modelfmt.serving.codecs import json as json_codec
from modelfmt.serving.codecs._registry import MLFLOW, register_decoder

if TYPE_CHECKING:
    from modelfmt.signature import Schema

JSONL = "application/jsonl"
NDJSON = "application/x-ndjson"


@register_decoder(MLFLOW, JSONL, NDJSON)
def decode(body: bytes, schema: Schema | None = None) -> tuple[Any, None]:
    """Read JSON Lines into a DataFrame, its columns in the signature's types."""
    return decode_lines(body.splitlines(), schema), None


def decode_lines(lines: list[bytes], schema: Schema | None = None, first_line: int = 1) -> Any:
    """The DataFrame of ``lines`` (JSON objects; blank lines skipped). ``first_line`` is the number of
    ``lines[0]`` in its file, for the error that names a bad line."""
    rows = [line for line in lines if line.strip()]
    if not rows:
        raise PayloadError("the JSON Lines body holds no rows: send one JSON object per line")
    doc = b'{"dataframe_records":[' + b",".join(rows) + b"]}"
    try:
        data, _ = json_codec.decode(doc, schema)
    except PayloadError:
        _name_bad_line(lines, first_line)
        raise
    return data


def _name_bad_line(lines: list[bytes], first_line: int) -> None:
    """Raise :class:`PayloadError` naming the first line that is not a JSON object (if one is not)."""
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise PayloadError(f"line {first_line + i} is not valid JSON ({e}): {line[:60]!r}") from None
        if not isinstance(value, dict):
            raise PayloadError(
                f"line {first_line + i} is not a JSON object: JSON Lines input takes one row object per line"
            )
