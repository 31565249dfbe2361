"""KServe's V1 protocol in the Flask app: model readiness, ``:predict`` with ``instances`` answering
what ``/invocations`` answers, and V1's ``{"error": ...}`` body with 400/404/415/503."""

from __future__ import annotations

import pytest

from modelfmt.jsonenc import dumps
from modelfmt.serving import create_app


@pytest.fixture(scope="module")
def app(sklearn_model_path):
    return create_app(sklearn_model_path)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def test_model_readiness(app, client) -> None:
    assert client.get("/v1/models/elasticnet").get_json() == {"name": "elasticnet", "ready": True}
    resp = client.get("/v1/models/other")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": "unknown model 'other': this server serves 'elasticnet'"}
    runtime = app.extensions["modelfmt"]
    runtime.ready, runtime.not_ready_reason = False, "not yet"
    try:
        resp = client.get("/v1/models/elasticnet")
        assert (resp.status_code, resp.get_json()) == (503, {"error": "not yet"})
    finally:
        runtime.ready = True


def test_predict_instances_equals_invocations(client, diabetes) -> None:
    rows = diabetes[0].head(4)
    instances = rows.to_dict("records")
    resp = client.post("/v1/models/elasticnet:predict", data=dumps({"instances": instances}),
                       content_type="application/json")
    assert resp.status_code == 200, resp.data
    expected = client.post("/invocations", data=dumps({"dataframe_split": rows.to_dict("split")}),
                           content_type="application/json").get_json()
    assert resp.get_json() == expected
    assert len(expected["predictions"]) == 4
    # No Content-Type, or curl -d's form type, reads as JSON too.
    assert client.post("/v1/models/elasticnet:predict", data=dumps({"instances": instances})).get_json() == expected
    form = client.post("/v1/models/elasticnet:predict", data=dumps({"instances": instances}),
                       content_type="application/x-www-form-urlencoded")
    assert form.get_json() == expected


def test_bad_predict_requests(client) -> None:
    def post(body: bytes, name: str = "elasticnet", **kw):
        resp = client.post(f"/v1/models/{name}:predict", data=body, **kw)
        return resp.status_code, resp.get_json()

    status, doc = post(dumps({"dataframe_split": {"columns": ["age"], "data": [[1]]}}))
    assert status == 400
    assert doc == {"error": 'a V1 predict body is {"instances": [...]} (or {"inputs": ...}); got \'dataframe_split\''}
    status, doc = post(b"{nope")
    assert status == 400 and doc["error"].startswith("the body is not JSON")
    status, doc = post(dumps({"instances": [{"age": 1}]}))
    assert status == 400 and doc["error"].startswith("missing required input column(s)")
    assert post(dumps({"instances": []}), name="other")[0] == 404
    status, doc = post(b"a\n1\n", content_type="text/csv")  # V1 bodies are JSON whatever the header says
    assert status == 400 and doc["error"].startswith("the body is not JSON")
    resp = client.get("/v1/models/elasticnet:predict")
    assert resp.status_code == 404  # a GET names a model called 'elasticnet:predict'
    resp = client.get("/v1/nothing/here")
    assert (resp.status_code, resp.get_json()) == (404, {"error": "no endpoint at /v1/nothing/here"})
