"""GET /openapi.json: a valid OpenAPI 3.1 document generated from the model's signature, whose
examples, sent as the document says, are answered 200 with the same predictions.

Models served in-process (Flask's test client over the real app): the diabetes ElasticNet (columns,
input example), a PythonModel with typed columns, an optional column and params (example with params),
a tensor model, and one without signature or example.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from openapi_spec_validator import validate

from modelfmt.flavors import pyfunc
from modelfmt.serving.app import create_app
from modelfmt.serving.openapi import column_schema, openapi_document, tensor_schema
from modelfmt.signature import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema, TensorSpec
from modelfmt.types import Array, DataType, Map, Object, Property

INFER = "/v2/models/{model_name}/infer"


class Scaled(pyfunc.PythonModel):
    """``n * scale`` (a param), plus 1 for rows whose ``flag`` is true; ``label`` must be a string."""

    def predict(self, context, model_input, params=None):
        scale = (params or {}).get("scale", 1.0)
        assert all(isinstance(v, str) for v in model_input["label"])
        return (model_input["n"] * scale + model_input["flag"].astype(int)).to_numpy()


class RowSums(pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input).sum(axis=1)


class Echo(pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [len(model_input)]


TYPED = ModelSignature(
    Schema([
        ColSpec("long", "n"),
        ColSpec("boolean", "flag"),
        ColSpec("string", "label"),
        ColSpec("double", "note", required=False),
    ]),
    Schema([ColSpec("double")]),
    ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("tags", "string", ["a"], (-1,))]),
)
TYPED_EXAMPLE = (
    pd.DataFrame({"n": [1, 2, 3], "flag": [True, False, True], "label": ["a", "b", "c"], "note": [0.5, 1.5, 2.5]}),
    {"scale": 2.0},
)


@pytest.fixture(scope="module")
def models(tmp_path_factory, sklearn_model_path):
    root = tmp_path_factory.mktemp("openapi-models")
    paths = {"elasticnet": sklearn_model_path}
    paths["typed"] = str(root / "typed")
    pyfunc.save_model(paths["typed"], Scaled(), signature=TYPED, input_example=TYPED_EXAMPLE)
    paths["tensor"] = str(root / "tensor")
    pyfunc.save_model(
        paths["tensor"],
        RowSums(),
        signature=ModelSignature(Schema([TensorSpec(np.float32, (-1, 3))])),
        input_example=np.arange(6, dtype=np.float32).reshape(2, 3),
    )
    paths["bare"] = str(root / "bare")
    pyfunc.save_model(paths["bare"], Echo())
    return paths


@pytest.fixture(scope="module")
def clients(models):
    return {name: create_app(path).test_client() for name, path in models.items()}


@pytest.fixture(scope="module")
def docs(clients):
    out = {}
    for name, client in clients.items():
        resp = client.get("/openapi.json")
        assert resp.status_code == 200 and resp.content_type == "application/json"
        out[name] = resp.get_json()
    return out


def _json_examples(doc):
    content = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]
    return {k: v["value"] for k, v in content["application/json"].get("examples", {}).items()}


@pytest.mark.parametrize("name", ["elasticnet", "typed", "tensor", "bare"])
def test_the_document_is_valid_openapi_3_1(docs, name):
    doc = docs[name]
    validate(doc)  # raises, naming the offending part, when it is not
    assert doc["openapi"] == "3.1.0"
    assert "/invocations" in doc["paths"] and INFER in doc["paths"]


def test_the_pure_function_needs_no_model():
    doc = openapi_document(None)
    validate(doc)
    assert "examples" not in doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]


def test_real_column_names_types_and_params(docs):
    schemas = docs["typed"]["components"]["schemas"]
    row = schemas["Row"]
    assert row["properties"]["n"] == {"type": "integer", "format": "int64"}
    assert row["properties"]["flag"] == {"type": "boolean"}
    assert row["properties"]["label"] == {"type": "string"}
    assert row["properties"]["note"] == {"anyOf": [{"type": "number", "format": "double"}, {"type": "null"}]}
    assert row["required"] == ["n", "flag", "label"]
    split = schemas["DataframeSplitRequest"]["properties"]["dataframe_split"]
    assert split["properties"]["columns"]["items"]["enum"] == ["n", "flag", "label", "note"]
    columns = schemas["InputsRequest"]["properties"]["inputs"]["properties"]
    assert columns["n"] == {"type": "array", "items": {"type": "integer", "format": "int64"}}
    params = schemas["Params"]["properties"]
    assert params["scale"] == {"type": "number", "format": "double", "default": 1.0}
    assert params["tags"] == {"type": "array", "items": {"type": "string"}, "default": ["a"]}
    v2_names = schemas["V2InferRequest"]["properties"]["inputs"]["items"]["properties"]["name"]["enum"]
    assert v2_names == ["n", "flag", "label", "note"]


def test_error_bodies_of_each_protocol(docs):
    paths = docs["elasticnet"]["paths"]
    schemas = docs["elasticnet"]["components"]["schemas"]
    bad = paths["/invocations"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert bad == {"$ref": "#/components/schemas/Error"}
    assert schemas["Error"]["required"] == ["error_code", "message"]
    v2_bad = paths[INFER]["post"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert v2_bad == {"$ref": "#/components/schemas/V2Error"}
    assert schemas["V2Error"]["required"] == ["error"]
    # The model's name, as the V2 routes take it.
    assert paths[INFER]["post"]["parameters"][0]["schema"]["enum"] == ["elasticnet"]


@pytest.mark.parametrize("name", ["elasticnet", "typed", "tensor"])
def test_every_json_example_is_answered_200_with_the_same_predictions(clients, docs, name):
    client, doc = clients[name], docs[name]
    examples = _json_examples(doc)
    tabular = {"dataframe_split", "dataframe_records", "instances", "inputs"}
    assert set(examples) == ({"inputs", "instances"} if name == "tensor" else tabular)
    shown = doc["paths"]["/invocations"]["post"]["responses"]["200"]["content"]["application/json"]["example"]
    for key, body in examples.items():
        resp = client.post("/invocations", json=body)
        assert resp.status_code == 200, (key, resp.get_data(as_text=True))
        assert resp.get_json() == shown, key


def test_the_example_params_go_with_every_format(clients, docs):
    answers = set()
    for key, body in _json_examples(docs["typed"]).items():
        assert body["params"] == {"scale": 2.0}, key
        answers.add(tuple(clients["typed"].post("/invocations", json=body).get_json()["predictions"]))
    assert answers == {(3.0, 4.0, 7.0)}  # n * 2, plus 1 where flag is true


@pytest.mark.parametrize("name", ["elasticnet", "typed"])
def test_the_csv_parquet_and_arrow_bodies_the_document_names_score(clients, docs, name):
    import pyarrow as pa

    client, doc = clients[name], docs[name]
    content = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]
    shown = doc["paths"]["/invocations"]["post"]["responses"]["200"]["content"]["application/json"]["example"]
    csv_answer = client.post("/invocations", data=content["text/csv"]["example"], content_type="text/csv")
    assert csv_answer.status_code == 200, csv_answer.get_data(as_text=True)
    split = _json_examples(doc)["dataframe_split"]["dataframe_split"]
    df = pd.DataFrame(split["data"], columns=split["columns"])
    parquet = io.BytesIO()
    df.to_parquet(parquet)
    arrow = io.BytesIO()
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa.ipc.new_stream(arrow, table.schema) as writer:
        writer.write_table(table)
    for media, body in (("application/vnd.apache.parquet", parquet), ("application/vnd.apache.arrow.stream", arrow)):
        assert media in content
        resp = client.post("/invocations", data=body.getvalue(), content_type=media)
        assert resp.status_code == 200, (media, resp.get_data(as_text=True))
    if name == "elasticnet":  # CSV carries no params: the typed model scores it with its default scale
        assert csv_answer.get_json() == shown


def test_a_tensor_signature_is_nested_arrays_of_its_shape(docs):
    schemas = docs["tensor"]["components"]["schemas"]
    inputs = schemas["InputsRequest"]["properties"]["inputs"]
    assert inputs == {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "minItems": 3,
                                                   "maxItems": 3}}
    content = docs["tensor"]["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert "text/csv" not in content and "DataframeSplitRequest" not in schemas
    v2 = docs["tensor"]["paths"][INFER]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert v2 == {"inputs": [{"name": "input-0", "shape": [2, 3], "datatype": "FP32",
                              "data": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}]}


def test_a_model_without_signature_or_example_gets_a_generic_document(docs):
    doc = docs["bare"]
    assert _json_examples(doc) == {}
    assert doc["components"]["schemas"]["Row"]["type"] == "object"
    assert "no signature" in doc["info"]["description"]


def test_the_v2_example_is_one_input_per_column(docs):
    v2 = docs["typed"]["paths"][INFER]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert v2["parameters"] == {"content_type": "pd", "scale": 2.0}  # the example's params
    by_name = {t["name"]: t for t in v2["inputs"]}
    assert by_name["n"] == {"name": "n", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}
    assert by_name["flag"]["datatype"] == "BOOL"
    assert by_name["label"] == {"name": "label", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"],
                                "parameters": {"content_type": "str"}}


def test_column_types_map_to_json_schema():
    assert column_schema(DataType.binary) == {"type": "string", "contentEncoding": "base64"}
    assert column_schema(DataType.datetime) == {"type": "string", "format": "date-time"}
    assert column_schema(Array(DataType.integer)) == {"type": "array", "items": {"type": "integer", "format": "int32"}}
    assert column_schema(Map(DataType.float)) == {"type": "object",
                                                  "additionalProperties": {"type": "number", "format": "float"}}
    obj = column_schema(Object([Property("a", DataType.string), Property("b", DataType.long, required=False)]))
    assert obj["required"] == ["a"] and obj["properties"]["b"]["anyOf"][1] == {"type": "null"}
    assert tensor_schema(TensorSpec(np.int64, (-1, 2)), drop_rows=True) == {
        "type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}


@pytest.mark.parametrize("name", ["elasticnet", "typed", "tensor"])
def test_the_v2_example_is_answered_200_with_the_invocations_predictions(clients, docs, name):
    client, doc = clients[name], docs[name]
    operation = doc["paths"][INFER]["post"]
    model = operation["parameters"][0]["schema"]["enum"][0]
    resp = client.post(f"/v2/models/{model}/infer", json=operation["requestBody"]["content"]["application/json"][
        "example"])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    answer = resp.get_json()
    assert answer["model_name"] == model
    shown = doc["paths"]["/invocations"]["post"]["responses"]["200"]["content"]["application/json"]["example"]
    (output,) = answer["outputs"]
    assert np.allclose(np.asarray(output["data"], dtype=float), np.ravel(shown["predictions"]))


def test_every_documented_get_route_answers_200(clients, docs):
    client, doc = clients["elasticnet"], docs["elasticnet"]
    gets = [path for path, item in doc["paths"].items() if "get" in item]
    assert {"/ping", "/version", "/metadata", "/v2", "/v2/health/live", "/v2/models/{model_name}"} <= set(gets)
    for path in gets:
        resp = client.get(path.replace("{model_name}", "elasticnet"))
        assert resp.status_code == 200, (path, resp.get_data(as_text=True))
