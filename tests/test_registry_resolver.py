"""models:/, runs:/ and mlflow-artifacts:/ in open_model and load_model, against a real MLflow tracking
server (MLflow 3.x in its own venv; no mlflow here), and the download cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
from mlflow_registry_support import mlflow_registry, registry_env  # noqa: F401 - the fixture

import modelfmt
from modelfmt import errors
from modelfmt.open import open_model
from modelfmt.registry import downloads, resolver
from modelfmt.registry.http import HttpClient
from modelfmt.registry.rest import RestRegistry


# -- parsing (no server) ---------------------------------------------------------------------------
@pytest.mark.parametrize("uri,expected", [
    ("models:/fraud/3", ("fraud", 3, None, None, False)),
    ("models:/fraud/Production", ("fraud", None, "Production", None, False)),
    ("models:/fraud/staging", ("fraud", None, "Staging", None, False)),
    ("models:/fraud/latest", ("fraud", None, None, None, True)),
    ("models:/fraud@champion", ("fraud", None, None, "champion", False)),
    ("models:///fraud/2", ("fraud", 2, None, None, False)),
    ("models:/my%20model/1", ("my model", 1, None, None, False)),
])
def test_models_uri_forms(uri, expected):
    u = resolver.ModelsUri(uri)
    assert (u.name, u.version, u.stage, u.alias, u.latest) == expected


@pytest.mark.parametrize("uri,message", [
    ("models:/fraud", "write models:/NAME/VERSION"),
    ("models:/fraud/prod", "'prod' is not a version number, a stage (None, Staging, Production, Archived)"),
    ("models:/a/b/3", "write models:/NAME/VERSION"),
    ("models:/fraud@", "write models:/NAME@ALIAS"),
    ("models://host/fraud/1", "not in the URI"),
])
def test_bad_models_uris_say_what_to_write(uri, message):
    with pytest.raises(errors.RegistryError) as e:
        resolver.ModelsUri(uri)
    assert message in str(e.value) and repr(uri) in str(e.value) and e.value.http_status == 400


def test_models_uri_against_mlflow_own_database_is_refused(registry_env):
    registry_env.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(errors.RegistryError, match="MLflow's own database: modelfmt does not open or migrate it"):
        modelfmt.load_model("models:/fraud/1")


def test_runs_uri_needs_a_tracking_server(registry_env):
    with pytest.raises(errors.RegistryError, match="set MLFLOW_TRACKING_URI to the server's http:// URL"):
        open_model("runs:/0123abc/model")


def test_local_folder_the_server_names(tmp_path, sklearn_model_path):
    client = HttpClient("http://127.0.0.1:1")
    dst = tmp_path / "copy"
    dst.mkdir()
    downloads.download_uri(client, "file://" + sklearn_model_path, str(dst))
    assert sorted(os.listdir(dst)) == sorted(os.listdir(sklearn_model_path))
    with pytest.raises(errors.RegistryError, match="not a folder on this machine: start the server with --serve-arti"):
        downloads.download_uri(client, "/nowhere/mlruns/1/abc/artifacts/model", str(dst))
    with pytest.raises(errors.RegistryError, match="modelfmt reads mlflow-artifacts:/ URIs and local folders"):
        downloads.download_uri(client, "s3://bucket/mlruns/1/abc", str(dst))


# -- against a real MLflow server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow():
    return mlflow_registry()


@pytest.fixture
def tracking(mlflow, registry_env):
    registry_env.setenv("MLFLOW_TRACKING_URI", mlflow.url)
    return mlflow


def _predict(location, server):
    return np.asarray(modelfmt.load_model(location).predict(server.example()), dtype=float).ravel().tolist()


@pytest.mark.parametrize("suffix,version", [("@champion", 1), ("/1", 1), ("/2", 2), ("/Production", 2),
                                            ("/production", 2), ("/latest", 2)])
def test_models_uris_predict_what_mlflow_predicts(tracking, suffix, version):
    location = f"models:/{tracking.name}{suffix}"
    opened = open_model(location)
    assert (opened.registered_name, opened.registered_version) == (tracking.name, str(version))
    assert _predict(location, tracking) == pytest.approx(tracking.expected(version))
    assert tracking.expected(1) != pytest.approx(tracking.expected(2))  # the versions differ


def test_runs_and_artifact_uris(tracking):
    run1, run2 = tracking.info["runs"]
    assert _predict(f"runs:/{run1}/model", tracking) == pytest.approx(tracking.expected(1))
    assert _predict(f"runs:/{run2}/model", tracking) == pytest.approx(tracking.expected(2))
    artifact_uri = tracking.info["download_uris"]["2"]
    assert artifact_uri.startswith("mlflow-artifacts:/")
    assert _predict(artifact_uri, tracking) == pytest.approx(tracking.expected(2))
    assert open_model(artifact_uri).registered_name is None


def test_a_second_start_does_not_download_again(tracking, monkeypatch, tmp_path):
    location = f"models:/{tracking.name}@champion"
    first = open_model(location).path
    assert first.startswith(str(tmp_path / "cache")) and os.path.isfile(os.path.join(first, "MLmodel"))

    def no_download(*a, **k):
        raise AssertionError("downloaded again")

    with monkeypatch.context() as m:
        m.setattr(HttpClient, "download", no_download)
        assert open_model(location).path == first
        assert open_model(f"models:/{tracking.name}/1").path == first  # same version, same entry
        run1 = tracking.info["runs"][0]
        with pytest.raises(AssertionError, match="downloaded again"):  # a new entry does download
            open_model(f"runs:/{run1}/model")
    runs_path = open_model(f"runs:/{run1}/model").path
    with monkeypatch.context() as m:
        m.setattr(HttpClient, "download", no_download)
        assert open_model(f"runs:/{run1}/model").path == runs_path
    leftovers = [n for _, dirs, _ in os.walk(tmp_path / "cache") for n in dirs if n.startswith(".partial-")]
    assert leftovers == []  # the failed fill left nothing behind


def test_an_alias_that_moves_resolves_to_its_new_version(tracking):
    reg = RestRegistry(tracking.url)
    try:
        reg.set_registered_model_alias(tracking.name, "challenger", 1)
        assert open_model(f"models:/{tracking.name}@challenger").registered_version == "1"
        reg.set_registered_model_alias(tracking.name, "challenger", 2)
        assert open_model(f"models:/{tracking.name}@challenger").registered_version == "2"
    finally:
        reg.delete_registered_model_alias(tracking.name, "challenger")


@pytest.mark.parametrize("location,message", [
    ("models:/no_such_model/1", "cannot open 'models:/no_such_model/1': Model Version (name=no_such_model, version=1) "
                                "not found"),
    ("models:/no_such_model/Production", "no_such_model"),
    ("models:/diabetes_ridge/9", "Model Version (name=diabetes_ridge, version=9) not found"),
    ("models:/diabetes_ridge@nobody", "alias nobody not found"),
    ("models:/diabetes_ridge/Staging", "model 'diabetes_ridge' has no version in stage Staging"),
    ("runs:/0123456789abcdef/model", "0123456789abcdef"),
])
def test_what_does_not_exist_is_one_error_naming_it(tracking, location, message):
    with pytest.raises(errors.RegistryNotFoundError) as e:
        modelfmt.load_model(location)
    assert message in str(e.value) and location in str(e.value) and e.value.http_status == 404


def test_a_run_without_that_model(tracking):
    run1 = tracking.info["runs"][0]
    with pytest.raises(errors.RegistryNotFoundError, match=f"run {run1} on .* has no model at 'elsewhere'"):
        open_model(f"runs:/{run1}/elsewhere")


def test_a_server_that_is_down_is_named(registry_env):
    from modelfmt.serving.testing import free_port

    url = f"http://127.0.0.1:{free_port()}"
    registry_env.setenv("MLFLOW_TRACKING_URI", url)
    registry_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    registry_env.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.05")
    with pytest.raises(errors.RegistryUnavailableError, match=f"cannot reach the registry at {url}"):
        modelfmt.load_model("models:/fraud@champion")


def test_artifact_uri_with_the_server_in_it(tracking):
    path = tracking.info["download_uris"]["1"][len("mlflow-artifacts:"):]
    netloc = tracking.url.split("://", 1)[1]
    location = f"mlflow-artifacts://{netloc}{path}"
    assert _predict(location, tracking) == pytest.approx(tracking.expected(1))
    with pytest.raises(errors.RegistryNotFoundError, match="has no files at mlflow-artifacts:/1/no/such/folder"):
        open_model("mlflow-artifacts:/1/no/such/folder")


def test_the_embedded_default_store(registry_env, sklearn_model_path, diabetes, tmp_path):
    from modelfmt.registry import get_registry

    with get_registry() as reg:  # nothing configured: SQLite under MODELFMT_HOME
        assert reg.uri == f"sqlite:///{tmp_path}/home/registry.db"
        reg.create_model_version("fraud", sklearn_model_path)
        reg.set_registered_model_alias("fraud", "champion", 1)
    opened = open_model("models:/fraud@champion")
    assert (opened.registered_name, opened.registered_version, opened.verified) == ("fraud", "1", True)
    assert opened.path.startswith(str(tmp_path / "home" / "artifacts"))  # the store's own copy, no download
    X = diabetes[0].head(3)
    np.testing.assert_allclose(np.asarray(modelfmt.load_model("models:/fraud/1").predict(X)),
                               np.asarray(modelfmt.load_model(sklearn_model_path).predict(X)))
