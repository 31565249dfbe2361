"""The V2 REST routes in the Flask app (no sockets): server and model metadata from the signature,
health, infer as JSON and with binary data, the raw form, the model's name and version, and the
statuses KServe uses (400, 404, 415, 503) with V2's ``{"error": ...}`` body."""

from __future__ import annotations

import numpy as np
import pytest

from modelfmt import __version__
from modelfmt.flavors import pyfunc
from modelfmt.flavors.pyfunc import PythonModel
from modelfmt.jsonenc import dumps, loads
from modelfmt.serving import create_app
from modelfmt.signature import ColSpec, ModelSignature, Schema, TensorSpec

HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def app(sklearn_model_path):
    return create_app(sklearn_model_path)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def rows(diabetes):
    return diabetes[0].head(5)


def _columns(rows) -> list[dict]:
    return [{"name": c, "datatype": "FP64", "shape": [len(rows), 1], "data": rows[c].tolist()} for c in rows.columns]


def _invocations(client, rows) -> list[float]:
    resp = client.post("/invocations", data=dumps({"dataframe_split": rows.to_dict("split")}),
                       content_type="application/json")
    assert resp.status_code == 200, resp.data
    return resp.get_json()["predictions"]


def test_server_metadata_and_health(client) -> None:
    assert client.get("/v2").get_json() == {"name": "modelfmt", "version": __version__,
                                            "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    assert client.get("/v2/models/elasticnet/ready").get_json() == {"name": "elasticnet", "ready": True}


def test_model_metadata_comes_from_the_signature(client, rows) -> None:
    doc = client.get("/v2/models/elasticnet").get_json()
    assert doc["name"] == "elasticnet" and doc["platform"] == "mlflow_sklearn"
    assert "versions" not in doc  # a model directory has none
    assert [i["name"] for i in doc["inputs"]] == list(rows.columns)
    assert doc["inputs"][0] == {"name": "age", "datatype": "FP64", "shape": [-1, 1],
                                "parameters": {"content_type": "np"}}
    assert [(o["datatype"], o["shape"]) for o in doc["outputs"]] == [("FP64", [-1])]


def test_unknown_models_and_versions_are_404_in_v2s_body(client) -> None:
    resp = client.get("/v2/models/other")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "unknown model 'other': this server serves 'elasticnet'"}
    resp = client.post("/v2/models/elasticnet/versions/2/infer", data=b"{}")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "model 'elasticnet' has no version '2' (it has no versions)"}
    resp = client.get("/v2/nothing")
    assert (resp.status_code, resp.get_json()) == (404, {"error": "no endpoint at /v2/nothing"})
    resp = client.get("/v2/models/elasticnet/infer")
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"
    assert resp.get_json() == {"error": "GET is not allowed on /v2/models/elasticnet/infer; allowed: POST"}


def test_json_infer_equals_invocations(client, rows) -> None:
    body = dumps({"id": "req-7", "inputs": _columns(rows)})
    resp = client.post("/v2/models/elasticnet/infer", data=body)  # no Content-Type, as tritonclient sends
    assert resp.status_code == 200, resp.data
    doc = resp.get_json()
    assert (doc["model_name"], doc["id"]) == ("elasticnet", "req-7")
    (out,) = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("output-1", "FP64", [5, 1])
    np.testing.assert_allclose(out["data"], _invocations(client, rows), rtol=0, atol=0)


def test_flat_one_dimensional_columns_and_json_content_type(client, rows) -> None:
    inputs = [{"name": c, "datatype": "FP32", "shape": [5], "data": rows[c].tolist()} for c in rows.columns]
    resp = client.post("/v2/models/elasticnet/infer", data=dumps({"inputs": inputs}),
                       content_type="application/json; charset=utf-8")
    assert resp.status_code == 200, resp.data
    np.testing.assert_allclose(resp.get_json()["outputs"][0]["data"], _invocations(client, rows), rtol=1e-5)


