"""The image of `build-docker` as KServe and SageMaker run it. No cluster here: the image is run with the
environment, mounts, user and file system the platforms give it (KServe's STORAGE_URI, K_SERVICE and
PORT with the model in a read-only /mnt/models and only /tmp writable, as `generate-k8s` configures the
pod; SageMaker's `serve` argument and SAGEMAKER_BIND_TO_PORT), and probed from outside as a kubelet
probes it. The choice of model and port (modelfmt.serving.docker.entrypoint) is also tested in-process.

One image per module (builds are the slow part); its containers and images carry this run's label and
are removed by test_docker_image's ``made`` fixture, which also checks nothing of the run is left."""

from __future__ import annotations

import json
import os
import time
import uuid

import numpy as np
import pytest
import requests
import test_docker_image as image_tests
from test_docker_image import RUN, RUN_LABEL, _build, _docker

from modelfmt.errors import DeployError, ModelEnvironmentError
from modelfmt.serving import k8s
from modelfmt.serving.docker import client as docker_cli
from modelfmt.serving.docker import entrypoint
from modelfmt.serving.testing import free_port

pytestmark = pytest.mark.timeout(600)
# Fixtures of test_docker_image, instantiated for this module: dockerd + the base image, the run's cleanup
# and its check, one modelfmt wheel.
docker_ready = image_tests.docker_ready
made = image_tests.made
modelfmt_wheel = image_tests.modelfmt_wheel


# -- the entrypoint's choices, in-process ----------------------------------------------------------------
def _model_dir(root, name: str = "m", requirements: str = "numpy\n") -> str:
    path = root / name
    path.mkdir(parents=True)
    (path / "MLmodel").write_text("flavors: {}\n")
    (path / "requirements.txt").write_text(requirements)
    return str(path)


@pytest.fixture
def mnt(tmp_path, monkeypatch):
    """A stand-in for /mnt/models."""
    root = tmp_path / "mnt-models"
    root.mkdir()
    monkeypatch.setattr(entrypoint, "KSERVE_MODEL_DIR", str(root))
    return root


def test_the_model_is_chosen_as_kserve_and_users_expect(mnt, tmp_path):
    image_model = {"MODELFMT_MODEL_PATH": "/opt/ml/model"}
    assert entrypoint.model_location(image_model) == ("/opt/ml/model", "image")
    assert entrypoint.model_location({}) == ("/opt/ml/model", "image")
    kserve = {**image_model, "STORAGE_URI": "gs://bucket/fraud"}
    # STORAGE_URI: the model is in /mnt/models itself ...
    _model_dir(tmp_path, "inside")
    os.rename(tmp_path / "inside" / "MLmodel", mnt / "MLmodel")
    assert entrypoint.model_location(kserve) == (str(mnt), "STORAGE_URI")
    os.unlink(mnt / "MLmodel")
    # ... or the one model directory below it (hidden entries and plain folders do not count) ...
    with pytest.raises(DeployError, match=r"no model in .*mnt-models: no MLmodel there or in a directory below it"):
        entrypoint.model_location(kserve)
    (mnt / "notes").mkdir()
    (mnt / ".cache").mkdir()
    (mnt / ".cache" / "MLmodel").write_text("{}")
    fraud = _model_dir(mnt, "fraud")
    assert entrypoint.model_location(kserve) == (fraud, "STORAGE_URI")
    # ... and two are one too many, named.
    _model_dir(mnt, "churn")
    with pytest.raises(DeployError, match=r"2 models in .*mnt-models \(churn, fraud\): point STORAGE_URI"):
        entrypoint.model_location(kserve)
    # MODELFMT_MODEL_DIR wins over both; a wrong one is named.
    given = _model_dir(tmp_path, "given")
    assert entrypoint.model_location({**kserve, "MODELFMT_MODEL_DIR": given}) == (given, "MODELFMT_MODEL_DIR")
    with pytest.raises(DeployError, match="MODELFMT_MODEL_DIR=/nope is not a directory in the container"):
        entrypoint.model_location({"MODELFMT_MODEL_DIR": "/nope"})


