"""The files ``modelfmt predict`` reads and writes, in chunks: bounded memory for any file size.

Readers yield ``(first row number, model input)`` per chunk of about ``chunk_rows`` rows, each decoded
by the server's codecs (so a file means what the same body posted to ``/invocations`` means):
Parquet by batches of its row groups, Arrow IPC by record batches, CSV and JSON Lines by runs of lines.
An MLflow JSON request document is one chunk, read whole. Writers take each chunk's predictions as
they come: Parquet row groups (``ParquetWriter``), an Arrow IPC stream, CSV and JSON Lines appended,
``{"predictions": [...]}`` JSON streamed list item by list item.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import IO, Any

from modelfmt.errors import PayloadError

FORMATS = ("json", "jsonl", "csv", "parquet", "arrow")
EXTENSIONS = {"json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv", "parquet": "parquet",
              "pq": "parquet", "parq": "parquet", "arrow": "arrow", "arrows": "arrow", "ipc": "arrow",
              "feather": "arrow"}
CHUNK_ROWS = 65_536
_ARROW_STREAM_MAGIC = b"\xff\xff\xff\xff"


def sniff_format(head: bytes) -> str:
    """The format of a body of unknown format from its first bytes: Parquet (``PAR1``), Arrow (``ARROW1``
    or an IPC stream's continuation marker), JSON (an object with one of MLflow's keys on its first
    line, or one spread over lines), JSON Lines (a first line that is a whole object of columns), else CSV."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"ARROW1") or head.startswith(_ARROW_STREAM_MAGIC):
        return "arrow"
    text = head.lstrip()
    if text[:1] != b"{":
        return "csv"
    import orjson

    from modelfmt.serving.codecs.json import FORMAT_KEYS

    first = text.split(b"\n", 1)[0]
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        return "json"  # an object spread over lines (or cut short): an MLflow request document
    return "json" if isinstance(doc, dict) and any(k in doc for k in FORMAT_KEYS) else "jsonl"


# -- readers ------------------------------------------------------------------------------------
class Source:
    """An input file (or stdin, read whole into memory) and its chunks of model input."""

    def __init__(self, stream: IO[bytes], fmt: str, schema: Any, chunk_rows: int = CHUNK_ROWS) -> None:
        self.stream, self.fmt, self.schema, self.chunk_rows = stream, fmt, schema, chunk_rows
        self.params: dict | None = None

    def total_rows(self) -> int | None:
        """The number of rows when the file says so without reading it (Parquet, Arrow IPC files)."""
        if self.fmt == "parquet":
            return self._parquet().metadata.num_rows
        return None

    def chunks(self) -> Iterator[tuple[int, Any]]:
        """``(index of the chunk's first row, model input)`` for each chunk, in file order."""
        return getattr(self, f"_{self.fmt}_chunks")()

    def _parquet(self) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not hasattr(self, "_pq"):
            try:
                # No pre-buffering: with it, pyarrow 26 kept every row group read so far (RSS grew with the file).
                self._pq = pq.ParquetFile(self.stream, pre_buffer=False)
            except (pa.ArrowException, OSError, ValueError) as e:
                raise PayloadError(f"the input is not valid Parquet ({e})") from None
        return self._pq

    def _tables(self, batches: Iterator[Any]) -> Iterator[tuple[int, Any]]:
        import pyarrow as pa

        from modelfmt.serving.codecs._tables import plan_for
        from modelfmt.serving.codecs.arrow import input_from_table

        plan, start = plan_for(self.schema), 0
        for batch in batches:
            # A record batch larger than a chunk (an IPC file written in one batch) is sliced: zero-copy.
            for offset in range(0, max(batch.num_rows, 1), self.chunk_rows):
                part = batch.slice(offset, self.chunk_rows)
                if part.num_rows:
                    yield start, input_from_table(pa.Table.from_batches([part]), plan)
                    start += part.num_rows

    def _parquet_chunks(self) -> Iterator[tuple[int, Any]]:
        pf = self._parquet()
        # One row group at a time: memory holds one group's pages, whatever the file's size.
        batches = (b for g in range(pf.num_row_groups) for b in pf.iter_batches(self.chunk_rows, row_groups=[g]))
        return self._tables(batches)

    def _arrow_chunks(self) -> Iterator[tuple[int, Any]]:
        import pyarrow as pa

        try:
            head = self.stream.read(6)
            self.stream.seek(0)
            if head == b"ARROW1":
                reader = pa.ipc.open_file(self.stream)
                batches: Any = (reader.get_batch(i) for i in range(reader.num_record_batches))
            else:
                batches = pa.ipc.open_stream(self.stream)
            yield from self._tables(batches)
        except (pa.ArrowInvalid, pa.ArrowIOError) as e:
            raise PayloadError(f"the input is not a valid Arrow IPC stream or file ({e})") from None

    def _csv_chunks(self) -> Iterator[tuple[int, Any]]:
        import pandas as pd

        from modelfmt.serving.codecs._tables import conform_frame, plan_for

        plan = plan_for(self.schema)
        # As the CSV codec reads a body: string columns stay strings ("007" is not 7), numbers take their
        # declared widths afterwards, so a bad cell is refused by enforcement naming its column.
        dtype = {name: str for name in plan.strings | plan.binary if isinstance(name, str)} or None
        text = io.TextIOWrapper(self.stream, encoding="utf-8", newline="")
        try:
            reader = pd.read_csv(text, dtype=dtype, chunksize=self.chunk_rows)
            start = 0
            for df in reader:
                if len(df.columns) and not isinstance(df.index, pd.RangeIndex):
                    raise PayloadError("the input is not valid CSV: rows have more fields than the header has names")
                df.index = pd.RangeIndex(len(df))
                yield start, conform_frame(df, plan)
                start += len(df)
        except pd.errors.EmptyDataError:
            raise PayloadError("the CSV input has no header row: put column names on the first line") from None
        except (pd.errors.ParserError, UnicodeError) as e:
            raise PayloadError(f"the input is not valid CSV: {str(e).strip()}") from None
        finally:
            text.detach()

    def _jsonl_chunks(self) -> Iterator[tuple[int, Any]]:
        from modelfmt.serving.codecs.jsonl import decode_lines

        start, line_no, lines = 0, 1, []
        for line in self.stream:
            lines.append(line)
            if len(lines) == self.chunk_rows:
                frame = decode_lines(lines, self.schema, line_no)
                yield start, frame
                start, line_no, lines = start + len(frame), line_no + len(lines), []
        if lines and any(x.strip() for x in lines):
            yield start, decode_lines(lines, self.schema, line_no)
        elif start == 0:
            raise PayloadError("the JSON Lines input holds no rows: one JSON object per line")

    def _json_chunks(self) -> Iterator[tuple[int, Any]]:
        from modelfmt.serving.codecs import decode_request

        data, self.params = decode_request(self.stream.read(), "application/json", self.schema)
        yield 0, data


