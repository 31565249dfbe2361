"""Input examples: ``input_example.json`` and ``serving_input_example.json`` as MLflow writes them.

An example may carry inference params, as MLflow 3 takes them: ``(input, {"k": 1})``. MLflow stores
that as ``{"inputs": <the input as stored alone>, "params": {...}}`` in ``input_example.json``, the
params beside the input key in ``serving_input_example.json``, and ``params: 'true'`` (a string) in
``saved_input_example_info``; modelfmt writes and reads the same layout.
"""

from __future__ import annotations

import os
from typing import Any

from modelfmt.errors import ModelFormatError
from modelfmt.jsonenc import dumps, loads
from modelfmt.model import Model

INPUT_EXAMPLE_FILE = "input_example.json"
SERVING_INPUT_FILE = "serving_input_example.json"


def frame_to_split(df: Any) -> dict:
    """A DataFrame as MLflow's ``split`` orient without index: ``{"columns": [...], "data": [...]}``."""
    import numpy as np

    rows = df.astype(object).where(df.notna(), None).to_numpy().tolist() if len(df.columns) else []
    if any(isinstance(v, float) and np.isnan(v) for r in rows for v in r):
        rows = [[None if isinstance(v, float) and np.isnan(v) else v for v in r] for r in rows]
    return {"columns": [str(c) for c in df.columns], "data": rows}


def split_input_example(example: Any) -> tuple[Any, dict | None]:
    """``(input, params)`` of an input example: a 2-tuple whose second item is a dict is an input with
    its params, as in MLflow (``(df, {"k": 1})``); anything else is an input without params."""
    if isinstance(example, tuple) and len(example) == 2 and isinstance(example[1], dict):
        data, params = example
        bad = [k for k in params if not isinstance(k, str)]
        if bad:
            raise ModelFormatError(f"the params of an input example are named by strings, got {bad[0]!r}")
        return data, params
    return example, None


def example_payloads(example: Any) -> tuple[dict, Any, dict]:
    """``(info, input_example.json content, serving_input_example.json content)`` for an example
    (an input, or an ``(input, params)`` tuple)."""
    data, params = split_input_example(example)
    info, stored, serving = _input_payloads(data)
    if params is None:
        return info, stored, serving
    # MLflow writes the flag as the string 'true', and reads any value but a missing one as "has params".
    return {**info, "params": "true"}, {"inputs": stored, "params": params}, {**serving, "params": params}


def _input_payloads(example: Any) -> tuple[dict, Any, dict]:
    import numpy as np
    import pandas as pd

    if isinstance(example, pd.Series):
        example = example.to_frame()
    if isinstance(example, dict) and example and all(np.ndim(v) == 0 for v in example.values()):
        example = pd.DataFrame([example])
    if isinstance(example, pd.DataFrame):
        split = frame_to_split(example)
        return {"type": "dataframe", "pandas_orient": "split"}, split, {"dataframe_split": split}
    if isinstance(example, np.ndarray):
        data = example.tolist()
        return {"type": "ndarray"}, data, {"inputs": data}
    if isinstance(example, dict) and all(isinstance(v, np.ndarray) for v in example.values()):
        data = {k: v.tolist() for k, v in example.items()}
        return {"type": "ndarray"}, data, {"inputs": data}
    if isinstance(example, (list, dict, str, int, float, bool)):
        return {"type": "json_object"}, example, {"inputs": example}
    raise ModelFormatError(f"cannot save an input example of type {type(example).__name__}")


def save_input_example(path: str, example: Any) -> dict:
    """Write both example files into ``path``; returns ``saved_input_example_info``."""
    info, stored, serving = example_payloads(example)
    with open(os.path.join(path, INPUT_EXAMPLE_FILE), "wb") as f:
        f.write(dumps(stored))
    with open(os.path.join(path, SERVING_INPUT_FILE), "wb") as f:
        f.write(dumps(serving, indent=True))
    return {"artifact_path": INPUT_EXAMPLE_FILE, "serving_input_path": SERVING_INPUT_FILE, **info}