@pytest.mark.parametrize(("environ", "port"), [
    ({}, 8080),
    ({"MODELFMT_PORT": "9000"}, 9000),
    ({"MODELFMT_PORT": "8080", "SAGEMAKER_BIND_TO_PORT": "9123"}, 9123),
    ({"MODELFMT_PORT": "8080", "PORT": "9200", "K_SERVICE": "fraud-predictor"}, 9200),
    ({"MODELFMT_PORT": "8080", "PORT": "9200"}, 8080),  # PORT alone (no Knative) is someone else's variable
])
def test_the_port_is_the_platforms(environ, port):
    assert entrypoint.serving_port(environ) == port


def test_a_bad_port_is_named():
    with pytest.raises(DeployError, match=r"SAGEMAKER_BIND_TO_PORT='eighty' is not a port number"):
        entrypoint.serving_port({"SAGEMAKER_BIND_TO_PORT": "eighty"})


@pytest.mark.parametrize(("environ", "path", "source", "name"), [
    ({"K_SERVICE": "fraud-predictor"}, "/mnt/models", "STORAGE_URI", "fraud"),
    ({"K_SERVICE": "fraud-predictor-default"}, "/x", "image", "fraud"),
    ({"K_SERVICE": "fraud-predictor", "MODELFMT_MODEL_NAME": "mine"}, "/x", "image", None),
    ({"STORAGE_URI": "s3://b/models/fraud.tar.gz"}, "/mnt/models", "STORAGE_URI", "fraud"),
    ({"STORAGE_URI": "s3://b/models/churn/"}, "/mnt/models", "STORAGE_URI", "churn"),
    ({"STORAGE_URI": "s3://b/models"}, "/mnt/models/churn", "STORAGE_URI", None),  # serve names it churn
    ({}, "/opt/ml/model", "image", None),
])
def test_the_model_name_clients_use(environ, path, source, name):
    assert entrypoint.model_name(environ, path, source) == name


def test_missing_requirements_fail_the_start_naming_them(tmp_path):
    path = _model_dir(tmp_path, requirements=(
        "mlflow==3.18.0\nnumpy\npandas>=1\nlightgbm==4.5.0\nnot-a-real-package-xyz\n"
        'pywin32==306; sys_platform == "win32"\n'))
    assert entrypoint.missing_requirements(path) == [
        "lightgbm (model: 4.5.0, installed: none)",
        "not-a-real-package-xyz (model: not-a-real-package-xyz, installed: none)",
    ]
    with pytest.raises(ModelEnvironmentError, match=r"this image does not have: lightgbm \(model: 4.5.0"):
        entrypoint.serve_argv({"MODELFMT_MODEL_DIR": path})
    # Only a warning when asked; the image's own model is not checked (the image was built for it).
    argv = entrypoint.serve_argv({"MODELFMT_MODEL_DIR": path, "MODELFMT_CHECK_REQUIREMENTS": "false"})
    assert argv[:3] == ["modelfmt", "serve", path]
    assert entrypoint.serve_argv({"MODELFMT_MODEL_PATH": path})[:3] == ["modelfmt", "serve", path]


def test_serve_argv_options_given_last_win(tmp_path):
    argv = entrypoint.serve_argv({"MODELFMT_MODEL_PATH": "/opt/ml/model", "SAGEMAKER_BIND_TO_PORT": "9001"},
                                 ["--workers", "2", "--port", "7000"])
    assert argv == ["modelfmt", "serve", "/opt/ml/model", "--host", "0.0.0.0", "--port", "9001",
                    "--workers", "2", "--port", "7000"]


# -- the image -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image(made, sklearn_model_path, modelfmt_wheel):
    return _build(sklearn_model_path, "kserve", modelfmt_wheel)


@pytest.fixture(scope="module")
def ridge(tmp_path_factory, diabetes):
    """Another model with the image's requirements (its format), in a folder as KServe's storage
    initializer leaves one: /mnt/models/ridge/MLmodel."""
    from sklearn.linear_model import Ridge

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = diabetes
    root = tmp_path_factory.mktemp("mnt-models")
    path = str(root / "ridge")
    # The image model's format (cloudpickle): skops would need a package the image lacks.
    sk_flavor.save_model(Ridge(alpha=2.0).fit(X, y), path, input_example=X.head(3), serialization_format="cloudpickle")
    _share(str(root))
    return str(root), path


