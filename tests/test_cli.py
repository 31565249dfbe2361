"""The `modelfmt` command, run as users run it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

MODELFMT = [sys.executable, "-m", "modelfmt"]


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELFMT, *args], input=stdin, capture_output=True, timeout=120)


def test_info_shows_flavors_signature_example_requirements(sklearn_model_path):
    out = run("info", sklearn_model_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    for needle in ("sklearn", "python_function", "signature inputs", "bmi", "double", "input example", "scikit-learn==", "size:"):
        assert needle in text


def test_info_on_missing_model_is_one_line_exit_2(tmp_path):
    out = run("info", str(tmp_path / "nope"))
    assert out.returncode == 2
    err = out.stderr.decode().strip()
    assert err.startswith("modelfmt: error:") and "MLmodel" in err and "Traceback" not in err


def test_verify(sklearn_model_path):
    out = run("verify", sklearn_model_path)
    assert out.returncode == 0 and b"ok:" in out.stdout


@pytest.fixture()
def expected(elasticnet, diabetes):
    X = diabetes[0].head(20)
    return X, elasticnet.predict(X)


def test_predict_csv_to_json(sklearn_model_path, expected, tmp_path):
    X, want = expected
    X.to_csv(tmp_path / "in.csv", index=False)
    out = run("predict", sklearn_model_path, "-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.json"))
    assert out.returncode == 0, out.stderr
    got = json.loads((tmp_path / "out.json").read_text())["predictions"]
    np.testing.assert_allclose(got, want)


def test_predict_json_stdin_to_stdout(sklearn_model_path, expected):
    X, want = expected
    body = json.dumps({"dataframe_split": X.to_dict(orient="split")}).encode()
    out = run("predict", sklearn_model_path, "-i", "-", stdin=body)
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(json.loads(out.stdout)["predictions"], want)


def test_predict_parquet_to_csv_and_parquet(sklearn_model_path, expected, tmp_path):
    X, want = expected
    X.to_parquet(tmp_path / "in.parquet")
    out = run("predict", sklearn_model_path, "-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.csv"))
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["prediction"], want)
    out = run("predict", sklearn_model_path, "-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.parquet"))
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "out.parquet")["prediction"], want)


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("bad.json", b"{not json", "JSON"),
        ("missing.csv", b"age,sex\n1,2\n", "bmi"),
        ("bad.parquet", b"PAR1 nope", "Parquet"),
        ("in.txt", b"x", "--format"),
    ],
)
def test_predict_bad_input_one_line_exit_2(sklearn_model_path, tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    out = run("predict", sklearn_model_path, "-i", str(tmp_path / name))
    assert out.returncode == 2
    err = out.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err


def test_debug_shows_traceback(tmp_path):
    out = run("info", str(tmp_path / "nope"), "--debug")
    assert out.returncode != 0 and b"Traceback" in out.stderr


def test_top_level_help_lists_commands():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("info", "predict", "serve", "verify"):
        assert cmd.encode() in out.stdout
