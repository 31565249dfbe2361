"""The one numeric conversion policy: which numbers become which, for columns, tensors, codecs and feeds.

Every place that changes the dtype of numeric input (signature enforcement of columns and tensors,
the JSON and CSV codecs, the ONNX feed) asks this module, so one request gets one answer everywhere.
The policy is :data:`TABLE`, source dtype x target dtype, each cell one :class:`Rule`:

- ``accept``: every value of the source type has an exact value in the target (widening).
- ``narrow``: a float into a narrower float, rounded to the nearest value, always: Spark and JSON
  hand doubles to float32 models all the time, and refusing some batches by their values would make
  a job pass one batch and fail the next. A finite value beyond the target's range is refused (it
  would become infinity, not a rounding of itself).
- ``fit``: an integer type the target cannot hold in full (``int64`` into ``int32``, ``int64`` into
  ``float64`` past 2**53): accepted when every value fits the target exactly, else refused naming a
  value. The one rule that looks at values, since integers sent over JSON are always ``int64``.
- ``parse``: a string into a number, when it is a number written out exactly: an integer literal
  (``"42"``, ``"-7"``) for any numeric target, a decimal or exponent literal (``"0.05"``, ``"1e-3"``)
  or ``nan``/``inf``/``infinity`` for a float target. The parsed value then follows the ``int64`` or
  ``float64`` row (``"3.0"`` never becomes a ``long``; ``"1e40"`` is beyond a ``float``); any other
  string is refused naming it. MLflow clients send numbers as strings (CSV exports, form fields,
  JavaScript's ``toFixed``); the literal parses to one value, so nothing is guessed.
- ``format``: an integer into a string column, as its decimal text (``7`` becomes ``"7"``): IDs and
  codes sent as JSON numbers. One integer has one text; a float has several (``1.0`` or ``1``,
  ``1e3`` or ``1000.0``) and a boolean too (``True``, ``true``, ``1``), so those are refused: send
  the strings the model was trained on.
- ``refuse``: never converted: a float into an integer (it would truncate), booleans to or from
  numbers or strings.

Rules are decided by type (with ``fit`` and ``parse`` looking at values), never silently lossy
except ``narrow``.
"""

from __future__ import annotations

import enum
import re
from functools import lru_cache
from typing import Any

from modelfmt.errors import SchemaError
from modelfmt.types import DataType


class Rule(enum.Enum):
    """What happens to input of one dtype for a target of another."""

    ACCEPT = "accept"
    NARROW = "narrow"
    FIT = "fit"
    PARSE = "parse"
    FORMAT = "format"
    REFUSE = "refuse"


# Rows are the input's dtype, columns the target's (a tensor spec's dtype, or a column type's:
# boolean = bool, integer = int32, long = int64, float = float32, double = float64, string = str).
_GRID = """
source        bool    int8   int16   int32   int64   uint8  uint16  uint32  uint64 float16 float32 float64  string
bool        accept  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse
int8        refuse  accept  accept  accept  accept     fit     fit     fit     fit  accept  accept  accept  format
int16       refuse     fit  accept  accept  accept     fit     fit     fit     fit     fit  accept  accept  format
int32       refuse     fit     fit  accept  accept     fit     fit     fit     fit     fit     fit  accept  format
int64       refuse     fit     fit     fit  accept     fit     fit     fit     fit     fit     fit     fit  format
uint8       refuse     fit  accept  accept  accept  accept  accept  accept  accept  accept  accept  accept  format
uint16      refuse     fit     fit  accept  accept     fit  accept  accept  accept     fit  accept  accept  format
uint32      refuse     fit     fit     fit  accept     fit     fit  accept  accept     fit     fit  accept  format
uint64      refuse     fit     fit     fit     fit     fit     fit     fit  accept     fit     fit     fit  format
float16     refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  accept  accept  accept  refuse
float32     refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  narrow  accept  accept  refuse
float64     refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  refuse  narrow  narrow  accept  refuse
string      refuse   parse   parse   parse   parse   parse   parse   parse   parse   parse   parse   parse  accept
"""


def _parse(grid: str) -> dict[tuple[str, str], Rule]:
    header, *rows = grid.strip().splitlines()
    targets = header.split()[1:]
    table = {}
    for row in rows:
        source, *cells = row.split()
        table.update({(source, target): Rule(cell) for target, cell in zip(targets, cells, strict=True)})
    return table


#: ``(source dtype name, target dtype name) -> Rule``; any pair not in it (strings, datetimes, objects) is refused.
TABLE: dict[tuple[str, str], Rule] = _parse(_GRID)
#: The dtypes the table covers, in its order.
DTYPES: tuple[str, ...] = tuple(_GRID.split("\n", 2)[1].split()[1:])

#: Up to this magnitude every integer has an exact value in the float type: 2**(mantissa bits + 1).
EXACT_INTEGERS: dict[str, int] = {"float16": 2**11, "float32": 2**24, "float64": 2**53}


