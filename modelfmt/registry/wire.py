"""The registry's records as MLflow's REST API writes them, both directions.

Pure functions over dicts (no HTTP here): the registry server (``serving/registry_app``) encodes with the
``*_to_json`` functions, the client (:mod:`.rest`) decodes with the ``*_from_json`` ones. Field names are
MLflow's protobuf names; times are integer milliseconds since the epoch; versions are strings; tags are
``[{"key", "value"}]``. Fields that are ``None`` are left out, as MLflow's server leaves unset fields out.

modelfmt's own version fields ride in tags so that MLflow's clients see them unchanged:
``modelfmt.digest`` is :attr:`ModelVersion.digest` and ``modelfmt.signature`` (JSON) is
:attr:`ModelVersion.signature`; the decoders move them back out of ``tags``. The provenance tags
(``modelfmt.git.*``, ``modelfmt.params.*``, ``modelfmt.metrics.*``) stay plain tags.

Errors: :func:`error_status` is the HTTP status MLflow's server answers for one of our errors (it answers
400 for ``RESOURCE_ALREADY_EXISTS``), :func:`error_from_json` the error a client raises for an answer.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from modelfmt import errors
from modelfmt.registry.entities import ActivityEntry, ModelVersion, RegisteredModel, TransitionRequest

DIGEST_TAG = "modelfmt.digest"
SIGNATURE_TAG = "modelfmt.signature"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

# MLflow's statuses for its error codes (mlflow/protos/databricks.proto as its server maps them): an
# existing resource is a 400 there, not the 409 modelfmt's own table gives.
_MLFLOW_STATUS = {
    errors.RESOURCE_DOES_NOT_EXIST: 404,
    errors.RESOURCE_ALREADY_EXISTS: 400,
    errors.INVALID_PARAMETER_VALUE: 400,
    errors.BAD_REQUEST: 400,
    errors.PERMISSION_DENIED: 403,
    errors.UNAUTHENTICATED: 401,
    errors.TEMPORARILY_UNAVAILABLE: 503,
    errors.INTERNAL_ERROR: 500,
}
# An answer's error_code -> the error a client raises (codes not listed: by status, see error_from_json).
_ERROR_CLASSES: dict[str, type[errors.RegistryError]] = {
    errors.RESOURCE_DOES_NOT_EXIST: errors.RegistryNotFoundError,
    errors.RESOURCE_ALREADY_EXISTS: errors.RegistryConflictError,
    errors.PERMISSION_DENIED: errors.PermissionDeniedError,
    errors.UNAUTHENTICATED: errors.UnauthenticatedError,
    errors.TEMPORARILY_UNAVAILABLE: errors.RegistryUnavailableError,
    "INVALID_STATE": errors.RegistryConflictError,
}


# -- scalars -------------------------------------------------------------------------------------
def to_ms(when: dt.datetime | None) -> int | None:
    """``when`` as integer milliseconds since the epoch (naive datetimes are taken as UTC)."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: Any) -> dt.datetime | None:
    """Milliseconds since the epoch (an int or a numeric string, as protobuf writes int64) as a UTC datetime."""
    if ms is None or ms == "":
        return None
    return _EPOCH + dt.timedelta(milliseconds=int(ms))


def tags_to_json(tags: dict[str, str]) -> list[dict[str, str]]:
    """``{"k": "v"}`` -> ``[{"key": "k", "value": "v"}]``."""
    return [{"key": k, "value": v} for k, v in tags.items()]


def tags_from_json(tags: list[dict[str, Any]] | None) -> dict[str, str]:
    """``[{"key": "k", "value": "v"}]`` -> ``{"k": "v"}`` (a missing value is ``""``, as protobuf omits it)."""
    return {t["key"]: t.get("value", "") for t in tags or ()}


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _version_str(version: int | str | None) -> str | None:
    return None if version is None else str(version)


# -- records -------------------------------------------------------------------------------------
def model_version_to_json(mv: ModelVersion) -> dict[str, Any]:
    """A version as MLflow's ``model_version`` (``digest`` and ``signature`` in its ``modelfmt.*`` tags)."""
    tags = dict(mv.tags)
    if mv.digest:
        tags[DIGEST_TAG] = mv.digest
    if mv.signature is not None:
        tags[SIGNATURE_TAG] = json.dumps(mv.signature, sort_keys=True, separators=(",", ":"))
    return _compact({
        "name": mv.name, "version": str(mv.version),
        "creation_timestamp": to_ms(mv.creation_timestamp),
        "last_updated_timestamp": to_ms(mv.last_updated_timestamp),
        "user_id": mv.user_id, "current_stage": mv.current_stage, "description": mv.description,
        "source": mv.source, "run_id": mv.run_id, "run_link": mv.run_link, "status": mv.status,
        "status_message": mv.status_message, "tags": tags_to_json(tags), "aliases": list(mv.aliases),
    })


def model_version_from_json(d: dict[str, Any]) -> ModelVersion:
    """MLflow's ``model_version`` as a :class:`ModelVersion` (the ``modelfmt.*`` tags moved to fields;
    a signature tag that is not JSON stays a plain tag)."""
    tags = tags_from_json(d.get("tags"))
    digest = tags.pop(DIGEST_TAG, None) or None
    signature = None
    if SIGNATURE_TAG in tags:
        try:
            signature = json.loads(tags[SIGNATURE_TAG])
        except ValueError:
            signature = None
        else:
            del tags[SIGNATURE_TAG]
    return ModelVersion(
        name=d.get("name", ""), version=int(d.get("version") or 0), source=d.get("source", ""),
        run_id=d.get("run_id") or None, run_link=d.get("run_link") or None,
        description=d.get("description", ""), tags=tags, current_stage=d.get("current_stage") or "None",
        aliases=list(d.get("aliases") or ()), status=d.get("status") or "READY",
        status_message=d.get("status_message") or None, signature=signature, digest=digest,
        user_id=d.get("user_id") or None,
        creation_timestamp=from_ms(d.get("creation_timestamp")),
        last_updated_timestamp=from_ms(d.get("last_updated_timestamp")),
    )


