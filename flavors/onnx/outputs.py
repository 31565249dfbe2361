"""How the onnx flavor answers a DataFrame: the graph's outputs as one table, row-aligned with the input."""

from __future__ import annotations

from typing import Any

from modelfmt.errors import PredictionError


def output_frame(names: list[str], outputs: list, index: Any) -> Any:
    """The graph's outputs for a DataFrame of ``len(index)`` rows, as a DataFrame: a column per output.

    MLflow's onnx pyfunc flattens every output to 1-d, so an ``[N, k]`` output (``predict_proba``)
    becomes ``N * k`` rows there, and a 1-d label beside it fails to make a frame. Here an output with
    one entry per input row keeps one row per input row: ``[N]`` and ``[N, 1]`` as values (as in
    MLflow), ``[N, k, ...]`` as one (nested) list per row. Only outputs without one entry per row (a scalar,
    a batch summary) are flattened as MLflow does; if those lengths disagree there is no table to make.
    """
    import numpy as np
    import pandas as pd

    n = len(index)
    columns: dict = {}
    per_row = True
    for name, value in zip(names, outputs, strict=True):
        arr = np.asarray(value) if not isinstance(value, np.ndarray) else value  # sequences, as MLflow reads them
        if arr.ndim >= 1 and len(arr) == n:
            # Rows as lists: what a JSON answer and a Spark array column take, with MLflow's float digits.
            columns[name] = arr.reshape(n) if arr.size == n else arr.tolist()
        else:
            columns[name] = arr.reshape(-1)
            per_row = False
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise PredictionError(
            f"the ONNX outputs do not make a table for a DataFrame of {n} rows (values per output: {lengths}); "
            "send the input as tensors ('inputs' or 'instances') to get each output as an array by name"
        )
    return pd.DataFrame(columns, index=index if per_row else None)
