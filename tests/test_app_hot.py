"""The app's shortcut for its hot routes (POST /invocations, GET /ping, dispatched in front of Flask)
answers byte for byte what the Flask routes answer: status line, headers, body, log lines and
metrics, for successes and for every kind of refusal; everything else still goes through Flask."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from werkzeug.test import Client

from modelfmt.flavors.pyfunc import PythonModel
from modelfmt.serving import metrics
from modelfmt.serving.app import create_app


class Picky(PythonModel):
    """Doubles ``a``; a negative ``a`` is our fault (OSError: 500), an ``a`` of 13 the input's (400)."""

    def predict(self, context, model_input, params=None):
        a = model_input["a"].to_numpy()
        if (a < 0).any():
            raise OSError("the model's scratch disk is gone")
        if (a == 13).any():
            raise ValueError("13 is not a value this model scores")
        return a * 2.0


@pytest.fixture(scope="module")
def app(sklearn_model_path) -> Flask:
    return create_app(sklearn_model_path, max_body_size=4096)


@pytest.fixture(scope="module")
def picky_paths(tmp_path_factory) -> tuple[str, str]:
    """Two Picky models: one whose input example scores, one whose example fails (so /ping is 503)."""
    from modelfmt.flavors import pyfunc

    root = tmp_path_factory.mktemp("hot")
    good, bad = str(root / "good"), str(root / "bad")
    pyfunc.save_model(good, python_model=Picky(), input_example=pd.DataFrame({"a": [1.0, 2.0]}))
    pyfunc.save_model(bad, python_model=Picky(), input_example=pd.DataFrame({"a": [-1.0]}))
    return good, bad


def _both(app: Flask, method: str, path: str, **kw) -> tuple:
    """The answer of the app (with the shortcut) and of its Flask-only twin to the same request."""
    answers = []
    for wsgi in (app.wsgi_app, app.extensions["modelfmt.flask_wsgi_app"]):
        resp = Client(wsgi).open(path, method=method, **kw)
        answers.append((resp.status, sorted(resp.headers.items()), resp.get_data()))
    return tuple(answers)


def _split(X: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}).encode()


def test_the_shortcut_is_on_and_scores(app, diabetes, elasticnet):
    assert app.wsgi_app is not app.extensions["modelfmt.flask_wsgi_app"]
    X = diabetes[0].iloc[:3]
    hot, flask = _both(app, "POST", "/invocations", data=_split(X), content_type="application/json")
    assert hot == flask
    assert hot[0] == "200 OK" and dict(hot[1])["Content-Type"] == "application/json"
    np.testing.assert_allclose(json.loads(hot[2])["predictions"], elasticnet.predict(X))


@pytest.mark.parametrize(
    "case",
    [
        {"data": b'{"dataframe_split": ', "content_type": "application/json"},  # bad JSON: 400
        {"data": b'{"dataframe_split": {"columns": ["x"], "data": [[1]]}}', "content_type": "application/json"},
        {"data": b"age,sex\n1,2\n", "content_type": "text/csv"},  # missing columns: 400
        {"data": b"{}"},  # no Content-Type: 415
        {"data": b"{}", "content_type": "application/x-nope"},  # 415
        {"data": b'{"inputs": [[1]]}', "content_type": "application/json", "headers": {"Accept": "image/png"}},  # 406
        {"data": b"x" * 5000, "content_type": "application/json"},  # over max_body_size: 413
        {"data": b"", "content_type": "application/json"},  # empty: 400
    ],
    ids=["bad-json", "wrong-columns", "csv-missing", "no-type", "unknown-type", "406", "413", "empty"],
)
def test_refusals_are_identical(app, case):
    hot, flask = _both(app, "POST", "/invocations", **case)
    assert hot == flask
    assert hot[0][:3] in {"400", "406", "413", "415"}
    assert set(json.loads(hot[2])) == {"error_code", "message"}


def test_csv_and_accept_variants_are_identical(app, diabetes):
    X = diabetes[0].iloc[:4]
    for kw in (
        {"data": X.to_csv(index=False).encode(), "content_type": "text/csv"},
        {"data": _split(X), "content_type": "application/json; charset=utf-8", "headers": {"Accept": "*/*"}},
        {"data": _split(X), "content_type": "application/json",
         "headers": {"Accept": "application/vnd.apache.arrow.stream"}},
    ):
        hot, flask = _both(app, "POST", "/invocations", **kw)
        assert hot == flask and hot[0] == "200 OK"


