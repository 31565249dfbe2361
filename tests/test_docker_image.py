"""A real image: built offline from the local base image, run, scored, stopped; then rebuilt after a
change of the model alone. Needs a running dockerd and the base image (`make docker-setup`).

The daemon may be shared with other runs: every image and container made here has a name unique to this
run and the label ``org.modelfmt.test-run=<run>``; the ``made`` fixture removes them at the end, even
after a failure, and then checks the daemon holds nothing of this run (no labelled image or container,
no dangling image of the chains they were built from)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import requests

from modelfmt.errors import DeployError
from modelfmt.serving.docker import cache as docker_cache
from modelfmt.serving.docker import client as docker_cli
from modelfmt.serving.docker import wheels as docker_wheels
from modelfmt.serving.docker.build import build_docker, build_image

BASE_IMAGE = os.environ.get("MODELFMT_TEST_BASE_IMAGE", "modelfmt-base:bookworm")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = uuid.uuid4().hex[:10]
RUN_LABEL = "org.modelfmt.test-run"
LABELS = {RUN_LABEL: RUN}
CACHE_REPO = f"modelfmt-test-deps-{RUN}"  # this run's dependency caches, never another run's
pytestmark = pytest.mark.timeout(600)


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


def _lines(*args: str) -> list[str]:
    return _docker(*args).stdout.split()


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


def _remove_run() -> set[str]:
    """Remove this run's containers and labelled images (tags by name, then untagged ones by ID);
    returns the short IDs of the image chains they were built from, taken before removal."""
    for cid in _lines("ps", "-a", "-q", "--filter", f"label={RUN_LABEL}={RUN}"):
        _docker("rm", "-f", cid)
    listed = _docker(
        "images", "-a", "--filter", f"label={RUN_LABEL}={RUN}", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"
    )
    refs = [line.split() for line in listed.stdout.splitlines() if line.strip()]
    chains = {i for _, image in refs for i in _lines("history", "-q", image) if i != "<missing>"}
    for ref, image in sorted(refs, key=lambda r: r[0] == "<none>:<none>"):
        _docker("image", "rm", image if ref == "<none>:<none>" else ref)
    return chains


@pytest.fixture(scope="module")
def made(docker_ready):
    """The run's cleanup and its check, after every other fixture of the module is torn down."""
    before = set(_lines("images", "-a", "-q"))
    yield
    chains = _remove_run() - before
    left = _lines("images", "-a", "-q", "--filter", f"label={RUN_LABEL}={RUN}")
    assert not left, f"images of test run {RUN} left behind: {left}"
    assert not _lines("ps", "-a", "-q", "--filter", f"label={RUN_LABEL}={RUN}")
    # A step image of this run may stay only while someone else's image builds on it.
    assert not chains & set(_lines("images", "-q", "--filter", "dangling=true"))


@pytest.fixture(scope="module")
def modelfmt_wheel(tmp_path_factory):
    """One modelfmt wheel for every build here: edits to the checkout mid-test cannot change layers."""
    return docker_wheels.modelfmt_wheel(str(tmp_path_factory.mktemp("wheel")))


def _build(model: str, name: str, wheel: str) -> str:
    return build_docker(
        model, f"modelfmt-test-{name}:{RUN}", BASE_IMAGE, modelfmt_wheel=wheel, labels=LABELS, deps_cache=CACHE_REPO
    )


@pytest.fixture(scope="module")
def image(made, sklearn_model_path, modelfmt_wheel):
    return _build(sklearn_model_path, "sklearn", modelfmt_wheel)