_STRING = "string"
# Exactly written numbers: what "parse" reads (surrounding spaces allowed, as in CSV cells; no
# underscores, hex or other Python-only spellings).
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_FLOAT_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*|\s*[+-]?(nan|inf|infinity)\s*", re.IGNORECASE)


def target_dtype(target: Any) -> Any:
    """The numpy dtype of ``target``: a :class:`DataType` (its column dtype) or anything ``np.dtype`` takes."""
    import numpy as np

    return target.to_numpy() if isinstance(target, DataType) else np.dtype(target)


def _name(dtype: Any) -> str:
    # numpy's sized strings (<U3 is "str96") are all one row of the table.
    return _STRING if dtype.kind == "U" else dtype.name


@lru_cache(maxsize=512)
def _decide(source: Any, target: Any) -> Rule:
    return TABLE.get((_name(source), _name(target)), Rule.REFUSE)


def decide(source: Any, target: Any) -> Rule:
    """The :class:`Rule` for input of dtype ``source`` given to a ``target`` (a DataType or dtype).

    ``DataType.string`` (and numpy's ``str`` dtypes) is the table's ``string``.
    """
    import numpy as np

    want = np.dtype(str) if target == DataType.string else target_dtype(target)
    return _decide(np.dtype(source), want)


def cast_array(arr: Any, target: Any, what: str) -> Any:
    """``arr`` in the ``target`` type by :data:`TABLE`, or :class:`SchemaError` naming ``what`` and both types.

    ``what`` names the input for the message (``"column 'age'"``, ``"tensor 'x'"``). An object or
    string array (Python numbers and strings, e.g. from JSON) is first read as numbers: a null as NaN,
    a string by the ``parse`` rule.
    """
    want = target_dtype(target)
    if arr.dtype == want:
        return arr
    if arr.dtype == object or arr.dtype.kind == "U":
        arr = as_numbers(arr, target, what)
    out, why = _convert(arr, want, _label(target))
    if out is None:
        raise SchemaError(f"{what}: expected {_label(target)}, got {arr.dtype} ({why})")
    return out


def conform(arr: Any, target: Any) -> Any:
    """``arr`` in the ``target`` type when :data:`TABLE` allows it, else ``arr`` unchanged.

    For the codecs: what the policy refuses is left as it came, for enforcement to refuse with the
    column named (one message, whichever way the input arrived).
    """
    want = target_dtype(target)
    if arr.dtype == want or arr.dtype.kind not in "biuf":
        return arr
    out, _ = _convert(arr, want, "")
    return arr if out is None else out


def as_numbers(arr: Any, target: Any, what: str) -> Any:
    """An object (or string) array of Python numbers and numeric strings as a numeric array of the
    same shape; nulls become NaN, strings are read by the ``parse`` rule.

    Booleans among numbers and other values are refused: numpy would read ``True`` as 1.
    """
    import numpy as np
    import pandas as pd

    values = arr.ravel().tolist()
    if any(isinstance(v, str) for v in values):
        values = [parse_number(v, target, what) if isinstance(v, str) else v for v in values]
    nulls = [v is None or v is pd.NA for v in values]
    bad = next((v for v, null in zip(values, nulls, strict=True) if not null and not _is_number(v)), _NOTHING)
    if bad is not _NOTHING:
        raise SchemaError(
            f"{what}: expected {_label(target)}, got a value of type {type(bad).__name__} ({bad!r:.40})"
        )
    try:
        if any(nulls):
            _refuse_rounded_integers(values, target, what)
            out = np.array([np.nan if null else v for v, null in zip(values, nulls, strict=True)], dtype=np.float64)
        else:
            out = np.array(values)
    except (ValueError, TypeError, OverflowError):  # e.g. integers beyond 64 bits
        out = None
    if out is None or out.dtype.kind not in "iuf":
        raise SchemaError(f"{what}: expected {_label(target)}, got numbers that fit no numeric type")
    return out.reshape(arr.shape)


def parse_number(text: str, target: Any, what: str) -> int | float:
    """The number ``text`` spells exactly (the ``parse`` rule), as ``int`` or ``float``; else
    :class:`SchemaError` naming ``what`` and the string.

    An integer literal is an ``int`` (so it fits or is refused by the ``int64`` row, never rounded);
    for a float target a decimal, exponent, ``nan`` or ``inf`` literal is a ``float``.
    """
    import numpy as np

    want = target_dtype(target)
    if _decide(np.dtype(str), want) is not Rule.PARSE:
        raise SchemaError(f"{what}: expected {_label(target)}, got the string {text!r:.40}")
    if _INTEGER_TEXT.fullmatch(text):
        return int(text)
    if want.kind == "f" and _FLOAT_TEXT.fullmatch(text):
        return float(text)
    kind = "an integer" if want.kind in "iu" else "a number"
    raise SchemaError(f"{what}: expected {_label(target)}, got the string {text!r:.40}, which is not {kind}")


