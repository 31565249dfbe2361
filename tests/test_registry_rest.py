"""RestRegistry: the registry client over MLflow's REST API, against modelfmt's registry server (over a
SQLite store), a real MLflow tracking server, and a scripted HTTP server for retries and credentials."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.server
import json
import os
import threading
import time

import numpy as np
import pytest
from mlflow_registry_support import mlflow_registry, registry_env  # noqa: F401 - the fixture

import modelfmt
from modelfmt import errors
from modelfmt.registry.http import HttpClient
from modelfmt.registry.rest import RestRegistry, check_digest
from modelfmt.serving.testing import free_port

UTC = dt.timezone.utc


# -- a scripted server: answers from a queue, records what it was sent ---------------------------------
class Scripted:
    def __init__(self):
        self.answers: list[tuple[int, dict, bytes]] = []
        self.seen: list[dict] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                owner.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                   "body": self.rfile.read(length) if length else b""})
                status, headers, body = owner.answers.pop(0) if owner.answers else (200, {}, b"{}")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, status, body, headers=None):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers.append((status, headers or {"Content-Type": "application/json"}, raw))


@pytest.fixture
def scripted(registry_env):
    registry_env.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.01")
    registry_env.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    s = Scripted()
    yield s
    s.server.shutdown()
    s.server.server_close()


MV = {"model_version": {"name": "m", "version": "1", "current_stage": "None", "status": "READY"}}


def test_retries_429_and_5xx_then_answers(scripted):
    scripted.answer(503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"})
    scripted.answer(429, b"slow down", {"Retry-After": "0"})
    scripted.answer(502, b"<html>bad gateway</html>", {"Content-Type": "text/html"})
    scripted.answer(200, MV)
    assert RestRegistry(scripted.url).get_model_version("m", 1).version == 1
    assert len(scripted.seen) == 4
    assert scripted.seen[0]["path"] == "/api/2.0/mlflow/model-versions/get?name=m&version=1"


def test_retries_are_bounded(scripted):
    scripted.registry_env = None
    for _ in range(5):
        scripted.answer(500, {"error_code": "INTERNAL_ERROR", "message": "database is locked"})
    with pytest.raises(errors.RegistryUnavailableError) as e:
        RestRegistry(scripted.url).get_model_version("m", 1)
    assert len(scripted.seen) == 4  # the first try and 3 retries
    assert str(e.value) == f"the registry at {scripted.url} failed (HTTP 500): database is locked"
    assert e.value.http_status == 503


def test_client_errors_are_not_retried_and_keep_mlflow_codes(scripted):
    scripted.answer(400, {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "Registered Model (name=m) already exists."})
    with pytest.raises(errors.RegistryConflictError, match=r"Registered Model \(name=m\) already exists"):
        RestRegistry(scripted.url).create_registered_model("m")
    scripted.answer(403, {"error_code": "PERMISSION_DENIED", "message": "no"})
    with pytest.raises(errors.PermissionDeniedError):
        RestRegistry(scripted.url).delete_registered_model("m")
    assert len(scripted.seen) == 2


def test_credentials_as_mlflow_sends_them(scripted, registry_env):
    registry_env.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    registry_env.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    scripted.answer(200, MV)
    RestRegistry(scripted.url).get_model_version("m", 1)
    assert scripted.seen[-1]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"ana:s3cret").decode()
    registry_env.setenv("MLFLOW_TRACKING_TOKEN", "tok-123")  # a token wins, as in MLflow
    scripted.answer(200, {"registered_model": {"name": "m"}})
    RestRegistry(scripted.url, user="bo").update_registered_model("m", "new text")
    seen = scripted.seen[-1]
    assert seen["headers"]["Authorization"] == "Bearer tok-123" and seen["headers"]["X-Modelfmt-User"] == "bo"
    assert seen["method"] == "PATCH" and json.loads(seen["body"]) == {"name": "m", "description": "new text"}
    assert seen["headers"]["Content-Type"] == "application/json"


def test_a_user_given_to_a_method_is_sent(scripted):
    scripted.answer(200, {})
    RestRegistry(scripted.url, user="default").set_registered_model_alias("m", "champion", 3, user="carla")
    seen = scripted.seen[-1]
    assert seen["headers"]["X-Modelfmt-User"] == "carla"
    assert json.loads(seen["body"]) == {"name": "m", "alias": "champion", "version": "3"}


def test_an_answer_that_is_not_json(scripted):
    scripted.answer(200, b"<html>a login page</html>", {"Content-Type": "text/html"})
    with pytest.raises(errors.RegistryUnavailableError, match="not JSON"):
        RestRegistry(scripted.url).get_registered_model("m")


def test_a_server_that_is_down_fails_within_seconds(registry_env):
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(errors.RegistryUnavailableError) as e:
        RestRegistry(url).get_registered_model("m")  # the default retries: 0.5 + 1 + 2 s and jitter
    assert time.monotonic() - start < 10
    assert f"cannot reach the registry at {url}" in str(e.value) and "Connection refused" in str(e.value)


def test_modelfmt_extensions_on_a_server_without_them(scripted):
    scripted.answer(404, b"<!doctype html><title>404 Not Found</title>", {"Content-Type": "text/html"})
    with pytest.raises(errors.RegistryError) as e:
        RestRegistry(scripted.url).list_transition_requests("m")
    assert f"the registry at {scripted.url} is MLflow's server" in str(e.value)
    assert "modelfmt registry serve" in str(e.value) and type(e.value) is errors.RegistryError


def test_check_digest(tmp_path):
    (tmp_path / "model.digests.json").write_bytes(b'{"files": []}')
    good = hashlib.sha256(b'{"files": []}').hexdigest()
    check_digest(str(tmp_path), good, "v1")
    with pytest.raises(errors.IntegrityError, match=f"v1: its model.digests.json hashes to {good}, not the registered"):
        check_digest(str(tmp_path), "0" * 64, "v1")


# -- against modelfmt's registry server ----------------------------------------------------------------
@pytest.fixture(scope="module")
def modelfmt_server(tmp_path_factory):
    """modelfmt's registry server (serving/registry_app over a SQLite store) on werkzeug, in a thread."""
    from werkzeug.serving import make_server

    from modelfmt.registry.store import SqlRegistry
    from modelfmt.serving.registry_app import create_registry_app

    base = tmp_path_factory.mktemp("regserver")
    store = SqlRegistry(f"sqlite:///{base}/registry.db", str(base / "artifacts"))
    server = make_server("127.0.0.1", free_port(), create_registry_app(store), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    store.close()


def _digest(path):
    with open(os.path.join(path, "model.digests.json"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_lifecycle_against_modelfmt_server(modelfmt_server, registry_env, sklearn_model_path, diabetes, tmp_path,
                                           monkeypatch):
    reg = RestRegistry(modelfmt_server, user="ana")
    rm = reg.create_registered_model("fraud", description="fraud scores", tags={"team": "risk"})
    assert (rm.name, rm.description, rm.tags) == ("fraud", "fraud scores", {"team": "risk"})
    with pytest.raises(errors.RegistryConflictError):
        reg.create_registered_model("fraud")
    mv = reg.create_model_version("fraud", sklearn_model_path, tags={"k": "v"})  # a local folder: uploaded
    assert (mv.version, mv.digest, mv.user_id) == (1, _digest(sklearn_model_path), "ana")
    assert mv.signature is not None and mv.tags["k"] == "v" and "modelfmt.digest" not in mv.tags
    assert reg.is_modelfmt_server()
    reg.set_registered_model_alias("fraud", "champion", 1)
    assert reg.get_model_version_by_alias("fraud", "champion").version == 1
    assert reg.get_registered_model("fraud").aliases == {"champion": 1}
    assert [m.name for m in reg.search_registered_models("name LIKE 'fra%'").items] == ["fraud"]
    assert [v.version for v in reg.search_model_versions("name = 'fraud'").items] == [1]
    reg.transition_model_version_stage("fraud", 1, "Staging")
    assert [v.version for v in reg.get_latest_versions("fraud", ["Staging"])] == [1]
    with pytest.raises(errors.RegistryNotFoundError):
        reg.get_model_version("fraud", 7)

    # Downloads land in the cache by digest; the second is a lookup.
    path = reg.download_model_version("fraud", 1)
    assert path == str(tmp_path / "cache" / "sha256" / mv.digest)
    monkeypatch.setattr(HttpClient, "download", lambda *a, **k: pytest.fail("downloaded again"))
    assert reg.download_model_version("fraud", 1) == path
    monkeypatch.undo()
    copy = reg.download_model_version("fraud", 1, dst=tmp_path / "mine")
    assert sorted(os.listdir(copy)) == sorted(os.listdir(path))

    # Transition requests and the activity log: modelfmt's extensions.
    tr = reg.create_transition_request("fraud", 1, "Production", "ship it")
    assert (tr.requested_by, tr.status, tr.to_stage) == ("ana", "PENDING", "Production")
    assert [r.id for r in reg.list_transition_requests("fraud", 1)] == [tr.id]
    with pytest.raises(errors.PermissionDeniedError):
        reg.approve_transition_request(tr.id, "mine", user="ana")
    done = reg.approve_transition_request(tr.id, "ok", user="bo")
    assert (done.status, done.reviewed_by) == ("APPROVED", "bo")
    assert reg.get_model_version("fraud", 1).current_stage == "Production"
    log = reg.activity("fraud").items
    assert {"create_model", "register_version", "approve_request", "transition"} <= {e.action for e in log}
    assert reg.version_in_stage_at("fraud", "Production", dt.datetime.now(UTC)) == 1
    assert reg.version_in_stage_at("fraud", "Production", dt.datetime(2000, 1, 1, tzinfo=UTC)) is None

    # models:/ against this server predicts what the directory predicts.
    registry_env.setenv("MODELFMT_REGISTRY_URI", modelfmt_server)
    X = diabetes[0].head(5)
    want = modelfmt.load_model(sklearn_model_path).predict(X)
    for location in ("models:/fraud/Production", "models:/fraud@champion", "models:/fraud/latest", "models:/fraud/1"):
        np.testing.assert_allclose(np.asarray(modelfmt.load_model(location).predict(X)), np.asarray(want))
    with pytest.raises(errors.RegistryNotFoundError, match="cannot open 'models:/fraud/Staging'"):
        modelfmt.load_model("models:/fraud/Staging")


# -- against a real MLflow server ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow():
    return mlflow_registry()


def test_register_and_read_back_on_mlflow(mlflow, registry_env, sklearn_model_path, diabetes, tmp_path):
    server = mlflow
    reg = RestRegistry(server.url)
    name = "modelfmt_uploaded"
    reg.create_registered_model(name, description="from modelfmt", tags={"team": "risk"})
    try:
        mv = reg.create_model_version(name, sklearn_model_path, description="v1")
        # MLflow registers only files inside a run: the client made one and uploaded into it.
        assert mv.version == 1 and mv.run_id and mv.source.startswith("mlflow-artifacts:/0/")
        assert mv.source.endswith(f"/{mv.run_id}/artifacts/model") and not reg.is_modelfmt_server()
        assert mv.digest is None  # MLflow's server records none
        reg.set_model_version_tag(name, 1, "stage_note", "good")
        reg.transition_model_version_stage(name, 1, "Production")
        reg.set_registered_model_alias(name, "champion", 1)
        got = reg.get_model_version(name, 1)
        assert (got.current_stage, got.aliases, got.tags, got.description) == ("Production", ["champion"],
                                                                               {"stage_note": "good"}, "v1")
        assert reg.get_registered_model(name).tags == {"team": "risk"}
        path = reg.download_model_version(name, 1)
        assert path.startswith(str(tmp_path / "cache" / "mlflow"))
        assert _digest(path) == _digest(sklearn_model_path)
        X = diabetes[0].head(5)
        np.testing.assert_allclose(np.asarray(modelfmt.load_model(path).predict(X)),
                                   np.asarray(modelfmt.load_model(sklearn_model_path).predict(X)))
        reg.delete_registered_model_alias(name, "champion")
        with pytest.raises(errors.RegistryNotFoundError, match="alias champion not found"):
            reg.get_model_version_by_alias(name, "champion")
        with pytest.raises(errors.RegistryError, match="is MLflow's server: transition requests"):
            reg.create_transition_request(name, 1, "Production", "please")
    finally:
        reg.delete_registered_model(name)
    with pytest.raises(errors.RegistryNotFoundError, match=name):
        reg.get_registered_model(name)


# -- location, TLS, time-outs, the cache under concurrency ------------------------------------------------
def test_get_registry_http_is_a_rest_client(registry_env):
    from modelfmt import registry

    reg = registry.get_registry("http://127.0.0.1:1/base/", user="ana")
    assert isinstance(reg, RestRegistry) and reg.uri == "http://127.0.0.1:1/base" and reg.http.user == "ana"
    registry_env.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example:5000")
    assert registry.get_registry().uri == "https://mlflow.example:5000"


@pytest.fixture
def tls_server(scripted, tmp_path):
    """The scripted server behind TLS, with a self-signed certificate for 127.0.0.1."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    scripted.server.socket = ctx.wrap_socket(scripted.server.socket, server_side=True)
    scripted.url = scripted.url.replace("http://", "https://")
    return scripted, str(cert)


def test_tls_as_mlflow_configures_it(tls_server, registry_env):
    server, cert = tls_server
    registry_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(errors.RegistryUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
        RestRegistry(server.url).get_model_version("m", 1)
    registry_env.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", cert)  # the server's CA bundle
    server.answer(200, MV)
    assert RestRegistry(server.url).get_model_version("m", 1).version == 1
    registry_env.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
    registry_env.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")  # no check at all
    server.answer(200, MV)
    assert RestRegistry(server.url).get_model_version("m", 1).version == 1


def test_a_server_that_does_not_answer_times_out(registry_env):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    registry_env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "0.5")
    registry_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    start = time.monotonic()
    try:
        with pytest.raises(errors.RegistryUnavailableError, match=f"cannot reach the registry at {url}.*timed out"):
            RestRegistry(url).get_registered_model("m")
    finally:
        listener.close()
    assert time.monotonic() - start < 5


def test_cache_fill_is_whole_or_nothing_under_concurrency(registry_env, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from modelfmt.registry import cache

    entry = cache.server_entry("http://h:5000", "models", "m", "1", "0")
    assert entry.startswith(str(tmp_path / "cache" / "mlflow" / "h_5000-"))
    calls = []

    def filler(tmp):
        calls.append(tmp)
        time.sleep(0.2)
        with open(os.path.join(tmp, "MLmodel"), "w") as f:
            f.write("flavors: {}\n")

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: cache.fill(entry, filler), range(4)))
    assert set(paths) == {entry} and os.listdir(entry) == ["MLmodel"]
    assert os.listdir(os.path.dirname(entry)) == [os.path.basename(entry)]  # the losers' copies are gone
    assert cache.fill(entry, lambda tmp: pytest.fail("filled again")) == entry

    def broken(tmp):
        open(os.path.join(tmp, "half"), "w").close()
        raise OSError("disk full")

    other = cache.server_entry("http://h:5000", "models", "m", "2", "0")
    with pytest.raises(OSError, match="disk full"):
        cache.fill(other, broken)
    assert not os.path.exists(other) and os.listdir(os.path.dirname(entry)) == [os.path.basename(entry)]
    with pytest.raises(errors.RegistryError, match="not a SHA-256 hex digest"):
        cache.digest_entry("../../etc")
