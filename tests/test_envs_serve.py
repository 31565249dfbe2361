"""`serve`, `predict`, `verify` and `spark_udf` with --env-manager uv: the model saved in a scikit-learn 1.5.2
venv (tests/envs_support.py) answers exactly what that venv answers, from inside its restored environment.

The commands re-run themselves in the environment (modelfmt.cli._reexec): the server's process *is* the
environment's interpreter (no hop per request), the CLI's output is the environment's. One environment
for every test here and in test_envs_scorer.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import requests
from envs_support import OLD_SKLEARN, env_cache, expected, old_models  # noqa: F401 - fixtures

from modelfmt.cli._reexec import local_args
from modelfmt.envs import cache, ensure_environment
from modelfmt.serving.testing import serving


def cli(*args: str, input: bytes | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelfmt", *args], input=input, capture_output=True,
                          timeout=600, cwd=cwd)


def test_local_args():
    assert local_args(["--debug", "serve", "m", "--env-manager", "uv", "--port", "1"]) == [
        "--debug", "serve", "--env-manager", "local", "m", "--port", "1"]
    assert local_args(["predict", "--env-manager=uv", "m", "-i", "-", "--", "--env-manager"]) == [
        "predict", "--env-manager", "local", "m", "-i", "-", "--", "--env-manager"]


def test_serve_runs_in_the_environment(old_models, expected):
    X = pd.read_csv(old_models["X"])
    env = ensure_environment(old_models["sk"], "uv")
    with serving(old_models["sk"], env_manager="uv", workers=1) as url:
        body = {"dataframe_split": X.to_dict(orient="split")}
        r = requests.post(url + "/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == expected["proba"]  # exactly the saving venv's
        # The signature's checks run in there too, and the client's fault is still a 400.
        bad = requests.post(url + "/invocations", json={"dataframe_split": X[["a", "b"]].to_dict(orient="split")})
        assert bad.status_code == 400 and "'c'" in bad.json()["message"]
        # The server process itself is the environment's interpreter: re-run, no proxy in between.
        with open(f"/proc/{url.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert argv[0].decode() == env.python and b"local" in argv


def test_predict_cli_runs_in_the_environment(old_models, expected, tmp_path):
    proc = cli("predict", old_models["sk"], "-i", old_models["X"], "--env-manager", "uv")
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout)["predictions"] == expected["proba"]
    # stdin is left for the re-run command to read; the probe says where it ran.
    body = b'{"dataframe_split": {"columns": ["x"], "data": [[1]]}}'
    proc = cli("predict", "--env-manager", "uv", old_models["probe"], "-i", "-", input=body)
    assert proc.returncode == 0, proc.stderr.decode()
    row = json.loads(proc.stdout)["predictions"][0]
    assert row["sklearn"] == OLD_SKLEARN and row["python"].startswith(os.environ[cache.CACHE_ENV])
    # An error in the re-run command is still one line and exit 2.
    proc = cli("predict", old_models["sk"], "-i", "-", "--format", "csv", "--env-manager", "uv", input=b"a,b\n1,2\n")
    assert proc.returncode == 2 and b"modelfmt: error:" in proc.stderr and b"'c'" in proc.stderr


def test_verify_runs_in_the_environment(old_models):
    proc = cli("verify", old_models["sk"], "--env-manager", "uv")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"loads and scores its input example (3 prediction(s))" in proc.stdout
    assert b"saved with other package versions" not in proc.stderr  # local would warn; the env matches


def test_predict_in_process_without_exec(old_models, expected):
    """main([...]) from Python (here click's runner) runs the command in a child, not an exec of itself."""
    from click.testing import CliRunner

    from modelfmt.cli import cli as group

    with open(old_models["X"], "rb") as f:
        data = f.read()
    result = CliRunner().invoke(group, ["predict", old_models["sk"], "-i", "-", "--format", "csv",
                                        "--env-manager", "uv"], input=data)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["predictions"] == expected["proba"]


spark_session = pytest.importorskip("spark_session")
spark = spark_session.spark


def test_spark_udf_scores_in_the_environment(spark, old_models, expected):
    from modelfmt.serving.spark.udf import spark_udf

    X = pd.read_csv(old_models["X"]).reset_index()
    udf = spark_udf(spark, old_models["sk"], result_type="array<double>", env_manager="uv")
    before = sorted(e.key for e in cache.entries(cache.cache_root()))
    df = spark.createDataFrame(X).repartition(2)
    rows = df.select("index", udf.on(df).alias("p")).collect()
    got = [list(r["p"]) for r in sorted(rows, key=lambda r: r["index"])]
    assert got == expected["proba"]
    # Built on the driver; the tasks only reused it (no second environment).
    assert sorted(e.key for e in cache.entries(cache.cache_root())) == before
