"""What every flavor's ``save_model`` does besides writing its own artifact."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from typing import Any, Callable, Iterable

from modelfmt.environment import resolve_requirements, write_environment
from modelfmt.errors import ModelFormatError
from modelfmt.example import save_input_example
from modelfmt.infer import infer_signature
from modelfmt.io import dir_size
from modelfmt.model import PYFUNC_FLAVOR, Model
from modelfmt.signature import ModelSignature

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


def model_file(path: str, conf: dict, key: str, default: str) -> str:
    """The path inside the model that flavor field ``key`` names (``default`` when absent)."""
    value = conf.get(key) or default
    if not isinstance(value, str):
        raise ModelFormatError(f"{key!r} in MLmodel should name a file in the model directory, got {value!r}")
    return os.path.join(path, value)


def add_code_to_sys_path(path: str, code: str | None) -> None:
    """Make a model's saved code importable (as MLflow does, by putting ``code/`` on ``sys.path``)."""
    if code:
        code_dir = model_file(path, {"code": code}, "code", CODE_DIR)
        if os.path.isdir(code_dir) and code_dir not in sys.path:
            sys.path.insert(0, code_dir)


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
    """Copy ``code_paths`` and write the example, environment files and ``MLmodel`` into ``path``
    (a model being built).

    Every flavor block records the copied code as ``code``, as MLflow's do. When there is an input
    example but no signature, the signature is inferred from the example and ``predict(example)``,
    as MLflow does.
    """
    code = copy_code_paths(path, code_paths)
    for block in model.flavors.values():
        block["code"] = code
    if input_example is not None:
        if signature is None:
            output = None
            if predict is not None:
                try:
                    output = predict(input_example)
                except Exception:  # noqa: BLE001 - an output schema is a nicety; saving goes on without it
                    output = None
            signature = infer_signature(input_example, output)
        model.saved_input_example_info = save_input_example(path, input_example)
    model.signature = signature
    model.metadata = metadata
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
    return model
