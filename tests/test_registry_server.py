"""The registry server (serving/registry_app): MLflow's registry REST routes, the mlflow-artifacts routes
and modelfmt's extensions over the SQLite store, through Flask's test client (each route's answer shape
and errors), then `modelfmt registry serve` as a real gunicorn process spoken to by RestRegistry."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys

import pytest

pytest.importorskip("sqlalchemy")

from registry_support import postgres_server, postgres_uri  # noqa: E402, F401 - fixtures

API = "/api/2.0/mlflow"
EXT = "/api/2.0/modelfmt"
ART = "/api/2.0/mlflow-artifacts/artifacts"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, elasticnet, diabetes):
    from modelfmt.flavors import sklearn as sk_flavor

    path = str(tmp_path_factory.mktemp("regsrv-model") / "model")
    sk_flavor.save_model(elasticnet, path, input_example=diabetes[0].head(3))
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from modelfmt.registry.store import SqlRegistry

    base = tmp_path_factory.mktemp("regsrv-store")
    registry = SqlRegistry(f"sqlite:///{base}/registry.db", str(base / "artifacts"))
    yield registry
    registry.close()


@pytest.fixture(scope="module")
def client(store):
    from modelfmt.serving.registry_app import create_registry_app

    return create_registry_app(store).test_client()


def _user(name: str) -> dict:
    return {"X-Modelfmt-User": name}


def _error(resp, status: int, code: str, *words: str) -> dict:
    body = resp.get_json()
    assert resp.status_code == status, (resp.status_code, body)
    assert body["error_code"] == code, body
    for word in words:
        assert word in body["message"], body
    return body


def _version(client, name: str, model_dir: str, user: str = "alice", **extra) -> dict:
    resp = client.post(f"{API}/model-versions/create", json={"name": name, "source": model_dir, **extra},
                       headers=_user(user))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["model_version"]


# -- registered models -----------------------------------------------------------------------
def test_create_get_and_conflict(client):
    resp = client.post(f"{API}/registered-models/create",
                       json={"name": "m-create", "description": "d", "tags": [{"key": "team", "value": "risk"}]})
    assert resp.status_code == 200
    rm = resp.get_json()["registered_model"]
    assert rm["name"] == "m-create" and rm["description"] == "d"
    assert rm["tags"] == [{"key": "team", "value": "risk"}]
    assert isinstance(rm["creation_timestamp"], int) and rm["creation_timestamp"] > 1_600_000_000_000
    got = client.get(f"{API}/registered-models/get", query_string={"name": "m-create"}).get_json()
    assert got["registered_model"]["name"] == "m-create"
    # MLflow answers an existing model 400 RESOURCE_ALREADY_EXISTS (mlflow.register_model relies on the code).
    _error(client.post(f"{API}/registered-models/create", json={"name": "m-create"}), 400, "RESOURCE_ALREADY_EXISTS")
    _error(client.get(f"{API}/registered-models/get", query_string={"name": "m-nope"}), 404,
           "RESOURCE_DOES_NOT_EXIST", "m-nope")


@pytest.mark.parametrize("body, field", [
    ({}, "name"), ({"name": ""}, "name"), ({"name": 5}, "name"),
    ({"name": "x", "tags": {"a": "b"}}, "tags"), ({"name": "x", "tags": [{"value": "v"}]}, "tags"),
])
def test_bad_fields_name_the_field(client, body, field):
    _error(client.post(f"{API}/registered-models/create", json=body), 400, "INVALID_PARAMETER_VALUE", f"'{field}'")


def test_bad_json_bodies(client):
    _error(client.post(f"{API}/registered-models/create", data=b"{not json", content_type="application/json"),
           400, "INVALID_PARAMETER_VALUE", "not valid JSON")
    _error(client.post(f"{API}/registered-models/create", json=["m"]), 400, "INVALID_PARAMETER_VALUE", "JSON object")


def test_unknown_route_and_wrong_method(client):
    _error(client.get(f"{API}/registered-models/frobnicate"), 404, "ENDPOINT_NOT_FOUND")
    _error(client.get("/api/2.0/mlflow/runs/get", query_string={"run_id": "x"}), 404, "ENDPOINT_NOT_FOUND")
    resp = client.get(f"{API}/registered-models/create")
    _error(resp, 405, "ENDPOINT_NOT_FOUND", "POST")
    assert "POST" in resp.headers["Allow"]


def test_update_rename_tags_delete(client):
    client.post(f"{API}/registered-models/create", json={"name": "m-life"})
    resp = client.patch(f"{API}/registered-models/update", json={"name": "m-life", "description": "new"})
    assert resp.get_json()["registered_model"]["description"] == "new"
    resp = client.post(f"{API}/registered-models/set-tag", json={"name": "m-life", "key": "k", "value": "v"})
    assert resp.get_json() == {}
    rm = client.get(f"{API}/registered-models/get?name=m-life").get_json()["registered_model"]
    assert rm["tags"] == [{"key": "k", "value": "v"}]
    assert client.delete(f"{API}/registered-models/delete-tag", json={"name": "m-life", "key": "k"}).status_code == 200
    rm = client.get(f"{API}/registered-models/get?name=m-life").get_json()["registered_model"]
    assert not rm.get("tags")
    resp = client.post(f"{API}/registered-models/rename", json={"name": "m-life", "new_name": "m-life2"})
    assert resp.get_json()["registered_model"]["name"] == "m-life2"
    _error(client.post(f"{API}/registered-models/rename", json={"name": "m-life2"}), 400, "INVALID_PARAMETER_VALUE",
           "'new_name'")
    assert client.delete(f"{API}/registered-models/delete", json={"name": "m-life2"}).get_json() == {}
    _error(client.get(f"{API}/registered-models/get?name=m-life2"), 404, "RESOURCE_DOES_NOT_EXIST")


def test_search_registered_models_filter_and_pages(client):
    for name in ("srch-a", "srch-b", "srch-c"):
        client.post(f"{API}/registered-models/create", json={"name": name, "tags": [{"key": "grp", "value": "s"}]})
    got = client.get(f"{API}/registered-models/search", query_string={"filter": "name LIKE 'srch-%'"}).get_json()
    assert sorted(m["name"] for m in got["registered_models"]) == ["srch-a", "srch-b", "srch-c"]
    first = client.get(f"{API}/registered-models/search",
                       query_string={"filter": "name LIKE 'srch-%'", "max_results": "2"}).get_json()
    assert len(first["registered_models"]) == 2 and first["next_page_token"]
    rest = client.get(f"{API}/registered-models/search", query_string={
        "filter": "name LIKE 'srch-%'", "max_results": "2", "page_token": first["next_page_token"]}).get_json()
    names = [m["name"] for m in first["registered_models"] + rest["registered_models"]]
    assert sorted(names) == ["srch-a", "srch-b", "srch-c"] and "next_page_token" not in rest
    _error(client.get(f"{API}/registered-models/search?max_results=5000"), 400, "INVALID_PARAMETER_VALUE",
           "'max_results'")
    _error(client.get(f"{API}/registered-models/search?max_results=many"), 400, "INVALID_PARAMETER_VALUE",
           "'max_results'")
    assert client.get(f"{API}/registered-models/search?filter=name%20%3D%3D%3D%20'x'").status_code == 400


@pytest.mark.parametrize("method, path, body", [
    ("GET", f"{API}/model-versions/get?name=m-odd&version=99999999999999999999999", None),
    ("GET", f"{API}/model-versions/get?name=m-odd&version=-1", None),
    ("GET", f"{API}/registered-models/search?page_token=garbage", None),
    ("GET", f"{API}/model-versions/search?filter=name%20LIKE", None),
    ("GET", f"{API}/registered-models/search?order_by=bogus%20ASC", None),
    ("POST", f"{API}/registered-models/create", {"name": "x" * 100_000}),
    ("POST", f"{API}/registered-models/alias", {"name": "m-odd", "alias": "a b", "version": "1"}),
    ("POST", f"{API}/model-versions/create", {"name": "m-odd", "source": "/etc"}),
    ("POST", f"{API}/model-versions/create", {"name": "m-odd", "source": "runs:/abc/model"}),
    ("POST", f"{EXT}/transition-requests/approve", {"id": 99999999999999999999999}),
    ("POST", f"{EXT}/transition-requests/approve", {"id": 1e23}),
    ("GET", f"{EXT}/activity/list?name=m-odd&until=99999999999999999999", None),
    ("GET", f"{EXT}/activity/list?name=m-odd&until=2026-13-01", None),
    ("GET", f"{EXT}/activity/list?name=m-odd&page_token=zzz", None),
    ("GET", f"{ART}?path=models/m-odd/99999999999999999999999", None),
    ("GET", f"{ART}/models/m-odd/99999999999999999999999/MLmodel", None),
    ("GET", f"{ART}/x%00y", None),
])
def test_client_mistakes_are_4xx(client, method, path, body):
    client.post(f"{API}/registered-models/create", json={"name": "m-odd"})
    resp = client.open(path, method=method, json=body)
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.get_json())
    assert resp.get_json()["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST")


# -- versions --------------------------------------------------------------------------------
def test_create_and_get_version(client, model_dir):
    mv = _version(client, "m-ver", model_dir, description="first", run_link="http://runs/1",
                  tags=[{"key": "team", "value": "risk"}])
    assert mv["version"] == "1" and mv["status"] == "READY" and mv["current_stage"] == "None"
    assert mv["user_id"] == "alice" and mv["description"] == "first" and mv["run_link"] == "http://runs/1"
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    assert tags["team"] == "risk" and len(tags["modelfmt.digest"]) == 64
    got = client.get(f"{API}/model-versions/get", query_string={"name": "m-ver", "version": "1"}).get_json()
    assert got["model_version"]["version"] == "1"
    # The identity of HTTP basic auth (what MLflow's clients send) wins over the header.
    basic = "Basic " + base64.b64encode(b"bob:secret").decode()
    resp = client.post(f"{API}/model-versions/create", json={"name": "m-ver", "source": model_dir},
                       headers={"Authorization": basic, **_user("alice")})
    assert resp.get_json()["model_version"]["user_id"] == "bob"
    assert resp.get_json()["model_version"]["version"] == "2"
    anon = client.post(f"{API}/model-versions/create", json={"name": "m-ver", "source": model_dir}).get_json()
    assert anon["model_version"]["user_id"] == "anonymous"


def test_version_errors(client, model_dir, tmp_path):
    _version(client, "m-verr", model_dir)
    _error(client.get(f"{API}/model-versions/get?name=m-verr&version=x"), 400, "INVALID_PARAMETER_VALUE", "'version'")
    _error(client.get(f"{API}/model-versions/get?name=m-verr&version=9"), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(client.get(f"{API}/model-versions/get?name=m-verr"), 400, "INVALID_PARAMETER_VALUE", "'version'")
    _error(client.post(f"{API}/model-versions/create", json={"name": "m-verr"}), 400, "INVALID_PARAMETER_VALUE",
           "'source'")
    _error(client.post(f"{API}/model-versions/create", json={"name": "m-verr", "source": "relative/path"}), 400,
           "INVALID_PARAMETER_VALUE", "relative")
    resp = client.post(f"{API}/model-versions/create", json={"name": "m-verr", "source": str(tmp_path / "none")})
    assert 400 <= resp.status_code < 500, resp.get_json()


def test_stages_latest_and_transition(client, model_dir):
    for _ in range(3):
        _version(client, "m-stage", model_dir)
    resp = client.post(f"{API}/model-versions/transition-stage",
                       json={"name": "m-stage", "version": "1", "stage": "staging"})
    assert resp.get_json()["model_version"]["current_stage"] == "Staging"
    client.post(f"{API}/model-versions/transition-stage",
                json={"name": "m-stage", "version": "2", "stage": "Production"})
    resp = client.post(f"{API}/model-versions/transition-stage", json={
        "name": "m-stage", "version": "3", "stage": "Production", "archive_existing_versions": True})
    assert resp.get_json()["model_version"]["current_stage"] == "Production"
    got = client.get(f"{API}/model-versions/get?name=m-stage&version=2").get_json()["model_version"]
    assert got["current_stage"] == "Archived"
    latest = client.post(f"{API}/registered-models/get-latest-versions",
                         json={"name": "m-stage", "stages": ["Production"]}).get_json()["model_versions"]
    assert [v["version"] for v in latest] == ["3"]
    # GET with the repeated query parameter, as MLflow's client falls back to.
    latest = client.get(f"{API}/registered-models/get-latest-versions",
                        query_string=[("name", "m-stage"), ("stages", "Staging"), ("stages", "Archived")]).get_json()
    assert sorted((v["current_stage"], v["version"]) for v in latest["model_versions"]) == [
        ("Archived", "2"), ("Staging", "1")]
    everything = client.post(f"{API}/registered-models/get-latest-versions", json={"name": "m-stage"}).get_json()
    assert {v["current_stage"] for v in everything["model_versions"]} == {"Staging", "Production", "Archived"}
    _error(client.post(f"{API}/model-versions/transition-stage",
                       json={"name": "m-stage", "version": "1", "stage": "Prod"}),
           400, "INVALID_PARAMETER_VALUE", "'stage'")
    _error(client.post(f"{API}/model-versions/transition-stage", json={
        "name": "m-stage", "version": "1", "stage": "None", "archive_existing_versions": "maybe"}),
        400, "INVALID_PARAMETER_VALUE", "'archive_existing_versions'")
    _error(client.post(f"{API}/registered-models/get-latest-versions", json={"name": "m-stage", "stages": ["x"]}),
           400, "INVALID_PARAMETER_VALUE", "'stages'")


def test_aliases(client, model_dir):
    _version(client, "m-alias", model_dir)
    _version(client, "m-alias", model_dir)
    assert client.post(f"{API}/registered-models/alias",
                       json={"name": "m-alias", "alias": "champion", "version": "1"}).get_json() == {}
    client.post(f"{API}/registered-models/alias", json={"name": "m-alias", "alias": "champion", "version": "2"})
    mv = client.get(f"{API}/registered-models/alias?name=m-alias&alias=champion").get_json()["model_version"]
    assert mv["version"] == "2" and mv["aliases"] == ["champion"]
    rm = client.get(f"{API}/registered-models/get?name=m-alias").get_json()["registered_model"]
    assert rm["aliases"] == [{"alias": "champion", "version": "2"}]
    resp = client.delete(f"{API}/registered-models/alias", json={"name": "m-alias", "alias": "champion"})
    assert resp.status_code == 200
    _error(client.get(f"{API}/registered-models/alias?name=m-alias&alias=champion"), 404, "RESOURCE_DOES_NOT_EXIST",
           "champion")
    _error(client.post(f"{API}/registered-models/alias", json={"name": "m-alias", "alias": "x", "version": "7"}),
           404, "RESOURCE_DOES_NOT_EXIST")


def test_version_tags_update_search_delete(client, model_dir):
    for _ in range(3):
        _version(client, "m-vlife", model_dir)
    assert client.post(f"{API}/model-versions/set-tag",
                       json={"name": "m-vlife", "version": "2", "key": "ok", "value": "yes"}).get_json() == {}
    resp = client.patch(f"{API}/model-versions/update", json={"name": "m-vlife", "version": "2", "description": "v2"})
    mv = resp.get_json()["model_version"]
    assert mv["description"] == "v2" and {"key": "ok", "value": "yes"} in mv["tags"]
    client.delete(f"{API}/model-versions/delete-tag", json={"name": "m-vlife", "version": "2", "key": "ok"})
    mv = client.get(f"{API}/model-versions/get?name=m-vlife&version=2").get_json()["model_version"]
    assert "ok" not in {t["key"] for t in mv["tags"]}
    found = client.get(f"{API}/model-versions/search", query_string={"filter": "name = 'm-vlife'"}).get_json()
    assert sorted(v["version"] for v in found["model_versions"]) == ["1", "2", "3"]
    page = client.get(f"{API}/model-versions/search",
                      query_string={"filter": "name = 'm-vlife'", "max_results": 2}).get_json()
    assert len(page["model_versions"]) == 2 and page["next_page_token"]
    assert client.delete(f"{API}/model-versions/delete", json={"name": "m-vlife", "version": "3"}).get_json() == {}
    _error(client.get(f"{API}/model-versions/get?name=m-vlife&version=3"), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(client.delete(f"{API}/model-versions/delete", json={"name": "m-vlife", "version": "3"}), 404,
           "RESOURCE_DOES_NOT_EXIST")


# -- artifacts -------------------------------------------------------------------------------
def test_download_uri_list_and_download(client, model_dir):
    _version(client, "m-art", model_dir)
    uri = client.get(f"{API}/model-versions/get-download-uri?name=m-art&version=1").get_json()["artifact_uri"]
    assert uri == "mlflow-artifacts:/models/m-art/1"
    listed = client.get(ART, query_string={"path": "models/m-art/1"}).get_json()["files"]
    names = {f["path"]: f for f in listed}
    assert "MLmodel" in names and names["MLmodel"]["is_dir"] is False
    assert names["MLmodel"]["file_size"] == os.path.getsize(os.path.join(model_dir, "MLmodel"))
    resp = client.get(f"{ART}/models/m-art/1/MLmodel")
    assert resp.status_code == 200
    with open(os.path.join(model_dir, "MLmodel"), "rb") as f:
        assert resp.data == f.read()
    assert client.get(ART, query_string={"path": "models/m-art"}).get_json()["files"] == [{"path": "1", "is_dir": True}]
    assert {"path": "m-art", "is_dir": True} in client.get(ART, query_string={"path": "models"}).get_json()["files"]
    assert client.get(ART, query_string={"path": "models/m-art/1/MLmodel"}).get_json() == {}  # a file lists as nothing
    _error(client.get(f"{API}/model-versions/get-download-uri?name=m-art&version=5"), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(client.get(f"{ART}/models/m-art/1/nothing-here"), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(client.get(f"{ART}/models/m-art/9/MLmodel"), 404, "RESOURCE_DOES_NOT_EXIST")
    _error(client.get(f"{ART}/models/m-art/1"), 400, "INVALID_PARAMETER_VALUE", "directory")
    _error(client.get(ART, query_string={"path": "models/m-art/1/../../../x"}), 400, "INVALID_PARAMETER_VALUE", "..")
    _error(client.get(ART, query_string={"path": "/etc"}), 400, "INVALID_PARAMETER_VALUE")
    _error(client.put(f"{ART}/models/m-art/1/extra.txt", data=b"x"), 403, "PERMISSION_DENIED", "never change")
    listed = client.get(ART, query_string={"path": "models/m-art/1"}).get_json()["files"]
    assert "extra.txt" not in {f["path"] for f in listed}


def test_a_changed_stored_version_is_never_served(client, store, model_dir):
    import stat

    _version(client, "m-tamper", model_dir)
    assert client.get(ART, query_string={"path": "models/m-tamper/1"}).status_code == 200
    stored = store.get_model_version("m-tamper", 1).storage_location
    target = os.path.join(stored, "MLmodel")
    os.chmod(stored, 0o755)
    os.chmod(target, 0o644)
    with open(target, "a") as f:
        f.write("# changed\n")
    os.chmod(target, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    # A download starts by listing the version's root: checked there, and nothing is listed.
    body = _error(client.get(ART, query_string={"path": "models/m-tamper/1"}), 500, "INTERNAL_ERROR", "MLmodel")
    assert "files" not in body


def test_upload_then_create_version_from_it(client, model_dir, store):
    for root, _, files in os.walk(model_dir):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), model_dir).replace(os.sep, "/")
            with open(os.path.join(root, name), "rb") as f:
                resp = client.put(f"{ART}/incoming/u1/{rel}", data=f.read())
            assert resp.status_code == 200 and resp.get_json() == {}
    listed = {f["path"] for f in client.get(ART, query_string={"path": "incoming/u1"}).get_json()["files"]}
    assert "MLmodel" in listed
    mv = _version(client, "m-upload", "mlflow-artifacts:/incoming/u1")
    assert mv["version"] == "1"
    local = store.download_model_version("m-upload", 1)
    assert sorted(os.listdir(local)) == sorted(os.listdir(model_dir))
    _error(client.post(f"{API}/model-versions/create",
                       json={"name": "m-upload", "source": "mlflow-artifacts:/incoming/none"}),
           404, "RESOURCE_DOES_NOT_EXIST", "incoming/none")
    _error(client.put(f"{ART}/incoming/../../escape", data=b"x"), 400, "INVALID_PARAMETER_VALUE")


def test_local_sources_can_be_refused(store, model_dir):
    from modelfmt.serving.registry_app import create_registry_app

    closed = create_registry_app(store, allow_local_sources=False).test_client()
    _error(closed.post(f"{API}/model-versions/create", json={"name": "m-closed", "source": model_dir}), 400,
           "INVALID_PARAMETER_VALUE", "mlflow-artifacts:/")
    _error(closed.post(f"{API}/model-versions/create", json={"name": "m-closed", "source": "file://" + model_dir}),
           400, "INVALID_PARAMETER_VALUE", "mlflow-artifacts:/")


# -- modelfmt's extensions -------------------------------------------------------------------
def test_transition_requests(client, model_dir):
    _version(client, "m-req", model_dir)
    resp = client.post(f"{EXT}/transition-requests/create", headers=_user("carol"),
                       json={"name": "m-req", "version": "1", "stage": "Production", "comment": "ship it"})
    tr = resp.get_json()["transition_request"]
    assert tr["status"] == "PENDING" and tr["requested_by"] == "carol" and tr["version"] == "1"
    assert tr["to_stage"] == "Production" and isinstance(tr["id"], int)
    listed = client.get(f"{EXT}/transition-requests/list?name=m-req&status=PENDING").get_json()["transition_requests"]
    assert [t["id"] for t in listed] == [tr["id"]]
    # A Production request is approved by someone else than its requester.
    _error(client.post(f"{EXT}/transition-requests/approve", json={"id": tr["id"], "comment": "me"},
                       headers=_user("carol")), 403, "PERMISSION_DENIED")
    done = client.post(f"{EXT}/transition-requests/approve", json={"id": tr["id"], "comment": "ok"},
                       headers=_user("dave")).get_json()["transition_request"]
    assert done["status"] == "APPROVED" and done["reviewed_by"] == "dave" and done["review_comment"] == "ok"
    mv = client.get(f"{API}/model-versions/get?name=m-req&version=1").get_json()["model_version"]
    assert mv["current_stage"] == "Production"
    second = client.post(f"{EXT}/transition-requests/create", headers=_user("carol"), json={
        "name": "m-req", "version": "1", "stage": "Archived", "comment": "retire"}).get_json()["transition_request"]
    third = client.post(f"{EXT}/transition-requests/create", headers=_user("carol"), json={
        "name": "m-req", "version": "1", "stage": "Staging", "comment": "x"}).get_json()["transition_request"]
    rejected = client.post(f"{EXT}/transition-requests/reject", json={"id": second["id"], "comment": "no"},
                           headers=_user("dave")).get_json()["transition_request"]
    assert rejected["status"] == "REJECTED"
    withdrawn = client.post(f"{EXT}/transition-requests/withdraw", json={"id": third["id"]},
                            headers=_user("carol")).get_json()["transition_request"]
    assert withdrawn["status"] == "WITHDRAWN"
    every = client.get(f"{EXT}/transition-requests/list?name=m-req").get_json()["transition_requests"]
    assert sorted(t["status"] for t in every) == ["APPROVED", "REJECTED", "WITHDRAWN"]
    _error(client.post(f"{EXT}/transition-requests/approve", json={"id": 999999, "comment": ""}), 404,
           "RESOURCE_DOES_NOT_EXIST")
    _error(client.post(f"{EXT}/transition-requests/approve", json={"comment": ""}), 400, "INVALID_PARAMETER_VALUE",
           "'id'")
    _error(client.get(f"{EXT}/transition-requests/list?name=m-req&status=DONE"), 400, "INVALID_PARAMETER_VALUE",
           "'status'")


def test_activity_and_version_in_stage_at(client, model_dir):
    import datetime as dt

    _version(client, "m-hist", model_dir, user="erin")
    client.post(f"{API}/model-versions/transition-stage", headers=_user("erin"),
                json={"name": "m-hist", "version": "1", "stage": "Production"})
    body = client.get(f"{EXT}/activity/list?name=m-hist").get_json()
    actions = [e["action"] for e in body["entries"]]
    assert "register_version" in actions and "transition" in actions
    entry = body["entries"][actions.index("transition")]
    assert entry["user_id"] == "erin" and entry["authenticated"] is False and entry["version"] == "1"
    assert isinstance(entry["timestamp"], int)
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)).isoformat()
    got = client.get(f"{EXT}/activity/version-in-stage-at", query_string={
        "name": "m-hist", "stage": "production", "at": later}).get_json()
    assert got == {"version": "1"}
    got = client.get(f"{EXT}/activity/version-in-stage-at", query_string={
        "name": "m-hist", "stage": "Production", "at": "2001-01-01"}).get_json()
    assert got == {"version": None}
    _error(client.get(f"{EXT}/activity/version-in-stage-at?name=m-hist&stage=Production&at=last-week"), 400,
           "INVALID_PARAMETER_VALUE", "'at'")
    _error(client.get(f"{EXT}/activity/version-in-stage-at?name=m-hist&stage=Production"), 400,
           "INVALID_PARAMETER_VALUE", "'at'")


# -- a real server ---------------------------------------------------------------------------
@contextlib.contextmanager
def _serving(base, backend_store_uri: str, *options: str):
    """`modelfmt registry serve` in a subprocess: (url, process, log path); stopped at the end."""
    from modelfmt.serving.testing import free_port, stop_process, wait_until_ready

    port = free_port()
    log = base / f"server-{port}.log"
    cmd = [sys.executable, "-m", "modelfmt", "registry", "serve", "--port", str(port),
           "--backend-store-uri", backend_store_uri, "--artifacts-dir", str(base / "artifacts"), *options]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFMT_REGISTRY", "MLFLOW_"))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, url, 60, str(log))
        yield url, proc, log
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("regsrv-served")
    with _serving(base, f"sqlite:///{base}/registry.db") as running:
        yield running


def test_served_over_http_with_rest_registry(served, model_dir, tmp_path):
    import requests

    from modelfmt.errors import RegistryNotFoundError
    from modelfmt.registry.rest import RestRegistry

    url, _, _ = served
    assert requests.get(url + "/health", timeout=10).text == "OK"
    reg = RestRegistry(url, user="frank")
    reg.create_registered_model("m-http", description="over http")
    mv = reg.create_model_version("m-http", model_dir)
    assert mv.version == 1 and mv.user_id == "frank" and mv.digest and len(mv.digest) == 64
    reg.set_registered_model_alias("m-http", "champion", 1)
    assert reg.get_model_version_by_alias("m-http", "champion").version == 1
    local = reg.download_model_version("m-http", 1, dst=tmp_path / "dl")
    with open(os.path.join(local, "MLmodel"), "rb") as a, open(os.path.join(model_dir, "MLmodel"), "rb") as b:
        assert a.read() == b.read()
    tr = reg.create_transition_request("m-http", 1, "Staging", "please")
    assert [t.id for t in reg.list_transition_requests("m-http")] == [tr.id]
    with pytest.raises(RegistryNotFoundError, match="m-none"):
        reg.get_registered_model("m-none")
    resp = requests.get(url + API + "/nothing", timeout=10)
    assert resp.status_code == 404 and resp.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def _register_concurrently(url: str, model_dir: str, name: str, count: int) -> list[int]:
    from concurrent.futures import ThreadPoolExecutor

    from modelfmt.registry.rest import RestRegistry

    reg = RestRegistry(url, user="gina")
    reg.create_registered_model(name)
    with ThreadPoolExecutor(count) as pool:
        return sorted(pool.map(lambda _: reg.create_model_version(name, model_dir).version, range(count)))


def test_served_threads_register_concurrently_on_sqlite(served, model_dir):
    url, _, log = served
    assert _register_concurrently(url, model_dir, "m-conc", 6) == [1, 2, 3, 4, 5, 6]
    assert '" 5' not in log.read_text()


def test_served_on_postgresql_with_two_workers(postgres_uri, tmp_path, model_dir):  # noqa: F811
    from modelfmt.registry.rest import RestRegistry

    with _serving(tmp_path, postgres_uri, "--workers", "2") as (url, proc, log):
        assert _register_concurrently(url, model_dir, "m-pg", 6) == [1, 2, 3, 4, 5, 6]
        reg = RestRegistry(url)
        reg.transition_model_version_stage("m-pg", 6, "Production")
        assert [v.version for v in reg.get_latest_versions("m-pg", ["Production"])] == [6]
        files = reg.download_model_version("m-pg", 6, dst=tmp_path / "dl")
        assert os.path.isfile(os.path.join(files, "MLmodel"))
        assert '" 5' not in log.read_text()


def test_served_stops_gracefully_on_sigterm(served):
    import signal
    import socket
    import time
    from urllib.parse import urlsplit

    import requests

    url, proc, log = served
    # An upload in flight when SIGTERM comes: half its body sent, then the signal, then the rest.
    body = b"x" * 200_000
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"PUT {ART}/incoming/inflight.bin HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body[:1000])
        time.sleep(0.5)  # the worker is reading the body now
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[1000:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert (log.parent / "artifacts" / ".uploads" / "incoming" / "inflight.bin").stat().st_size == len(body)
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "listening on http://127.0.0.1" in text and "Handling signal: term" in text
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/health", timeout=5)


@pytest.mark.parametrize("argv", [["registry", "serve", "--backend-store-uri", "http://127.0.0.1:1"],
                                  ["registry", "--registry-uri", "http://127.0.0.1:1", "serve"]])
def test_serve_refuses_a_server_url_as_store(argv):
    proc = subprocess.run([sys.executable, "-m", "modelfmt", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("modelfmt: error:") and "'http://127.0.0.1:1'" in proc.stderr
    assert "sqlite:///" in proc.stderr
