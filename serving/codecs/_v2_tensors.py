"""V2 tensors: the datatypes, and one tensor from JSON ``data`` or raw bytes and back. Pure functions.

Re-exported by :mod:`modelfmt.serving.codecs.v2`, the module to import; here so that the content-type
layer (:mod:`modelfmt.serving.codecs._v2_content`) and the request bodies share it without a cycle.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import struct
from typing import Any

import numpy as np

from modelfmt.errors import PayloadError

DATATYPES: dict[str, Any] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
    "BF16": None,  # no numpy dtype: binary data only, widened to FP32 on reading
}


@dataclasses.dataclass
class Tensor:
    """One named V2 tensor: ``datatype`` (a key of :data:`DATATYPES`), ``shape``, ``data`` (a numpy array
    of that shape; BYTES: an object array of ``bytes`` or ``str``), and its ``parameters``."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


# The integer datatypes, for the range check of JSON numbers (numpy's astype would wrap 300 into 44).
_INTEGER_KINDS = "iu"
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix
_NONE = object()


def tensor_from_json(name: str, datatype: str, shape: list[int], data: Any,
                     parameters: dict[str, Any] | None = None) -> Tensor:
    """A tensor from a JSON input (``data`` flat or nested); a PayloadError naming the input when the
    datatype is unknown or the data does not fill the shape."""
    datatype = check_datatype(name, datatype)
    shape = check_shape(name, shape)
    if datatype == "BF16":
        raise PayloadError(f"input {name!r}: BF16 has no JSON form; send it as binary data (binary_data_size)")
    count = math.prod(shape)
    arr = _bytes_elements(name, data, count) if datatype == "BYTES" else _json_numbers(name, datatype, data, count)
    return Tensor(name, datatype, shape, arr.reshape(shape), dict(parameters or {}))


def tensor_from_bytes(name: str, datatype: str, shape: list[int], raw: bytes,
                      parameters: dict[str, Any] | None = None) -> Tensor:
    """A tensor from raw little-endian bytes (BYTES: each element a 4-byte little-endian length and
    its bytes), as the binary extension and gRPC's ``raw_input_contents`` carry it."""
    datatype = check_datatype(name, datatype)
    shape = check_shape(name, shape)
    count = math.prod(shape)
    if datatype == "BYTES":
        arr = _split_bytes(name, raw, count)
    elif datatype == "BF16":
        _check_size(name, raw, count * 2, datatype)
        # bfloat16 is the upper half of a float32: widen by shifting the bits into place.
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    elif datatype == "BOOL":
        _check_size(name, raw, count, datatype)
        octets = np.frombuffer(raw, dtype=np.uint8)
        if count and octets.max() > 1:
            raise PayloadError(f"input {name!r}: BOOL binary data holds bytes other than 0 and 1")
        arr = octets.astype(np.bool_)
    else:
        dtype = DATATYPES[datatype]
        _check_size(name, raw, count * dtype.itemsize, datatype)
        # astype: native byte order, and a writable copy the model may change in place.
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    return Tensor(name, datatype, shape, arr.reshape(shape), dict(parameters or {}))


def check_datatype(name: str, datatype: Any) -> str:
    """``datatype`` when it is one of the protocol's, else a PayloadError naming the input."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise PayloadError(f"input {name!r}: unknown datatype {datatype!r}; the protocol's datatypes are "
                           f"{', '.join(DATATYPES)}")
    return datatype


def check_shape(name: str, shape: Any) -> list[int]:
    """``shape`` as a list of non-negative integers, else a PayloadError naming the input."""
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise PayloadError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return [int(d) for d in shape]


def _flatten(data: Any) -> list:
    """The elements of a flat or nested JSON list, row major (a scalar is one element)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    out: list = []
    for v in data:
        out.extend(_flatten(v))
    return out


def _count_error(name: str, count: int, got: int) -> PayloadError:
    return PayloadError(f"input {name!r}: its shape holds {count} element(s), its data has {got}")


def _bytes_elements(name: str, data: Any, count: int) -> Any:
    flat = _flatten(data)
    if len(flat) != count:
        raise _count_error(name, count, len(flat))
    for v in flat:
        if not isinstance(v, (str, bytes)):
            raise PayloadError(f"input {name!r}: BYTES elements are strings, got {type(v).__name__} {v!r:.40}")
    arr = np.empty(count, dtype=object)
    arr[:] = flat
    return arr