# -- writers ------------------------------------------------------------------------------------
class Sink:
    """Predictions written chunk by chunk to ``out`` (a binary file) in ``fmt``."""

    def __init__(self, out: IO[bytes], fmt: str) -> None:
        self.out, self.fmt = out, fmt
        self._writer: Any = None
        self._started = False
        self._pending: list[Any] = []  # JSON predictions that are not a list: merged at the end

    def write(self, predictions: Any) -> None:
        """Append one chunk's predictions."""
        if self.fmt == "json":
            return self._write_json(predictions)
        from modelfmt.serving.codecs import predictions_table

        table = predictions_table(predictions)
        if self.fmt == "csv":
            self.out.write(_frame(table).to_csv(index=False, header=not self._started).encode("utf-8"))
        elif self.fmt == "jsonl":
            from modelfmt.jsonenc import dumps

            # orjson writes a double's shortest exact digits (pandas' to_json keeps 10), NaN as null.
            self.out.write(b"".join(dumps(row) + b"\n" for row in table.to_pylist()))
        else:
            self._write_table(table)
        self._started = True

    def _write_table(self, table: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._schema = table.schema
            if self.fmt == "parquet":
                self._writer = pq.ParquetWriter(self.out, table.schema)
            else:
                self._writer = pa.ipc.new_stream(self.out, table.schema)
        elif table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, ValueError) as e:
                raise PayloadError(f"the model's predictions changed type from one chunk to the next: {e}") from None
        self._writer.write_table(table)

    def _write_json(self, predictions: Any) -> None:
        from modelfmt.serving.codecs import encode_predictions

        body = encode_predictions(predictions)  # {"predictions":[...]} as the server answers
        head, tail = b'{"predictions":[', b"]}"
        if self._pending or not (body.startswith(head) and body.endswith(tail)):
            self._pending.append(predictions)  # a dict of outputs: columns merged when all are in
            return
        items = body[len(head) : -len(tail)]
        if not self._started:
            self.out.write(head)
        elif items:
            self.out.write(b",")
        self.out.write(items)
        self._started = True

    def close(self) -> None:
        """Finish the file (footers, closing brackets)."""
        if self.fmt == "json":
            if self._pending:
                from modelfmt.serving.codecs import encode_predictions

                if self._started:
                    raise PayloadError("the model answered a list for some chunks and not for others")
                self.out.write(encode_predictions(_merge(self._pending)))
            else:
                self.out.write(b'{"predictions":[' if not self._started else b"")
                self.out.write(b"]}")
        elif self._writer is not None:
            self._writer.close()

    def abort(self) -> None:
        """Let go of the file after a failure (the caller removes it)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, ValueError):
                pass  # the file is discarded anyway
            self._writer = None


def _frame(table: Any) -> Any:
    return table.to_pandas()


def _merge(parts: list[Any]) -> Any:
    """One answer from the chunks' answers (dicts of arrays: each key's arrays concatenated)."""
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, dict) for p in parts):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    return [x for p in parts for x in p]
