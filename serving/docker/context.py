"""A docker build context for one model: the rendered ``Dockerfile.template``, the model, the wheels.

Layout of the context (what ``Dockerfile.template`` copies)::

    Dockerfile          rendered template
    wheels/             the model's requirements and modelfmt's dependencies + requirements.txt (pins)
    modelfmt-wheel/     modelfmt itself, one wheel
    entrypoint.sh       `serve` (default) or any other command
    model/              the model directory
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import stat
import sys
from collections.abc import Sequence

from modelfmt.environment import read_requirements, requirement_name
from modelfmt.errors import DeployError, ModelEnvironmentError
from modelfmt.integrity import DIGEST_FILE, SIGNATURE_FILE
from modelfmt.model import PYFUNC_FLAVOR, Model
from modelfmt.open import OpenedModel, open_model
from modelfmt.trust import TRUSTED_TYPES_ENV

TEMPLATE_NAME = "Dockerfile.template"
VENV = "/opt/modelfmt"
MODEL_DIR = "/opt/ml/model"  # where SageMaker and MLflow's images keep the model
UID = 10001
DEFAULT_GLIBC = (2, 36)  # Debian bookworm, the base of python:3.x-slim images up to 3.13
# Never installed from the model's requirements: modelfmt comes as the host's wheel, and the server
# loads MLflow's models without MLflow.
_DROPPED = {"modelfmt", "mlflow", "mlflow-skinny"}
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SLIM_TAG = re.compile(r"(?:^|/)python:(\d+)\.(\d+)")
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")  # dotted names only: they go into the Dockerfile

_log = logging.getLogger(__name__)

ENTRYPOINT = """#!/bin/sh
# Serve the model: `docker run IMAGE`, `docker run IMAGE serve [serve options]` (SageMaker, Azure ML)
# and `docker run IMAGE --workers 4` all land here; any other command runs as given.
set -e
case "${1:-serve}" in
    serve) if [ "$#" -gt 0 ]; then shift; fi ;;
    -*) ;;
    *) exec "$@" ;;
esac
# The model (MODELFMT_MODEL_DIR, KServe's /mnt/models when STORAGE_URI is set, else the image's own), the
# port (SAGEMAKER_BIND_TO_PORT, Knative's PORT, MODELFMT_PORT) and the requirements check are Python's
# (modelfmt.serving.docker.entrypoint), which then execs `modelfmt serve`: the server is PID 1 and gets
# docker stop's SIGTERM itself.
exec python -m modelfmt.serving.docker.entrypoint "$@"
"""


@dataclasses.dataclass(frozen=True)
class Target:
    """The platform the image runs: its base image, CPython version, machine and glibc version."""

    base_image: str
    python_version: str
    machine: str = "x86_64"
    glibc: tuple[int, int] = DEFAULT_GLIBC

    @property
    def platform(self) -> str:
        """A human-readable platform line for the Dockerfile header."""
        return f"linux/{self.machine}, glibc {self.glibc[0]}.{self.glibc[1]}"


def model_python_version(model: Model) -> str | None:
    """``major.minor`` of the Python the model was saved with (from its ``MLmodel``), if recorded."""
    conf = model.flavors.get(PYFUNC_FLAVOR) or {}
    m = re.match(r"(\d+)\.(\d+)", str(conf.get("python_version") or ""))
    return f"{m.group(1)}.{m.group(2)}" if m else None


def default_base_image(model: Model, python_version: str | None = None) -> str:
    """``$MODELFMT_BASE_IMAGE``, else the official slim image of ``python_version`` or the model's
    Python version."""
    env = os.environ.get("MODELFMT_BASE_IMAGE")
    if env:
        return env
    version = python_version or model_python_version(model) or "{}.{}".format(*sys.version_info[:2])
    return f"python:{version}-slim"


def target_from_tag(base_image: str, python_version: str | None = None) -> Target:
    """A target guessed without running the image: the Python version given, else from a
    ``python:X.Y...`` tag; the host's machine; bookworm's glibc."""
    import platform

    if python_version is None:
        m = _SLIM_TAG.search(base_image)
        if not m:
            raise DeployError(
                f"cannot tell the Python version of base image {base_image!r} without running it; "
                "pass --python-version or pull the image first"
            )
        python_version = f"{m.group(1)}.{m.group(2)}"
    return Target(base_image, python_version, platform.machine() or "x86_64", DEFAULT_GLIBC)


def target_from_probe(base_image: str, probe: dict) -> Target:
    """A target from what :func:`modelfmt.serving.docker.client.probe_image` found inside the image."""
    lib, version = (probe.get("libc") or ["", ""])[:2]
    m = re.match(r"(\d+)\.(\d+)", version or "")
    if lib != "glibc" or not m:
        raise DeployError(f"base image {base_image!r} has no glibc ({lib or 'unknown libc'}); use a Debian-based image")
    return Target(base_image, probe["python"], probe["machine"], (int(m.group(1)), int(m.group(2))))


def env_manager_of(opened: OpenedModel) -> str:
    """The image's ``--env-manager``: ``local`` (the default) installs the lines of the model's
    ``requirements.txt``; ``uv`` and ``virtualenv`` install the model's own environment as
    :func:`modelfmt.envs.requirements.model_spec` reads it (see :func:`model_environment`)."""
    return str(opened.options.get("env_manager") or "local")


def model_environment(opened: OpenedModel, python_version: str) -> list[str]:
    """The requirement lines of the model's own environment (``--env-manager uv|virtualenv``): what
    ``python_env.yaml`` lists (build dependencies included) or its ``uv.lock`` pins, checked against
    modelfmt's own requirements; the image's Python must be the model's (major.minor)."""
    from modelfmt.envs.requirements import model_spec

    spec = model_spec(opened)
    if spec.python != python_version:
        raise ModelEnvironmentError(
            f"the model needs Python {spec.python} ({spec.python_source}) and the image would run "
            f"{python_version}: build on a Python {spec.python} base image (e.g. python:{spec.python}-slim), "
            "or use --env-manager local to install its requirements on this one"
        )
    return list(spec.requirements)


