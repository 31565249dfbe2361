"""The registry's URI rules (location.py) and its MLflow-shaped JSON (wire.py): pure functions, no server."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from modelfmt import errors
from modelfmt.registry import location, wire
from modelfmt.registry.entities import ActivityEntry, ModelVersion, RegisteredModel, TransitionRequest

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 3, 12, 30, 15, 123000, tzinfo=UTC)
T1 = dt.datetime(2026, 3, 4, 8, 0, 0, 7000, tzinfo=UTC)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("MODELFMT_REGISTRY_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELFMT_HOME", str(tmp_path / "home"))
    return monkeypatch


# -- location ------------------------------------------------------------------------------------
def test_default_is_the_embedded_sqlite_store_under_modelfmt_home(clean_env, tmp_path):
    loc = location.registry_location()
    assert loc == ("sqlite:///" + str(tmp_path / "home" / "registry.db"), "default", "sql")


def test_default_home_without_modelfmt_home(clean_env, tmp_path):
    clean_env.delenv("MODELFMT_HOME")
    clean_env.setenv("HOME", str(tmp_path))
    assert location.default_home() == str(tmp_path / ".local" / "share" / "modelfmt" / "registry")


def test_argument_wins_over_every_variable(clean_env):
    clean_env.setenv("MODELFMT_REGISTRY_URI", "sqlite:////tmp/x.db")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert location.registry_location("https://reg.example:5002") == ("https://reg.example:5002", "argument", "rest")


def test_modelfmt_variable_before_mlflow_variables(clean_env):
    clean_env.setenv("MODELFMT_REGISTRY_URI", "postgresql+psycopg://u@db/reg")
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert location.registry_location() == ("postgresql+psycopg://u@db/reg", "MODELFMT_REGISTRY_URI", "sql")


def test_mlflow_registry_uri_before_tracking_uri(clean_env):
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    clean_env.setenv("MLFLOW_REGISTRY_URI", "http://registry:5000")
    assert location.registry_location() == ("http://registry:5000", "MLFLOW_REGISTRY_URI", "rest")
    clean_env.delenv("MLFLOW_REGISTRY_URI")
    assert location.registry_location() == ("http://tracking:5000", "MLFLOW_TRACKING_URI", "rest")


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "postgresql://u@db/mlflow", "mysql://u@db/m",
                                 "file:///tmp/mlruns", "databricks"])
def test_mlflow_own_store_is_refused_never_migrated(clean_env, uri):
    clean_env.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(errors.RegistryError) as e:
        location.registry_location()
    msg = str(e.value)
    assert "MLFLOW_TRACKING_URI" in msg and repr(uri) in msg and "does not open or migrate" in msg
    assert "MODELFMT_REGISTRY_URI" in msg and e.value.http_status == 400


@pytest.mark.parametrize("uri", ["ftp://x/y", "mysql://u@h/db", "http:///nohost", "s3://bucket/reg"])
def test_uris_modelfmt_does_not_read(clean_env, uri):
    with pytest.raises(errors.RegistryError, match="registry URI"):
        location.registry_location(uri)


# -- wire: scalars --------------------------------------------------------------------------------
def test_millisecond_timestamps_both_ways():
    assert wire.to_ms(T0) == 1772541015123
    assert wire.from_ms(1772541015123) == T0 and wire.from_ms("1772541015123") == T0
    assert wire.to_ms(None) is None and wire.from_ms(None) is None
    assert wire.to_ms(T0.replace(tzinfo=None)) == wire.to_ms(T0)  # naive is UTC


def test_tags_both_ways():
    assert wire.tags_to_json({"a": "1", "b": ""}) == [{"key": "a", "value": "1"}, {"key": "b", "value": ""}]
    assert wire.tags_from_json([{"key": "a", "value": "1"}, {"key": "b"}]) == {"a": "1", "b": ""}


# -- wire: records --------------------------------------------------------------------------------
def _version(**kw):
    base = dict(name="fraud", version=3, source="mlflow-artifacts:/fraud/3", run_id="abc", run_link="http://r/abc",
                description="third", tags={"team": "risk", "modelfmt.git.commit": "deadbeef"},
                current_stage="Production", aliases=["champion"], signature={"inputs": "[]", "outputs": None},
                digest="a" * 64, user_id="ana", creation_timestamp=T0, last_updated_timestamp=T1)
    base.update(kw)
    return ModelVersion(**base)


def test_model_version_json_is_mlflow_shaped():
    d = wire.model_version_to_json(_version())
    assert d["version"] == "3" and d["creation_timestamp"] == wire.to_ms(T0)
    assert d["current_stage"] == "Production" and d["aliases"] == ["champion"] and d["user_id"] == "ana"
    tags = {t["key"]: t["value"] for t in d["tags"]}
    assert tags["modelfmt.digest"] == "a" * 64 and json.loads(tags["modelfmt.signature"]) == _version().signature
    assert tags["team"] == "risk" and tags["modelfmt.git.commit"] == "deadbeef"
    assert "storage_location" not in d and "digest" not in d and "signature" not in d


def test_model_version_round_trip():
    mv = _version()
    assert wire.model_version_from_json(wire.model_version_to_json(mv)) == mv
    bare = ModelVersion(name="m", version=1)
    back = wire.model_version_from_json(wire.model_version_to_json(bare))
    assert back == bare and "run_id" not in wire.model_version_to_json(bare)  # None fields left out


def test_model_version_from_mlflow_server_answer():
    # What MLflow 3's server answers: empty fields left out, no modelfmt tags.
    d = {"name": "iris", "version": "1", "creation_timestamp": 1772541015123, "last_updated_timestamp": 1772541015123,
         "current_stage": "None", "source": "models:/m-0123", "run_id": "r1", "status": "READY",
         "tags": [{"key": "k", "value": "v"}]}
    mv = wire.model_version_from_json(d)
    assert (mv.version, mv.digest, mv.signature, mv.aliases, mv.description) == (1, None, None, [], "")
    assert mv.tags == {"k": "v"} and mv.creation_timestamp == T0


def test_signature_tag_that_is_not_json_stays_a_tag():
    d = {"name": "m", "version": "1", "tags": [{"key": "modelfmt.signature", "value": "{oops"}]}
    mv = wire.model_version_from_json(d)
    assert mv.signature is None and mv.tags == {"modelfmt.signature": "{oops"}


def test_registered_model_round_trip():
    rm = RegisteredModel(name="fraud", description="d", tags={"team": "risk"}, aliases={"champion": 3},
                         latest_versions=[_version()], creation_timestamp=T0, last_updated_timestamp=T1)
    d = wire.registered_model_to_json(rm)
    assert d["aliases"] == [{"alias": "champion", "version": "3"}] and d["tags"] == [{"key": "team", "value": "risk"}]
    assert wire.registered_model_from_json(d) == rm


def test_transition_request_round_trip():
    tr = TransitionRequest(id=7, name="fraud", version=3, to_stage="Production", comment="ship it",
                           requested_by="ana", created=T0, status="APPROVED", reviewed_by="bo",
                           review_comment="ok", reviewed=T1, archive_existing_versions=False)
    d = wire.transition_request_to_json(tr)
    assert d["version"] == "3" and d["review_timestamp"] == wire.to_ms(T1) and d["archive_existing_versions"] is False
    assert wire.transition_request_from_json(d) == tr


def test_activity_entry_round_trip():
    ae = ActivityEntry(id=1, name="fraud", action="transition", user="bo", at=T0, version=3,
                       details={"from_stage": "Staging", "to_stage": "Production"})
    d = wire.activity_entry_to_json(ae)
    assert d["version"] == "3" and d["user_id"] == "bo" and d["authenticated"] is False
    assert wire.activity_entry_from_json(d) == ae
    model_level = ActivityEntry(id=2, name="fraud", action="create_model", user="ana", at=T0)
    d = wire.activity_entry_to_json(model_level)
    assert d["version"] is None and wire.activity_entry_from_json(d) == model_level


# -- wire: errors ---------------------------------------------------------------------------------
def test_error_statuses_are_mlflow_s():
    assert wire.error_status(errors.RegistryConflictError("x")) == 400
    assert wire.error_status(errors.RegistryNotFoundError("x")) == 404
    assert wire.error_status(errors.PermissionDeniedError("x")) == 403
    assert wire.error_status(errors.UnauthenticatedError("x")) == 401
    assert wire.error_to_json(errors.RegistryNotFoundError("no m")) == {"error_code": "RESOURCE_DOES_NOT_EXIST",
                                                                       "message": "no m"}


@pytest.mark.parametrize("status,code,cls", [
    (404, "RESOURCE_DOES_NOT_EXIST", errors.RegistryNotFoundError),
    (400, "RESOURCE_ALREADY_EXISTS", errors.RegistryConflictError),
    (400, "INVALID_PARAMETER_VALUE", errors.RegistryError),
    (403, "PERMISSION_DENIED", errors.PermissionDeniedError),
    (401, "UNAUTHENTICATED", errors.UnauthenticatedError),
    (503, None, errors.RegistryUnavailableError),
    (500, "INTERNAL_ERROR", errors.RegistryUnavailableError),
    (401, None, errors.UnauthenticatedError),
])
def test_errors_from_answers(status, code, cls):
    body = {"error_code": code, "message": "the message"} if code else "<html>Bad</html>"
    err = wire.error_from_json(status, body, "http://h:5000/api/2.0/mlflow/x")
    assert type(err) is cls
    if code:
        assert str(err) == "the message"
    else:
        assert "http://h:5000/api/2.0/mlflow/x answered HTTP" in str(err) and "<html>Bad</html>" in str(err)
