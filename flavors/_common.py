"""Private load-side helpers of the built-in flavors; the save side lives in :mod:`modelfmt.flavors.save`.

``finish_model``, ``copy_code_paths`` and ``CODE_DIR`` are re-exported from there so that the built-in
flavors' imports keep working; new code imports them from ``modelfmt.flavors.save``.
"""

from __future__ import annotations

import os
import sys

from modelfmt.errors import ModelFormatError
from modelfmt.flavors.save import CODE_DIR, copy_code_paths, finish_model

__all__ = ["CODE_DIR", "add_code_to_sys_path", "copy_code_paths", "finish_model", "model_file"]


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
