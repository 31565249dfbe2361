"""The `modelfmt` command, run as users run it: a real subprocess.

Its error policy: bad input is one line on stderr starting ``modelfmt: error:`` and exit code 2; the
traceback only with ``--debug`` (before or after the command name, or ``MODELFMT_DEBUG``); a missing extra
names the extra to install; any other failure is a bug, shown with its traceback and exit code 1; Ctrl-C
exits 130 quietly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import requests

MODELFMT = [sys.executable, "-m", "modelfmt"]
PREFIX = "modelfmt: error:"
COMMANDS = ["info", "verify", "predict", "serve", "convert", "generate-dockerfile", "build-docker"]


def run(*args: str, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELFMT, *args], input=stdin, capture_output=True, timeout=120, env=env)


def run_with_prelude(prelude: str, *args: str) -> subprocess.CompletedProcess:
    """``modelfmt ARGS`` in an interpreter that first runs ``prelude`` (which may break imports)."""
    code = f"{prelude}\nimport sys\nfrom modelfmt.cli import main\nmain(sys.argv[1:])\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=120)


def refusing_imports(check: str, error: str) -> str:
    """A prelude whose meta-path finder raises ``error`` for every module name ``check`` accepts."""
    return (
        "import sys\n"
        "class _Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if {check}:\n"
        f"            raise {error}\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Refuse())\n"
    )


def one_error_line(out: subprocess.CompletedProcess, code: int = 2) -> str:
    """The one stderr line of a failed command, after checking the policy's shape."""
    err = out.stderr.decode().strip()
    assert out.returncode == code, (out.returncode, err)
    assert len(err.splitlines()) == 1, err
    assert err.startswith(PREFIX) and "Traceback" not in err, err
    return err


# -- the commands working ------------------------------------------------------------------------
def test_info_shows_flavors_signature_example_requirements(sklearn_model_path):
    out = run("info", sklearn_model_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    for needle in ("sklearn", "python_function", "signature inputs", "bmi", "double", "input example"):
        assert needle in text
    for needle in ("scikit-learn==", "size:"):
        assert needle in text


def test_verify(sklearn_model_path):
    out = run("verify", sklearn_model_path)
    assert out.returncode == 0, out.stderr
    assert b"ok:" in out.stdout


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


@pytest.mark.parametrize("kind", ["csv", "parquet", "json"])
def test_predict_reads_any_format_on_stdin(sklearn_model_path, expected, kind):
    import io

    X, want = expected
    if kind == "csv":
        body = X.to_csv(index=False).encode()
    elif kind == "parquet":
        buf = io.BytesIO()
        X.to_parquet(buf)
        body = buf.getvalue()
    else:
        body = b"  \n" + json.dumps({"dataframe_split": X.to_dict(orient="split")}).encode()
    out = run("predict", sklearn_model_path, "-i", "-", stdin=body)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith(b"\n")
    np.testing.assert_allclose(json.loads(out.stdout)["predictions"], want)


def test_predict_unreadable_stdin_names_format(sklearn_model_path):
    out = run("predict", sklearn_model_path, "-i", "-", stdin=b"\x00\x01 not, a\n table")
    assert out.returncode == 2
    lines = out.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelfmt: error:") and "pass --format" in lines[0], out.stderr


def test_predict_parquet_to_csv_and_parquet(sklearn_model_path, expected, tmp_path):
    X, want = expected
    X.to_parquet(tmp_path / "in.parquet")
    out = run("predict", sklearn_model_path, "-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.csv"))
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out.csv")["prediction"], want)
    out = run("predict", sklearn_model_path, "-i", str(tmp_path / "in.parquet"), "-o", str(tmp_path / "out.parquet"))
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "out.parquet")["prediction"], want)


def test_top_level_help_lists_commands_and_debug():
    out = run("--help")
    assert out.returncode == 0
    for cmd in [*COMMANDS, "--debug"]:
        assert cmd.encode() in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_the_shared_debug_option(command):
    out = run(command, "--help")
    assert out.returncode == 0, out.stderr
    assert b"--debug" in out.stdout and b"MODELFMT_DEBUG" in out.stdout