def registered_model_to_json(rm: RegisteredModel) -> dict[str, Any]:
    """A model as MLflow's ``registered_model`` (aliases as ``[{"alias", "version"}]``)."""
    return _compact({
        "name": rm.name, "creation_timestamp": to_ms(rm.creation_timestamp),
        "last_updated_timestamp": to_ms(rm.last_updated_timestamp), "description": rm.description,
        "latest_versions": [model_version_to_json(v) for v in rm.latest_versions],
        "tags": tags_to_json(rm.tags),
        "aliases": [{"alias": a, "version": str(v)} for a, v in rm.aliases.items()],
    })


def registered_model_from_json(d: dict[str, Any]) -> RegisteredModel:
    """MLflow's ``registered_model`` as a :class:`RegisteredModel`."""
    return RegisteredModel(
        name=d.get("name", ""), description=d.get("description", ""), tags=tags_from_json(d.get("tags")),
        aliases={a["alias"]: int(a["version"]) for a in d.get("aliases") or ()},
        latest_versions=[model_version_from_json(v) for v in d.get("latest_versions") or ()],
        creation_timestamp=from_ms(d.get("creation_timestamp")),
        last_updated_timestamp=from_ms(d.get("last_updated_timestamp")),
    )


def transition_request_to_json(tr: TransitionRequest) -> dict[str, Any]:
    """A transition request as the ``modelfmt`` extension's ``transition_request``."""
    return _compact({
        "id": tr.id, "name": tr.name, "version": str(tr.version), "to_stage": tr.to_stage,
        "comment": tr.comment, "requested_by": tr.requested_by, "creation_timestamp": to_ms(tr.created),
        "status": tr.status, "reviewed_by": tr.reviewed_by, "review_comment": tr.review_comment,
        "review_timestamp": to_ms(tr.reviewed), "archive_existing_versions": tr.archive_existing_versions,
    })


def transition_request_from_json(d: dict[str, Any]) -> TransitionRequest:
    """The extension's ``transition_request`` as a :class:`TransitionRequest`."""
    return TransitionRequest(
        id=int(d["id"]), name=d.get("name", ""), version=int(d.get("version") or 0),
        to_stage=d.get("to_stage", ""), comment=d.get("comment", ""), requested_by=d.get("requested_by", ""),
        created=from_ms(d.get("creation_timestamp")) or _EPOCH, status=d.get("status", "PENDING"),
        reviewed_by=d.get("reviewed_by"), review_comment=d.get("review_comment"),
        reviewed=from_ms(d.get("review_timestamp")),
        archive_existing_versions=bool(d.get("archive_existing_versions", True)),
    )


def activity_entry_to_json(ae: ActivityEntry) -> dict[str, Any]:
    """An activity entry as the extension writes it (``version`` is ``null`` for model-level actions)."""
    return {
        "id": ae.id, "name": ae.name, "version": _version_str(ae.version), "action": ae.action,
        "user_id": ae.user, "authenticated": ae.authenticated, "timestamp": to_ms(ae.at),
        "details": dict(ae.details),
    }


def activity_entry_from_json(d: dict[str, Any]) -> ActivityEntry:
    """The extension's activity entry as an :class:`ActivityEntry`."""
    version = d.get("version")
    return ActivityEntry(
        id=int(d["id"]), name=d.get("name", ""), action=d.get("action", ""), user=d.get("user_id", ""),
        at=from_ms(d.get("timestamp")) or _EPOCH, version=None if version in (None, "") else int(version),
        authenticated=bool(d.get("authenticated", False)), details=dict(d.get("details") or {}),
    )


# -- errors --------------------------------------------------------------------------------------
def error_status(exc: errors.ModelfmtError) -> int:
    """The HTTP status MLflow's server answers for ``exc``'s error code (400 for an existing resource)."""
    return _MLFLOW_STATUS.get(exc.error_code, exc.http_status)


def error_to_json(exc: errors.ModelfmtError) -> dict[str, str]:
    """MLflow's error body: ``{"error_code": ..., "message": ...}``."""
    return {"error_code": exc.error_code, "message": exc.message}


def error_from_json(status: int, body: Any, url: str = "") -> errors.RegistryError:
    """The registry error for an answer with HTTP ``status`` and (MLflow's) error ``body``; ``url`` is
    named in the message when the body says nothing."""
    code = message = None
    if isinstance(body, dict):
        code, message = body.get("error_code"), body.get("message")
    if not message:
        text = body.strip()[:300] if isinstance(body, str) else ""
        message = f"{url or 'the registry'} answered HTTP {status}" + (f": {text}" if text else "")
    cls = _ERROR_CLASSES.get(code or "")
    if cls is None:
        cls = {404: errors.RegistryNotFoundError, 401: errors.UnauthenticatedError,
               403: errors.PermissionDeniedError}.get(status, errors.RegistryError)
        if status >= 500:
            cls = errors.RegistryUnavailableError
    return cls(message)