def _json_numbers(name: str, datatype: str, data: Any, count: int) -> Any:
    want = DATATYPES[datatype]
    try:
        arr = np.asarray(data)
    except ValueError:  # nesting of uneven depth: read it flat
        arr = np.asarray(_flatten(data))
    arr = arr.reshape(-1)
    if arr.size != count:
        raise _count_error(name, count, arr.size)
    if count == 0:
        return arr.astype(want)
    kind = arr.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise PayloadError(f"input {name!r}: BOOL data are true or false, got {_what(arr)}")
        return arr
    if kind == "O" and want.kind == "f":
        arr = _nulls_as_nan(arr)  # null is how outputs write NaN (MLServer too): read it back so
        kind = arr.dtype.kind
    if kind not in "iuf":
        raise PayloadError(f"input {name!r}: {datatype} data are numbers, got {_what(arr)}")
    if want.kind in _INTEGER_KINDS:
        if kind == "f" and not (np.isfinite(arr).all() and (arr == np.trunc(arr)).all()):
            raise PayloadError(f"input {name!r}: {datatype} data are whole numbers, got {_first_fraction(arr)!r}")
        info = np.iinfo(want)
        low, high = arr.min(), arr.max()
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise PayloadError(f"input {name!r}: {bad} is out of the range of {datatype} ({info.min}..{info.max})")
    return arr.astype(want)


def _nulls_as_nan(arr: Any) -> Any:
    """An object array of numbers and nulls as float64 with NaN; unchanged when it holds anything else."""
    values = arr.tolist()
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return arr


def _what(arr: Any) -> str:
    """How the JSON values of ``arr`` look, for a message (``strings such as 'a'``, ``null``...)."""
    if arr.dtype.kind == "b":
        return "true/false"
    if arr.dtype.kind == "U":
        return f"strings such as {str(arr[0])!r:.40}"
    if arr.dtype.kind in "iuf":
        return "numbers"
    values = arr.tolist()
    if any(v is None for v in values):
        return "null"
    odd = next((v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)), _NONE)
    if odd is _NONE:
        return "integers too large for any datatype"
    return f"{type(odd).__name__} values such as {odd!r:.40}"


def _first_fraction(arr: Any) -> Any:
    bad = arr[~(np.isfinite(arr) & (arr == np.trunc(arr)))]
    return bad[0].item()


def _check_size(name: str, raw: Any, size: int, datatype: str) -> None:
    if len(raw) != size:
        raise PayloadError(f"input {name!r}: {len(raw)} bytes of binary data, but its shape and datatype "
                           f"({datatype}) take {size}")


def _split_bytes(name: str, raw: Any, count: int) -> Any:
    """The BYTES elements of length-prefixed binary data."""
    view = memoryview(raw)
    arr = np.empty(count, dtype=object)
    offset, end = 0, len(view)
    for i in range(count):
        if offset + 4 > end:
            raise PayloadError(f"input {name!r}: the binary data ends after {i} of its {count} BYTES elements")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise PayloadError(f"input {name!r}: BYTES element {i} declares {length} bytes; "
                               f"only {end - offset} remain")
        arr[i] = bytes(view[offset:offset + length])
        offset += length
    if offset != end:
        raise PayloadError(f"input {name!r}: {end - offset} bytes of binary data left after its {count} BYTES elements")
    return arr


def tensor_to_json(tensor: Tensor) -> dict[str, Any]:
    """The JSON output object of ``tensor`` (``name``, ``datatype``, ``shape``, flat ``data``)."""
    datatype, params = tensor.datatype, dict(tensor.parameters)
    flat = np.asarray(tensor.data).reshape(-1)
    if datatype == "BYTES":
        data: list = flat.tolist()
        if any(isinstance(v, bytes) for v in data):
            try:
                data = [v.decode("utf-8") if isinstance(v, bytes) else v for v in data]
            except UnicodeDecodeError:  # not text: JSON carries it as base64, and says so
                data = [base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode("ascii") for v in data]
                params["content_type"] = "base64"
    else:
        if datatype == "BF16":  # no JSON form: the float32 values it was widened to
            datatype = "FP32"
        data = flat.tolist()  # NaN is written as null
    out: dict[str, Any] = {"name": tensor.name, "datatype": datatype, "shape": list(tensor.shape), "data": data}
    if params:
        out["parameters"] = params
    return out


def tensor_to_bytes(tensor: Tensor) -> bytes:
    """The raw little-endian bytes of ``tensor`` (BYTES length-prefixed)."""
    datatype = tensor.datatype
    if datatype == "BYTES":
        parts = []
        for v in np.asarray(tensor.data, dtype=object).reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(_LENGTH.pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    if datatype == "BF16":
        bits = np.ascontiguousarray(tensor.data, dtype=np.float32).reshape(-1).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        return rounded.astype("<u2").tobytes()
    dtype = DATATYPES[datatype]
    return np.ascontiguousarray(tensor.data, dtype=dtype.newbyteorder("<")).tobytes()