# -- bad input: one line, exit 2 -----------------------------------------------------------------
# Per command: arguments ({model}: a real model, {dir}: a directory without MLmodel, {tmp}: a scratch
# directory) and the text the line must contain to name the problem.
BAD_INPUT = {
    "info": (["info", "{tmp}/missing-model"], "missing-model"),
    "verify": (["verify", "{dir}"], "not-a-model"),
    "predict": (["predict", "{model}", "-i", "{tmp}/no-such-input.csv"], "no-such-input.csv"),
    "serve": (["serve", "{tmp}/missing-model", "--port", "0"], "missing-model"),
    "convert": (["convert", "{model}", "-o", "{tmp}/out", "--data", "{tmp}/no-such-data.csv"], "no-such-data.csv"),
    "generate-dockerfile": (["generate-dockerfile", "{dir}", "-o", "{tmp}/context"], "not-a-model"),
    "build-docker": (["build-docker", "{dir}", "-t", "modelfmt-test-never-built:1"], "not-a-model"),
}


@pytest.fixture()
def fill(sklearn_model_path, tmp_path):
    (tmp_path / "not-a-model").mkdir()
    values = {"model": sklearn_model_path, "dir": str(tmp_path / "not-a-model"), "tmp": str(tmp_path)}
    return lambda args: [a.format(**values) for a in args]


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_line_exit_2(command, fill, tmp_path):
    args, needle = BAD_INPUT[command]
    err = one_error_line(run(*fill(args)))
    assert needle in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "context").exists()


@pytest.mark.parametrize("where", ["before", "after", "env"])
@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_debug_before_or_after_the_command_shows_the_traceback(command, where, fill):
    args, needle = BAD_INPUT[command]
    args = fill(args)
    env = None
    if where == "before":
        args = ["--debug", *args]
    elif where == "after":
        args = [*args, "--debug"]
    else:
        env = {**os.environ, "MODELFMT_DEBUG": "1"}
    out = run(*args, env=env)
    err = out.stderr.decode().strip()
    assert out.returncode == 2, err
    assert err.startswith("Traceback (most recent call last):"), err
    last = err.splitlines()[-1]
    assert last.startswith(PREFIX) and needle in last


def test_missing_debug_env_is_off(fill):
    args, _ = BAD_INPUT["info"]
    one_error_line(run(*fill(args), env={**os.environ, "MODELFMT_DEBUG": "0"}))