def _run_detached(name: str, *args: str) -> None:
    proc = _docker("run", "-d", "--name", name, "--label", f"{RUN_LABEL}={RUN}", "--network", "host", *args)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def container(image):
    """The image serving on a free host port (host network), healthchecked every second."""
    from modelfmt.serving.testing import free_port

    port = free_port("127.0.0.1")
    name = f"modelfmt-test-{RUN}-{uuid.uuid4().hex[:6]}"
    _run_detached(name, "--health-interval", "1s", "-e", f"MODELFMT_PORT={port}", "-e", "MODELFMT_WORKERS=2", image)
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

    from modelfmt.example import frame_to_split
    from modelfmt.flavors.pyfunc import load_model

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
    "        status = {ln.split(':')[0]: ln.split()[1:] for ln in open(f'/proc/{p}/status') if ':' in ln}\n"
    "    except OSError:\n"
    "        continue\n"
    # Parent 0 and not PID 1: entered from outside with `docker exec` (this probe, the HEALTHCHECK's),
    # caught while runc still runs it as root before it becomes the image's user. Only the server's own
    # process tree (PID 1 and its descendants) is checked.
    "    if p != '1' and status['PPid'][0] == '0':\n"
    "        continue\n"
    "    out.append([int(p), status['Uid'][0], argv[2].decode() if len(argv) > 2 else ''])\n"
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
        proc = _docker("run", "--rm", "--label", f"{RUN_LABEL}={RUN}", "--network", "none", image, *args)
        assert proc.returncode == 0 and "--max-body-size" in proc.stdout, proc.stderr
    proc = _docker("run", "--rm", "--label", f"{RUN_LABEL}={RUN}", "--network", "none", image,
                   "modelfmt", "info", "/opt/ml/model")
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
    proc = _docker("run", "--rm", "--label", f"{RUN_LABEL}={RUN}", "--network", "none", "--entrypoint", "python",
                   image, "-c", code)
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout
    members = (
        "'modelfmt/__init__.py'", "'modelfmt/serving/docker/build.py'", "'modelfmt/flavors/sklearn.py'",
        ".dist-info/entry_points.txt'", ".dist-info/RECORD'", ".data/data/share/modelfmt/Dockerfile.template'",
    )
    for member in members:
        assert member in names, names
    assert "bin/modelfmt'" not in names


def test_docker_stop_is_clean(image):
    from modelfmt.serving.testing import free_port

    port = free_port("127.0.0.1")
    name = f"modelfmt-test-{RUN}-stop"
    _run_detached(name, "-e", f"MODELFMT_PORT={port}", "-e", "MODELFMT_WORKERS=1", image)
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
    # The format of the image's model (cloudpickle), so the requirements, and with them the layers, match.
    sk_flavor.save_model(Ridge(alpha=2.0).fit(X, y), other, input_example=X.head(3), serialization_format="cloudpickle")
    tag = _build(other, "ridge", modelfmt_wheel)
    first = docker_cli.image_config(image)
    second = docker_cli.image_config(tag)
    # Same base, user, venv, modelfmt and entrypoint layers; only the model layer differs.
    assert len(first["RootFS"]["Layers"]) == len(second["RootFS"]["Layers"])
    assert first["RootFS"]["Layers"][:-1] == second["RootFS"]["Layers"][:-1]
    assert first["RootFS"]["Layers"][-1] != second["RootFS"]["Layers"][-1]
    # The dependencies came from the same cache image.
    cache = first["Config"]["Labels"][docker_cache.LABEL_DEPS_CACHE]
    assert second["Config"]["Labels"][docker_cache.LABEL_DEPS_CACHE] == cache


def _dangling_layers() -> set[str]:
    """Every layer of every dangling image in the daemon."""
    layers: set[str] = set()
    for image in _lines("images", "-q", "--filter", "dangling=true"):
        config = docker_cli.image_config(image) if docker_cli.image_exists(image) else {}
        layers.update(config.get("RootFS", {}).get("Layers", []))
    return layers


def _stage_layers(cache: str) -> list[str]:
    """The layers a dependency cache image adds to the base image: unique to the build context they came
    from, so no image of another run holds them."""
    base = docker_cli.image_config(BASE_IMAGE)["RootFS"]["Layers"]
    layers = docker_cli.image_config(cache)["RootFS"]["Layers"]
    assert layers[: len(base)] == base and len(layers) > len(base)
    return layers[len(base):]


def test_cold_build_leaves_no_dangling_stage_image(image):
    labels = docker_cli.image_config(image)["Config"]["Labels"]
    assert labels[RUN_LABEL] == RUN and labels[docker_cache.LABEL_IMAGE] == "model"
    cache = labels[docker_cache.LABEL_DEPS_CACHE]
    assert cache.startswith(CACHE_REPO + ":")
    cache_labels = docker_cli.image_config(cache)["Config"]["Labels"]
    assert cache_labels[docker_cache.LABEL_IMAGE] == "deps-cache" and cache_labels[RUN_LABEL] == RUN
    # The dependency stage (wheels + venv) is the tagged cache image, and in no dangling image.
    assert not set(_stage_layers(cache)) & _dangling_layers()


def _tiny_context(tmp_path, final_text: str) -> str:
    """A two-stage context shaped like the template's: a `deps` stage whose step names this test (see
    :func:`_left_by`), and a final stage copying from it."""
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:6]}"
    (ctx / "dep").mkdir(parents=True)
    (ctx / "dep" / "f").write_text(f"a dependency of {_marker(tmp_path)}\n")  # no other test's cache
    (ctx / "model").write_text(final_text)
    (ctx / "Dockerfile").write_text(
        f"FROM {BASE_IMAGE} AS deps\n"
        "COPY dep/ /tmp/dep/\n"
        f"RUN cp -r /tmp/dep /opt/dep && echo {_marker(tmp_path)} > /opt/dep/done\n"
        f"FROM {BASE_IMAGE}\n"
        "COPY --from=deps /opt/dep /opt/dep\n"
        "COPY model /opt/model\n"
    )
    return str(ctx)


