"""Type-hinted PythonModels saved by real MLflow 3.x: modelfmt loads, predicts and serves them as MLflow does.

MLflow's venv saves one model per hint (``list[str]``, ``list[dict[str, str]]``, ``list[dict[str, Any]]``,
``list[list[float]]``, ``dict[str, int]``, ``list[<pydantic model>]``, a hinted function), each with
and without an input example, and records its own answer to every case in
``mlflow_scripts/save_type_hint_models.py`` (in-line ``predict`` and its scoring server's parsing);
here the same cases go through ``modelfmt.load_model`` and modelfmt's server, and must give the same
values, or fail where MLflow fails, with MLflow's message and a 400.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "mlflow_scripts" / "save_type_hint_models.py"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))

if not os.path.exists(MLFLOW_PYTHON):
    if os.environ.get("CI"):
        raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
    pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)", allow_module_level=True)

HINTS = ["list_str", "list_dict_str", "list_dict_any", "list_list_float", "dict_str_int", "list_item",
         "function_list_dict_str", "list_int", "list_union", "list_datetime", "list_bytes", "from_example"]
MODELS = [h + s for h in HINTS for s in ("_ex", "_noex")]
# MLflow infers no signature from a non-list hint, nor from TypeFromExample: the example's signature, if any.
NOT_FROM_HINT = {"dict_str_int_ex", "dict_str_int_noex", "from_example_ex", "from_example_noex"}
KNOWN_DIFFERENCES = {
    # No signature at all: MLflow's server hands {"inputs": {"a": 3}} over as a dict of 0-d arrays,
    # modelfmt's as a dict of numbers (the no-schema JSON codec, not the type-hint rules).
    ("dict_str_int_noex", "inputs"),
    # Deliberate: ISO 8601 text for a datetime hint is parsed in-line too (MLflow: only when served).
    ("list_datetime_ex", "text"),
    ("list_datetime_noex", "text"),
}


def _cases(kind: str) -> list:
    import ast

    tree = ast.parse(SCRIPT.read_text())
    cases = next(n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CASES")
    table = ast.literal_eval(cases.value)
    return [
        pytest.param(model, case, id=f"{model}-{case['id']}")
        for model in MODELS
        for case in table[model.rsplit("_", 1)[0]]
        if case["kind"] == kind and (model, case["id"]) not in KNOWN_DIFFERENCES
    ]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The models MLflow saved and its answers, from one run of MLflow's venv for this module."""
    base = tmp_path_factory.mktemp("type_hints")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    proc = subprocess.run([MLFLOW_PYTHON, str(SCRIPT), str(base)], cwd=base, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    expected = json.loads((base / "expected.json").read_text())
    assert expected["_mlflow_version"].startswith("3.")
    return base, expected


@pytest.fixture(scope="module")
def models(saved):
    import modelfmt

    base, _ = saved
    return {name: modelfmt.load_model(base / name) for name in MODELS}


@pytest.fixture(scope="module")
def clients(saved):
    from modelfmt.serving.app import create_app

    base, _ = saved
    return {name: create_app(str(base / name)).test_client() for name in MODELS}


def _mlflow_message(answer: dict) -> str:
    return answer["error"].split(": ", 1)[1]


def _same_failure(message: str, answer: dict) -> None:
    """Ours names the problem as MLflow does (pydantic's own text, with its version's URL, is left out)."""
    assert "error" in answer, f"MLflow answered {answer}, modelfmt failed: {message}"
    theirs = _mlflow_message(answer)
    cut = theirs.find("Data doesn't match type hint")
    assert message[: cut if cut > 0 else len(theirs)] == theirs[: cut if cut > 0 else len(theirs)]


# -- types and signatures -------------------------------------------------------------------------
def test_column_types_hash_like_they_compare():
    from modelfmt.types import AnyType, Array, DataType, Map, Object, Property, SparkMLVector

    kinds = [Map(DataType.string), Array(Map(AnyType())), Object([Property("a", DataType.long)]), SparkMLVector()]
    again = [Map(DataType.string), Array(Map(AnyType())), Object([Property("a", DataType.long)]), SparkMLVector()]
    assert set(kinds) == set(again) and len(set(kinds + again)) == 4
    assert {k: i for i, k in enumerate(kinds)}[again[1]] == 1
    assert Map(DataType.string) not in {DataType.string, Map(DataType.long), Array(DataType.string)}
    assert Object([Property("a", DataType.long, False)]) not in set(kinds)


@pytest.mark.parametrize("name", MODELS)
def test_signature_reads_as_mlflow_wrote_it(saved, models, name):
    _, expected = saved
    meta = models[name].metadata
    theirs = expected[name]["signature"]
    if theirs is None:
        assert meta.signature is None
        return
    assert meta.get_input_schema().to_dict() == json.loads(theirs["inputs"])
    assert meta.get_input_schema().from_type_hint is (name not in NOT_FROM_HINT)
    # Written back as read: MLflow's flag and signature survive our MLmodel round trip.
    again = type(meta).from_dict(meta.to_dict())
    assert again.get_input_schema().from_type_hint is meta.get_input_schema().from_type_hint


@pytest.mark.parametrize("name", [m for m in MODELS if m not in NOT_FROM_HINT])
def test_schema_inferred_from_the_hint_is_mlflows(saved, models, name):
    from modelfmt.flavors import _mlflow_names
    from modelfmt.flavors._type_hints import schema_from_list_hint

    _, expected = saved
    hint = _mlflow_names.predict_type_hints(models[name].unwrap_python_model()).input
    if name.startswith("function_"):
        hint = models[name].unwrap_python_model().predict_type_hints.input  # the function's
    assert schema_from_list_hint(hint).to_dict() == json.loads(expected[name]["signature"]["inputs"])


# -- in-line predict ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "case"), _cases("predict"))
def test_predict_like_mlflow(saved, models, name, case):
    from modelfmt.errors import ModelfmtError

    answer = saved[1][name]["cases"][case["id"]]
    data = pd.DataFrame(case["value"]) if case.get("as") == "frame" else case["value"]
    try:
        got = models[name].predict(data)
    except ModelfmtError as e:
        _same_failure(e.message, answer)
        assert e.http_status == 400
        return
    assert "value" in answer, f"MLflow failed ({answer['error']}), modelfmt answered {got}"
    assert (got.tolist() if hasattr(got, "tolist") else got) == answer["value"]


def test_pydantic_hint_gets_model_instances(models):
    model = models["list_item_ex"]
    item_class = model.unwrap_python_model().predict_type_hints.input.__args__[0]
    assert item_class.__name__ == "Item" and item_class.__module__ == "__main__"
    # Our own instances pass through as they are, as in MLflow.
    assert model.predict([item_class(name="mug", qty=1)]) == ["Item:mugx1::None"]


def test_datetime_text_is_parsed_in_line_as_when_served(saved, models):
    """The one deliberate difference: the same JSON value scores the same in-line and served."""
    served = saved[1]["list_datetime_ex"]["cases"]["inputs"]["value"]
    assert models["list_datetime_ex"].predict(["2024-01-02T03:04:05", "2025-06-07"]) == served
    from modelfmt.errors import ModelfmtError

    with pytest.raises(ModelfmtError, match=r"type hint `list\[datetime.datetime\]`. Error: Invalid isoformat") as e:
        models["list_datetime_noex"].predict(["yesterday"])
    assert e.value.http_status == 400


# -- served ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_served_model_is_ready_and_answers_its_example(saved, clients, name):
    base, expected = saved
    client = clients[name]
    assert client.get("/ping").status_code == 200
    example = base / name / "serving_input_example.json"
    if not example.is_file():
        assert name.endswith("_noex")
        return
    resp = client.post("/invocations", data=example.read_bytes(), content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json() == {"predictions": expected[name]["cases"]["example"]["value"]}


@pytest.mark.parametrize(("name", "case"), _cases("serve"))
def test_serve_like_mlflow(saved, clients, name, case):
    answer = saved[1][name]["cases"][case["id"]]
    resp = clients[name].post("/invocations", data=json.dumps(case["body"]), content_type="application/json")
    body = resp.get_json()
    if "error" in answer:
        assert resp.status_code == 400, body
        # MLflow's wrapper re-raises other failures (unparseable datetime text) as a plain MlflowException,
        # which MLflow answers 500; the input's fault, so 400 here.
        wrapped = answer["error"].startswith("MlflowException: Failed to validate the input data")
        assert body["error_code"] == ("BAD_REQUEST" if wrapped else "INVALID_PARAMETER_VALUE")
        if "'inputs' key" in answer["error"]:  # the rule is MLflow's; the sentence ends with our own key list
            assert body["message"].startswith("Request payload must be a dictionary with 'inputs' key")
        else:
            _same_failure(body["message"], answer)
        return
    assert resp.status_code == 200, body
    assert body == {"predictions": answer["value"]}


def test_real_server_scores_hinted_models(saved):
    """gunicorn, as deployed: /ping turns 200 once the example scored, and a fresh body is answered."""
    import requests

    from modelfmt.serving.testing import serving

    base, expected = saved
    for name, body in (("list_dict_str_ex", {"inputs": [{"a": "p"}, {"b": "q", "c": "r"}]}),
                       ("list_item_ex", {"inputs": [{"name": "cup", "qty": 3, "tags": ["a", "b"]}]})):
        with serving(str(base / name)) as url:
            assert requests.get(f"{url}/ping", timeout=10).status_code == 200
            example = (base / name / "serving_input_example.json").read_bytes()
            resp = requests.post(f"{url}/invocations", data=example, headers={"Content-Type": "application/json"},
                                 timeout=30)
            assert resp.json() == {"predictions": expected[name]["cases"]["example"]["value"]}
            resp = requests.post(f"{url}/invocations", json=body, timeout=30)
            assert resp.json() == {"predictions": expected[name]["cases"]["inputs"]["value"]}


# -- pydantic missing -----------------------------------------------------------------------------
def test_pydantic_hint_without_pydantic_is_a_clear_flavor_error(saved):
    """Where pydantic cannot be imported (blocked for this interpreter), loading names it."""
    base, _ = saved
    code = (
        "import sys; sys.modules['pydantic'] = None\n"  # Python's own way to make an import fail
        "import modelfmt\n"
        "from modelfmt.errors import FlavorError\n"
        "try:\n"
        f"    modelfmt.load_model({str(base / 'list_item_ex')!r})\n"
        "except FlavorError as e:\n"
        "    print('FlavorError:', e)\n"
        f"print(modelfmt.load_model({str(base / 'list_str_ex')!r}).predict(['ok']))\n"
    )
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.strip().splitlines()
    assert first.startswith("FlavorError: cannot load python_model.pkl: the model needs the Python package 'pydantic'")
    assert second == "['OK!']"  # a model whose hints need no pydantic loads without it