def test_predict_bad_model_inputs(sklearn_model_path, tmp_path):
    cases = [
        ("bad.json", b"{not json", "JSON"),
        ("missing.csv", b"age,sex\n1,2\n", "bmi"),
        ("bad.parquet", b"PAR1 nope", "Parquet"),
        ("in.txt", b"x", "--format"),
    ]
    for name, content, needle in cases:
        (tmp_path / name).write_bytes(content)
        err = one_error_line(run("predict", sklearn_model_path, "-i", str(tmp_path / name)))
        assert needle in err, err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["info", "--bogus", "{model}"], "No such option '--bogus'"),
        (["info"], "Missing argument 'MODEL'"),
        (["predict", "{model}"], "Missing option '-i' / '--input'"),
        (["serve", "{model}", "--port", "abc"], "'abc' is not a valid integer"),
        (["serve", "{model}", "--max-body-size", "12XB"], "is not a size"),
        (["convert", "{model}", "-o", "{tmp}/out", "--rtol", "abc"], "abc"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["--bogus", "info", "{model}"], "No such option '--bogus'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, needle, fill):
    err = one_error_line(run(*fill(args)))
    assert needle in err and "--help" in err, err
    assert "Usage:" not in err


def test_multi_line_yaml_error_is_condensed(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    # A mapping key indented less than its siblings: PyYAML's message runs over six lines.
    (broken / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: x\n   env: y\n")
    import yaml

    with pytest.raises(yaml.YAMLError) as e:
        yaml.safe_load((broken / "MLmodel").read_text())
    assert len(str(e.value).splitlines()) > 3
    for command in ("info", "verify", "serve"):
        err = one_error_line(run(command, str(broken)))
        assert "YAML" in err and "line 4, column 4" in err and "^" not in err, err


# -- missing extras, bugs, Ctrl-C --------------------------------------------------------------------
HIDE_ONNX = refusing_imports(
    "name.split('.')[0].startswith('onnx')", "ModuleNotFoundError(f'No module named {name!r}', name=name)"
)


def test_missing_extra_names_it(sklearn_model_path, tmp_path):
    out = run_with_prelude(HIDE_ONNX, "convert", sklearn_model_path, "-o", str(tmp_path / "out"))
    err = one_error_line(out)
    assert "pip install 'modelfmt[onnx]'" in err and "onnx" in err and "convert" in err, err
    assert not (tmp_path / "out").exists()
    out = run_with_prelude(HIDE_ONNX, "convert", sklearn_model_path, "-o", str(tmp_path / "out"), "--debug")
    err = out.stderr.decode()
    assert out.returncode == 2 and "Traceback" in err and "ModuleNotFoundError" in err
    assert "pip install 'modelfmt[onnx]'" in err.strip().splitlines()[-1]


def _bug(out: subprocess.CompletedProcess, needle: str) -> None:
    err = out.stderr.decode().strip()
    assert out.returncode == 1, err
    assert err.startswith("Traceback (most recent call last):"), err
    last = err.splitlines()[-1]
    assert last.startswith(PREFIX) and "bug in modelfmt" in last and needle in last, last
    assert "not available" not in err and "pip install" not in err


def test_other_import_failure_is_a_bug(sklearn_model_path):
    # PyYAML is a core dependency, not an extra: without it the installation is broken.
    prelude = refusing_imports("name == 'yaml'", "ModuleNotFoundError(\"No module named 'yaml'\", name='yaml')")
    _bug(run_with_prelude(prelude, "info", sklearn_model_path), "No module named 'yaml'")


def test_failing_command_module_is_a_bug(sklearn_model_path):
    prelude = refusing_imports("name == 'modelfmt.cli.info'", "RuntimeError('the info module is broken')")
    _bug(run_with_prelude(prelude, "info", sklearn_model_path), "RuntimeError: the info module is broken")


def test_ctrl_c_exits_130_quietly(sklearn_model_path):
    proc = subprocess.Popen(
        [*MODELFMT, "predict", sklearn_model_path, "-i", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:  # wait until it reads stdin
            with open(f"/proc/{proc.pid}/wchan") as f:
                if "pipe" in f.read():
                    break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err == b"", err


# -- serve's own --debug meaning ---------------------------------------------------------------------
def test_debug_before_serve_puts_stack_traces_in_500s(tmp_path):
    import test_server_models as models

    from modelfmt.serving.testing import free_port, stop_process, wait_until_ready

    chaos = models.save_chaos(str(tmp_path / "chaos"))
    port = free_port()
    log_path = str(tmp_path / "serve.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*MODELFMT, "--debug", "serve", chaos, "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(proc, url, 120, log_path)
        resp = requests.post(url + "/invocations", json={"inputs": {"x": [999.0]}}, timeout=30)
        assert resp.status_code == 500 and "Traceback" in resp.json()["stack_trace"]
    finally:
        stop_process(proc)


# -- MLmodel is parsed once per command ----------------------------------------------------------------
COUNT_MLMODEL_PARSES = (
    "import atexit, os, sys\n"
    "_target = os.path.join(os.path.abspath(sys.argv[2]), 'MLmodel')\n"
    "_reads = []\n"
    "def _hook(event, args):\n"
    "    if event == 'open' and isinstance(args[0], str) and os.path.abspath(args[0]) == _target:\n"
    "        _reads.append(os.path.basename(sys._getframe(1).f_code.co_filename))\n"
    "sys.addaudithook(_hook)\n"
    # Copying the model into a context, or hashing its files (integrity.py), is no parse.
    "_parsed = lambda: [f for f in _reads if f not in ('shutil.py', 'integrity.py')]\n"
    "atexit.register(lambda: print(f'MLmodel parsed {len(_parsed())} time(s) by {_parsed()}', file=sys.stderr))\n"
)


@pytest.mark.parametrize("command", ["info", "verify", "predict", "convert", "generate-dockerfile"])
def test_each_command_parses_mlmodel_once(command, sklearn_model_path, tmp_path, diabetes):
    diabetes[0].head(5).to_csv(tmp_path / "in.csv", index=False)
    extra = {
        "predict": ["-i", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.json")],
        "convert": ["-o", str(tmp_path / "onnx")],
        "generate-dockerfile": ["-o", str(tmp_path / "context")],
    }.get(command, [])
    out = run_with_prelude(COUNT_MLMODEL_PARSES, command, sklearn_model_path, *extra)
    err = out.stderr.decode()
    assert out.returncode == 0, err
    assert err.strip().splitlines()[-1] == "MLmodel parsed 1 time(s) by ['model.py']", err