def image_requirements(model_path: str) -> list[str]:
    """The model's requirement lines without modelfmt and MLflow (see ``_DROPPED``)."""
    if not os.path.isfile(os.path.join(model_path, "requirements.txt")):
        _log.warning("model at %s has no requirements.txt: the image gets only modelfmt's dependencies", model_path)
    kept: list[str] = []
    dropped: list[str] = []
    for line in read_requirements(model_path):
        (dropped if requirement_name(line) in _DROPPED else kept).append(line)
    if dropped:
        _log.info("not installing %s in the image: modelfmt serves the model", ", ".join(dropped))
    return kept


def find_template(template: str | None = None) -> str:
    """The Dockerfile template: ``template``, ``$MODELFMT_DOCKERFILE_TEMPLATE``, the checkout's
    top-level ``Dockerfile.template``, or the copy installed under ``<prefix>/share/modelfmt``."""
    candidates = [
        template,
        os.environ.get("MODELFMT_DOCKERFILE_TEMPLATE"),
        os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), TEMPLATE_NAME),
        os.path.join(sys.prefix, "share", "modelfmt", TEMPLATE_NAME),
    ]
    for path in candidates:
        if path and os.path.isfile(path):
            return path
    if template:
        raise DeployError(f"Dockerfile template {template!r} does not exist")
    raise DeployError(f"cannot find {TEMPLATE_NAME} (looked next to the serving package and in {sys.prefix}/share)")


def render_dockerfile(target: Target, template: str | None = None, trusted_types: Sequence[str] = ()) -> str:
    """The Dockerfile text for ``target``: the template with its ``{{ name }}`` fields filled.

    ``trusted_types`` (``--trust-type``) are baked into the image as ``MODELFMT_TRUSTED_TYPES``, which
    its server reads; a template without a ``{{ trusted_types }}`` field cannot take them.
    """
    with open(find_template(template), encoding="utf-8") as f:
        text = f.read()
    bad = [t for t in trusted_types if not _TYPE_NAME.match(t)]
    if bad:
        raise DeployError(f"not a type name: {bad[0]!r} (trusted types are dotted names, e.g. mymodule.MyEstimator)")
    if trusted_types and not any(m.group(1) == "trusted_types" for m in _PLACEHOLDER.finditer(text)):
        raise DeployError(
            f"the Dockerfile template has no {{{{ trusted_types }}}} field to set {TRUSTED_TYPES_ENV} with the "
            "trusted types; add it to the template's ENV line, or pass the variable with docker run -e"
        )
    values = {
        "base_image": target.base_image,
        "python_version": target.python_version,
        "platform": target.platform,
        "venv": VENV,
        "model_dir": MODEL_DIR,
        "uid": str(UID),
        "trusted_types": ",".join(trusted_types),
    }

    def fill(m: re.Match) -> str:
        if m.group(1) not in values:
            raise DeployError(f"unknown field {{{{ {m.group(1)} }}}} in the Dockerfile template")
        return values[m.group(1)]

    return _PLACEHOLDER.sub(fill, text)


