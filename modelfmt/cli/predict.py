"""``modelfmt predict``: score a file (CSV, JSON in MLflow's request formats, Parquet) with a model."""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import click

from modelfmt.errors import PayloadError, SchemaError

FORMATS = ("json", "csv", "parquet")
_CONTENT_TYPES = {"json": "application/json", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def format_for(path: str, given: str | None, body: bytes | None = None) -> str:
    """The data format of ``path``: ``given`` if set, else from the extension; for ``-`` (stdin) or a
    name without one, from the ``body`` when it is known (:func:`sniff_format`), else ``json``."""
    if given:
        return given
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext in ("pq", "parq"):
        ext = "parquet"
    if path == "-" or not ext:
        return sniff_format(body) if body is not None else "json"
    if ext not in FORMATS:
        raise PayloadError(f"cannot tell the format of {path!r} from its extension; pass --format json|csv|parquet")
    return ext


def sniff_format(body: bytes) -> str:
    """``json``, ``parquet`` or ``csv`` for a body of unknown format: a JSON object starts with ``{``,
    Parquet with ``PAR1``; anything else is read as CSV (its errors then name ``--format``)."""
    if body.startswith(b"PAR1"):
        return "parquet"
    if body.lstrip()[:1] == b"{":
        return "json"
    return "csv"


def read_input(body: bytes, fmt: str, schema: Any) -> tuple[Any, dict | None]:
    """Model input and params from file bytes, through the server's codecs (so a file means what the
    same body posted to ``/invocations`` means)."""
    from modelfmt.serving.codecs import decode_request

    return decode_request(body, _CONTENT_TYPES[fmt], schema)


def _as_frame(predictions: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return predictions
    if isinstance(predictions, pd.Series):
        return predictions.to_frame(name=predictions.name or "prediction")
    if isinstance(predictions, dict):
        return pd.DataFrame({k: list(np.asarray(v)) if np.ndim(v) > 1 else v for k, v in predictions.items()})
    arr = np.asarray(predictions)
    if arr.ndim <= 1:
        return pd.DataFrame({"prediction": arr.reshape(-1)})
    return pd.DataFrame(arr.reshape(arr.shape[0], -1))


def write_output(predictions: Any, fmt: str) -> bytes:
    """Prediction bytes: ``{"predictions": ...}`` JSON as the server answers, or CSV / Parquet tables."""
    if fmt == "json":
        from modelfmt.serving.codecs import encode_predictions

        return encode_predictions(predictions)
    df = _as_frame(predictions)
    df.columns = [str(c) for c in df.columns]
    if fmt == "csv":
        return df.to_csv(index=False).encode("utf-8")
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _write(path: str, out: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as f:
        f.write(out)


@click.command("predict")
@click.argument("model", type=click.Path())
@click.option("-i", "--input", "input_path", required=True, help="Input file, or - for stdin.")
@click.option("-o", "--output", "output_path", default="-", show_default=True, help="Output file, or - for stdout.")
@click.option("--format", "in_format", type=click.Choice(FORMATS), help="Input format (default: from the extension).")
@click.option("--output-format", "out_format", type=click.Choice(FORMATS),
              help="Output format (default: from the extension).")
def predict(model: str, input_path: str, output_path: str, in_format: str | None, out_format: str | None) -> None:
    """Score INPUT with MODEL and write the predictions to OUTPUT."""
    from modelfmt.cli import opening_options
    from modelfmt.flavors.pyfunc import load_model
    from modelfmt.open import open_model

    fmt_out = format_for(output_path, out_format)
    opened = open_model(model, **opening_options())
    body = _read(input_path)  # before loading the model: a wrong input path fails fast
    fmt_in = format_for(input_path, in_format, body)
    pm = load_model(opened)
    try:
        data, params = read_input(body, fmt_in, opened.model.get_input_schema())
        predictions = pm.predict(data, params=params)
    except (PayloadError, SchemaError) as e:
        if in_format or input_path != "-":
            raise
        # The format of stdin was guessed: say so, and how to state it.
        hint = f" (stdin was read as {fmt_in}; pass --format json|csv|parquet)"
        raise type(e)(e.message + hint, e.error_code) from None
    out = write_output(predictions, fmt_out)
    if output_path == "-" and fmt_out in ("json", "csv") and not out.endswith(b"\n"):
        out += b"\n"  # the shell prompt starts on its own line
    _write(output_path, out)
