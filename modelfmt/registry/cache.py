"""The download cache of registry models: a second start of the same version is a lookup, not a download.

Under :func:`cache_root` (``$MODELFMT_CACHE``, else ``$XDG_CACHE_HOME/modelfmt/models``, else
``~/.cache/modelfmt/models``):

- ``sha256/<digest>/``: a modelfmt version, keyed by its digest (the SHA-256 of its ``model.digests.json``),
  so the same files registered twice, or in two registries, are downloaded once;
- ``mlflow/<server>/<key>/``: what an MLflow server holds (none of it has a digest), keyed by the server's
  URL and what names it there (a model's name, version and creation time; a run and path; an artifact path).

An entry appears whole or not at all: it is filled in a temporary folder beside it and renamed into place
(a concurrent filler that loses the race drops its copy). The files are checked by ``open_model`` against
the model's own digests afterwards, as any directory is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from modelfmt.errors import ModelfmtError, RegistryError

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def cache_root() -> str:
    """The cache directory (see the module docstring); not created here."""
    root = os.environ.get("MODELFMT_CACHE")
    if root:
        return os.path.abspath(os.path.expanduser(root))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "modelfmt", "models")


def digest_entry(digest: str) -> str:
    """The entry of a modelfmt version with ``digest`` (a :class:`RegistryError` for a malformed one)."""
    if not _DIGEST.match(digest or ""):
        raise RegistryError(f"the registry gave {digest!r} as a version's digest: not a SHA-256 hex digest")
    return os.path.join(cache_root(), "sha256", digest)


def server_entry(server: str, *parts: str) -> str:
    """The entry of something an MLflow server at ``server`` holds, named by ``parts``
    (``("models", name, version, created_ms)``, ``("runs", run_id, path)``...)."""
    netloc = urlsplit(server).netloc or server
    host = re.sub(r"[^A-Za-z0-9.-]+", "_", netloc)[:60]
    server_id = hashlib.sha256(server.rstrip("/").encode()).hexdigest()[:12]
    readable = "-".join(quote(p, safe="")[:40] for p in parts)
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    return os.path.join(cache_root(), "mlflow", f"{host}-{server_id}", f"{readable}-{key}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fill(entry: str, filler: Callable[[str], None]) -> str:
    """``entry`` when it is there; else ``filler(tmp)`` writes it in a temporary folder that is then
    renamed to ``entry``. Nothing is left behind when ``filler`` fails."""
    if os.path.isdir(entry):
        return entry
    parent = os.path.dirname(entry)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    except OSError as e:
        raise ModelfmtError(
            f"cannot write the model cache {cache_root()} ({e.strerror or e}): set MODELFMT_CACHE to a "
            "writable directory"
        ) from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        filler(tmp)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not os.path.isdir(entry):  # not a lost race: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return entry


def fill_dir(dst: str, filler: Callable[[str], None]) -> str:
    """Fill a caller's directory ``dst`` (new or empty) the same way: whole or not at all."""
    dst = os.path.abspath(dst)
    if os.path.isdir(dst) and os.listdir(dst):
        raise RegistryError(f"cannot download into {dst}: it is not empty")
    if os.path.isdir(dst):
        os.rmdir(dst)
    return fill(dst, filler)
