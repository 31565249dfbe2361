"""Digests of every file in a model directory: recorded at save, checked before anything loads.

Every save ends by writing :data:`DIGEST_FILE` (``model.digests.json``), and :func:`modelfmt.open.open_model`
checks it before anything in the model is unpickled or imported. Its content is the per-file resource
list that the OpenSSF model-signing format signs: the ``predicate`` of model-signing's in-toto statement
(model-signing 1.1.1, predicate type ``https://model_signing/signature/v1.0``)::

    {"version": 1,
     "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": false,
                       "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore",
                                        "model.digests.json", "model.sig"]},
     "resources": [{"name": "MLmodel", "algorithm": "sha256", "digest": "<64 hex digits>"}, ...]}

so that signing a model (``model.sig``) adds only the signature envelope around the same list. The facts
carried over from model-signing 1.1.1 (``hashing.Config``, ``_serialization.file``):

- every regular file below the model directory is a resource, named by its path relative to the
  directory in POSIX form (``code/helper.py`` on every system); directories themselves are not;
- ignored: the signature (``model.sig``, the name its ``sign`` command writes by default) and, at the top
  of the directory only, ``.git``, ``.gitattributes``, ``.github``, ``.gitignore`` and everything below
  them; we also ignore the digest file itself (it cannot hold its own digest); listing it in
  ``ignore_paths`` makes ``model_signing verify`` skip it too;
- a symbolic link is refused (model-signing's default, ``allow_symlinks`` false);
- resources are sorted by path components (``pathlib.PurePosixPath`` order, not plain string order), the
  order model-signing computes the statement's subject digest in (:func:`subject_digest`);
- SHA-256, files read in 1 MiB chunks, several files hashed at once in threads (hashlib releases the
  GIL while it hashes).

A check skips hashing a file that this user's digest cache (:mod:`modelfmt.digest_cache`) saw unchanged
before (same inode, size, mtime and ctime, on a local file system); saving always hashes.

The public API, also for the registry: :func:`record_digests`, :func:`check_digests`, :func:`read_digests`.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from modelfmt.digest_cache import DigestCache
from modelfmt.errors import IntegrityError, ModelNotFoundError
from modelfmt.io import write_file_atomic

__all__ = [
    "DIGEST_FILE",
    "IGNORED_PATHS",
    "SIGNATURE_FILE",
    "DigestMismatchError",
    "check_digests",
    "hash_files",
    "model_files",
    "read_digests",
    "record_digests",
    "subject_digest",
    "warn_unchecked",
]

DIGEST_FILE = "model.digests.json"
"""The digest file. Not hidden, so that copying ``model/*`` keeps it; MLflow reads only the files its
``MLmodel`` names, so it ignores this one."""
SIGNATURE_FILE = "model.sig"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
IGNORED_PATHS = tuple(sorted((SIGNATURE_FILE, DIGEST_FILE, *GIT_PATHS)))
"""Paths (relative to the model directory; a directory covers everything below it) never recorded."""
ALGORITHM = "sha256"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20
LIST_CAP = 10  # names shown per kind in an error message

_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_log = logging.getLogger(__name__)
_warned = threading.Event()


class DigestMismatchError(IntegrityError):
    """A model directory's files differ from its recorded digests; ``changed``, ``missing`` and
    ``unexpected`` are the sorted file names of each kind."""

    def __init__(self, path: str, changed: list[str], missing: list[str], unexpected: list[str]) -> None:
        self.path, self.changed, self.missing, self.unexpected = path, changed, missing, unexpected
        super().__init__(
            f"the model at {path!r} does not match the digests recorded when it was saved ({DIGEST_FILE}): "
            f"{describe_differences(changed, missing, unexpected)}. Nothing was loaded; after an intended "
            "edit, `modelfmt seal MODEL` records the files as they are now"
        )


def describe_differences(changed: list[str], missing: list[str], unexpected: list[str]) -> str:
    """``"changed: a, b; missing: c; unexpected: d"`` (each list capped, ``and N more``)."""
    parts = [
        f"{label}: {_capped(names)}"
        for label, names in (("changed", changed), ("missing", missing), ("unexpected", unexpected))
        if names
    ]
    return "; ".join(parts)


def _capped(names: list[str]) -> str:
    shown = ", ".join(names[:LIST_CAP])
    return shown if len(names) <= LIST_CAP else f"{shown} and {len(names) - LIST_CAP} more"


def _sort_key(name: str) -> tuple[str, ...]:
    return tuple(name.split("/"))  # PurePosixPath order: by components


def _ignored(rel: str) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in IGNORED_PATHS)


# -- listing and hashing ------------------------------------------------------------------------
def model_files(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(regular files, other entries)`` below ``path``: POSIX names relative to it, sorted, the ignored
    paths left out. "Other entries" are symbolic links and special files (sockets, pipes, devices),
    which a model directory should not hold; links are not followed."""
    root = os.fspath(path)
    files: list[str] = []
    others: list[str] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if _ignored(rel):
                    continue
                if entry.is_symlink():
                    others.append(rel)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(rel)
                elif stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                    files.append(rel)
                else:
                    others.append(rel)
    return sorted(files, key=_sort_key), sorted(others, key=_sort_key)


def _hash_file(full: str) -> str:
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    # Unbuffered: each readinto is one 1 MiB read into the same buffer, no copies.
    with open(full, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def hash_files(
    path: str | os.PathLike, names: Iterable[str], max_workers: int | None = None, cache: DigestCache | None = None
) -> dict[str, str]:
    """``{name: sha256 hex}`` for ``names`` (POSIX paths relative to ``path``), hashed in parallel threads;
    with ``cache``, a file unchanged since it was last hashed is not read again
    (:mod:`modelfmt.digest_cache`)."""
    root = os.fspath(path)
    names = list(names)
    fulls = [os.path.join(root, *n.split("/")) for n in names]
    one = _hash_file if cache is None else functools.partial(cache.digest, hash_file=_hash_file)
    if len(names) <= 1:
        return {n: one(f) for n, f in zip(names, fulls, strict=True)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as pool:
        return dict(zip(names, pool.map(one, fulls), strict=True))


def subject_digest(resources: Iterable[Mapping[str, str]]) -> str:
    """The digest model-signing's statement gives its subject: SHA-256 over the resources' digests (as
    bytes), in the order listed."""
    digest = hashlib.sha256()
    for r in resources:
        digest.update(bytes.fromhex(r["digest"]))
    return digest.hexdigest()


# -- the digest file ----------------------------------------------------------------------------
def _document(resources: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "serialization": {
            "method": "files",
            "hash_type": ALGORITHM,
            "allow_symlinks": False,
            "ignore_paths": list(IGNORED_PATHS),
        },
        "resources": resources,
    }


def _require_model_dir(path: str) -> None:
    if not os.path.isfile(os.path.join(path, "MLmodel")):
        raise ModelNotFoundError(f"no model directory at {path!r} (a directory holding an MLmodel file)")


def record_digests(path: str | os.PathLike) -> dict[str, Any]:
    """Hash every file of the model directory ``path`` and write :data:`DIGEST_FILE` (through a temporary
    file renamed over it); returns the document written. An :class:`IntegrityError` when the directory
    holds a symbolic link or a special file; :class:`ModelNotFoundError` when it is not a model."""
    root = os.fspath(path)
    _require_model_dir(root)
    files, others = model_files(root)
    if others:
        raise IntegrityError(
            f"cannot record the digests of {root!r}: {_capped(others)} "
            f"{'is a symbolic link or special file' if len(others) == 1 else 'are symbolic links or special files'}; "
            "a model directory holds regular files only (model-signing refuses links too)"
        )
    digests = hash_files(root, files)
    doc = _document([{"name": n, "algorithm": ALGORITHM, "digest": digests[n]} for n in files])
    write_file_atomic(os.path.join(root, DIGEST_FILE), (json.dumps(doc, indent=1) + "\n").encode())
    return doc


def read_digests(path: str | os.PathLike) -> dict[str, Any] | None:
    """The digest document of the model directory ``path`` (its :data:`DIGEST_FILE`, checked for form),
    or ``None`` when it has none. An :class:`IntegrityError` when the file is not a digest document."""
    file = os.path.join(os.fspath(path), DIGEST_FILE)
    try:
        with open(file, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise IntegrityError(f"{file!r} is not valid JSON ({e}); the model's digests cannot be checked") from e
    _check_document(file, doc)
    return doc


def _check_document(file: str, doc: Any) -> None:
    def bad(why: str) -> IntegrityError:
        return IntegrityError(f"{file!r} is not a digest file of modelfmt: {why}")

    if not isinstance(doc, dict) or not isinstance(doc.get("resources"), list):
        raise bad("it has no 'resources' list")
    if doc.get("version") != FORMAT_VERSION:
        raise bad(f"version {doc.get('version')!r}, this modelfmt reads version {FORMAT_VERSION}")
    seen: set[str] = set()
    for r in doc["resources"]:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not isinstance(r.get("digest"), str):
            raise bad(f"a resource is not {{name, algorithm, digest}}: {r!r:.80}")
        if r.get("algorithm") != ALGORITHM or not _HEX_DIGEST.match(r["digest"]):
            raise bad(f"resource {r['name']!r} has no SHA-256 digest (64 lower-case hex digits)")
        if r["name"] in seen:
            raise bad(f"resource {r['name']!r} is listed twice")
        seen.add(r["name"])


def check_digests(path: str | os.PathLike, expected: Mapping[str, Any] | None = None, cached: bool = True) -> bool:
    """Check the files of the model directory ``path`` against ``expected`` (a digest document, by
    default the directory's own :data:`DIGEST_FILE`). ``True`` when every file is as recorded, ``False``
    when there is nothing to check against (no digest file); a :class:`DigestMismatchError` naming each
    changed, missing and unexpected file otherwise. ``cached``: files unchanged since this user's last
    check are not hashed again, where :mod:`modelfmt.digest_cache` can tell (``False``: hash them all)."""
    root = os.fspath(path)
    if expected is None:
        doc = read_digests(root)
        if doc is None:
            return False
    else:
        _check_document("the expected digests", expected)
        doc = dict(expected)
    recorded = {r["name"]: r["digest"] for r in doc["resources"]}
    files, others = model_files(root)
    present = set(files)
    missing = [n for n in recorded if n not in present and n not in others]
    unexpected = [n for n in (*files, *others) if n not in recorded]
    common = [n for n in files if n in recorded]
    actual = hash_files(root, common, cache=DigestCache.for_model(root) if cached else None)
    changed = [n for n in common if actual[n] != recorded[n]] + [n for n in others if n in recorded]
    if changed or missing or unexpected:
        raise DigestMismatchError(
            root, sorted(changed, key=_sort_key), sorted(missing, key=_sort_key), sorted(unexpected, key=_sort_key)
        )
    return True


def warn_unchecked(path: str) -> None:
    """Log, once per process, that a model without digests was loaded unchecked.

    A ``logging`` warning rather than ``warnings.warn``: it is about the data a deployment loads, not the
    caller's code, so it goes where the server's logs go; and "once" stays once (the ``warnings`` registry
    shows it again per call site, or always, by the filters in force)."""
    if _warned.is_set():
        return
    _warned.set()
    _log.warning(
        "the model at %r has no %s (saved by MLflow or by modelfmt 0.1/0.2), so its files are not checked; "
        "`modelfmt seal MODEL` records their digests (shown once per process)",
        path,
        DIGEST_FILE,
    )
