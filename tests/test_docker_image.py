"""A real image: built offline from the local base image, run, scored, stopped; then rebuilt after a
change of the model alone. Needs a running dockerd and the base image (`make docker-setup`)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from modelfmt.serving.docker import client as docker_cli, wheels as docker_wheels
from modelfmt.serving.docker.build import build_docker

BASE_IMAGE = os.environ.get("MODELFMT_TEST_BASE_IMAGE", "modelfmt-base:bookworm")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(600)


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def docker_ready():
    """A reachable daemon and the base image; runs the (idempotent) setup script when one is missing."""
    try:
        docker_cli.check_daemon()
        ready = docker_cli.image_exists(BASE_IMAGE)
    except Exception:  # noqa: BLE001 - whatever is missing, the setup script makes it
        ready = False
    if not ready:
        subprocess.run(
            ["sh", os.path.join(ROOT, "scripts", "docker-setup.sh")],
            env=dict(os.environ, MODELFMT_BASE_IMAGE=BASE_IMAGE),
            check=True,
            timeout=900,
        )
    docker_cli.check_daemon()


@pytest.fixture(scope="module")
def modelfmt_wheel(tmp_path_factory):
    """One modelfmt wheel for every build here: edits to the checkout mid-test cannot change layers."""
    return docker_wheels.modelfmt_wheel(str(tmp_path_factory.mktemp("wheel")))


def _build(model: str, tag: str, wheel: str) -> str:
    """Build ``tag`` (a fixed name: the layer cache carries over between runs), then drop the image it
    replaced, so repeated runs do not pile up model layers."""
    before = _docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip()
    build_docker(model, tag, BASE_IMAGE, modelfmt_wheel=wheel)
    if before and before != _docker("image", "inspect", "-f", "{{.Id}}", tag).stdout.strip():
        _docker("image", "rm", before)
    return tag


@pytest.fixture(scope="module")
def image(docker_ready, sklearn_model_path, modelfmt_wheel):
    return _build(sklearn_model_path, "modelfmt-test-sklearn:latest", modelfmt_wheel)


@pytest.fixture(scope="module")
def container(image):
    """The image serving on a free host port (host network), healthchecked every second."""
    from modelfmt.serving.testing import free_port

    port = free_port("127.0.0.1")
    name = f"modelfmt-test-{uuid.uuid4().hex[:8]}"
    proc = _docker(
        "run", "-d", "--name", name, "--network", "host", "--health-interval", "1s",
        "-e", f"MODELFMT_PORT={port}", "-e", "MODELFMT_WORKERS=2", image,
    )
    assert proc.returncode == 0, proc.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ping(url, name)
        yield name, url
    finally:
        _docker("rm", "-f", name)


def _wait_ping(url: str, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/ping", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # booting: workers not up yet
            pass
        state = _docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
        assert state == "true", "container exited:\n" + _docker("logs", name).stderr[-3000:]
        time.sleep(0.2)
    raise AssertionError("no /ping answer:\n" + _docker("logs", name).stderr[-3000:])


def test_scores_like_inline_predictions(container, sklearn_model_path, diabetes):
    import numpy as np

    from modelfmt.flavors.pyfunc import load_model
    from modelfmt.example import frame_to_split

    _, url = container
    model = load_model(sklearn_model_path)
    with open(os.path.join(sklearn_model_path, "serving_input_example.json"), "rb") as f:
        example = f.read()
    resp = requests.post(url + "/invocations", data=example, headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 200, resp.text
    X = diabetes[0]
    np.testing.assert_allclose(resp.json()["predictions"], model.predict(X.head(3)), rtol=1e-12)

    big = X.sample(n=1000, replace=True, random_state=0).reset_index(drop=True)
    body = json.dumps({"dataframe_split": frame_to_split(big)})
    resp = requests.post(url + "/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert resp.status_code == 200, resp.text
    got = resp.json()["predictions"]
    assert len(got) == 1000
    np.testing.assert_allclose(got, model.predict(big), rtol=1e-12)

    bad = requests.post(url + "/invocations", data=b"{nope", headers={"Content-Type": "application/json"}, timeout=30)
    assert bad.status_code == 400


# Every process in the container as (pid, uid, argv[2]) from /proc (the image has no ps).
_PROCS = (
    "import os, json; out = []\n"
    "for p in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        argv = open(f'/proc/{p}/cmdline', 'rb').read().split(b'\\0')\n"
    "        uid = next(ln.split()[1] for ln in open(f'/proc/{p}/status') if ln.startswith('Uid:'))\n"
    "    except OSError:\n"
    "        continue\n"
    # An empty cmdline is a `docker exec` (e.g. the HEALTHCHECK's) caught before it execs as the image's user.
    "    if argv == [b'']:\n"
    "        continue\n"
    "    out.append([int(p), uid, argv[2].decode() if len(argv) > 2 else ''])\n"
    "print(json.dumps(out))"
)


def test_runs_as_non_root_and_healthy(container, image):
    name, _ = container
    assert _docker("exec", name, "id", "-u").stdout.strip() == "10001"
    procs = json.loads(_docker("exec", name, "python", "-c", _PROCS).stdout)
    serve = [p for p in procs if p[2] == "serve"]
    # The server is PID 1 (it gets docker stop's SIGTERM), with MODELFMT_WORKERS=2 workers.
    assert 1 in [p[0] for p in serve] and len(serve) == 3, procs
    assert all(uid == "10001" for _, uid, _ in procs), procs
    assert docker_cli.image_config(image)["Config"]["User"] == "10001:10001"
    deadline = time.monotonic() + 60
    while (status := _docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()) != "healthy":
        assert status == "starting" and time.monotonic() < deadline, status
        time.sleep(0.5)


def test_entrypoint_accepts_serve_and_commands(image):
    # `serve` (SageMaker / Azure ML) and bare options go to `modelfmt serve`; other commands run as given.
    for args in (["serve", "--help"], ["--help"]):
        proc = _docker("run", "--rm", "--network", "none", image, *args)
        assert proc.returncode == 0 and "--max-body-size" in proc.stdout, proc.stderr
    proc = _docker("run", "--rm", "--network", "none", image, "modelfmt", "info", "/opt/ml/model")
    assert proc.returncode == 0 and "sklearn" in proc.stdout, proc.stderr


def test_installed_modelfmt_repacks_as_wheel(image):
    # The image holds a regular (non-editable) install: the path a pip-installed modelfmt takes.
    code = (
        "import zipfile; from modelfmt.serving.docker.wheels import source_tree, wheel_from_installed; "
        "from modelfmt.serving.docker.context import Target, find_template, render_dockerfile; "
        "assert source_tree() is None; "
        "assert find_template() == '/opt/modelfmt/share/modelfmt/Dockerfile.template', find_template(); "
        "assert 'FROM python:3.12-slim AS deps' in render_dockerfile(Target('python:3.12-slim', '3.12')); "
        "print(sorted(zipfile.ZipFile(wheel_from_installed('/tmp')).namelist()))"
    )
    proc = _docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", code)
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout
    for member in ("'modelfmt/__init__.py'", "'modelfmt/serving/docker/build.py'", "'modelfmt/flavors/sklearn.py'", ".dist-info/entry_points.txt'",
                   ".dist-info/RECORD'", ".data/data/share/modelfmt/Dockerfile.template'"):
        assert member in names, names
    assert "bin/modelfmt'" not in names


def test_docker_stop_is_clean(image):
    from modelfmt.serving.testing import free_port

    port = free_port("127.0.0.1")
    name = f"modelfmt-test-stop-{uuid.uuid4().hex[:8]}"
    assert _docker("run", "-d", "--name", name, "--network", "host", "-e", f"MODELFMT_PORT={port}",
                   "-e", "MODELFMT_WORKERS=1", image).returncode == 0
    try:
        _wait_ping(f"http://127.0.0.1:{port}", name)
        started = time.monotonic()
        assert _docker("stop", "-t", "30", name).returncode == 0
        assert time.monotonic() - started < 15  # SIGTERM handled, not the SIGKILL after the grace period
        assert _docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        _docker("rm", "-f", name)


def test_model_only_rebuild_reuses_dependency_layers(image, sklearn_model_path, modelfmt_wheel, tmp_path, diabetes):
    from sklearn.linear_model import Ridge

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = diabetes
    other = str(tmp_path / "ridge")
    sk_flavor.save_model(Ridge(alpha=2.0).fit(X, y), other, input_example=X.head(3))
    tag = _build(other, "modelfmt-test-ridge:latest", modelfmt_wheel)
    first = docker_cli.image_config(image)["RootFS"]["Layers"]
    second = docker_cli.image_config(tag)["RootFS"]["Layers"]
    # Same base, user, venv, modelfmt and entrypoint layers; only the model layer differs.
    assert len(first) == len(second)
    assert first[:-1] == second[:-1]
    assert first[-1] != second[-1]
