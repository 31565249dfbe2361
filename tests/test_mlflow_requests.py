"""Scoring requests answered side by side: modelfmt's server and MLflow 3.18's, on the same models.

One MLflow subprocess for the module (tests/mlflow_scripts/serve_requests.py) saves "echo" models with
MLflow (they answer what reached them: one ``name|dtype|values`` string per column, then the params)
and answers each request through the app ``mlflow models serve`` runs; modelfmt serves the same
directories through its own app (``create_app``). Where the answers differ on purpose, the test says
why (README, Input checking and Requests).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "mlflow_scripts" / "serve_requests.py"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))
JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
NUMBERS = ["a", "b", "f", "i"]  # the "numbers" model: double, long, float, integer

if not os.path.exists(MLFLOW_PYTHON):
    if os.environ.get("CI"):
        raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
    pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)", allow_module_level=True)


class MlflowServer:
    """The MLflow subprocess: ``ask`` posts a body to a model's ``/invocations``, ``example`` reads an
    input example as MLflow reads it."""

    def __init__(self, out: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        self.log = log
        self.proc = subprocess.Popen([MLFLOW_PYTHON, str(SCRIPT), str(out)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
        self.out = out
        if self._line() != "READY":
            raise AssertionError(f"the MLflow subprocess did not start:\n{log.read_text()[-4000:]}")

    def _line(self) -> str:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise AssertionError(f"the MLflow subprocess exited:\n{self.log.read_text()[-4000:]}")
        return line.strip()

    def _send(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        answer = json.loads(self._line())
        assert answer.get("status") != -1, answer["body"]
        return answer

    def ask(self, model: str, body: bytes, content_type: str | None = JSON) -> tuple[int, object]:
        answer = self._send({"model": model, "content_type": content_type, "body": base64.b64encode(body).decode()})
        return answer["status"], _parsed(answer["body"], answer["content_type"])

    def example(self, path: str | Path) -> dict:
        return self._send({"op": "example", "path": str(path)})

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _parsed(text: str, content_type: str | None) -> object:
    return json.loads(text) if (content_type or "").startswith(JSON) else text


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    base = tmp_path_factory.mktemp("mlflow_requests")
    server = MlflowServer(base / "models", base / "mlflow.log")
    yield server
    server.close()


@pytest.fixture(scope="module")
def ours(mlflow):
    """``ask(model, body, content_type)`` against modelfmt's app serving the same model directory."""
    from modelfmt.serving.app import create_app

    clients: dict = {}
    logger = logging.getLogger("modelfmt")
    level = logger.level

    def ask(model: str, body: bytes, content_type: str | None = JSON) -> tuple[int, object]:
        if model not in clients:
            logger.setLevel(logging.ERROR)  # quiet the module's many loads; restored after the module
            clients[model] = create_app(str(mlflow.out / model)).test_client()
        headers = {"Content-Type": content_type} if content_type else {}
        resp = clients[model].post("/invocations", data=body, headers=headers)
        return resp.status_code, _parsed(resp.get_data(as_text=True), resp.content_type)

    yield ask
    logger.setLevel(level)


def both(mlflow, ours, model: str, body: str | bytes, content_type: str | None = JSON) -> tuple:
    raw = body.encode() if isinstance(body, str) else body
    return mlflow.ask(model, raw, content_type), ours(model, raw, content_type)


def seen(answer: tuple) -> dict:
    """What reached the echo model: column -> (dtype, values)."""
    status, body = answer
    assert status == 200, body
    out = {}
    for item in body["predictions"]:
        name, _, rest = item.partition("|")
        out[name] = rest if name == "params" else tuple(rest.split("|", 1))
    return out


def split(*rows: list, columns: list = NUMBERS) -> str:
    return json.dumps({"dataframe_split": {"columns": columns, "data": list(rows)}})


def parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


