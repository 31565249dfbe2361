"""MLflow's artifact routes (``/api/2.0/mlflow-artifacts/artifacts``): how MLflow's clients list,
download and upload a version's files.

The ``mlflow-artifacts:/`` namespace this server answers has two parts:

- ``models/<name>/<version>/...``: a registered version's files, read-only. ``get-download-uri``
  answers ``mlflow-artifacts:/models/<name>/<version>``; MLflow's client lists that path, then downloads
  each file. The files come from :meth:`~modelfmt.registry.base.Registry.download_model_version`, checked
  against the version's digests when a client lists the version's root (where every download starts),
  and at the first read of it in this process otherwise. MLflow's model names have no ``/``, so the path
  is unambiguous. An upload there is refused (403): a version's files never change.
- anything else: files uploaded with ``PUT`` (MLflow's ``log_artifacts`` to a ``mlflow-artifacts:/``
  URI), which ``model-versions/create`` may then name as its ``source``; the store copies them into
  the version, so the upload area is only a staging place.

Listing answers MLflow's ``{"files": [{"path": <base name>, "is_dir", "file_size"}]}`` (no ``files``
when empty, as protobuf writes an empty list); downloads stream the file.
"""

from __future__ import annotations

import mimetypes
import os
import posixpath
import tempfile
from urllib.parse import urlsplit

from flask import Blueprint, Response, request, send_file

from modelfmt.errors import (
    INTERNAL_ERROR,
    IntegrityError,
    PermissionDeniedError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
)
from modelfmt.serving.registry_app.app import ok, registry, state
from modelfmt.serving.registry_app.fields import MAX_ID

ROUTE = "/api/2.0/mlflow-artifacts/artifacts"
SCHEME = "mlflow-artifacts"
MODELS = "models"
CHUNK = 1024 * 1024
_PARTIAL = ".upload-"  # the prefix of a file being uploaded (renamed to its name when complete)


def version_uri(name: str, version: int) -> str:
    """The ``mlflow-artifacts:/`` URI of a version's files on this server."""
    return f"{SCHEME}:/{MODELS}/{name}/{version}"


def blueprint() -> Blueprint:
    """The blueprint of the artifact routes."""
    bp = Blueprint("mlflow_artifacts", __name__)

    @bp.get(ROUTE)
    def list_artifacts() -> Response:
        path = safe_path(request.args.get("path", ""))
        return ok({"files": entries} if (entries := _list(path)) else {})

    @bp.get(ROUTE + "/<path:artifact_path>")
    def download_artifact(artifact_path: str) -> Response:
        path = safe_path(artifact_path)
        local = _local_path(path)
        if os.path.isdir(local):
            raise RegistryError(f"{path!r} is a directory: list it with GET {ROUTE}?path={path}")
        if not os.path.isfile(local):
            raise RegistryNotFoundError(f"no artifact at {path!r}")
        mimetype = mimetypes.guess_type(local)[0] or "application/octet-stream"
        return send_file(local, mimetype=mimetype, as_attachment=True, download_name=posixpath.basename(path),
                         conditional=False, etag=False)

    @bp.put(ROUTE + "/<path:artifact_path>")
    def upload_artifact(artifact_path: str) -> Response:
        _upload(safe_path(artifact_path))
        return ok()

    return bp


def safe_path(path: str) -> str:
    """``path`` normalised (no leading or doubled ``/``), or a 400 when it leaves the namespace (``..``,
    an absolute path, a NUL or backslash: what MLflow's server refuses too)."""
    if "\x00" in path or "\\" in path:
        raise RegistryError(f"Invalid path {path!r}: it contains a NUL or a backslash")
    if path.startswith("/") and path.strip("/"):
        raise RegistryError(f"Invalid path {path!r}: an artifact path is relative")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts or any(p.startswith("~") for p in parts[:1]):
        raise RegistryError(f"Invalid path {path!r}: it may not contain '..' or start with '~'")
    return "/".join(parts)


# -- the namespace -------------------------------------------------------------------------------
def _version_dir(name: str, version: int, fresh: bool) -> str:
    """The verified local directory of a version (checked again when ``fresh``)."""
    mv, app = registry().get_model_version(name, version), state()
    # Keyed by where and what the version is too: a deleted version, or a new one under a reused name, is
    # never served from the memo.
    key = (name, version, mv.storage_location or "", mv.digest or "")
    if not fresh:
        with app.lock:
            cached = app.verified.get(key)
        if cached and os.path.isdir(cached):
            return cached
    try:
        directory = os.path.realpath(registry().download_model_version(name, version))
    except IntegrityError as e:
        # The store's copy changed after registration: the server's fault, not the client's (a 500 that
        # says what is wrong, and nothing of the version is served).
        raise RegistryError(e.message, INTERNAL_ERROR) from e
    with app.lock:
        app.verified[key] = directory
    return directory


def _split_version(parts: list[str]) -> tuple[str, int, list[str]]:
    name, raw = parts[1], parts[2]
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise RegistryNotFoundError(f"no artifact at {'/'.join(parts)!r}: {raw!r} is not a version number")
    return name, int(raw), parts[3:]