def _share(root: str) -> None:
    # The container's user (10001) is not the files' owner: what a mount serves must be readable to others.
    os.chmod(root, 0o755)
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


def _start(*args: str) -> str:
    name = f"modelfmt-test-{RUN}-{uuid.uuid4().hex[:6]}"
    proc = _docker("run", "-d", "--name", name, "--label", f"{RUN_LABEL}={RUN}", "--network", "host", *args)
    assert proc.returncode == 0, proc.stderr
    return name


def _wait(url: str, name: str, route: str = "/ping", timeout: float = 120) -> None:
    """Until ``route`` answers 200, as a kubelet's readiness probe waits (a probe is an HTTP GET with a
    timeout; anything but 2xx/3xx is a failure)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + route, timeout=1).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        state = _docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
        assert state == "true", "container exited:\n" + _docker("logs", name).stderr[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"no 200 from {route}:\n" + _docker("logs", name).stderr[-3000:])


def _server_argv(name: str) -> list[str]:
    """PID 1's command line in the container: the server the entrypoint exec'd."""
    out = _docker("exec", name, "python", "-c", "print(open('/proc/1/cmdline').read().replace('\\0', ' '))")
    return out.stdout.split()


def test_kserve_custom_predictor_with_storage_uri(image, ridge, sklearn_model_path, diabetes):
    root, ridge_path = ridge
    port = free_port("127.0.0.1")
    # What KServe gives the predictor container, and the pod generate-k8s writes: uid 10001, read-only
    # root file system with an emptyDir on /tmp, no capabilities, no privilege escalation, the model
    # mounted read-only by the storage initializer's volume.
    name = _start(
        "--user", "10001:10001", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "-v", f"{root}:{entrypoint.KSERVE_MODEL_DIR}:ro",
        "-e", "STORAGE_URI=s3://models-bucket/diabetes", "-e", "PROTOCOL=v2",
        "-e", "K_SERVICE=diabetes-predictor", "-e", "K_REVISION=diabetes-predictor-00001",
        "-e", "K_CONFIGURATION=diabetes-predictor", "-e", f"PORT={port}", "-e", "MODELFMT_WORKERS=1",
        image,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, name)
        argv = _server_argv(name)
        assert argv[argv.index("serve") + 1] == ridge_path.replace(root, entrypoint.KSERVE_MODEL_DIR), argv
        assert argv[argv.index("--model-name") + 1] == "diabetes", argv  # the InferenceService's name
        # The mounted model answers, not the image's own.
        X = diabetes[0]
        got = _post_rows(url, X.head(5))
        np.testing.assert_allclose(got, _predict(ridge_path, X.head(5)), rtol=1e-12)
        assert not np.allclose(got, _predict(sklearn_model_path, X.head(5)))
        # The probes the manifests configure, as a kubelet calls them, and the scrape.
        for route in _probe_routes(ridge_path):
            assert requests.get(url + route, timeout=5).status_code == 200, route
        metrics = requests.get(url + k8s.METRICS_PATH, timeout=5)
        assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
        assert "modelfmt_" in metrics.text
    finally:
        _docker("rm", "-f", name)


def _probe_routes(model_path: str) -> list[str]:
    """The routes generate-k8s probes (the V2 health routes) when the server has them, else /ping (until
    the V2 protocol lands). Read from the app's routes: the image runs the same code."""
    from modelfmt.serving.app import create_app

    routes = {rule.rule for rule in create_app(model_path).url_map.iter_rules()}
    wanted = [k8s.HEALTH_LIVE, k8s.HEALTH_READY]
    return wanted if set(wanted) <= routes else ["/ping"]


def _post_rows(url: str, frame) -> list:
    from modelfmt.example import frame_to_split

    body = json.dumps({"dataframe_split": frame_to_split(frame)})
    resp = requests.post(url + "/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"]


def _predict(path: str, frame) -> np.ndarray:
    from modelfmt.flavors.pyfunc import load_model

    return np.asarray(load_model(path).predict(frame))


