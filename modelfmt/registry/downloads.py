"""Reading a model's files where an MLflow tracking server (or modelfmt's registry server) says they are.

- ``mlflow-artifacts:/PATH`` (and ``mlflow-artifacts://HOST:PORT/PATH``): the server's artifact proxy
  (``mlflow server --serve-artifacts``): ``GET /api/2.0/mlflow-artifacts/artifacts?path=`` lists a folder
  (``{"files": [{"path", "is_dir", "file_size"}]}``, names relative to it), ``GET
  /api/2.0/mlflow-artifacts/artifacts/PATH`` downloads a file.
- a local path or ``file:`` URI: what a server without the proxy answers when its artifact store is a
  folder; read directly when that folder is on this machine.
- ``runs:/RUN_ID/PATH``: the run's artifact URI (``GET /api/2.0/mlflow/runs/get``) joined with PATH, or,
  as MLflow 3 logs models, the artifact URI of the run's logged model named PATH's first part
  (``GET /api/2.0/mlflow/logged-models/ID``).

Any other store (``s3://``, ``gs://``...) needs MLflow's own libraries: a clear error suggesting the proxy.
"""

from __future__ import annotations

import concurrent.futures
import os
import posixpath
import shutil
from urllib.parse import quote, unquote, urlsplit

from modelfmt.errors import RegistryError, RegistryNotFoundError
from modelfmt.registry.http import HttpClient

ARTIFACTS_API = "api/2.0/mlflow-artifacts/artifacts"
MLMODEL = "MLmodel"
_WORKERS = 4


def _clean_rel(path: str) -> str:
    return posixpath.normpath("/" + path.strip("/")).lstrip("/") if path.strip("/") else ""


def _client_for(uri: str, client: HttpClient) -> tuple[HttpClient, str]:
    """The server an ``mlflow-artifacts:`` URI names (its own host, or ``client``'s) and the path on it."""
    parts = urlsplit(uri)
    if parts.netloc:
        scheme = urlsplit(client.base_url).scheme or "http"
        client = HttpClient(f"{scheme}://{parts.netloc}", user=client.user)
    return client, _clean_rel(unquote(parts.path))


def artifact_path(uri: str) -> str:
    """The path on the artifact proxy of an ``mlflow-artifacts:`` URI (a :class:`RegistryError` for another
    kind: modelfmt uploads only through the proxy)."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "mlflow-artifacts":
        raise RegistryError(f"cannot upload to {uri}: start the MLflow server with --serve-artifacts")
    return _clean_rel(unquote(parts.path))


def _safe_name(name: str, where: str) -> str:
    # The listing names one level; a name that climbs out (or hides a separator) is refused, never followed.
    base = name.rsplit("/", 1)[-1]
    if base in ("", ".", "..") or "\\" in base or "\0" in base:
        raise RegistryError(f"the server listed an unsafe file name {name!r} under {where}")
    return base


def list_tree(client: HttpClient, path: str) -> list[str]:
    """Every file below ``path`` on the server's artifact proxy, relative to it (posix names)."""
    out: list[str] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        full = posixpath.join(path, rel) if rel else path
        answer = client.call("GET", ARTIFACTS_API, params={"path": full})
        for f in answer.get("files") or ():
            base = _safe_name(f.get("path", ""), full)
            name = posixpath.join(rel, base) if rel else base
            (stack if f.get("is_dir") else out).append(name)
    return sorted(out)


def download_proxied(client: HttpClient, uri: str, dst: str) -> None:
    """Download every file below ``uri`` (``mlflow-artifacts:...``) into the existing folder ``dst``."""
    client, path = _client_for(uri, client)
    files = list_tree(client, path)
    if not files:
        raise RegistryNotFoundError(f"the registry at {client.base_url} has no files at {uri}")

    def one(rel: str) -> None:
        target = os.path.join(dst, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        client.download(ARTIFACTS_API + "/" + quote(posixpath.join(path, rel)), target)

    with concurrent.futures.ThreadPoolExecutor(min(_WORKERS, len(files))) as pool:
        for fut in [pool.submit(one, rel) for rel in files]:
            fut.result()


def local_path(uri: str) -> str | None:
    """The local folder a ``file:`` URI or absolute path names, else ``None`` (another scheme)."""
    parts = urlsplit(uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return unquote(parts.path)
    if os.path.isabs(uri) and (not parts.scheme or len(parts.scheme) == 1):  # C:\... is a path
        return uri
    return None


def download_uri(client: HttpClient, uri: str, dst: str) -> None:
    """Copy the files at ``uri`` (an artifact location the server gave) into the existing folder ``dst``."""
    if urlsplit(uri).scheme.lower() == "mlflow-artifacts":
        download_proxied(client, uri, dst)
        return
    folder = local_path(uri)
    if folder is not None:
        if not os.path.isdir(folder):
            raise RegistryError(
                f"the registry at {client.base_url} keeps the files at {folder}, which is not a folder on this "
                "machine: start the server with --serve-artifacts (MLflow proxies its artifact store then)"
            )
        shutil.copytree(folder, dst, dirs_exist_ok=True, symlinks=False)
        return
    raise RegistryError(
        f"the registry at {client.base_url} keeps the files at {uri}: modelfmt reads mlflow-artifacts:/ URIs "
        "and local folders; start the MLflow server with --serve-artifacts so it proxies that store"
    )


def has_model(client: HttpClient, uri: str) -> bool:
    """Whether ``uri`` (an artifact location) holds an ``MLmodel`` at its top."""
    if urlsplit(uri).scheme.lower() == "mlflow-artifacts":
        client, path = _client_for(uri, client)
        files = client.call("GET", ARTIFACTS_API, params={"path": path}).get("files") or ()
        return MLMODEL in [f.get("path", "").rsplit("/", 1)[-1] for f in files]
    folder = local_path(uri)
    return folder is not None and os.path.isfile(os.path.join(folder, MLMODEL))


def run_model_uri(client: HttpClient, run_id: str, path: str) -> str:
    """The artifact location of the model at ``runs:/RUN_ID/PATH`` (see the module docstring)."""
    run = client.call("GET", "api/2.0/mlflow/runs/get", params={"run_id": run_id}).get("run") or {}
    artifact_uri = (run.get("info") or {}).get("artifact_uri", "")
    rel = _clean_rel(path)
    if artifact_uri:
        candidate = artifact_uri.rstrip("/") + ("/" + rel if rel else "")
        if has_model(client, candidate):
            return candidate
    head, _, rest = rel.partition("/")
    for output in (run.get("outputs") or {}).get("model_outputs") or ():
        model_id = output.get("model_id")
        if not model_id:
            continue
        answer = client.call("GET", f"api/2.0/mlflow/logged-models/{quote(model_id, safe='')}")
        info = (answer.get("model") or {}).get("info") or {}
        if info.get("name") == head and info.get("artifact_uri"):
            return str(info["artifact_uri"]).rstrip("/") + ("/" + rest if rest else "")
    raise RegistryNotFoundError(f"run {run_id} on {client.base_url} has no model at {path!r}")