def test_other_routes_and_methods_go_through_flask(app):
    for method, path in (("GET", "/invocations"), ("HEAD", "/ping"), ("GET", "/health"), ("GET", "/nope"),
                         ("POST", "/ping"), ("GET", "/version"), ("GET", "/invocations/")):
        hot, flask = _both(app, method, path)
        assert hot == flask, (method, path)
    status, headers, _ = _both(app, "GET", "/invocations")[0]
    assert status.startswith("405") and dict(headers)["Allow"]
    ping = _both(app, "GET", "/ping")[0]
    assert ping[:2] == ("200 OK", [("Content-Length", "1"), ("Content-Type", "application/json")])


def test_model_faults_are_the_same_500_and_log_line(picky_paths, caplog):
    app = create_app(picky_paths[0])
    body = {"data": json.dumps({"inputs": {"a": [-5.0]}}).encode(), "content_type": "application/json"}
    with caplog.at_level(logging.ERROR, logger="modelfmt.serving"):
        hot, flask = _both(app, "POST", "/invocations", **body)
    assert hot[0] == flask[0] == "500 INTERNAL SERVER ERROR" and hot[1] == flask[1]
    answers = [json.loads(a[2]) for a in (hot, flask)]
    assert [a["error_code"] for a in answers] == ["INTERNAL_ERROR"] * 2 and "stack_trace" not in answers[0]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("internal error")]
    assert lines == [f"internal error {a['error_id']} on POST /invocations" for a in answers]
    logged = [r.exc_info[1] for r in caplog.records if r.getMessage() in lines and r.exc_info]
    assert len(logged) == 2 and all(isinstance(e.__cause__, OSError) for e in logged)
    # The input's fault stays a 400 with the model's message, on both paths.
    hot, flask = _both(app, "POST", "/invocations", data=b'{"inputs": {"a": [13.0]}}', content_type="application/json")
    assert hot == flask and hot[0].startswith("400") and "13 is not a value" in json.loads(hot[2])["message"]


def test_debug_puts_the_stack_trace_in_the_500(picky_paths):
    app = create_app(picky_paths[0], debug=True)
    resp = Client(app.wsgi_app).post("/invocations", data=b'{"inputs": {"a": [-1.0]}}', content_type="application/json")
    assert resp.status_code == 500 and "OSError: the model's scratch disk is gone" in resp.get_json()["stack_trace"]


def test_ping_503_is_identical(picky_paths):
    app = create_app(picky_paths[1])  # its own example fails: not ready
    hot, flask = _both(app, "GET", "/ping")
    assert hot == flask and hot[0] == "503 SERVICE UNAVAILABLE"
    assert json.loads(hot[2])["error_code"] == "TEMPORARILY_UNAVAILABLE"
    ok = _both(app, "POST", "/invocations", data=b'{"inputs": {"a": [2.0]}}', content_type="application/json")
    assert ok[0] == ok[1] and json.loads(ok[0][2]) == {"predictions": [4.0]}


def test_metrics_count_hot_requests_as_before(app, diabetes):
    m = metrics.get()

    def count(endpoint: str, status: str) -> float:
        return m.requests.labels(endpoint, status)._value.get()

    before = count("/invocations", "200"), count("/invocations", "415"), count("/ping", "200")
    rows_before = m.rows._value.get()
    client = Client(app.wsgi_app)
    client.post("/invocations", data=_split(diabetes[0].iloc[:7]), content_type="application/json")
    client.post("/invocations", data=b"{}")
    client.get("/ping")
    after = count("/invocations", "200"), count("/invocations", "415"), count("/ping", "200")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
    assert m.rows._value.get() - rows_before == 7


def test_a_hook_turns_the_shortcut_off(sklearn_model_path, monkeypatch):
    """An app whose protocols register per-request hooks answers every request through Flask."""
    from flask import Blueprint

    from modelfmt.serving import app as app_module

    seen: list[str] = []

    class Hooked:
        NAME = "hooked"

        @staticmethod
        def error_response(*args, **kw):  # pragma: no cover - never answers here
            raise AssertionError

        @staticmethod
        def blueprint(runtime, max_body_size):
            bp = Blueprint("hooked", __name__)
            bp.before_app_request(lambda: seen.append("before"))
            return bp

    monkeypatch.setattr(app_module, "PROTOCOLS", (*app_module.PROTOCOLS, Hooked))
    app = create_app(sklearn_model_path)
    client = Client(app.wsgi_app)
    assert client.get("/ping").status_code == 200
    assert client.post("/invocations", data=b"{}").status_code == 415
    assert seen == ["before", "before"]  # the hook ran for the hot routes too
