"""A registry store's version files: copied in atomically, checked against their digests, read-only.

Layout: ``<artifact_root>/<model name>/<version>/``. A version is built in a temporary directory beside
its place (``.tmp-...``) and renamed into it only once copied and checked, so a reader (or a crash)
never sees half a version. Files are made read-only (0444, directories 0555): a version never changes
after registration; :func:`check_version` proves it on every download.

Digests: a model saved by modelfmt carries ``model.digests.json`` and the copy is checked against it. A
model saved by MLflow has none: they are recorded into the copy at registration (and the version says so
in its ``modelfmt.digests.recorded`` tag), which is what MLflow users expect from registering their
models, and from then on every download is checked like any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import uuid
from typing import Any

import yaml

from modelfmt.errors import IntegrityError, RegistryError
from modelfmt.integrity import (
    DIGEST_FILE,
    DigestMismatchError,
    check_digests,
    describe_differences,
    read_digests,
    record_digests,
)

RECORDED_TAG = "modelfmt.digests.recorded"
_IGNORE = shutil.ignore_patterns(".git", "__pycache__")


def local_source(source: str) -> str:
    """The local model directory ``source`` names (a path or a ``file://`` URI); a
    :class:`RegistryError` when it is not one."""
    path = source[len("file://"):] if source.startswith("file://") else source
    if "://" in path or path.startswith(("models:", "runs:", "mlflow-artifacts:")):
        raise RegistryError(
            f"cannot register {source!r}: modelfmt's store registers a local model directory "
            "(download the model first, or register it through a registry server)"
        )
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(os.path.join(path, "MLmodel")):
        raise RegistryError(f"cannot register {source!r}: it is not a model directory (no MLmodel file in {path!r})")
    return path


def read_mlmodel(path: str) -> dict[str, Any]:
    """The ``MLmodel`` document of the model directory ``path`` (a :class:`RegistryError` when unreadable)."""
    try:
        with open(os.path.join(path, "MLmodel"), encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise RegistryError(f"cannot read the MLmodel file of {path!r}: {e}") from e
    if not isinstance(doc, dict):
        raise RegistryError(f"the MLmodel file of {path!r} is not a mapping")
    return doc


def digest_of(path: str) -> str:
    """SHA-256 (hex) of the version's digest file: the one value that names its whole content."""
    with open(os.path.join(path, DIGEST_FILE), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def stage_copy(source_dir: str, root: str) -> tuple[str, bool]:
    """Copy ``source_dir`` into a new temporary directory under ``root`` and check it; returns the
    directory and whether its digests were recorded here (the source had none). An
    :class:`~modelfmt.errors.IntegrityError` naming the files that differ from the source's digests."""
    os.makedirs(root, exist_ok=True)
    tmp = os.path.join(root, f".tmp-{uuid.uuid4().hex}")
    try:
        shutil.copytree(source_dir, tmp, symlinks=True, ignore=_IGNORE)
        recorded = read_digests(tmp) is None
        if recorded:
            record_digests(tmp)
        else:
            check_digests(tmp)
        return tmp, recorded
    except BaseException:
        remove_tree(tmp)
        raise


def make_read_only(path: str) -> None:
    """Files 0444, directories 0555 (bottom-up, so the walk can still enter them)."""
    for dirpath, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o444)
        os.chmod(dirpath, 0o555)


def remove_tree(path: str) -> None:
    """Remove a version's directory, read-only as it is; nothing when it is gone."""
    if not os.path.lexists(path):
        return

    def _writable_and_retry(func: Any, p: str, _exc: Any) -> None:  # not root: a read-only parent
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            os.chmod(p, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
        func(p)

    for dirpath, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o755)
    shutil.rmtree(path, onerror=_writable_and_retry)


def place(tmp: str, final: str) -> None:
    """Rename the checked copy ``tmp`` to the version's place ``final`` (an orphan left there by a
    crashed registration, which no row names, is removed first)."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    if os.path.lexists(final):
        remove_tree(final)
    make_read_only(tmp)
    os.rename(tmp, final)


def check_version(path: str, digest: str | None, what: str) -> None:
    """Check a stored version's files against its digest file, and that file against the digest
    recorded at registration; an :class:`IntegrityError` naming ``what`` otherwise."""
    if not os.path.isdir(path):
        raise IntegrityError(f"the files of {what} are missing from the registry's artifact store ({path!r})")
    if digest and (not os.path.isfile(os.path.join(path, DIGEST_FILE)) or digest_of(path) != digest):
        raise IntegrityError(
            f"the digest file of {what} is not the one registered ({path!r}): the stored version was changed"
        )
    try:
        checked = check_digests(path)
    except DigestMismatchError as e:
        raise IntegrityError(
            f"the stored files of {what} no longer match the digests recorded at registration ({path!r}): "
            f"{describe_differences(e.changed, e.missing, e.unexpected)}. The registry's copy was changed "
            "after registration; nothing was returned (register the model again as a new version)"
        ) from e
    if not checked:
        raise IntegrityError(f"{what} has no {DIGEST_FILE} in the registry's artifact store ({path!r})")


def copy_out(path: str, dst: str) -> str:
    """Copy a stored version to ``dst`` (a new or empty directory), writable, through a temporary
    directory renamed into place; returns ``dst``."""
    dst = os.path.abspath(os.fspath(dst))
    if os.path.lexists(dst) and not (os.path.isdir(dst) and not os.listdir(dst)):
        raise RegistryError(f"cannot download into {dst!r}: it exists and is not an empty directory")
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(dst)}.tmp-{uuid.uuid4().hex}")
    try:
        shutil.copytree(path, tmp, copy_function=shutil.copyfile)
        for dirpath, _dirs, _files in os.walk(tmp):
            os.chmod(dirpath, 0o777 & ~_umask())
        if os.path.isdir(dst):
            os.rmdir(dst)
        os.rename(tmp, dst)
    except BaseException:
        remove_tree(tmp)
        raise
    return dst


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def signature_json(mlmodel: dict[str, Any]) -> str | None:
    """The ``MLmodel`` signature as JSON text (``None`` when the model has none)."""
    sig = mlmodel.get("signature")
    return json.dumps(sig, sort_keys=True) if isinstance(sig, dict) else None