def write_context(
    model: str | os.PathLike | OpenedModel,
    output_dir: str,
    target: Target,
    *,
    modelfmt_wheel: str | None = None,
    template: str | None = None,
    pip_options: Sequence[str] = (),
) -> str:
    """Write a complete build context for ``model`` (a location or an :class:`OpenedModel`) into
    ``output_dir`` (created; must be empty). The model's ``trusted_types`` opening option is baked into
    the image (:func:`render_dockerfile`); its ``env_manager`` option chooses which requirements the
    image installs (:func:`env_manager_of`)."""
    opened = open_model(model)
    model_path = opened.path
    existed = os.path.isdir(output_dir)
    if existed and os.listdir(output_dir):
        raise DeployError(f"output directory {output_dir!r} is not empty")
    # The caller's trust (an opening option) goes into the image; the host's MODELFMT_TRUSTED_TYPES does not.
    trusted = opened.options.get("trusted_types") or ()
    dockerfile = render_dockerfile(target, template, trusted)  # fails early on a bad template
    if env_manager_of(opened) == "local":
        requirements = image_requirements(model_path)
    else:  # a conflicting pin or another Python fails here, before anything is written
        requirements = model_environment(opened, target.python_version)
    os.makedirs(output_dir, exist_ok=True)
    try:
        _fill_context(model_path, output_dir, target, dockerfile, requirements, modelfmt_wheel, pip_options)
    except BaseException:
        # A half-written context would make the next attempt fail as "not empty": leave none behind.
        if existed:
            for name in os.listdir(output_dir):
                path = os.path.join(output_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        else:
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    return output_dir


def _fill_context(
    model_path: str, output_dir: str, target: Target, dockerfile: str, requirements: list[str],
    modelfmt_wheel: str | None, pip_options: Sequence[str],
) -> None:
    from modelfmt.envs import wheels as docker_wheels

    wheel_dir = os.path.join(output_dir, "modelfmt-wheel")
    own = docker_wheels.modelfmt_wheel(wheel_dir, modelfmt_wheel)
    deps = os.path.join(output_dir, "wheels")
    # A signed model is verified in the container when `docker run` gives a key (MODELFMT_PUBLIC_KEY):
    # the image then needs the sign extra, whatever the model's own requirements say.
    signed = os.path.exists(os.path.join(model_path, SIGNATURE_FILE))
    names = docker_wheels.resolve_wheels(
        [*requirements, own + "[sign]" if signed else own],
        deps,
        python_version=target.python_version,
        machine=target.machine,
        glibc=target.glibc,
        pip_options=pip_options,
    )
    # modelfmt has its own layer (it changes more often than its dependencies).
    for name in [n for n in names if n.startswith("modelfmt-")]:
        os.unlink(os.path.join(deps, name))
        names.remove(name)
    with open(os.path.join(deps, "requirements.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(docker_wheels.pins_from_wheels(names)) + "\n")
    # A model with digests is copied as it is (a __pycache__ it lists must be there: modelfmt's loading
    # writes none); an older one without its bytecode caches, which earlier loads may have left.
    has_digests = os.path.exists(os.path.join(model_path, DIGEST_FILE))
    shutil.copytree(model_path, os.path.join(output_dir, "model"),
                    ignore=None if has_digests else shutil.ignore_patterns("__pycache__"))
    _write(os.path.join(output_dir, "entrypoint.sh"), ENTRYPOINT, 0o755)
    _write(os.path.join(output_dir, "Dockerfile"), dockerfile, 0o644)
    _normalise_modes(output_dir)


def _write(path: str, text: str, mode: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def _normalise_modes(root: str) -> None:
    # The image's user is not the owner of the copied files; they must be world-readable. Fixed modes
    # also keep docker's layer cache keys (which include file modes) stable between builds.
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            executable = os.stat(path).st_mode & stat.S_IXUSR
            os.chmod(path, 0o755 if executable else 0o644)
