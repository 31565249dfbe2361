"""``modelfmt predict``: score a file (CSV, JSON Lines, Parquet, Arrow IPC, or JSON in MLflow's request
formats) with a model, in chunks, writing the predictions as they come (:mod:`._predict_io`).

Memory stays bounded by the chunk size, not the file's: a Parquet file is read by batches of its row
groups, Arrow IPC by record batches, CSV and JSON Lines by runs of rows; only an MLflow JSON request
document (and stdin, which cannot be read twice) is read whole. Row order is kept. A chunk the model
or the signature refuses is searched by halves for its first bad row, which the error names.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from typing import IO, Any

import click

from modelfmt.cli._predict_io import CHUNK_ROWS, EXTENSIONS, FORMATS, Sink, Source, sniff_format
from modelfmt.errors import InternalPredictionError, PayloadError, PredictionError, SchemaError

_ROW_ERRORS = (SchemaError, PredictionError)
_CONTENT_TYPES = {"json": "application/json", "jsonl": "application/jsonl", "csv": "text/csv",
                  "parquet": "application/vnd.apache.parquet", "arrow": "application/vnd.apache.arrow.stream"}


def format_for(path: str, given: str | None, head: bytes | None = None) -> str:
    """The data format of ``path``: ``given`` if set, else from the extension; for ``-`` (stdin) or a
    name without one, from the first bytes ``head`` when they are known (:func:`sniff_format`), else ``json``."""
    if given:
        return given
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if path == "-" or not ext:
        return sniff_format(head) if head is not None else "json"
    if ext not in EXTENSIONS:
        raise PayloadError(f"cannot tell the format of {path!r} from its extension; pass --format {'|'.join(FORMATS)}")
    return EXTENSIONS[ext]


def read_input(body: bytes, fmt: str, schema: Any) -> tuple[Any, dict | None]:
    """Model input and params from a whole file's bytes, through the server's codecs (so a file means
    what the same body posted to ``/invocations`` means); :class:`Source` reads a file in chunks."""
    from modelfmt.serving.codecs import decode_request

    return decode_request(body, _CONTENT_TYPES[fmt], schema)


def _open_input(path: str) -> IO[bytes]:
    if path == "-":
        return io.BytesIO(sys.stdin.buffer.read())  # Parquet and Arrow files need to seek
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def _progress(total: int | None) -> Any:
    """A progress bar of rows on stderr, only when stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, unit=" rows", unit_scale=True, file=sys.stderr, disable=not sys.stderr.isatty(),
                dynamic_ncols=True, leave=False)


def score_chunks(pm: Any, source: Source, sink: Sink, bar: Any = None) -> int:
    """Score every chunk of ``source`` with ``pm`` into ``sink``, in order; the number of rows scored."""
    from modelfmt.serving.runtime import row_count

    rows = 0
    for start, data in source.chunks():
        sink.write(_score(pm, data, source.params, start))
        n = row_count(data)
        rows += n
        if bar is not None:
            bar.update(n)
    return rows


def _score(pm: Any, data: Any, params: dict | None, start: int) -> Any:
    try:
        return pm.predict(data, params=params)
    except _ROW_ERRORS as e:
        if isinstance(e, InternalPredictionError):
            raise
        found = _first_bad_row(pm, data, params)
        if found is None:
            raise
        row, error = found
        raise type(error)(f"input row {start + row + 1}: {error.message}", error.error_code) from None


def _first_bad_row(pm: Any, data: Any, params: dict | None) -> tuple[int, SchemaError | PredictionError] | None:
    """The index of the first row of ``data`` that fails alone, and its error (found by halving: ~17 model
    calls for a chunk of 64k rows), or ``None`` when the input cannot be cut into rows."""
    from modelfmt.serving.runtime import row_count

    n = row_count(data)
    if n < 1 or _rows(data, 0, 1) is None:
        return None
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pm.predict(_rows(data, lo, mid), params=params)
            lo = mid  # the first half scores: the bad row is in the second
        except _ROW_ERRORS:
            hi = mid
    try:
        pm.predict(_rows(data, lo, lo + 1), params=params)
    except _ROW_ERRORS as e:
        return lo, e
    return None  # no single row fails: the chunk fails as a whole (rows that only fail together)


def _rows(data: Any, lo: int, hi: int) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data.iloc[lo:hi]
    if isinstance(data, np.ndarray) and data.ndim:
        return data[lo:hi]
    if isinstance(data, dict) and data and all(isinstance(v, np.ndarray) and v.ndim for v in data.values()):
        return {k: v[lo:hi] for k, v in data.items()}
    return None


class _Output:
    """The output file, written next to its final name and moved there when complete (stdout: directly)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp: str | None = None
        if path == "-":
            self.file: IO[bytes] = sys.stdout.buffer
            return
        directory, name = os.path.split(os.path.abspath(path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        self.file = os.fdopen(fd, "wb")

    def finish(self) -> None:
        self.file.flush()
        if self.tmp is not None:
            self.file.close()
            os.replace(self.tmp, self.path)
            self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            self.file.close()
            os.unlink(self.tmp)


@click.command("predict")
@click.argument("model", type=click.Path())
@click.option("-i", "--input", "input_path", required=True, help="Input file, or - for stdin.")
@click.option("-o", "--output", "output_path", default="-", show_default=True, help="Output file, or - for stdout.")
@click.option("--format", "in_format", type=click.Choice(FORMATS), help="Input format (default: from the extension).")
@click.option("--output-format", "out_format", type=click.Choice(FORMATS),
              help="Output format (default: from the extension; JSON on stdout).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=CHUNK_ROWS, show_default=True,
              help="Rows scored per model call; memory use follows it.")
def predict(model: str, input_path: str, output_path: str, in_format: str | None, out_format: str | None,
            chunk_rows: int) -> None:
    """Score INPUT with MODEL and write the predictions to OUTPUT."""
    from modelfmt.cli import opening_options
    from modelfmt.cli._reexec import run_in_model_environment
    from modelfmt.flavors.pyfunc import load_model
    from modelfmt.open import open_model

    fmt_out = format_for(output_path, out_format)
    opened = open_model(model, **opening_options())
    run_in_model_environment(opened)  # --env-manager uv: the rest runs in the model's environment
    with _open_input(input_path) as stream:  # before loading the model: a wrong input path fails fast
        head = stream.read(4096) if input_path == "-" or not in_format else None
        stream.seek(0)
        fmt_in = format_for(input_path, in_format, head)
        pm = load_model(opened)
        source = Source(stream, fmt_in, opened.model.get_input_schema(), chunk_rows)
        output = _Output(output_path)
        sink = Sink(output.file, fmt_out)
        try:
            with _progress(source.total_rows()) as bar:
                score_chunks(pm, source, sink, bar)
                sink.close()
            if output_path == "-" and fmt_out == "json":
                output.file.write(b"\n")  # the shell prompt starts on its own line
            output.finish()
        except (PayloadError, SchemaError) as e:
            sink.abort()
            output.discard()
            if in_format or input_path != "-":
                raise
            # The format of stdin was guessed: say so, and how to state it.
            hint = f" (stdin was read as {fmt_in}; pass --format {'|'.join(FORMATS)})"
            raise type(e)(e.message + hint, e.error_code) from None
        except BaseException:
            sink.abort()
            output.discard()
            raise
