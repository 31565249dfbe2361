"""A client of a registry server over MLflow's REST API 2.0: an MLflow tracking server, or
``modelfmt registry serve`` (which adds transition requests and the activity log under
``/api/2.0/modelfmt/``; MLflow's server has none of those, and says so through a clear error here).

HTTP, credentials, TLS and retries: :mod:`.http`. JSON: :mod:`.wire`. Files: :mod:`.downloads` into
:mod:`.cache`. Registering a local model directory uploads its files through the ``mlflow-artifacts``
route (modelfmt's server: to ``uploads/<random>/``; MLflow's: into a run) and registers that location.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
import uuid
from typing import Any
from urllib.parse import quote

from modelfmt.errors import IntegrityError, RegistryError, RegistryNotFoundError
from modelfmt.registry import cache, downloads, wire
from modelfmt.registry.base import Registry
from modelfmt.registry.entities import ActivityEntry, ModelVersion, Page, RegisteredModel, TransitionRequest
from modelfmt.registry.http import EndpointNotFoundError, HttpClient

API = "api/2.0/mlflow/"
EXT = "api/2.0/modelfmt/"
DIGEST_FILE = "model.digests.json"


class RestRegistry(Registry):
    """The registry at ``url`` (``http(s)://host:port``); ``user`` is sent as ``X-Modelfmt-User`` when a
    method is given no user of its own."""

    def __init__(self, url: str, user: str | None = None) -> None:
        self.uri = url.rstrip("/")
        self.http = HttpClient(self.uri, user=user)
        self._modelfmt: bool | None = None

    # -- plumbing --------------------------------------------------------------------------------
    def _get(self, route: str, **params: Any) -> dict[str, Any]:
        return self.http.call("GET", API + route, params=params)

    def _send(self, method: str, route: str, body: dict[str, Any], user: str | None) -> dict[str, Any]:
        return self.http.call(method, API + route, body={k: v for k, v in body.items() if v is not None}, user=user)

    def _ext(self, method: str, route: str, user: str | None = None, params: dict[str, Any] | None = None,
             body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return self.http.call(method, EXT + route, params=params, body=body, user=user)
        except EndpointNotFoundError:
            raise RegistryError(
                f"the registry at {self.uri} is MLflow's server: transition requests and the activity log "
                "need modelfmt's registry server (modelfmt registry serve)"
            ) from None

    # -- registered models -----------------------------------------------------------------------
    def create_registered_model(self, name: str, description: str = "", tags: dict[str, str] | None = None,
                                user: str | None = None) -> RegisteredModel:
        """Create model ``name``."""
        body = {"name": name, "description": description, "tags": wire.tags_to_json(tags or {})}
        return wire.registered_model_from_json(self._send("POST", "registered-models/create", body, user)
                                               ["registered_model"])

    def get_registered_model(self, name: str) -> RegisteredModel:
        """Model ``name``."""
        return wire.registered_model_from_json(self._get("registered-models/get", name=name)["registered_model"])

    def search_registered_models(self, filter_string: str = "", max_results: int = 100,
                                 order_by: list[str] | None = None,
                                 page_token: str | None = None) -> Page[RegisteredModel]:
        """Models matching ``filter_string`` (MLflow's grammar, evaluated by the server)."""
        d = self._get("registered-models/search", filter=filter_string or None, max_results=max_results,
                      order_by=order_by or None, page_token=page_token)
        return Page([wire.registered_model_from_json(m) for m in d.get("registered_models") or ()],
                    d.get("next_page_token") or None)

    def update_registered_model(self, name: str, description: str, user: str | None = None) -> RegisteredModel:
        """Set the description of ``name``."""
        d = self._send("PATCH", "registered-models/update", {"name": name, "description": description}, user)
        return wire.registered_model_from_json(d["registered_model"])

    def rename_registered_model(self, name: str, new_name: str, user: str | None = None) -> RegisteredModel:
        """Rename ``name``."""
        d = self._send("POST", "registered-models/rename", {"name": name, "new_name": new_name}, user)
        return wire.registered_model_from_json(d["registered_model"])

    def delete_registered_model(self, name: str, user: str | None = None) -> None:
        """Delete ``name``."""
        self._send("DELETE", "registered-models/delete", {"name": name}, user)

    def set_registered_model_tag(self, name: str, key: str, value: str, user: str | None = None) -> None:
        """Set a tag of ``name``."""
        self._send("POST", "registered-models/set-tag", {"name": name, "key": key, "value": value}, user)

    def delete_registered_model_tag(self, name: str, key: str, user: str | None = None) -> None:
        """Delete a tag of ``name``."""
        self._send("DELETE", "registered-models/delete-tag", {"name": name, "key": key}, user)

    # -- aliases ---------------------------------------------------------------------------------
    def set_registered_model_alias(self, name: str, alias: str, version: int, user: str | None = None) -> None:
        """Point ``alias`` at ``version``."""
        self._send("POST", "registered-models/alias", {"name": name, "alias": alias, "version": str(version)}, user)

    def delete_registered_model_alias(self, name: str, alias: str, user: str | None = None) -> None:
        """Remove ``alias``."""
        self._send("DELETE", "registered-models/alias", {"name": name, "alias": alias}, user)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version ``alias`` points at (MLflow answers a missing alias with a 400: a not-found here)."""
        try:
            d = self._get("registered-models/alias", name=name, alias=alias)
        except RegistryNotFoundError:
            raise
        except RegistryError as e:
            if "not found" in e.message.lower():
                raise RegistryNotFoundError(e.message) from None
            raise
        return wire.model_version_from_json(d["model_version"])

    # -- versions --------------------------------------------------------------------------------
    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             run_link: str | None = None, description: str = "",
                             tags: dict[str, str] | None = None, user: str | None = None) -> ModelVersion:
        """Register ``source``: a location the server reads, or a local model directory, uploaded first
        (to modelfmt's server's upload area; to MLflow's, into a run it creates when ``run_id`` is not
        given, since MLflow registers only files inside the run that ``run_id`` names)."""
        if os.path.isdir(source):
            if self.is_modelfmt_server():
                source = self.upload(source, f"uploads/{uuid.uuid4().hex}")
            else:
                run_id = run_id or self._create_run(name, user)
                run = self._get("runs/get", run_id=run_id)["run"]["info"]
                source = self.upload(source, downloads.artifact_path(run["artifact_uri"]) + "/model")
        body = {"name": name, "source": source, "run_id": run_id, "run_link": run_link,
                "description": description, "tags": wire.tags_to_json(tags or {})}
        return wire.model_version_from_json(self._send("POST", "model-versions/create", body, user)["model_version"])

    def is_modelfmt_server(self) -> bool:
        """Whether the server is modelfmt's (it has the ``/api/2.0/modelfmt/`` extensions), asked once."""
        if self._modelfmt is None:
            try:
                self.http.call("GET", EXT + "transition-requests/list", params={"name": "-", "status": "PENDING"})
                self._modelfmt = True
            except EndpointNotFoundError:
                self._modelfmt = False
            except RegistryError:
                self._modelfmt = True  # the route is there; it refused the made-up name
        return self._modelfmt

    def _create_run(self, name: str, user: str | None) -> str:
        # MLflow's Default experiment ("0"), as MLflow's own client registers a bare model folder.
        body = {"experiment_id": "0", "run_name": f"modelfmt register {name}", "start_time": int(time.time() * 1000),
                "tags": [{"key": "mlflow.source.type", "value": "LOCAL"}, {"key": "mlflow.source.name",
                                                                           "value": "modelfmt"}]}
        run_id = str(self._send("POST", "runs/create", body, user)["run"]["info"]["run_id"])
        self._send("POST", "runs/update", {"run_id": run_id, "status": "FINISHED",
                                           "end_time": int(time.time() * 1000)}, user)
        return run_id

    def upload(self, folder: str, dest: str) -> str:
        """Upload the files of ``folder`` to ``dest`` through the ``mlflow-artifacts`` route; the
        ``mlflow-artifacts:`` URI they are at."""
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                full = os.path.join(root, f)
                rel = os.path.relpath(full, folder).replace(os.sep, "/")
                with open(full, "rb") as fh:
                    self.http.open("PUT", f"{downloads.ARTIFACTS_API}/{quote(dest + '/' + rel)}", data=fh).close()
        return f"mlflow-artifacts:/{dest}"

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name``."""
        d = self._get("model-versions/get", name=name, version=str(version))
        return wire.model_version_from_json(d["model_version"])

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[ModelVersion]:
        """The latest version per stage."""
        body = {"name": name, "stages": list(stages) if stages else None}
        d = self._send("POST", "registered-models/get-latest-versions", body, None)
        return [wire.model_version_from_json(v) for v in d.get("model_versions") or ()]

    def search_model_versions(self, filter_string: str = "", max_results: int = 10000,
                              order_by: list[str] | None = None,
                              page_token: str | None = None) -> Page[ModelVersion]:
        """Versions matching ``filter_string``."""
        d = self._get("model-versions/search", filter=filter_string or None, max_results=max_results,
                      order_by=order_by or None, page_token=page_token)
        return Page([wire.model_version_from_json(v) for v in d.get("model_versions") or ()],
                    d.get("next_page_token") or None)

    def update_model_version(self, name: str, version: int, description: str,
                             user: str | None = None) -> ModelVersion:
        """Set a version's description."""
        body = {"name": name, "version": str(version), "description": description}
        return wire.model_version_from_json(self._send("PATCH", "model-versions/update", body, user)["model_version"])

    def delete_model_version(self, name: str, version: int, user: str | None = None) -> None:
        """Delete a version."""
        self._send("DELETE", "model-versions/delete", {"name": name, "version": str(version)}, user)

    def set_model_version_tag(self, name: str, version: int, key: str, value: str,
                              user: str | None = None) -> None:
        """Set a version's tag."""
        body = {"name": name, "version": str(version), "key": key, "value": value}
        self._send("POST", "model-versions/set-tag", body, user)

    def delete_model_version_tag(self, name: str, version: int, key: str, user: str | None = None) -> None:
        """Delete a version's tag."""
        self._send("DELETE", "model-versions/delete-tag", {"name": name, "version": str(version), "key": key}, user)

    def transition_model_version_stage(self, name: str, version: int, stage: str,
                                       archive_existing_versions: bool = False,
                                       user: str | None = None) -> ModelVersion:
        """Move a version to ``stage``."""
        body = {"name": name, "version": str(version), "stage": stage,
                "archive_existing_versions": archive_existing_versions}
        d = self._send("POST", "model-versions/transition-stage", body, user)
        return wire.model_version_from_json(d["model_version"])

    def get_model_version_download_uri(self, name: str, version: int) -> str:
        """Where the server keeps the version's files."""
        return str(self._get("model-versions/get-download-uri", name=name, version=str(version))["artifact_uri"])

    def download_model_version(self, name: str, version: int, dst: str | os.PathLike | None = None) -> str:
        """The version's files in the cache (by digest for modelfmt's versions, by server, name, version and
        creation time for MLflow's), or in ``dst``; a modelfmt version's ``model.digests.json`` must hash
        to the digest the registry recorded."""
        mv = self.get_model_version(name, version)
        if mv.status != "READY":
            raise RegistryError(f"version {version} of {name!r} on {self.uri} is {mv.status}, not READY")

        def filler(tmp: str) -> None:
            downloads.download_uri(self.http, self.get_model_version_download_uri(name, version), tmp)
            if mv.digest:
                check_digest(tmp, mv.digest, f"version {version} of {name!r} on {self.uri}")

        if dst is not None:
            return cache.fill_dir(os.fspath(dst), filler)
        if mv.digest:
            entry = cache.digest_entry(mv.digest)
        else:
            created = str(wire.to_ms(mv.creation_timestamp) or 0)
            entry = cache.server_entry(self.uri, "models", name, str(version), created)
        return cache.fill(entry, filler)

    # -- transition requests (modelfmt's extension) ----------------------------------------------
    def create_transition_request(self, name: str, version: int, stage: str, comment: str,
                                  user: str | None = None,
                                  archive_existing_versions: bool = True) -> TransitionRequest:
        """Ask for a version to move to ``stage``."""
        body = {"name": name, "version": str(version), "stage": stage, "comment": comment,
                "archive_existing_versions": archive_existing_versions}
        return wire.transition_request_from_json(
            self._ext("POST", "transition-requests/create", user, body=body)["transition_request"])

    def approve_transition_request(self, request_id: int, comment: str, user: str | None = None) -> TransitionRequest:
        """Approve (and apply) a pending request."""
        body = {"id": request_id, "comment": comment}
        d = self._ext("POST", "transition-requests/approve", user, body=body)
        return wire.transition_request_from_json(d["transition_request"])

    def reject_transition_request(self, request_id: int, comment: str, user: str | None = None) -> TransitionRequest:
        """Reject a pending request."""
        body = {"id": request_id, "comment": comment}
        d = self._ext("POST", "transition-requests/reject", user, body=body)
        return wire.transition_request_from_json(d["transition_request"])

    def withdraw_transition_request(self, request_id: int, user: str | None = None) -> TransitionRequest:
        """Withdraw a pending request."""
        return wire.transition_request_from_json(self._ext(
            "POST", "transition-requests/withdraw", user, body={"id": request_id})["transition_request"])

    def list_transition_requests(self, name: str, version: int | None = None,
                                 status: str | None = "PENDING") -> list[TransitionRequest]:
        """Requests of a model or version with ``status`` (all when ``None``)."""
        params = {"name": name, "version": None if version is None else str(version), "status": status}
        d = self._ext("GET", "transition-requests/list", params=params)
        return [wire.transition_request_from_json(t) for t in d.get("transition_requests") or ()]

    # -- history (modelfmt's extension) ----------------------------------------------------------
    def activity(self, name: str, version: int | None = None, until: dt.datetime | None = None,
                 max_results: int = 1000, page_token: str | None = None) -> Page[ActivityEntry]:
        """The activity log of ``name``, newest first."""
        params = {"name": name, "version": None if version is None else str(version),
                  "until": wire.to_ms(until), "max_results": max_results, "page_token": page_token}
        d = self._ext("GET", "activity/list", params=params)
        entries = [wire.activity_entry_from_json(e) for e in d.get("entries") or ()]
        return Page(entries, d.get("next_page_token") or None)

    def version_in_stage_at(self, name: str, stage: str, at: dt.datetime) -> int | None:
        """The version that was in ``stage`` at ``at``."""
        when = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
        d = self._ext("GET", "activity/version-in-stage-at", params={"name": name, "stage": stage,
                                                                     "at": when.isoformat()})
        version = d.get("version")
        return None if version in (None, "") else int(version)


def check_digest(folder: str, digest: str, what: str) -> None:
    """An :class:`IntegrityError` unless ``folder``'s ``model.digests.json`` hashes to ``digest``."""
    path = os.path.join(folder, DIGEST_FILE)
    if not os.path.isfile(path):
        raise IntegrityError(f"{what} has no {DIGEST_FILE}, but the registry recorded digest {digest}")
    with open(path, "rb") as f:
        found = hashlib.sha256(f.read()).hexdigest()
    if found != digest:
        raise IntegrityError(f"{what}: its {DIGEST_FILE} hashes to {found}, not the registered digest {digest}")
