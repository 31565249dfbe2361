"""Atomic writes: a model directory built beside its target and renamed into place; one file likewise."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator

from modelfmt.errors import ModelExistsError

_UMASK_LOCK = threading.Lock()


def dir_size(path: str) -> int:
    """Total size in bytes of the files below ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            fp = os.path.join(root, f)
            if not os.path.islink(fp):
                total += os.path.getsize(fp)
    return total


def _umask() -> int:
    # os.umask can only be read by setting it; the lock keeps two saving threads from seeing 0.
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to the file ``path`` through a temporary file beside it, renamed over it: a reader
    sees the old content or the new one, never a part. The file gets the permissions of a new file under
    the umask. No fsync: this guards readers of a live directory (``modelfmt seal``), as the directory
    renames of :func:`atomic_model_dir` do, not against a power cut."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_target(path: str, overwrite: bool) -> None:
    """Refuse to replace anything but an empty directory, or (with ``overwrite``) a model directory."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        if not os.listdir(path):
            return
        if not os.path.isfile(os.path.join(path, "MLmodel")):
            raise ModelExistsError(
                f"{path!r} is a non-empty directory that is not a model (it has no MLmodel file); a model is "
                "saved only to a new or empty directory, or over another model: choose another path or empty it"
            )
        if overwrite:
            return
        raise ModelExistsError(
            f"a model already exists at {path!r}; pass overwrite=True (--overwrite on the command line) to replace it"
        )
    raise ModelExistsError(f"{path!r} exists and is not a directory; a model is saved to a directory")


@contextlib.contextmanager
def atomic_model_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``.

    ``path`` may be missing or an empty directory; with ``overwrite`` it may also be a model directory
    (one holding ``MLmodel``). Anything else is refused with :class:`ModelExistsError` before any work.

    Any exception (including ``KeyboardInterrupt``) removes the temporary directory and leaves
    ``path`` as it was.
    """
    path = os.path.abspath(os.fspath(path))
    _check_target(path, overwrite)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        # mkdtemp makes the directory 0700; a saved model gets what any new directory gets under the umask.
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        _check_target(path, overwrite)
        if os.path.exists(path):
            # Move the old one aside first so the target is never missing a complete model.
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