def test_binary_request_and_binary_response(client, rows) -> None:
    inputs, blobs = [], []
    for c in rows.columns:
        raw = rows[c].to_numpy(dtype="<f8").tobytes()
        inputs.append({"name": c, "datatype": "FP64", "shape": [5, 1], "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    header = dumps({"inputs": inputs, "outputs": [{"name": "output-1", "parameters": {"binary_data": True}}]})
    resp = client.post("/v2/models/elasticnet/infer", data=header + b"".join(blobs),
                       headers={HEADER: str(len(header))}, content_type="application/octet-stream")
    assert resp.status_code == 200, resp.data
    assert resp.content_type == "application/octet-stream"
    length = int(resp.headers[HEADER])
    out = loads(resp.data[:length])["outputs"][0]
    assert out["parameters"] == {"binary_data_size": 40}
    got = np.frombuffer(resp.data[length:], dtype="<f8")
    np.testing.assert_array_equal(got, _invocations(client, rows))


def test_bad_requests_are_400_naming_the_problem(client, rows) -> None:
    def post(body: bytes, **kw):
        resp = client.post("/v2/models/elasticnet/infer", data=body, **kw)
        return resp.status_code, resp.get_json()

    assert post(b"not json") == (400, {"error": post(b"not json")[1]["error"]})
    assert post(b"not json")[1]["error"].startswith("the request is not JSON")
    status, doc = post(dumps({"inputs": _columns(rows)[:3]}))
    assert status == 400 and doc["error"].startswith("missing required input column(s): 'bp', 's1'")
    status, doc = post(dumps({"inputs": [{"name": "age", "datatype": "FP64", "shape": [2], "data": [1]}]}))
    assert (status, doc) == (400, {"error": "input 'age': its shape holds 2 element(s), its data has 1"})
    status, doc = post(b"\0" * 8, headers={HEADER: "0"})
    assert status == 400 and "raw binary form" in doc["error"]
    status, doc = post(b"{}", headers={HEADER: "x"})
    assert (status, doc) == (400, {"error": "Inference-Header-Content-Length is a non-negative integer, got 'x'"})
    status, doc = post(b"a,b\n1,2\n", content_type="text/csv")  # the body decides, as in Triton
    assert status == 400 and doc["error"].startswith("the request is not JSON")
    status, doc = post(dumps({"inputs": _columns(rows), "outputs": [{"name": "proba"}]}))
    assert (status, doc) == (400, {"error": "unknown output(s) 'proba'; the model's outputs are 'output-1'"})


def test_not_ready_is_503(app, client, rows) -> None:
    runtime = app.extensions["modelfmt"]
    runtime.ready, runtime.not_ready_reason = False, "the model failed on its own input example: boom"
    try:
        for path in ("/v2/health/ready", "/v2/models/elasticnet/ready"):
            resp = client.get(path)
            assert resp.status_code == 503
            assert resp.get_json() == {"error": "the model failed on its own input example: boom"}
        assert client.post("/v2/models/elasticnet/infer", data=dumps({"inputs": _columns(rows)})).status_code == 503
        assert client.get("/v2/health/live").status_code == 200
    finally:
        runtime.ready = True


def test_model_name_option_and_max_body_size(sklearn_model_path, rows) -> None:
    client = create_app(sklearn_model_path, model_name="diabetes", max_body_size=64).test_client()
    assert client.get("/v2/models/diabetes").get_json()["name"] == "diabetes"
    assert client.get("/v2/models/elasticnet").status_code == 404
    resp = client.post("/v2/models/diabetes/infer", data=dumps({"inputs": _columns(rows)}))
    assert resp.status_code == 413 and "over the limit of 64 bytes" in resp.get_json()["error"]


# -- a tensor signature and the raw form ---------------------------------------------------------
def _tensor_model():
    class RowSums(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input.sum(axis=1) * (params or {}).get("scale", 1.0)

    return RowSums()


@pytest.fixture(scope="module")
def tensor_client(tmp_path_factory):
    path = tmp_path_factory.mktemp("v2") / "rowsums"
    signature = ModelSignature(Schema([TensorSpec(np.float32, (-1, 3))]), Schema([TensorSpec(np.float32, (-1,))]))
    from modelfmt.signature import ParamSchema, ParamSpec

    signature.params = ParamSchema([ParamSpec("scale", "double", 1.0)])
    pyfunc.save_model(str(path), python_model=_tensor_model(), signature=signature)
    return create_app(str(path)).test_client()


def test_tensor_signature_metadata_and_infer_with_params(tensor_client) -> None:
    doc = tensor_client.get("/v2/models/rowsums").get_json()
    assert doc["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3],
                              "parameters": {"content_type": "np"}}]
    assert doc["outputs"][0]["name"] == "output-1"
    body = dumps({"parameters": {"scale": 2.0},
                  "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]})
    resp = tensor_client.post("/v2/models/rowsums/infer", data=body)
    assert resp.status_code == 200, resp.data
    out = resp.get_json()["outputs"][0]
    assert (out["datatype"], out["shape"], out["data"]) == ("FP32", [2, 1], [12.0, 30.0])


def test_the_raw_binary_form_feeds_the_one_input(tensor_client) -> None:
    raw = np.arange(6, dtype="<f4").tobytes()
    resp = tensor_client.post("/v2/models/rowsums/infer", data=raw, headers={HEADER: "0"})
    assert resp.status_code == 200, resp.data
    assert resp.get_json()["outputs"][0]["data"] == [3.0, 12.0]
    resp = tensor_client.post("/v2/models/rowsums/infer", data=raw[:8], headers={HEADER: "0"})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "input 'input-0': 8 bytes are not a whole number of [-1, 3] FP32 tensors"


def test_a_tensor_of_the_wrong_shape_is_400(tensor_client) -> None:
    body = dumps({"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})
    resp = tensor_client.post("/v2/models/rowsums/infer", data=body)
    assert resp.status_code == 400 and "expected shape (-1, 3), got (1, 2)" in resp.get_json()["error"]


def test_a_column_model_with_strings(tmp_path) -> None:
    class Greeter(PythonModel):
        def predict(self, context, model_input, params=None):
            return [f"{n} is {a}" for n, a in zip(model_input["name"], model_input["age"], strict=True)]

    path = tmp_path / "greeter"
    pyfunc.save_model(str(path), python_model=Greeter(),
                      signature=ModelSignature(Schema([ColSpec("string", "name"), ColSpec("long", "age")])))
    client = create_app(str(path)).test_client()
    body = dumps({"inputs": [{"name": "name", "datatype": "BYTES", "shape": [2, 1], "data": ["Joanne", "Michael"]},
                             {"name": "age", "datatype": "INT64", "shape": [2, 1], "data": [34, 22]}]})
    resp = client.post("/v2/models/greeter/infer", data=body)
    assert resp.status_code == 200, resp.data
    out = resp.get_json()["outputs"][0]
    assert (out["datatype"], out["data"]) == ("BYTES", ["Joanne is 34", "Michael is 22"])


def test_a_registered_model_answers_to_its_name_and_version(sklearn_model_path, rows) -> None:
    from modelfmt.open import open_model

    opened = open_model(sklearn_model_path)
    opened.registered_name, opened.registered_version = "fraud", "3"  # as a models:/fraud/3 URI sets them
    client = create_app(opened).test_client()
    doc = client.get("/v2/models/fraud/versions/3").get_json()
    assert (doc["name"], doc["versions"]) == ("fraud", ["3"])
    assert client.get("/v2/models/fraud/versions/3/ready").status_code == 200
    resp = client.get("/v2/models/fraud/versions/2")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "model 'fraud' has no version '2' (it is version '3')"}
    resp = client.post("/v2/models/fraud/versions/3/infer", data=dumps({"id": "a", "inputs": _columns(rows)}))
    assert resp.status_code == 200, resp.data
    assert (resp.get_json()["model_name"], resp.get_json()["model_version"]) == ("fraud", "3")
    assert client.post("/v2/models/fraud/infer", data=dumps({"inputs": _columns(rows)})).status_code == 200