def test_model_dir_overrides_storage_uri(image, ridge, diabetes):
    _root, ridge_path = ridge
    port = free_port("127.0.0.1")
    name = _start("-v", f"{ridge_path}:/models/chosen:ro", "-e", "MODELFMT_MODEL_DIR=/models/chosen",
                  "-e", "STORAGE_URI=s3://models-bucket/other", "-e", f"MODELFMT_PORT={port}",
                  "-e", "MODELFMT_WORKERS=1", image)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, name)
        X = diabetes[0]
        np.testing.assert_allclose(_post_rows(url, X.head(3)), _predict(ridge_path, X.head(3)), rtol=1e-12)
    finally:
        _docker("rm", "-f", name)


def test_a_model_the_image_cannot_run_fails_at_start_naming_its_needs(image, tmp_path_factory, diabetes):
    from sklearn.linear_model import Ridge

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = diabetes
    root = tmp_path_factory.mktemp("mnt-needs")
    sk_flavor.save_model(Ridge().fit(X, y), str(root / "m"), serialization_format="cloudpickle",
                         extra_pip_requirements=["lightgbm==4.5.0"])
    _share(str(root))
    started = time.monotonic()
    proc = _docker("run", "--rm", "--label", f"{RUN_LABEL}={RUN}", "--network", "none",
                   "-v", f"{root}:/mnt/models:ro", "-e", "STORAGE_URI=gs://b/m", image)
    assert time.monotonic() - started < 60
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr.strip().splitlines()
    assert err == [
        "modelfmt: error: the model at /mnt/models/m needs packages this image does not have: lightgbm (model: "
        "4.5.0, installed: none); build an image for this model (modelfmt build-docker), or serve it with an "
        "image built from a model with the same requirements"
    ], proc.stderr
    # An empty /mnt/models (the storage initializer fetched nothing) is named too.
    empty = tmp_path_factory.mktemp("mnt-empty")
    _share(str(empty))
    proc = _docker("run", "--rm", "--label", f"{RUN_LABEL}={RUN}", "--network", "none",
                   "-v", f"{empty}:/mnt/models:ro", "-e", "STORAGE_URI=gs://b/m", image)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "modelfmt: error: no model in /mnt/models: no MLmodel there or in a directory below it (it holds nothing)"
    ), proc.stderr


def test_sagemaker_serve_with_bind_to_port(image, sklearn_model_path, diabetes):
    labels = docker_cli.image_config(image)["Config"]["Labels"]
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    port = free_port("127.0.0.1")
    # As SageMaker runs it: `docker run IMAGE serve`, the model in /opt/ml/model (the image's), the port
    # in SAGEMAKER_BIND_TO_PORT (the image's own MODELFMT_PORT=8080 stays set and loses).
    name = _start("--health-interval", "1s", "-e", f"SAGEMAKER_BIND_TO_PORT={port}", "-e", "MODELFMT_WORKERS=1",
                  image, "serve")
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, name)
        X = diabetes[0]
        np.testing.assert_allclose(_post_rows(url, X.head(4)), _predict(sklearn_model_path, X.head(4)), rtol=1e-12)
        # CSV as SageMaker's batch transform sends it.
        csv = X.head(2).to_csv(index=False).encode()
        resp = requests.post(url + "/invocations", data=csv, headers={"Content-Type": "text/csv"}, timeout=30)
        assert resp.status_code == 200, resp.text
        # The image's HEALTHCHECK probes the same port.
        deadline = time.monotonic() + 60
        while (status := _docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()) != "healthy":
            assert status == "starting" and time.monotonic() < deadline, status
            time.sleep(0.5)
    finally:
        _docker("rm", "-f", name)


def test_probe_command_fails_when_nothing_answers(image):
    proc = _docker("run", "--rm", "--label", f"{RUN_LABEL}={RUN}", "--network", "none", "--entrypoint", "python",
                   "-e", "MODELFMT_PORT=9", image, "-m", "modelfmt.serving.docker.entrypoint", "--probe", "/ping")
    assert proc.returncode == 1 and "http://127.0.0.1:9/ping" in proc.stderr, proc.stderr
