"""``modelfmt predict`` in chunks: every format in and out, chunked equals whole (values and dtypes), row
order across chunks, a bad row in a later chunk named by its number, stdin, no half-written output.

In-process through click's runner (the command as the shell runs it is covered by tests/test_cli.py);
one subprocess checks stdin and the exit status as users see them.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from modelfmt.cli import cli
from modelfmt.cli._predict_io import sniff_format
from modelfmt.flavors import pyfunc
from modelfmt.signature import ColSpec, ModelSignature, Schema

ROWS = 1000
CHUNK = 150  # 7 chunks of 150 and one of 100


class Typed(pyfunc.PythonModel):
    """Row-aligned, typed outputs: an int64, a float64 and a string column."""

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"n": model_input["a"].to_numpy() * 2, "x": model_input["b"].to_numpy() + 0.5,
                             "s": [str(v).upper() for v in model_input["s"]]})


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("predict") / "typed")
    sig = ModelSignature(Schema([ColSpec("long", "a"), ColSpec("double", "b"), ColSpec("string", "s")]),
                         Schema([ColSpec("long", "n"), ColSpec("double", "x"), ColSpec("string", "s")]))
    pyfunc.save_model(path, python_model=Typed(), signature=sig)
    return path


@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(7)
    return pd.DataFrame({"a": np.arange(ROWS, dtype=np.int64), "b": rng.normal(size=ROWS),
                         "s": [f"r{i}" for i in range(ROWS)]})


def write_input(df: pd.DataFrame, path, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in df.to_dict(orient="records")))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=400)
    elif fmt == "arrow":
        table = pa.Table.from_pandas(df, preserve_index=False)
        with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
            for batch in table.to_batches(max_chunksize=333):
                w.write_batch(batch)
    else:
        path.write_text(json.dumps({"dataframe_split": df.to_dict(orient="split")}))


def read_output(path, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True, precise_float=True)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "arrow":
        with pa.OSFile(str(path), "rb") as f:
            return pa.ipc.open_stream(f).read_all().to_pandas()
    return pd.DataFrame(json.loads(path.read_text())["predictions"])


def invoke(*args, input=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    return result


def predict(model, src, dst, *extra):
    result = invoke("predict", model, "-i", src, "-o", dst, *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "arrow"])
def test_chunked_equals_whole_and_keeps_row_order(typed_model, frame, tmp_path, fmt):
    src = tmp_path / f"in.{fmt}"
    write_input(frame, src, fmt)
    predict(typed_model, src, tmp_path / "whole.parquet", "--chunk-rows", ROWS * 2)
    predict(typed_model, src, tmp_path / "chunked.parquet", "--chunk-rows", CHUNK)
    whole, chunked = pd.read_parquet(tmp_path / "whole.parquet"), pd.read_parquet(tmp_path / "chunked.parquet")
    pd.testing.assert_frame_equal(chunked, whole)
    assert chunked["n"].dtype == np.int64 and chunked["x"].dtype == np.float64
    assert chunked["n"].tolist() == (frame["a"] * 2).tolist()  # every row, in file order
    np.testing.assert_array_equal(chunked["x"], frame["b"] + 0.5)
    assert chunked["s"].tolist() == [f"R{i}" for i in range(ROWS)]
    groups = pq.ParquetFile(tmp_path / "chunked.parquet").metadata.num_row_groups  # one per model call
    # Chunks stay inside Parquet row groups (400 rows) and Arrow record batches (333): 3+3+2 and 3+3+3+1.
    assert groups == {"parquet": 8, "arrow": 10}.get(fmt, -(-ROWS // CHUNK))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "arrow", "json"])
def test_every_output_format_chunked(typed_model, frame, tmp_path, fmt):
    write_input(frame, tmp_path / "in.parquet", "parquet")
    predict(typed_model, tmp_path / "in.parquet", tmp_path / f"out.{fmt}", "--chunk-rows", CHUNK)
    out = read_output(tmp_path / f"out.{fmt}", fmt)
    assert list(out.columns) == ["n", "x", "s"] and len(out) == ROWS
    assert out["n"].tolist() == (frame["a"] * 2).tolist() and out["n"].dtype == np.int64
    np.testing.assert_allclose(out["x"], frame["b"] + 0.5, rtol=1e-15)


def test_arrow_output_is_typed(typed_model, frame, tmp_path):
    write_input(frame, tmp_path / "in.csv", "csv")
    predict(typed_model, tmp_path / "in.csv", tmp_path / "out.arrow", "--chunk-rows", CHUNK)
    with pa.OSFile(str(tmp_path / "out.arrow"), "rb") as f:
        table = pa.ipc.open_stream(f).read_all()
    assert table.schema.field("n").type == pa.int64() and table.schema.field("x").type == pa.float64()


def test_mlflow_json_document_is_read_whole(typed_model, frame, tmp_path):
    write_input(frame.head(10), tmp_path / "in.json", "json")
    predict(typed_model, tmp_path / "in.json", tmp_path / "out.csv", "--chunk-rows", 3)
    assert pd.read_csv(tmp_path / "out.csv")["n"].tolist() == list(range(0, 20, 2))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "arrow"])
def test_a_bad_row_in_chunk_3_is_named(typed_model, frame, tmp_path, fmt):
    bad = frame.copy()
    bad["b"] = bad["b"].astype(object)
    bad.loc[2 * CHUNK + 17, "b"] = "not a number"  # row 318 (1-based), in chunk 3
    src = tmp_path / f"bad.{fmt}"
    write_input(bad if fmt not in ("parquet", "arrow") else bad.astype({"b": str}), src, fmt)
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(cli, ["predict", typed_model, "-i", str(src), "-o", str(out),
                                      "--chunk-rows", str(CHUNK)])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("modelfmt: error:") and "column 'b'" in line, result.output
    # Parquet and Arrow hold the column as text: numbers written as text parse, only that row fails.
    assert f"input row {2 * CHUNK + 18}:" in line and "'not a number'" in line, line
    assert not out.exists() and not list(tmp_path.glob(".out.parquet.*"))  # no half-written output


def test_bad_jsonl_line_is_named(typed_model, tmp_path):
    lines = ['{"a": 1, "b": 0.5, "s": "x"}'] * 5 + ["{oops"] + ['{"a": 1, "b": 0.5, "s": "x"}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cli, ["predict", typed_model, "-i", str(tmp_path / "in.jsonl"), "--chunk-rows", "4"])
    assert result.exit_code == 2 and "line 6 is not valid JSON" in result.output, result.output


def test_sklearn_parquet_chunks_match_in_line_predict(sklearn_model_path, diabetes, elasticnet, tmp_path):
    X = diabetes[0]
    X.to_parquet(tmp_path / "in.parquet")
    predict(sklearn_model_path, tmp_path / "in.parquet", tmp_path / "out.csv", "--chunk-rows", 100)
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["prediction"], elasticnet.predict(X), rtol=1e-12)


def test_sniffing():
    assert sniff_format(b"PAR1....") == "parquet"
    assert sniff_format(b"ARROW1\x00\x00") == "arrow" and sniff_format(b"\xff\xff\xff\xff\x10") == "arrow"
    assert sniff_format(b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}\n') == "json"
    assert sniff_format(b'{\n  "inputs": [1]\n}') == "json"
    assert sniff_format(b'{"a": 1}\n{"a": 2}\n') == "jsonl"
    assert sniff_format(b"a,b\n1,2\n") == "csv"


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "arrow"])
def test_stdin_of_each_format(sklearn_model_path, diabetes, elasticnet, tmp_path, fmt):
    X = diabetes[0].head(40)
    write_input(X, tmp_path / f"in.{fmt}", fmt)
    result = CliRunner().invoke(cli, ["predict", sklearn_model_path, "-i", "-", "--chunk-rows", "16"],
                                input=(tmp_path / f"in.{fmt}").read_bytes())
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(json.loads(result.stdout_bytes)["predictions"], elasticnet.predict(X), rtol=1e-12)


def test_stdin_to_stdout_in_a_subprocess(sklearn_model_path, diabetes, elasticnet):
    X = diabetes[0].head(5)
    buf = io.BytesIO()
    X.to_parquet(buf)
    done = subprocess.run([sys.executable, "-m", "modelfmt", "predict", sklearn_model_path, "-i", "-",
                           "--output-format", "csv"], input=buf.getvalue(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # no progress bar when stderr is not a terminal
    np.testing.assert_allclose(pd.read_csv(io.BytesIO(done.stdout))["prediction"], elasticnet.predict(X))


def test_progress_bar_on_a_terminal(sklearn_model_path, diabetes, tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    diabetes[0].to_parquet(tmp_path / "in.parquet")
    leader, follower = pty.openpty()
    # A new pty is 0 columns wide, where tqdm draws nothing: give it a terminal's size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    shown = bytearray()

    def drain():
        while True:
            try:
                piece = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not piece:
                return
            shown.extend(piece)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        done = subprocess.run([sys.executable, "-m", "modelfmt", "predict", sklearn_model_path, "-i",
                               str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.csv"), "--chunk-rows", "100"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, timeout=120)
    finally:
        os.close(follower)
        reader.join(10)
        os.close(leader)
    assert done.returncode == 0, bytes(shown)
    # tqdm: rows of the file (the bar is cleared at the end, so the last state drawn depends on timing)
    assert b"/442 [" in shown and b"rows/s]" in shown, bytes(shown)
