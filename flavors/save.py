"""The public save helper every flavor ends with, and the contract a flavor module follows.

A flavor is one module (built in as ``modelfmt.flavors.<name>``, or a plugin registered by another
distribution under the ``modelfmt.flavors`` entry-point group, name = flavor name, value = module). It
provides:

``FLAVOR_NAME: str``
    The name of its block in ``MLmodel`` (``flavors: {<FLAVOR_NAME>: {...}}``).
``save_model(model, path, **kw) -> Model``
    Writes the model directory. Build it inside :func:`atomic_model_dir` (a temporary directory beside
    ``path``, renamed into place only when the block ends without error) and end with
    :func:`finish_model`, which writes ``MLmodel``, the environment files, the input example and the
    copied ``code_paths``.
``load_model(model, **options)``
    The native object. ``model`` is a location or an ``OpenedModel``; start with
    ``modelfmt.open.open_model(model, **options)``: ``options`` are opening options only.
``load_pyfunc(opened, **flavor_options)``
    Called by ``modelfmt.load_model`` with the ``OpenedModel`` (``path``, ``model`` = the ``MLmodel``,
    ``source``, ``options``); returns an object with ``predict(data, params=None)``. ``data`` has
    already been checked against the signature, ``params`` against the params schema. A flavor option
    it does not know is a ``FlavorError`` naming it: take options as named keyword parameters, never
    ``**_``.
``MLFLOW_LOADER_MODULES: tuple[str, ...]`` (optional)
    MLflow ``loader_module`` names whose models this flavor reads (``("mlflow.xgboost",)``). A
    built-in's name (``mlflow.sklearn``...) cannot be taken over: that claim is ignored with a warning.
``can_save(obj) -> bool`` (optional)
    Whether ``modelfmt.save_model(obj, path)`` should use this flavor; plugins are asked before the
    built-in type dispatch, so a plugin wins for a class with a scikit-learn base.
``EXTRA: str`` (optional)
    The pip extra that brings the flavor's library, named when that library is missing.

Opening options (trust, verification, environment, signatures: the set is ``modelfmt.open.OPEN_OPTIONS``)
belong to ``open_model`` and every flavor accepts them by passing them there; everything else given to
``modelfmt.load_model`` goes to ``load_pyfunc`` as a flavor option. README.md, "Writing a flavor", has a
complete example.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Callable, Iterable
from typing import Any

from modelfmt.environment import resolve_requirements, write_environment
from modelfmt.errors import ModelFormatError
from modelfmt.example import save_input_example, split_input_example
from modelfmt.infer import infer_signature
from modelfmt.integrity import record_digests
from modelfmt.io import atomic_model_dir, dir_size
from modelfmt.model import PYFUNC_FLAVOR, Model
from modelfmt.registry.provenance import MLMODEL_FIELD as GIT_FIELD
from modelfmt.registry.provenance import git_info
from modelfmt.signature import ModelSignature

__all__ = ["CODE_DIR", "atomic_model_dir", "copy_code_paths", "finish_model"]

CODE_DIR = "code"


def copy_code_paths(path: str, code_paths: Iterable[str] | None) -> str | None:
    """Copy user code into ``path/code``; returns the flavor's ``code`` entry (or ``None``)."""
    if not code_paths:
        return None
    dest = os.path.join(path, CODE_DIR)
    os.makedirs(dest, exist_ok=True)
    for src in code_paths:
        src = os.fspath(src)
        if not os.path.exists(src):
            raise ModelFormatError(f"code path {src!r} does not exist")
        target = os.path.join(dest, os.path.basename(os.path.normpath(src)))
        if os.path.isdir(src):
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, target)
    return CODE_DIR


def finish_model(
    path: str,
    model: Model,
    *,
    loader_module: str,
    default_requirements: list[str],
    signature: ModelSignature | None = None,
    input_example: Any = None,
    predict: Callable[[Any], Any] | None = None,
    pip_requirements: Any = None,
    extra_pip_requirements: Any = None,
    metadata: dict | None = None,
    code_paths: Iterable[str] | None = None,
    **pyfunc_conf: Any,
) -> Model:
    """Complete the model being built in ``path`` (the directory :func:`atomic_model_dir` yielded) and
    write its ``MLmodel``; returns ``model``.

    ``model`` holds the flavor's own block (``Model().add_flavor(FLAVOR_NAME, ...)``). This copies
    ``code_paths`` (every flavor block records them as ``code``, as MLflow's do), saves the input
    example, writes ``requirements.txt``, ``python_env.yaml`` and ``conda.yaml`` from
    ``default_requirements`` (or the caller's ``pip_requirements`` / ``extra_pip_requirements``), records
    the git commit and repository of the working directory when it is a checkout (``source_git``), and
    adds the ``python_function`` block naming ``loader_module`` (the flavor's module, or the MLflow name
    it declares in ``MLFLOW_LOADER_MODULES``) plus ``pyfunc_conf``. With an input example and no
    ``signature``, the signature is inferred from the example and ``predict(example)``, as MLflow does.
    It ends by recording the digests of every file in ``path`` (``model.digests.json``), so a flavor
    writes nothing into ``path`` after it.
    """
    code = copy_code_paths(path, code_paths)
    for block in model.flavors.values():
        block["code"] = code
    if input_example is not None:
        if signature is None:  # an (input, params) example: the params schema comes from its params
            data, params = split_input_example(input_example)
            signature = infer_signature(data, _example_output(predict, data), params=params)
        model.saved_input_example_info = save_input_example(path, input_example)
    model.signature = signature
    model.metadata = metadata
    # Provenance: the git checkout of the code saving the model (credentials stripped), which the
    # registry copies into a version's tags (modelfmt.registry.provenance).
    git = git_info()
    if git:
        model.extra.setdefault(GIT_FIELD, git)
    requirements = resolve_requirements(default_requirements, pip_requirements, extra_pip_requirements)
    env = write_environment(path, requirements)
    conf = {
        "loader_module": loader_module,
        "env": env,
        "python_version": platform.python_version(),
        "code": code,
        **pyfunc_conf,
    }
    model.flavors = {PYFUNC_FLAVOR: conf, **{k: v for k, v in model.flavors.items() if k != PYFUNC_FLAVOR}}
    model.model_size_bytes = dir_size(path)
    model.save(path)
    # Last: the digests of every file written above (modelfmt.integrity), checked whenever it opens.
    record_digests(path)
    return model


def _example_output(predict: Callable[[Any], Any] | None, example: Any) -> Any:
    if predict is None:
        return None
    try:
        return predict(example)
    except Exception:  # noqa: BLE001 - an output schema is a nicety; saving goes on without it
        return None
