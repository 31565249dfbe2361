"""What the image does at start (``docker run IMAGE [serve] [options]``): pick the model and the port the
platform asks for, check the image has what the model needs, then ``exec modelfmt serve``.

The model, first match wins:

- ``MODELFMT_MODEL_DIR``: a model directory given by hand (a volume mounted anywhere);
- ``STORAGE_URI`` set (KServe): ``/mnt/models``, which KServe's storage initializer fills, or the one
  model directory below it (a URI naming the folder that holds the model's folder, or an archive of it);
- the image's own model (``MODELFMT_MODEL_PATH``, ``/opt/ml/model``: where SageMaker also unpacks
  ``ModelDataUrl``).

The port, first match wins: ``SAGEMAKER_BIND_TO_PORT`` (SageMaker's multi-container endpoints and
inference pipelines), ``PORT`` when Knative runs the container (``K_SERVICE`` set: KServe's serverless
mode), ``MODELFMT_PORT`` (8080 in the image).

A model that is not the image's own is checked against what the image has installed: a requirement of
its ``requirements.txt`` with no installed distribution at all fails the start, naming each one
(``MODELFMT_CHECK_REQUIREMENTS=false`` only warns); other versions than the pins are logged as a warning
when the model loads, as everywhere else.

``python -m modelfmt.serving.docker.entrypoint --probe PATH`` is the image's ``HEALTHCHECK``: a GET of
``PATH`` on the port chosen above.

Failures print one ``modelfmt: error:`` line and exit 2, as the command line does.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence

from modelfmt.environment import installed_version, read_requirements, requirement_name
from modelfmt.errors import DeployError, ModelEnvironmentError, ModelfmtError

KSERVE_MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts what STORAGE_URI names
IMAGE_MODEL_DIR = "/opt/ml/model"  # the image's own model (context.MODEL_DIR)
DEFAULT_PORT = 8080
MLMODEL = "MLmodel"
# Never installed from a model's requirements (context._DROPPED): modelfmt serves MLflow's models itself.
_NOT_NEEDED = {"modelfmt", "mlflow", "mlflow-skinny"}
# A Knative service of a KServe predictor: `<isvc>-predictor` (raw and newer serverless) or
# `<isvc>-predictor-default` (older KServe); the clients address the model by the InferenceService's name.
_PREDICTOR_SUFFIX = re.compile(r"-predictor(?:-default)?$")
_ARCHIVE_SUFFIX = re.compile(r"\.(?:tar\.gz|tgz|tar|zip)$")

_log = logging.getLogger("modelfmt.entrypoint")


def find_model_dir(root: str) -> str:
    """``root`` when it holds an ``MLmodel``, else the one directory right below it that does; a
    :class:`DeployError` naming what was found otherwise."""
    if os.path.isfile(os.path.join(root, MLMODEL)):
        return root
    if not os.path.isdir(root):
        raise DeployError(f"{root} does not exist: nothing was mounted there")
    found = sorted(
        os.path.join(root, name)
        for name in os.listdir(root)
        if not name.startswith(".") and os.path.isfile(os.path.join(root, name, MLMODEL))
    )
    if len(found) == 1:
        return found[0]
    if not found:
        listed = ", ".join(sorted(os.listdir(root))[:10]) or "nothing"
        raise DeployError(f"no model in {root}: no {MLMODEL} there or in a directory below it (it holds {listed})")
    raise DeployError(
        f"{len(found)} models in {root} ({', '.join(os.path.basename(p) for p in found)}): point STORAGE_URI "
        "at one of them, or set MODELFMT_MODEL_DIR"
    )


def model_location(environ: Mapping[str, str]) -> tuple[str, str]:
    """``(model directory, where it came from)``: ``MODELFMT_MODEL_DIR``, ``STORAGE_URI`` or ``image``."""
    given = environ.get("MODELFMT_MODEL_DIR")
    if given:
        if not os.path.isdir(given):
            raise DeployError(f"MODELFMT_MODEL_DIR={given} is not a directory in the container")
        return given, "MODELFMT_MODEL_DIR"
    if environ.get("STORAGE_URI"):
        return find_model_dir(KSERVE_MODEL_DIR), "STORAGE_URI"
    return environ.get("MODELFMT_MODEL_PATH") or IMAGE_MODEL_DIR, "image"


def _port_value(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise DeployError(f"{name}={value!r} is not a port number (1-65535)")
    return port


def serving_port(environ: Mapping[str, str]) -> int:
    """The port to listen on: ``SAGEMAKER_BIND_TO_PORT``, else Knative's ``PORT`` (with ``K_SERVICE``),
    else ``MODELFMT_PORT``, else 8080."""
    for name, applies in (
        ("SAGEMAKER_BIND_TO_PORT", True),
        ("PORT", bool(environ.get("K_SERVICE"))),
        ("MODELFMT_PORT", True),
    ):
        if applies and environ.get(name):
            return _port_value(name, environ[name])
    return DEFAULT_PORT


def model_name(environ: Mapping[str, str], path: str, source: str) -> str | None:
    """The name V2 clients address the model by, when the server's own default (the registered name, else
    the directory's name) would be wrong: ``None`` when ``MODELFMT_MODEL_NAME`` is set (serve reads it).

    Under KServe the InferenceService's name (from Knative's ``K_SERVICE``), as KServe's own servers do;
    for a model that fills ``/mnt/models`` itself, the last part of ``STORAGE_URI`` (not ``models``)."""
    if environ.get("MODELFMT_MODEL_NAME"):
        return None
    service = environ.get("K_SERVICE")
    if service:
        return _PREDICTOR_SUFFIX.sub("", service) or service
    if source == "STORAGE_URI" and os.path.normpath(path) == KSERVE_MODEL_DIR:
        last = environ["STORAGE_URI"].rstrip("/").rsplit("/", 1)[-1]
        return _ARCHIVE_SUFFIX.sub("", last) or None
    return None


def _applies(line: str) -> bool:
    """Whether a requirement line applies here: no marker, or one that holds (one that cannot be read
    without ``packaging`` is not held against the image)."""
    if ";" not in line:
        return True
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # not every image has packaging; a marker it cannot read is not held against it
        return False
    try:
        req = Requirement(line.split(" #", 1)[0].strip())
    except InvalidRequirement:
        return True
    return req.marker is None or bool(req.marker.evaluate())


def missing_requirements(path: str) -> list[str]:
    """The model's requirement lines that no installed distribution answers (modelfmt and MLflow left
    out: modelfmt serves the model), as ``name (model: <pin or line>, installed: none)``."""
    missing = []
    for line in read_requirements(path):
        name = requirement_name(line)
        if name is None or name in _NOT_NEEDED or not _applies(line):
            continue
        if installed_version(name) is None:
            want = line.split("==", 1)[1].split(";", 1)[0].strip() if "==" in line else line.strip()
            missing.append(f"{name} (model: {want}, installed: none)")
    return missing


def check_requirements(path: str, environ: Mapping[str, str]) -> None:
    """A :class:`ModelEnvironmentError` naming every requirement of the model at ``path`` the image lacks;
    only a warning with ``MODELFMT_CHECK_REQUIREMENTS=false``."""
    missing = missing_requirements(path)
    if not missing:
        return
    message = (
        f"the model at {path} needs packages this image does not have: {', '.join(missing)}; build an image "
        "for this model (modelfmt build-docker), or serve it with an image built from a model with the same "
        "requirements"
    )
    if environ.get("MODELFMT_CHECK_REQUIREMENTS", "").strip().lower() in ("0", "false", "no", "off"):
        _log.warning("%s (MODELFMT_CHECK_REQUIREMENTS=false: starting anyway)", message)
        return
    raise ModelEnvironmentError(message)


def serve_argv(environ: Mapping[str, str], args: Sequence[str] = ()) -> list[str]:
    """The ``modelfmt serve`` command line for this container: model, host, port (and the model's name
    when needed), then ``args`` (``docker run IMAGE serve --workers 4``: options given last win)."""
    path, source = model_location(environ)
    if source != "image":
        check_requirements(path, environ)
    argv = ["modelfmt", "serve", path, "--host", environ.get("MODELFMT_HOST") or "0.0.0.0",
            "--port", str(serving_port(environ))]
    name = model_name(environ, path, source)
    if name:
        argv += ["--model-name", name]
    return [*argv, *args]


def probe(environ: Mapping[str, str], route: str, timeout: float = 4.0) -> int:
    """GET ``route`` on this container's serving port; the exit status of a ``HEALTHCHECK`` (0: 200)."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{serving_port(environ)}{route}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as e:
        print(f"{url}: {e}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Exec ``modelfmt serve`` for this container (``--probe ROUTE``: run the health check instead)."""
    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args[:1] == ["--probe"]:
            return probe(os.environ, args[1] if len(args) > 1 else "/ping")
        command = serve_argv(os.environ, args)
    except (ModelfmtError, OSError) as e:
        print(f"modelfmt: error: {e}", file=sys.stderr)
        return 2
    _log.info("serving %s on port %s", command[2], command[command.index("--port") + 1])
    sys.stdout.flush()
    os.execvp(command[0], command)  # the server becomes PID 1: it gets the platform's SIGTERM itself
    return 0  # pragma: no cover - exec does not return


if __name__ == "__main__":
    sys.exit(main())
