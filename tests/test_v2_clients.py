"""Real V2 clients against ``modelfmt serve``: tritonclient.http with its defaults (binary tensor data
both ways) and with ``binary_data=False``, and the kserve SDK's ``InferenceRESTClient`` (protocol v2),
JSON and binary. They run as scripts (tests/v2_clients/) in bench/.venv-clients (``make clients-venv``),
where modelfmt is not installed; their predictions must equal ``/invocations`` on the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import numpy as np
import pytest

from modelfmt.flavors import pyfunc
from modelfmt.flavors.pyfunc import PythonModel
from modelfmt.serving.testing import serving
from modelfmt.signature import ModelSignature, Schema, TensorSpec

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "v2_clients")
CLIENTS_PYTHON = os.path.join(HERE, "..", "bench", ".venv-clients", "bin", "python")


def run_client(script: str, job: dict) -> dict:
    if not os.path.exists(CLIENTS_PYTHON):
        if os.environ.get("CI"):
            pytest.fail("bench/.venv-clients is missing: `make clients-venv` builds it (a `make test` dependency)")
        pytest.skip("bench/.venv-clients is missing: run `make clients-venv`")
    proc = subprocess.run([CLIENTS_PYTHON, os.path.join(SCRIPTS, script)], input=json.dumps(job),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def invocations(url: str, body: dict) -> list:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())["predictions"]


@pytest.fixture(scope="module")
def diabetes_server(sklearn_model_path):
    with serving(sklearn_model_path, workers=1, threads=4, model_name="diabetes") as url:
        yield url


@pytest.fixture(scope="module")
def rows(diabetes):
    return diabetes[0].head(7)


def _column_inputs(rows) -> list[dict]:
    return [{"name": c, "datatype": "FP64", "dtype": "float64", "data": [[v] for v in rows[c].tolist()]}
            for c in rows.columns]


@pytest.fixture(scope="module")
def expected(diabetes_server, rows) -> list:
    return invocations(diabetes_server, {"dataframe_split": rows.to_dict("split")})


@pytest.mark.parametrize("binary", [None, False], ids=["defaults-binary", "json"])
def test_tritonclient_http_reads_metadata_and_scores(diabetes_server, rows, expected, binary) -> None:
    # Naming no outputs makes tritonclient ask for binary_data_output; the JSON run names its output.
    job = {"url": diabetes_server.removeprefix("http://"), "model": "diabetes", "binary": binary,
           "inputs": _column_inputs(rows), "outputs": None if binary is None else ["output-1"]}
    answer = run_client("triton_http.py", job)
    assert (answer["live"], answer["ready"], answer["model_ready"]) == (True, True, True)
    assert answer["server"]["name"] == "modelfmt" and "binary_tensor_data" in answer["server"]["extensions"]
    meta = answer["metadata"]
    assert meta["name"] == "diabetes" and meta["platform"] == "mlflow_sklearn"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]][:2] == [
        ("age", "FP64", [-1, 1]), ("sex", "FP64", [-1, 1])]
    (out,) = answer["response"]["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("output-1", "FP64", [7, 1])
    if binary is None:
        assert out["parameters"]["binary_data_size"] == 7 * 8 and "data" not in out
    else:
        assert len(out["data"]) == 7
    got = np.array(answer["outputs"]["output-1"]).reshape(-1)
    np.testing.assert_array_equal(got, expected)
    assert answer["unknown_model"]["status"] == "404"
    assert "unknown model 'no-such-model'" in answer["unknown_model"]["message"]


def test_tritonclient_binary_outputs_requested_by_name(diabetes_server, rows, expected) -> None:
    job = {"url": diabetes_server.removeprefix("http://"), "model": "diabetes", "binary": True,
           "inputs": _column_inputs(rows), "outputs": ["output-1"]}
    answer = run_client("triton_http.py", job)
    assert answer["response"]["outputs"][0]["parameters"]["binary_data_size"] == 56
    np.testing.assert_array_equal(np.array(answer["outputs"]["output-1"]).reshape(-1), expected)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_rest_client_v2(diabetes_server, rows, expected, binary) -> None:
    job = {"url": diabetes_server, "model": "diabetes", "binary": binary, "inputs": _column_inputs(rows)}
    answer = run_client("kserve_rest.py", job)
    assert (answer["live"], answer["ready"], answer["model_ready"]) == (True, True, True)
    assert (answer["model_name"], answer["id"]) == ("diabetes", "k-1")
    assert answer["datatypes"] == {"output-1": "FP64"}
    np.testing.assert_array_equal(np.array(answer["outputs"]["output-1"]).reshape(-1), expected)


# -- a tensor signature ---------------------------------------------------------------------------
def _tensor_model():
    class Affine(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input @ np.array([[1.0, -1.0], [0.5, 2.0], [0.0, 1.0]], dtype=np.float32)

    return Affine()


@pytest.fixture(scope="module")
def tensor_server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("v2clients") / "affine")
    signature = ModelSignature(Schema([TensorSpec(np.float32, (-1, 3), "x")]),
                               Schema([TensorSpec(np.float32, (-1, 2))]))
    pyfunc.save_model(path, python_model=_tensor_model(), signature=signature)
    with serving(path, workers=1, threads=4) as url:
        yield url


def test_clients_score_a_tensor_signature(tensor_server) -> None:
    x = [[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]]
    expected = invocations(tensor_server, {"inputs": {"x": x}})
    inputs = [{"name": "x", "datatype": "FP32", "dtype": "float32", "data": x}]
    triton = run_client("triton_http.py", {"url": tensor_server.removeprefix("http://"), "model": "affine",
                                           "binary": None, "inputs": inputs})
    assert triton["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3],
                                             "parameters": {"content_type": "np"}}]
    (out,) = triton["response"]["outputs"]
    assert (out["datatype"], out["shape"]) == ("FP32", [2, 2])
    assert triton["outputs"]["output-1"] == expected
    kserve = run_client("kserve_rest.py", {"url": tensor_server, "model": "affine", "binary": True, "inputs": inputs})
    assert kserve["outputs"]["output-1"] == expected