def _marker(tmp_path) -> str:
    return f"modelfmt-test-{RUN}-{tmp_path.name}"


def _left_by(tmp_path) -> list[str]:
    """Dangling images and containers whose steps name this test's marker: what its builds left."""
    marker = _marker(tmp_path)
    left = [c for c in _docker("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}}").stdout.splitlines()
            if marker in c]
    for image in _lines("images", "-q", "--filter", "dangling=true"):
        if marker in _docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout:
            left.append(image)
    return left


def test_rebuild_reuses_the_dependency_cache(made, tmp_path):
    tag_a, tag_b = f"modelfmt-test-tiny-a:{RUN}", f"modelfmt-test-tiny-b:{RUN}"
    build_image(_tiny_context(tmp_path, "one\n"), tag_a, labels=LABELS, deps_cache=CACHE_REPO)
    cache = docker_cli.image_config(tag_a)["Config"]["Labels"][docker_cache.LABEL_DEPS_CACHE]
    cache_id = docker_cli.image_id(cache)
    assert cache_id and docker_cli.image_config(cache)["Config"]["Labels"][RUN_LABEL] == RUN
    assert not _left_by(tmp_path)
    # Another context with the same dependency stage: the same key, the cache image reused as it is.
    build_image(_tiny_context(tmp_path, "two\n"), tag_b, labels=LABELS, deps_cache=CACHE_REPO)
    b = docker_cli.image_config(tag_b)
    assert b["Config"]["Labels"][docker_cache.LABEL_DEPS_CACHE] == cache and docker_cli.image_id(cache) == cache_id
    a_layers = docker_cli.image_config(tag_a)["RootFS"]["Layers"]
    assert a_layers[:-1] == b["RootFS"]["Layers"][:-1] and a_layers[-1] != b["RootFS"]["Layers"][-1]
    assert not _left_by(tmp_path)


@pytest.mark.parametrize("how", ["no-deps-cache", "no-cache"])
def test_builds_without_a_cache_image_leave_no_stage_image(made, tmp_path, how):
    ctx = _tiny_context(tmp_path, "three\n")
    tag = f"modelfmt-test-tiny-{how}:{RUN}"
    if how == "no-cache":
        build_image(ctx, tag, labels=LABELS, deps_cache=CACHE_REPO, no_cache=True)
    else:
        build_image(ctx, tag, labels=LABELS, deps_cache=None)
    assert docker_cache.LABEL_DEPS_CACHE not in docker_cli.image_config(tag)["Config"]["Labels"]
    assert not [i for i in docker_cli.images_with_label(f"{RUN_LABEL}={RUN}")
                if docker_cli.image_config(i)["Config"]["Labels"].get(docker_cache.LABEL_IMAGE) == "deps-cache"
                and _marker(tmp_path) in _docker("history", "--no-trunc", i).stdout]
    # The deps stage ran in this build (its step names the test) and left no image behind.
    assert not _left_by(tmp_path)


def test_failed_build_removes_its_step_images(made, tmp_path):
    ctx = _tiny_context(tmp_path, "four\n")
    with open(os.path.join(ctx, "Dockerfile"), "a", encoding="utf-8") as f:
        f.write(f"RUN echo {_marker(tmp_path)} fails on purpose && false\n")
    created: list[str] = []
    try:
        with pytest.raises(DeployError, match="failed"):
            docker_cli.build(ctx, f"modelfmt-test-tiny-fail:{RUN}", labels=LABELS, created=created)
        # Committed before the failing step: the deps stage's COPY and RUN, the final stage's two COPYs.
        assert len(created) == 4 and all(docker_cli.image_exists(i) for i in created)
    finally:
        removed = docker_cli.remove_dangling(created)
    assert sorted(removed) == sorted(created)
    assert not any(docker_cli.image_exists(i) for i in created) and not _left_by(tmp_path)
    # Through build_image: the deps stage is cached, the failed image build's steps are removed.
    with pytest.raises(DeployError, match="failed"):
        build_image(ctx, f"modelfmt-test-tiny-fail:{RUN}", labels=LABELS, deps_cache=CACHE_REPO)
    assert not _left_by(tmp_path)
