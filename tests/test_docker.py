"""Build contexts for the docker image: rendering, wheel resolution, errors. No image is built here
(tests/test_docker_image.py builds and runs one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
from test_docker_image import docker_ready  # noqa: F401 - the fixture: dockerd and the base image

from modelfmt.envs import wheels as docker_wheels
from modelfmt.errors import DeployError, ModelEnvironmentError
from modelfmt.model import Model
from modelfmt.serving.docker import cache as docker_cache
from modelfmt.serving.docker import context as docker_context
from modelfmt.serving.docker.build import generate_dockerfile, resolve_target

BASE_IMAGE = os.environ.get("MODELFMT_TEST_BASE_IMAGE", "modelfmt-base:bookworm")


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", dockerfile)
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_slim_image_target_and_dockerfile():
    # python:3.x-slim cannot be pulled here: its path is checked through the rendering alone.
    target = docker_context.target_from_tag("python:3.12-slim")
    assert (target.python_version, target.glibc) == ("3.12", (2, 36))
    assert docker_context.target_from_tag("registry.example.com/python:3.10.4-slim-bookworm").python_version == "3.10"
    steps = _instructions(docker_context.render_dockerfile(target))
    assert "{{" not in "\n".join(steps)
    froms = [s for s in steps if s.startswith("FROM ")]
    assert froms == ["FROM python:3.12-slim AS deps", "FROM python:3.12-slim"]
    # A venv from the image's own python3 on PATH: /usr/bin (Debian) or /usr/local/bin (slim).
    assert any("python3 -m venv /opt/modelfmt" in s for s in steps)
    assert "USER 10001:10001" in steps
    assert any(s.startswith("HEALTHCHECK") and "/ping" in s for s in steps)
    assert 'ENTRYPOINT ["/usr/local/bin/modelfmt-entrypoint"]' in steps and 'CMD ["serve"]' in steps
    assert "EXPOSE 8080" in steps and any("MODELFMT_PORT=8080" in s for s in steps)
    # Layer order: dependencies, then modelfmt, then the model as the very last layer.
    order = [i for i, s in enumerate(steps) if s.startswith(("COPY wheels/", "COPY modelfmt-wheel/", "COPY model/"))]
    assert len(order) == 3 and order == sorted(order) and order[-1] == len(steps) - 1


def test_template_deps_stage_is_found():
    dockerfile = docker_context.render_dockerfile(docker_context.target_from_tag("python:3.12-slim"))
    base, steps = docker_cache.find_stage(dockerfile)
    assert base == "python:3.12-slim" and steps[0] == "FROM python:3.12-slim AS deps"
    assert [s.split()[0] for s in steps] == ["FROM", "COPY", "RUN"]  # the stage ends at the next FROM
    # A Dockerfile without a deps stage, or with deps as its last stage, gets no cache image.
    assert docker_cache.find_stage("FROM a\nRUN x\n") is None
    assert docker_cache.find_stage("FROM a AS deps\nRUN x\n") is None


def _key_context(root, wheel: bytes, model: bytes) -> str:
    (root / "wheels").mkdir(parents=True)
    (root / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(wheel)
    (root / "model").mkdir()
    (root / "model" / "model.pkl").write_bytes(model)
    return str(root)


def test_cache_key_covers_what_the_stage_copies(tmp_path):
    steps = ["FROM base AS deps", "COPY wheels/ /tmp/wheels/", "RUN pip install /tmp/wheels/*"]
    key = docker_cache.cache_key(_key_context(tmp_path / "a", b"w1", b"m1"), "sha256:1", steps)
    assert re.fullmatch(r"[0-9a-f]{24}", key)
    # Another model, same dependencies: the same key (the model-only rebuild reuses the cache image).
    assert docker_cache.cache_key(_key_context(tmp_path / "b", b"w1", b"m2"), "sha256:1", steps) == key
    # Other wheel bytes, another base image ID, another step: another key.
    assert docker_cache.cache_key(_key_context(tmp_path / "c", b"w2", b"m1"), "sha256:1", steps) != key
    assert docker_cache.cache_key(str(tmp_path / "a"), "sha256:2", steps) != key
    assert docker_cache.cache_key(str(tmp_path / "a"), "sha256:1", [*steps, "ENV X=1"]) != key
    # A source the stage names but the context lacks: the key covers the whole context.
    odd = [*steps[:2], "COPY nothing/ /x/"]
    assert docker_cache.cache_key(str(tmp_path / "a"), "sha256:1", odd) != docker_cache.cache_key(
        str(tmp_path / "b"), "sha256:1", odd
    )


def test_target_needs_a_python_version_for_unknown_images():
    with pytest.raises(DeployError, match="--python-version"):
        docker_context.target_from_tag("example.com/some/image:1.0")
    assert docker_context.target_from_tag("example.com/some/image:1.0", "3.11").python_version == "3.11"


@pytest.mark.usefixtures("docker_ready")
def test_probed_target_of_local_base_image(sklearn_model_path):
    target = resolve_target(sklearn_model_path, BASE_IMAGE)
    assert target.python_version == "3.11" and target.glibc == (2, 36)
    with pytest.raises(DeployError, match="not 3.12"):
        resolve_target(sklearn_model_path, BASE_IMAGE, "3.12")


def test_default_base_image_follows_model_python(sklearn_model_path, monkeypatch):
    model = Model.load(sklearn_model_path)
    monkeypatch.delenv("MODELFMT_BASE_IMAGE", raising=False)
    assert docker_context.default_base_image(model) == "python:{}.{}-slim".format(*sys.version_info[:2])
    monkeypatch.setenv("MODELFMT_BASE_IMAGE", "my/base:1")
    assert docker_context.default_base_image(model) == "my/base:1"


def test_platform_tags_cover_older_manylinux():
    tags = docker_wheels.platform_tags("x86_64", (2, 36))
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_17_x86_64" in tags
    assert {"manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_37_x86_64" not in tags


def test_modelfmt_and_mlflow_lines_are_dropped(sklearn_model_path, tmp_path):
    model = shutil.copytree(sklearn_model_path, tmp_path / "m")
    with open(model / "requirements.txt", "a", encoding="utf-8") as f:
        f.write("modelfmt==0.1.0\nmlflow==3.18.0\nMLflow_Skinny>=3\n")
    kept = docker_context.image_requirements(str(model))
    assert kept and not any(re.match(r"(?i)(modelfmt|mlflow)", r) for r in kept)
    assert any(r.startswith("scikit-learn==") for r in kept)


def test_requirement_without_wheel_is_named(tmp_path):
    # A local index holding only an sdist: resolution fails on it without touching the network.
    links = tmp_path / "links"
    links.mkdir()
    src = tmp_path / "nowheel-1.0"
    src.mkdir()
    (src / "setup.py").write_text("from setuptools import setup\nsetup(name='nowheel', version='1.0')\n")
    with tarfile.open(links / "nowheel-1.0.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="nowheel-1.0")
    with pytest.raises(DeployError, match=r"no wheel of requirement 'nowheel==1\.0' for CPython 3\.11"):
        docker_wheels.resolve_wheels(
            ["nowheel==1.0"],
            str(tmp_path / "out"),
            python_version="3.11",
            machine="x86_64",
            glibc=(2, 36),
            pip_options=["--no-index", "--find-links", str(links)],
        )


@pytest.mark.parametrize("existed", [False, True])
def test_failed_context_leaves_nothing_behind(sklearn_model_path, tmp_path, existed):
    # Resolution fails (an empty local index, no network): the next attempt must not find "not empty".
    links = tmp_path / "links"
    links.mkdir()
    fake = tmp_path / "modelfmt-0.0.0-py3-none-any.whl"
    fake.write_bytes(b"not a wheel")
    out = tmp_path / "ctx"
    if existed:
        out.mkdir()
    target = docker_context.target_from_tag("python:3.11-slim")
    with pytest.raises(DeployError):
        docker_context.write_context(
            sklearn_model_path, str(out), target, modelfmt_wheel=str(fake),
            pip_options=["--no-index", "--find-links", str(links)],
        )
    assert (os.listdir(out) == []) if existed else not out.exists()


def test_mlmodel_is_parsed_once(sklearn_model_path, tmp_path, monkeypatch):
    """generate-dockerfile reads MLmodel once (it read it 4 times in 0.1), and not at all for an OpenedModel."""
    from modelfmt.open import open_model

    calls = []
    real = Model.load.__func__

    def counting(cls, path):
        calls.append(path)
        return real(cls, path)

    monkeypatch.setattr(Model, "load", classmethod(counting))
    links = tmp_path / "links"
    links.mkdir()
    fake = tmp_path / "modelfmt-0.0.0-py3-none-any.whl"
    fake.write_bytes(b"not a wheel")
    offline = dict(modelfmt_wheel=str(fake), pip_options=["--no-index", "--find-links", str(links)])
    # Wheel resolution (after every MLmodel read) fails offline; the count is what matters here.
    with pytest.raises(DeployError):
        generate_dockerfile(sklearn_model_path, str(tmp_path / "a"), "python:3.11-slim", **offline)
    assert len(calls) == 1
    opened = open_model(sklearn_model_path)
    with pytest.raises(DeployError):
        generate_dockerfile(opened, str(tmp_path / "b"), "python:3.11-slim", **offline)
    assert len(calls) == 2


def test_modelfmt_wheel_is_reproducible(tmp_path):
    # A snapshot of the sources, so edits to the checkout during the test cannot differ the builds.
    snapshot = tmp_path / "src"
    snapshot.mkdir()
    docker_wheels.copy_sources(docker_wheels.source_tree(), str(snapshot))
    a = docker_wheels.wheel_from_source(str(snapshot), str(tmp_path / "a"))
    b = docker_wheels.wheel_from_source(str(snapshot), str(tmp_path / "b"))
    assert os.path.basename(a).startswith("modelfmt-") and a.endswith("-py3-none-any.whl")
    # Same sources, same bytes: docker's layer cache then keeps the modelfmt layer.
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()


@pytest.mark.usefixtures("docker_ready")
def test_generated_context(sklearn_model_path, tmp_path):
    out = tmp_path / "ctx"
    generate_dockerfile(sklearn_model_path, str(out), BASE_IMAGE)
    assert sorted(os.listdir(out)) == ["Dockerfile", "entrypoint.sh", "model", "modelfmt-wheel", "wheels"]
    assert (out / "Dockerfile").read_text().count(f"FROM {BASE_IMAGE}") == 2
    assert os.access(out / "entrypoint.sh", os.X_OK)
    assert sorted(os.listdir(out / "model")) == sorted(os.listdir(sklearn_model_path))
    pins = (out / "wheels" / "requirements.txt").read_text().split()
    import sklearn

    assert f"scikit_learn=={sklearn.__version__}" in pins
    assert any(p.startswith(("flask==", "Flask==")) for p in pins) and not any(p.startswith("modelfmt") for p in pins)
    wheels = [n for n in os.listdir(out / "wheels") if n.endswith(".whl")]
    assert len(wheels) == len(pins)
    assert all(re.search(r"-(cp311-cp311|cp311-abi3|cp3\d-abi3|py\d(\.py\d)?-none)-", n) for n in wheels), wheels
    assert len(os.listdir(out / "modelfmt-wheel")) == 1
    # Everything world-readable: the image's user is not the files' owner.
    assert all(os.stat(os.path.join(d, f)).st_mode & 0o004 for d, _, fs in os.walk(out) for f in fs)
    with pytest.raises(DeployError, match="not empty"):
        generate_dockerfile(sklearn_model_path, str(out), BASE_IMAGE)


def test_build_without_daemon_is_one_sentence(sklearn_model_path, tmp_path):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    proc = subprocess.run(
        [sys.executable, "-m", "modelfmt", "build-docker", sklearn_model_path, "-t", "x:1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("modelfmt: error: cannot reach the Docker daemon at unix://")


def test_generate_dockerfile_cli_refuses_a_non_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "modelfmt", "generate-dockerfile", str(tmp_path), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("modelfmt: error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert str(tmp_path) in proc.stderr


def _pinned_model(tmp_path, *extra: str) -> str:
    from test_envs_build import save_linear

    return save_linear(tmp_path / "pinned", extra=list(extra))


def test_env_manager_installs_the_models_own_environment(tmp_path, monkeypatch):
    from modelfmt.open import open_model

    model = _pinned_model(tmp_path, "scikit-learn==1.5.2", "mlflow==3.18.0")
    here = "{}.{}".format(*sys.version_info[:2])
    opened = open_model(model, env_manager="uv")
    own = docker_context.model_environment(opened, here)
    # python_env.yaml's build dependencies and dependencies, without MLflow (modelfmt serves it).
    assert "scikit-learn==1.5.2" in own and any(r.startswith("pip==") for r in own)
    assert not any(r.startswith("mlflow") for r in own)
    # local keeps what the image always installed: requirements.txt's lines.
    local = docker_context.image_requirements(model)
    assert "scikit-learn==1.5.2" in local and not any(r.startswith("pip==") for r in local)
    with pytest.raises(ModelEnvironmentError, match=rf"needs Python {here} .* the image would run 3\.99"):
        docker_context.model_environment(opened, "3.99")
    monkeypatch.delenv("MODELFMT_BASE_IMAGE", raising=False)
    assert resolve_target(opened).base_image == f"python:{here}-slim"


def test_env_manager_conflict_fails_before_the_context_is_written(tmp_path):
    model = _pinned_model(tmp_path, "pandas<2")
    out = tmp_path / "ctx"
    with pytest.raises(ModelEnvironmentError, match=r"'pandas<2', but modelfmt .* requires 'pandas>=2\.0'"):
        generate_dockerfile(model, str(out), "python:3.11-slim", env_manager="uv")
    assert not out.exists()
    for manager, needle in (("uv", "'pandas<2'"), ("conda", "'conda' is not supported")):
        proc = subprocess.run(
            [sys.executable, "-m", "modelfmt", "generate-dockerfile", model, "-o", str(out), "--env-manager", manager],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("modelfmt: error: ") and needle in proc.stderr
        assert not out.exists()


@pytest.mark.usefixtures("docker_ready")
def test_env_manager_context_pins_the_models_environment(tmp_path):
    model = _pinned_model(tmp_path, "scikit-learn==1.5.2")
    out = tmp_path / "ctx"
    generate_dockerfile(model, str(out), BASE_IMAGE, env_manager="uv")
    pins = (out / "wheels" / "requirements.txt").read_text().split()
    assert "scikit_learn==1.5.2" in pins and any(p.startswith("pip==") for p in pins)
