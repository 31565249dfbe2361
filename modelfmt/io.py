"""Atomic model-directory writes: build beside the target, rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from modelfmt.errors import ModelExistsError


def dir_size(path: str) -> int:
    """Total size in bytes of the files below ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def _check_target(path: str, overwrite: bool) -> None:
    if os.path.exists(path) and not overwrite:
        if not os.path.isdir(path) or os.listdir(path):
            raise ModelExistsError(
                f"{path!r} already exists and is not empty; pass overwrite=True to replace it"
            )


@contextlib.contextmanager
def atomic_model_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``.

    Any exception (including ``KeyboardInterrupt``) removes the temporary directory and leaves
    ``path`` as it was.
    """
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        yield tmp
        _check_target(path, overwrite)
        if os.path.exists(path):
            # Move the old one aside first so the target is never missing a complete model.
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            if os.path.isdir(old):
                shutil.rmtree(old, ignore_errors=True)
            else:  # overwrite=True replaced a plain file
                os.remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