def as_text(arr: Any, what: str) -> Any:
    """An object array of strings for a ``string`` target, by the table's ``string`` column: strings and
    nulls stay, integers become their decimal text (``format``); other values are refused naming ``what``."""
    import numpy as np

    if arr.dtype.kind in "iu":
        out = np.empty(arr.size, dtype=object)
        out[:] = [str(v) for v in arr.ravel().tolist()]
        return out.reshape(arr.shape)
    if arr.dtype != object and arr.dtype.kind != "U":
        raise SchemaError(f"{what}: expected string, got {arr.dtype} ({_refusal(arr, np.dtype(str))})")
    values = arr.ravel().tolist()
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, str) or _is_null(v):
            out[i] = v
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            out[i] = str(int(v))
        else:
            scalar = isinstance(v, (bool, float, np.generic))
            why = _refusal(np.asarray([v]), np.dtype(str)) if scalar else "not a string"
            raise SchemaError(f"{what}: expected string, got a value of type {type(v).__name__} ({v!r:.40}): {why}")
    return out.reshape(arr.shape)


def _is_null(v: Any) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


_NOTHING = object()


def _refuse_rounded_integers(values: list, target: Any, what: str) -> None:
    # Beside nulls, integers are read as doubles (NaN marks the nulls): only those up to 2**53 survive.
    limit = EXACT_INTEGERS["float64"]
    big = next((v for v in values if isinstance(v, int) and abs(v) > limit), None)
    if big is not None:
        raise SchemaError(
            f"{what}: expected {_label(target)}, got integers beside nulls, read as double: "
            f"integers beyond 2**53 lose precision, such as {big}"
        )


def _is_number(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _label(target: Any) -> str:
    return target.value if isinstance(target, DataType) else str(target_dtype(target))


def _convert(arr: Any, want: Any, label: str) -> tuple[Any, str]:
    """``(converted array, "")`` or ``(None, why it is refused)``; ``label`` names the target type."""
    rule = _decide(arr.dtype, want)
    if rule is Rule.ACCEPT:
        return arr.astype(want), ""
    if rule is Rule.NARROW:
        return _narrow(arr, want, label)
    if rule is Rule.FIT:
        return _fit(arr, want, label)
    return None, _refusal(arr, want)


def _narrow(arr: Any, want: Any, label: str) -> tuple[Any, str]:
    import numpy as np

    with np.errstate(over="ignore"):
        out = arr.astype(want)
    if arr.size and np.isinf(out).any():
        overflow = np.isinf(out) & np.isfinite(arr)
        if overflow.any():
            value = float(arr[overflow].flat[0])
            return None, f"{value:g} is beyond the {label} range, largest {float(np.finfo(want).max):g}"
    return out, ""


def _fit(arr: Any, want: Any, label: str) -> tuple[Any, str]:
    import numpy as np

    if want.kind == "f":
        limit = EXACT_INTEGERS[want.name]
        power = f"2**{limit.bit_length() - 1}"
        lo, hi, why = -limit, limit, f"integers beyond {power} lose precision as {label}"
    else:
        info = np.iinfo(want)
        lo, hi, why = int(info.min), int(info.max), f"values outside the {label} range [{info.min}, {info.max}]"
    if arr.size == 0:
        return arr.astype(want), ""
    low, high = int(arr.min()), int(arr.max())
    if low >= lo and high <= hi:
        return arr.astype(want), ""
    return None, f"{why}, such as {low if low < lo else high}"


def _refusal(arr: Any, want: Any) -> str:
    import numpy as np

    kind = arr.dtype.kind
    if want.kind == "U":
        if kind == "b":
            return "a boolean is never converted to a string (True, true or 1?); send strings"
        return "a float is never converted to a string (1.0 or 1? 1e3 or 1000.0?); send strings"
    if kind == "b":
        return "a boolean is never converted to a number"
    if want.kind == "b":
        return "a string is never converted to a boolean" if kind == "U" else "a number is never converted to a boolean"
    if kind == "f" and want.kind in "iu":
        if arr.size and np.isnan(arr).any():
            return "missing values: an integer cannot hold a null or NaN; declare the input as double to allow them"
        return "a float is never converted to an integer; send whole numbers as integers"
    return "these values are not numbers"


def markdown_table() -> str:
    """:data:`TABLE` as the Markdown table in README's input-checking section (tested to match)."""
    names = {"bool": "boolean", "int32": "integer", "int64": "long", "float32": "float", "float64": "double",
             "string": "string"}
    head = [f"{t} (`{names[t]}`)" if t in names else t for t in DTYPES]
    lines = ["| input \\ target | " + " | ".join(head) + " |", "|---" * (len(DTYPES) + 1) + "|"]
    for source in DTYPES:
        lines.append(f"| {source} | " + " | ".join(TABLE[(source, t)].value for t in DTYPES) + " |")
    return "\n".join(lines)