def _example_info(path: str, model: Model | None) -> dict:
    """``saved_input_example_info`` of the model (empty when it has none)."""
    info = (model or Model.load(path)).saved_input_example_info or {}
    if not isinstance(info, dict):
        raise ModelFormatError(f"saved_input_example_info in MLmodel should be a mapping, got {info!r:.60}")
    return info


def load_input_example(path: str, model: Model | None = None) -> Any:
    """The input example of the model at ``path`` as model input, or ``None`` when it has none.

    MLflow writes a missing float as a bare ``NaN`` (Python's json); it is read back as NaN. An
    ``ndarray`` example takes its tensor spec's numeric dtype, as in MLflow (``null`` becomes NaN).
    """
    model = model or Model.load(path)
    info = _example_info(path, model)
    if not info:
        return None
    fp, data = _read_example_file(path, info)
    if info.get("params") is not None and isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]  # an example given with params: {"inputs": ..., "params": ...}
    try:
        return _example_from_json(data, info, _tensor_dtypes(model))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"the input example {fp!r} does not match its {info.get('type')!r} type: {e}") from e


def load_input_example_params(path: str, model: Model | None = None) -> dict | None:
    """The params saved with the model's input example (``(input, params)``), or ``None`` when it has none.

    Reads what MLflow 3 writes for ``input_example=(df, {"k": 1})`` and what :func:`save_input_example`
    writes for the same tuple.
    """
    info = _example_info(path, model)
    if info.get("params") is None:
        return None
    fp, doc = _read_example_file(path, info)
    params = doc.get("params") if isinstance(doc, dict) else None
    if not isinstance(params, dict):
        raise ModelFormatError(f"the input example {fp!r} is marked as having params but holds no 'params' object")
    return params


def _read_example_file(path: str, info: dict) -> tuple[str, Any]:
    """The example file's path and its parsed JSON (NaN literals taken, as MLflow writes them)."""
    fp = os.path.join(path, info.get("artifact_path", INPUT_EXAMPLE_FILE))
    try:
        with open(fp, "rb") as f:
            return fp, loads(f.read())
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"cannot read the input example {fp!r}: {e}") from e


def _tensor_dtypes(model: Model) -> dict:
    """The numeric dtypes of the model's input tensors by name (``None`` for an unnamed one)."""
    from modelfmt.signature import TensorSpec

    schema = model.get_input_schema()
    specs = schema.inputs if schema is not None else []
    return {s.name: s.dtype for s in specs if isinstance(s, TensorSpec) and s.dtype.kind in "biuf"}


def _as_tensor(values: Any, dtype: Any) -> Any:
    import numpy as np

    if dtype is not None:
        try:
            return np.asarray(values, dtype=dtype)
        except (TypeError, ValueError):
            pass  # e.g. null in an integer tensor: kept as it is, for enforcement to name
    return np.asarray(values)


def _example_from_json(data: Any, info: dict, dtypes: dict | None = None) -> Any:
    dtypes = dtypes or {}
    kind = info.get("type")
    if kind == "dataframe":
        import pandas as pd

        if info.get("pandas_orient", "split") == "records":
            return pd.DataFrame(data)
        return pd.DataFrame(data["data"], columns=data["columns"])
    if kind == "ndarray":
        if isinstance(data, dict):
            return {k: _as_tensor(v, dtypes.get(k)) for k, v in data.items()}
        return _as_tensor(data, dtypes.get(None))
    return data


def load_serving_input_example(path: str, model: Model | None = None) -> bytes | None:
    """The bytes of ``serving_input_example.json`` (a ready ``/invocations`` body), if any.

    MLflow writes a missing float there as a bare ``NaN`` (and infinities as ``Infinity``), which is not
    JSON; such a file is re-encoded with ``null`` for those values (a missing value in every request format).
    """
    import orjson

    name = _example_info(path, model).get("serving_input_path")
    if not name or not os.path.isfile(os.path.join(path, name)):
        return None
    with open(os.path.join(path, name), "rb") as f:
        raw = f.read()
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return dumps(loads(raw), indent=True)
        except ValueError:
            pass  # not JSON at all: left for the server to report as it reports any bad example
    return raw