# -- 1. missing values: the same in every format -------------------------------------------------
MISSING = {
    "split null": split([1.5, 2, 0.5, 3], [None, 4, None, 5]),
    "records null": '{"dataframe_records": [{"a": 1.5, "b": 2, "f": null, "i": 3}, '
                    '{"a": null, "b": 4, "f": 1.5, "i": 5}]}',
    "instances null": '{"instances": [{"a": null, "b": 2, "f": null, "i": 3}]}',
    "inputs null": '{"inputs": {"a": [1.5, null], "b": [2, 4], "f": [null, 1.5], "i": [3, 5]}}',
    "inputs records null": '{"inputs": [{"a": null, "b": 2, "f": 0.5, "i": 3}]}',
    "split literals": '{"dataframe_split": {"columns": ["a","b","f","i"], '
                      '"data": [[NaN, 2, Infinity, 3], [-Infinity, 4, NaN, 5]]}}',
    "records literals": '{"dataframe_records": [{"a": NaN, "b": 2, "f": -Infinity, "i": 3}]}',
    "instances literals": '{"instances": [{"a": NaN, "b": 2, "f": 0.5, "i": 3}]}',
    "inputs literals": '{"inputs": {"a": [NaN, Infinity], "b": [2, 4], "f": [0.5, NaN], "i": [3, 5]}}',
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_missing_values_reach_the_model_as_mlflow_hands_them(mlflow, ours, case):
    theirs, mine = both(mlflow, ours, "numbers", MISSING[case])
    assert seen(mine) == seen(theirs)


@pytest.mark.parametrize("body", [
    '{"inputs": [[1.5, null], [2.0, 3.0]]}',
    '{"instances": [[1.5, NaN], [-Infinity, 3.0]]}',
    '{"inputs": [[Infinity, 1]]}',
])
def test_missing_values_in_tensors(mlflow, ours, body):
    theirs, mine = both(mlflow, ours, "tensor", body)
    assert seen(mine) == seen(theirs)


def test_empty_csv_cells_are_missing_values_too(mlflow, ours):
    theirs, mine = both(mlflow, ours, "numbers", "a,b,f,i\n1.5,2,0.5,3\n,4,,5\n", CSV)
    assert seen(mine) == seen(theirs)
    assert seen(mine)["a"] == ("float64", "[1.5, 'nan']")


@pytest.mark.parametrize("body, content_type", [
    (split([1.5, None, 0.5, 3]), JSON),
    ('{"inputs": {"a": [1.5], "b": [null], "f": [0.5], "i": [3]}}', JSON),
    ('{"instances": [{"a": 1.5, "b": 2, "f": 0.5, "i": NaN}]}', JSON),
    ("a,b,f,i\n1.5,,0.5,3\n", CSV),
])
def test_a_missing_value_in_an_integer_column_is_refused_in_every_format(mlflow, ours, body, content_type):
    (status, _), (mine, answer) = both(mlflow, ours, "numbers", body, content_type)
    assert status == mine == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "missing values" in answer["message"] and ("'b'" in answer["message"] or "'i'" in answer["message"])


# -- 2. strings and numbers -----------------------------------------------------------------------
NUMERIC_STRINGS = {
    "split": split(["0.05", "2", "0.5", "3"], [1.5, " 7", "-2.5e-3", "+4"]),
    "records": '{"dataframe_records": [{"a": "0.05", "b": "2", "f": "0.5", "i": "3"}]}',
    "instances": '{"instances": [{"a": "0.05", "b": "2", "f": "0.5", "i": "3"}]}',
    "inputs": '{"inputs": {"a": ["0.05", "1e3"], "b": ["2", "-9007199254740993"], "f": ["0.5", "inf"], '
              '"i": ["3", "-3"]}}',
    "nan and inf": split(["nan", "2", "inf", "3"], ["-Infinity", "4", "NaN", "5"]),
}


@pytest.mark.parametrize("case", sorted(NUMERIC_STRINGS))
def test_numeric_strings_in_numeric_columns_are_converted_as_mlflow_does(mlflow, ours, case):
    theirs, mine = both(mlflow, ours, "numbers", NUMERIC_STRINGS[case])
    assert seen(mine) == seen(theirs)


def test_numeric_strings_in_a_tensor(mlflow, ours):
    theirs, mine = both(mlflow, ours, "tensor", '{"inputs": [["1.5", "2"], [2.0, "-3e2"]]}')
    assert seen(mine) == seen(theirs) == {"": ("float64", "[[1.5, 2.0], [2.0, -300.0]]")}


@pytest.mark.parametrize("row, column, text", [
    (["abc", 2, 0.5, 3], "a", "'abc'"),
    ([1.5, "2.5", 0.5, 3], "b", "'2.5'"),  # not an integer: refused as 2.5 is
    ([1.5, 2, 0.5, "0x10"], "i", "'0x10'"),
    (["", 2, 0.5, 3], "a", "''"),
    ([1.5, "1e3", 0.5, 3], "b", "'1e3'"),
])
def test_strings_that_are_not_numbers_are_refused_naming_the_column(mlflow, ours, row, column, text):
    (status, _), (mine, answer) = both(mlflow, ours, "numbers", split(row))
    assert status == mine == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"column '{column}'" in answer["message"] and text in answer["message"]


def test_integers_for_a_string_column_become_their_text(mlflow, ours):
    # MLflow writes them as text in "inputs" (a pandas str column; ours is object, as a JSON string
    # column is everywhere in modelfmt) and passes them as ints in dataframe_split: modelfmt writes the
    # text in every format.
    (_, theirs), mine = both(mlflow, ours, "mixed", '{"inputs": {"x": [1.5, 2], "s": ["a", 7], "flag": [true, false]}}')
    assert seen(mine)["s"] == ("object", "['a', '7']")
    assert seen((200, theirs))["s"][1] == "['a', '7']"
    _, mine_split = both(mlflow, ours, "mixed", split([1.5, 7, True], [2.5, 12345678901234567890, False],
                                                        columns=["x", "s", "flag"]))
    assert seen(mine_split)["s"] == ("object", "['7', '12345678901234567890']")
    _, mine_csv = both(mlflow, ours, "mixed", "x,s,flag\n1.5,7,true\n", CSV)
    assert seen(mine_csv)["s"] == ("object", "['7']")


@pytest.mark.parametrize("value, why", [(7.5, "a float is never converted to a string"),
                                        (True, "a boolean is never converted to a string")])
def test_floats_and_booleans_for_a_string_column_are_refused(ours, value, why):
    # MLflow passes them on (or writes 7.5 as "7.5" in "inputs"): a float has no one text ("1.0" or "1").
    for body in (split([1.5, value, True], columns=["x", "s", "flag"]),
                 json.dumps({"inputs": {"x": [1.5], "s": [value], "flag": [True]}})):
        status, answer = ours("mixed", body.encode())
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "column 's'" in answer["message"] and why in answer["message"]


# -- 3. Parquet -----------------------------------------------------------------------------------
def test_parquet_bodies_are_read(mlflow, ours):
    exact = pd.DataFrame({"a": [1.5, 2.5], "b": [2, 4], "f": np.array([0.5, 1.5], np.float32),
                          "i": np.array([3, 5], np.int32)})
    theirs, mine = both(mlflow, ours, "numbers", parquet(exact), PARQUET)
    assert seen(mine) == seen(theirs)
    stamps = pd.to_datetime(["2024-01-01", "2024-01-02T03:04:05.5"], format="ISO8601").astype("datetime64[ms]")
    dates = pd.DataFrame({"t": stamps, "x": [1.0, None]})
    theirs, mine = both(mlflow, ours, "dates", parquet(dates), PARQUET)
    assert seen(mine) == seen(theirs)
    assert seen(mine)["t"][0] == "datetime64[ns]"


def test_parquet_column_types_go_through_the_casting_policy(mlflow, ours):
    # What pandas writes by default: float64 for the float column, int64 for the integer one, another
    # column order. MLflow refuses it (its parquet path casts nothing); modelfmt narrows and fits as for JSON.
    default = pd.DataFrame({"i": [3, 5], "f": [0.5, 1.5], "b": np.array([2, 4], np.int16), "a": [1.5, 2.5]})
    (status, _), mine = both(mlflow, ours, "numbers", parquet(default), PARQUET)
    assert status == 400
    assert seen(mine) == {"a": ("float64", "[1.5, 2.5]"), "b": ("int64", "[2, 4]"),
                          "f": ("float32", "[0.5, 1.5]"), "i": ("int32", "[3, 5]")}
    nulls = pd.DataFrame({"a": [1.5, 2.5], "b": pd.array([2, None], dtype="Int64"), "f": [0.5, 1.5], "i": [3, 5]})
    status, answer = ours("numbers", parquet(nulls), PARQUET)
    assert status == 400 and "column 'b'" in answer["message"] and "missing values" in answer["message"]


def test_a_body_that_is_not_parquet(mlflow, ours):
    (status, theirs), (mine, answer) = both(mlflow, ours, "numbers", b"PAR1 not really", PARQUET)
    assert status == mine == 400 and answer["error_code"] == theirs["error_code"] == "BAD_REQUEST"
    assert "not valid Parquet" in answer["message"]


# -- 4. rows without names ------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_rows_without_names_are_refused_for_named_columns(mlflow, ours, key):
    body = json.dumps({key: [[1.5, 2, 0.5, 3], [2.5, 4, 1.5, 5]]})
    (status, theirs), (mine, answer) = both(mlflow, ours, "numbers", body)
    assert status == mine == 400
    assert answer["error_code"] == theirs["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "rows without column names" in answer["message"]
    assert "dataframe_split" in answer["message"] and '"inputs" as an object of columns' in answer["message"]


def test_a_flat_list_for_a_one_column_model_is_still_that_column(mlflow, ours):
    theirs, mine = both(mlflow, ours, "params", '{"inputs": [1.5, 2.5]}')
    assert seen(mine) == seen(theirs)


# -- 5. error codes -------------------------------------------------------------------------------
@pytest.mark.parametrize("model, body, code", [
    ("numbers", '{"dataframe_split": {"columns": ["a"], "data": [[1', "BAD_REQUEST"),  # bad JSON
    ("numbers", "[1, 2]", "BAD_REQUEST"),  # not an object
    ("numbers", '{"foo": 1}', "BAD_REQUEST"),  # no format key
    ("numbers", '{"inputs": {"a": [1]}, "instances": [1]}', "BAD_REQUEST"),  # two format keys
    ("numbers", split([1.5, 2, 0.5], columns=["a", "b", "f"]), "INVALID_PARAMETER_VALUE"),  # missing column
    ("tensor", '{"inputs": [[1.0, 2.0, 3.0]]}', "INVALID_PARAMETER_VALUE"),  # tensor shape
    ("params", '{"inputs": {"x": [1.5]}, "params": {"k": 2.0}}', "INVALID_PARAMETER_VALUE"),  # params
    ("params", '{"inputs": {"x": [1.5]}, "params": {"k": "2"}}', "INVALID_PARAMETER_VALUE"),
    ("params", '{"inputs": {"x": [1.5]}, "params": {"name": 5}}', "INVALID_PARAMETER_VALUE"),
])
def test_error_codes_are_mlflows(mlflow, ours, model, body, code):
    (status, theirs), (mine, answer) = both(mlflow, ours, model, body)
    assert status == mine == 400
    assert theirs["error_code"] == answer["error_code"] == code


def test_unsupported_content_type_is_415_in_both(mlflow, ours):
    # MLflow answers plain text (no error_code); modelfmt keeps its JSON error body.
    (status, theirs), (mine, answer) = both(mlflow, ours, "numbers", "<a/>", "application/xml")
    assert status == mine == 415 and isinstance(theirs, str)
    assert answer["error_code"] == "UNSUPPORTED_MEDIA_TYPE" and PARQUET in answer["message"]


# -- 6. params, datetimes, input examples with params --------------------------------------------
def test_params_are_converted_as_mlflow_converts_them(mlflow, ours):
    for params in ({"k": 2}, {"scale": 2}, {"k": 3, "scale": 0.5, "name": "b"}, {}):
        body = json.dumps({"inputs": {"x": [1.5]}, "params": params})
        theirs, mine = both(mlflow, ours, "params", body)
        assert seen(mine) == seen(theirs)


@pytest.mark.parametrize("body", [
    '{"inputs": {"t": ["2024-01-01T00:00:00", "2024-01-01T00:00:00.123456"], "x": [1.0, 2.0]}}',
    '{"dataframe_split": {"columns": ["t", "x"], "data": [[null, 1.0], ["2024-01-01T00:00:00", 2.0]]}}',
    '{"dataframe_records": [{"t": "2024-03-01T12:30:00.5", "x": 1.0}]}',
])
def test_datetimes_reach_the_model_in_nanoseconds(mlflow, ours, body):
    theirs, mine = both(mlflow, ours, "dates", body)
    assert seen(mine) == seen(theirs)
    assert seen(mine)["t"][0] == "datetime64[ns]"


def test_iso_strings_of_mixed_precision_are_read_in_every_format(mlflow, ours):
    # MLflow reads them in "inputs" but refuses them in dataframe_split; modelfmt reads them in both,
    # with what MLflow's "inputs" answer shows.
    values = ["2024-01-01T00:00:00", "2024-01-01T00:00:00.123456"]
    theirs, _ = both(mlflow, ours, "dates", json.dumps({"inputs": {"t": values, "x": [1.0, 2.0]}}))
    body = json.dumps({"dataframe_split": {"columns": ["t", "x"], "data": [[values[0], 1.0], [values[1], 2.0]]}})
    (status, _), mine = both(mlflow, ours, "dates", body)
    assert status == 400
    assert seen(mine) == seen(theirs)
    csv = "t,x\n" + "".join(f"{v},1.0\n" for v in values)
    assert seen(ours("dates", csv.encode(), CSV))["t"] == seen(theirs)["t"]


def test_an_input_example_with_params_as_mlflow_saves_it(mlflow, tmp_path):
    """Ours is saved in MLflow's layout and MLflow reads it; MLflow's loads here, input and params."""
    from modelfmt import Model
    from modelfmt.example import load_input_example, load_input_example_params
    from modelfmt.flavors import pyfunc

    class Echo(pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    example = pd.DataFrame({"x": [1.5, 2.0], "s": ["a", "b"]})
    path = tmp_path / "tuple_example"
    pyfunc.save_model(str(path), python_model=Echo(), input_example=(example, {"k": 1, "name": "z"}))
    theirs_dir = mlflow.out / "tuple_example"
    for name in ("input_example.json", "serving_input_example.json"):
        assert json.loads((path / name).read_text()) == json.loads((theirs_dir / name).read_text()), name
    ours_model, theirs_model = Model.load(path), Model.load(theirs_dir)
    assert ours_model.saved_input_example_info == theirs_model.saved_input_example_info
    assert ours_model.get_params_schema().to_dict() == theirs_model.get_params_schema().to_dict()
    read_by_mlflow = mlflow.example(path)
    assert read_by_mlflow == {"example": {"columns": ["x", "s"], "data": [[1.5, "a"], [2.0, "b"]]},
                              "params": {"k": 1, "name": "z"}}
    assert read_by_mlflow == mlflow.example(theirs_dir)
    for model_dir in (path, theirs_dir):
        pd.testing.assert_frame_equal(load_input_example(str(model_dir)), example)
        assert load_input_example_params(str(model_dir)) == {"k": 1, "name": "z"}


def test_a_model_saved_by_mlflow_with_an_example_with_params_is_served_ready(mlflow):
    from modelfmt.serving.app import create_app

    client = create_app(str(mlflow.out / "tuple_example")).test_client()
    assert client.get("/ping").status_code == 200  # scored its own example, params included
