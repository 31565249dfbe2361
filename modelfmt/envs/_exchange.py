"""What the caller and the scorer in the model's environment say to each other, over a pipe.

A message is a 4-byte big-endian length, a JSON header of that length, then the binary parts the header
lists (``"parts": [n0, n1, ...]``, their lengths). Values travel as a JSON *descriptor* in the header that
points at parts: DataFrames, Series and arrays as Arrow IPC streams (so int64 stays int64, datetimes,
strings, bools and categoricals survive exactly, whatever the pandas version on either side), plain
Python values as JSON. Both sides run the same modelfmt (the environment gets a wheel of the caller's),
so the two ends always speak the same version of this.

Only the types below cross; anything else is a :class:`TypeError` here, which each side turns into a
clear error. Nothing is ever unpickled: the model's environment cannot run code in the caller.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import IO, Any

_LENGTH = struct.Struct(">I")
_JSON_SCALARS = (str, int, float, bool, type(None))


# -- framing ------------------------------------------------------------------------------------
def write_message(stream: IO[bytes], header: dict, parts: list[Any] = ()) -> None:  # type: ignore[assignment]
    """Write one message: ``header`` (JSON-able) and its binary ``parts`` (bytes-like), then flush."""
    parts = list(parts)
    head = json.dumps({**header, "parts": [memoryview(p).nbytes for p in parts]}).encode("utf-8")
    stream.write(_LENGTH.pack(len(head)) + head)
    for p in parts:
        stream.write(p)
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[dict, list[bytes]] | None:
    """The next message as ``(header, parts)``; ``None`` when the stream ended cleanly before one.
    A stream that ends inside a message is an :class:`EOFError`."""
    raw = _read_exact(stream, _LENGTH.size, allow_eof=True)
    if raw is None:
        return None
    (n,) = _LENGTH.unpack(raw)
    header = json.loads(_read_exact(stream, n) or b"")
    parts = [_read_exact(stream, size) or b"" for size in header.pop("parts", [])]
    return header, parts


def _read_exact(stream: IO[bytes], n: int, allow_eof: bool = False) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            if got == 0 and allow_eof:
                return None
            raise EOFError(f"the stream ended {got} bytes into a {n}-byte read")
        got += k
    return bytes(buf)


# -- values -------------------------------------------------------------------------------------
def encode(value: Any, parts: list[Any]) -> dict:
    """The descriptor of ``value``; its binary parts are appended to ``parts``."""
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return _encode_frame(value, parts)
    if isinstance(value, pd.Series):
        name = value.name if value.name is None or isinstance(value.name, _JSON_SCALARS) else str(value.name)
        return {"k": "series", "name": name, "frame": _encode_frame(value.to_frame(name="values"), parts)}
    if isinstance(value, np.ndarray):
        return _encode_array(value, parts)
    if isinstance(value, np.generic):
        return {"k": "scalar", "array": _encode_array(np.asarray(value), parts)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        parts.append(bytes(value))
        return {"k": "bytes", "part": len(parts) - 1}
    if isinstance(value, _JSON_SCALARS):
        if isinstance(value, float) and value != value:
            return {"k": "nan"}
        return {"k": "json", "v": value}
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, _JSON_SCALARS) and not _is_nan(v) for v in value):
            return {"k": "json", "v": list(value), "tuple": isinstance(value, tuple)}
        return {"k": "list", "items": [encode(v, parts) for v in value], "tuple": isinstance(value, tuple)}
    if isinstance(value, dict):
        if not all(isinstance(k, _JSON_SCALARS) for k in value):
            raise TypeError("a dict whose keys are not strings or numbers")
        return {"k": "dict", "items": [[k, encode(v, parts)] for k, v in value.items()]}
    return _encode_arrow_scalar(value, parts)


def decode(desc: dict, parts: list[bytes]) -> Any:
    """The value ``desc`` (from :func:`encode`) describes."""
    kind = desc["k"]
    if kind == "json":
        v = desc["v"]
        return tuple(v) if desc.get("tuple") else v
    if kind == "nan":
        return float("nan")
    if kind == "frame":
        return _decode_frame(desc, parts)
    if kind == "series":
        s = _decode_frame(desc["frame"], parts)["values"]
        s.name = desc["name"]
        return s
    if kind == "ndarray":
        return _decode_array(desc, parts)
    if kind == "scalar":
        return _decode_array(desc["array"], parts)[()]
    if kind == "bytes":
        return parts[desc["part"]]
    if kind == "list":
        items = [decode(d, parts) for d in desc["items"]]
        return tuple(items) if desc.get("tuple") else items
    if kind == "dict":
        return {k: decode(d, parts) for k, d in desc["items"]}
    if kind == "arrow":
        return _read_table(parts[desc["part"]]).column(0).to_pylist()[0]
    raise ValueError(f"unknown value kind {kind!r} in a scorer message")


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


def _ipc(table: Any) -> Any:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _read_table(part: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(part)).read_all()


def _encode_frame(df: Any, parts: list[Any]) -> dict:
    import pyarrow as pa

    desc: dict[str, Any] = {"k": "frame"}
    names = list(df.columns)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        # Arrow wants unique string names: positional ones on the wire, the real ones in the header.
        desc["columns"] = [n if isinstance(n, _JSON_SCALARS) else str(n) for n in names]
        df = df.set_axis([f"_{i}" for i in range(len(names))], axis=1)
    # Columns of Python objects (strings, mostly): pandas 3 reads Arrow strings back as its str dtype.
    desc["object"] = [str(c) for c, t in zip(df.columns, df.dtypes, strict=True) if str(t) == "object"]
    try:
        table = pa.Table.from_pandas(df, preserve_index=None)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise TypeError(f"a DataFrame Arrow cannot hold ({e})") from e
    parts.append(_ipc(table))
    desc["part"] = len(parts) - 1
    return desc


def _decode_frame(desc: dict, parts: list[bytes]) -> Any:
    table = _read_table(parts[desc["part"]])
    df = table.to_pandas()
    for c in desc.get("object", ()):
        if df[c].dtype != object:  # pandas 3 made it str: the Python objects again (None stays None)
            import pandas as pd

            df[c] = pd.Series(_objects(table.column(c)), index=df.index, dtype=object)
    if "columns" in desc:
        df.columns = desc["columns"]
    return df


def _encode_array(arr: Any, parts: list[Any]) -> dict:
    import pyarrow as pa

    if arr.dtype.fields is not None:
        raise TypeError("a structured numpy array")
    flat = arr.reshape(-1)
    try:
        column = pa.array(list(flat) if arr.dtype.kind == "O" else flat)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise TypeError(f"a numpy array of {arr.dtype} Arrow cannot hold ({e})") from e
    parts.append(_ipc(pa.table({"values": column})))
    return {"k": "ndarray", "shape": list(arr.shape), "dtype": arr.dtype.str, "part": len(parts) - 1}


def _decode_array(desc: dict, parts: list[bytes]) -> Any:
    import numpy as np

    column = _read_table(parts[desc["part"]]).column(0)
    dtype = np.dtype(desc["dtype"])
    if dtype.kind == "O":
        flat = _objects(column)
    else:
        flat = column.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return flat.reshape(desc["shape"])


def _objects(column: Any) -> Any:
    """An Arrow column as a numpy array of Python objects."""
    import numpy as np

    flat = np.empty(len(column), dtype=object)
    for i, v in enumerate(column.to_pylist()):  # one by one: list items must not broadcast
        flat[i] = v
    return flat


def _encode_arrow_scalar(value: Any, parts: list[Any]) -> dict:
    """A value of a type Arrow knows (``datetime``, ``date``, ``Decimal``...), one row of one column."""
    import pyarrow as pa

    try:
        column = pa.array([value])
    except (pa.ArrowException, ValueError, TypeError):
        raise TypeError(f"a {type(value).__module__}.{type(value).__qualname__}") from None
    parts.append(_ipc(pa.table({"value": column})))
    return {"k": "arrow", "part": len(parts) - 1}


# -- errors -------------------------------------------------------------------------------------
def encode_error(e: BaseException) -> dict:
    """What the caller needs to raise ``e`` again: its class and bases (modelfmt's), message, code."""
    import traceback

    from modelfmt.errors import ModelfmtError

    classes = [f"{c.__module__}:{c.__qualname__}" for c in type(e).__mro__ if issubclass(c, ModelfmtError)]
    return {
        "classes": classes,
        "type": type(e).__name__,
        "message": getattr(e, "message", None) or str(e),
        "error_code": getattr(e, "error_code", None),
        "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)),
    }


def decode_error(info: dict, fallback: Callable[[str], Exception]) -> Exception:
    """The error :func:`encode_error` described, as the same modelfmt class when this process knows it
    (same message and code); a non-modelfmt error becomes ``fallback`` naming its type."""
    from modelfmt.errors import ModelfmtError

    known = {f"{c.__module__}:{c.__qualname__}": c for c in _subclasses(ModelfmtError)}
    for name in info.get("classes", ()):
        cls = known.get(name)
        if cls is None:
            continue
        try:
            err: Exception = cls(info["message"], info.get("error_code"))
        except TypeError:  # a subclass with another constructor: its nearest plain base
            continue
        return err
    return fallback(f"{info.get('type', 'Exception')}: {info['message']}")


def _subclasses(cls: type[Any]) -> list[type[Any]]:
    out: list[type[Any]] = [cls]
    subs: list[type[Any]] = cls.__subclasses__()
    for sub in subs:
        out.extend(_subclasses(sub))
    return out