def _inside(base: str, parts: list[str], shown: str) -> str:
    base = os.path.realpath(base)
    local = os.path.realpath(os.path.join(base, *parts))
    if local != base and not local.startswith(base + os.sep):
        raise RegistryError(f"Invalid path {shown!r}: it leads out of the artifact store")
    return local


def _uploads_dir() -> str:
    directory = state().uploads_dir
    if not directory:
        raise RegistryUnavailableError("this registry server has no upload area: start it with --artifacts-dir")
    return directory


def _local_path(path: str, fresh: bool = False) -> str:
    """The local file or directory ``path`` names (not the virtual ``models`` and ``models/<name>``)."""
    parts = path.split("/") if path else []
    if parts and parts[0] == MODELS:
        if len(parts) < 3:
            raise RegistryError(f"{path!r} is a directory: list it with GET {ROUTE}?path={path}")
        name, version, rest = _split_version(parts)
        return _inside(_version_dir(name, version, fresh and not rest), rest, path)
    return _inside(_uploads_dir(), parts, path)


def _list(path: str) -> list[dict]:
    parts = path.split("/") if path else []
    if parts[:1] == [MODELS] and len(parts) <= 2:
        return _list_models() if len(parts) == 1 else _list_versions(parts[1])
    if not parts:
        entries = [{"path": MODELS, "is_dir": True}]
        if state().uploads_dir and os.path.isdir(_uploads_dir()):
            entries += [e for e in _list_dir(_uploads_dir()) if e["path"] != MODELS]
        return entries
    local = _local_path(path, fresh=True)
    return _list_dir(local) if os.path.isdir(local) else []  # a file lists as nothing, as MLflow's store does


def _list_dir(local: str) -> list[dict]:
    entries = []
    with os.scandir(local) as it:
        for entry in sorted(it, key=lambda e: e.name):
            if entry.name.startswith(_PARTIAL):
                continue  # an upload still being written
            if entry.is_dir():
                entries.append({"path": entry.name, "is_dir": True})
            elif entry.is_file():
                entries.append({"path": entry.name, "is_dir": False, "file_size": entry.stat().st_size})
    return entries


def _list_models() -> list[dict]:
    names, token = [], None
    while True:
        page = registry().search_registered_models(max_results=1000, page_token=token)
        names += [m.name for m in page.items]
        token = page.next_page_token
        if not token:
            return [{"path": n, "is_dir": True} for n in sorted(names)]


def _list_versions(name: str) -> list[dict]:
    rm = registry().get_registered_model(name)  # 404 naming the model when it does not exist
    quoted = rm.name.replace("\\", "\\\\").replace("'", "\\'")
    versions, token = [], None
    while True:
        page = registry().search_model_versions(f"name = '{quoted}'", max_results=10000, page_token=token)
        versions += [v.version for v in page.items if v.name == rm.name]
        token = page.next_page_token
        if not token:
            return [{"path": str(v), "is_dir": True} for v in sorted(versions)]


# -- uploads and sources -------------------------------------------------------------------------
def _upload(path: str) -> None:
    parts = path.split("/") if path else []
    if not parts:
        raise RegistryError("an upload needs a file path: PUT " + ROUTE + "/<path>")
    if parts[0] == MODELS:
        raise PermissionDeniedError(f"{path!r} belongs to a registered version, whose files never change: "
                                    "upload elsewhere and create a new version from it")
    local = _inside(_uploads_dir(), parts, path)
    if os.path.isdir(local):
        raise RegistryError(f"{path!r} is a directory")
    parent = os.path.dirname(local)
    try:
        os.makedirs(parent, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RegistryError(f"{path!r}: a parent of it is a file") from None
    # Written next to its place and renamed: a reader never sees half a file, a failed upload leaves none.
    fd, tmp = tempfile.mkstemp(prefix=_PARTIAL, dir=parent)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := request.stream.read(CHUNK):
                out.write(chunk)
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, local)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def source_directory(source: str) -> str:
    """What ``model-versions/create`` hands the store for ``source``: the local directory of a
    ``mlflow-artifacts:`` URI of this server (an upload, or another version's files), a path on the
    server's disk when the server allows those, or ``source`` itself (other URIs: the store says
    whether it reads them)."""
    parsed = urlsplit(source)
    scheme = parsed.scheme.lower()
    if scheme == SCHEME:
        path = safe_path(parsed.path.lstrip("/"))
        local = _local_path(path, fresh=True)
        if not os.path.isdir(local):
            raise RegistryNotFoundError(f"source {source!r}: no uploaded directory at {path!r} on this server")
        return local
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        local = parsed.path if scheme == "file" else source
        if not state().allow_local_sources:
            raise RegistryError(
                f"source {source!r} is a path on the registry server, which this server does not read: "
                f"upload the model's files to {SCHEME}:/<path> first (MlflowClient log_artifacts, or PUT "
                f"{ROUTE}/<path>)"
                " and create the version from that URI")
        if not os.path.isabs(local):
            raise RegistryError(f"source {source!r} is a relative path: the server cannot know what it is "
                                "relative to; send an absolute path")
        return local
    return source
