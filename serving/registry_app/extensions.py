"""modelfmt's own routes (``/api/2.0/modelfmt/...``): transition requests and the activity log, which
MLflow's server does not have (:class:`~modelfmt.registry.rest.RestRegistry` says so when it meets MLflow's
404 ``ENDPOINT_NOT_FOUND`` for them). Shapes: :mod:`modelfmt.registry.wire`'s ``transition_request`` and
activity entry; versions are strings, times milliseconds, ``at``/``until`` ISO 8601 or milliseconds.
"""

from __future__ import annotations

from flask import Blueprint, Response

from modelfmt.errors import RegistryError
from modelfmt.registry import wire
from modelfmt.registry.entities import TransitionRequest
from modelfmt.serving.registry_app.app import current_user, fields, ok, registry
from modelfmt.serving.registry_app.fields import MAX_ID, Fields

PREFIX = "/api/2.0/modelfmt"
REQUEST_STATUSES = ("PENDING", "APPROVED", "REJECTED", "WITHDRAWN")
# ``status`` of transition-requests/list: absent (or ALL) is every request, as the interface's ``status=None``
# (RestRegistry leaves a ``None`` out of the query and sends PENDING, the interface's default, explicitly).
ALL = "ALL"
MAX_ACTIVITY_RESULTS = 10_000


def blueprint() -> Blueprint:
    """The blueprint of the extension routes."""
    bp = Blueprint("modelfmt_registry", __name__, url_prefix=PREFIX)
    _request_routes(bp)
    _activity_routes(bp)
    return bp


def _request(tr: TransitionRequest) -> Response:
    return ok({"transition_request": wire.transition_request_to_json(tr)})


def _request_routes(bp: Blueprint) -> None:
    @bp.post("/transition-requests/create")
    def create_request() -> Response:
        f = fields()
        return _request(registry().create_transition_request(
            f.required("name"), f.version() or 0, f.stage() or "None", f.string("comment") or "",
            user=current_user(), archive_existing_versions=f.boolean("archive_existing_versions", True)))

    @bp.post("/transition-requests/approve")
    def approve_request() -> Response:
        f = fields()
        return _request(registry().approve_transition_request(_id(f), f.string("comment") or "", user=current_user()))

    @bp.post("/transition-requests/reject")
    def reject_request() -> Response:
        f = fields()
        return _request(registry().reject_transition_request(_id(f), f.string("comment") or "", user=current_user()))

    @bp.post("/transition-requests/withdraw")
    def withdraw_request() -> Response:
        return _request(registry().withdraw_transition_request(_id(fields()), user=current_user()))

    @bp.get("/transition-requests/list")
    def list_requests() -> Response:
        f = fields()
        status = (f.string("status") or ALL).upper()
        if status not in (*REQUEST_STATUSES, ALL):
            raise _bad_status(status)
        requests = registry().list_transition_requests(f.required("name"), f.version(required=False),
                                                       None if status == ALL else status)
        return ok({"transition_requests": [wire.transition_request_to_json(r) for r in requests]})


def _activity_routes(bp: Blueprint) -> None:
    @bp.get("/activity/list")
    def list_activity() -> Response:
        f = fields()
        page = registry().activity(f.required("name"), f.version(required=False), until=f.time("until"),
                                   max_results=f.integer("max_results", 1000, 1, MAX_ACTIVITY_RESULTS) or 1000,
                                   page_token=f.string("page_token") or None)
        return ok({"entries": [wire.activity_entry_to_json(e) for e in page.items],
                   "next_page_token": page.next_page_token})

    @bp.get("/activity/version-in-stage-at")
    def version_in_stage_at() -> Response:
        f = fields()
        at = f.time("at", required=True)
        assert at is not None  # required: absent is an error above
        version = registry().version_in_stage_at(f.required("name"), f.stage() or "None", at)
        return ok({"version": None if version is None else str(version)})


def _id(f: Fields) -> int:
    value = f.integer("id", minimum=1, maximum=MAX_ID)
    if value is None:
        raise RegistryError("Missing value for required parameter 'id'.")
    return value


def _bad_status(status: str) -> RegistryError:
    return RegistryError(f"Invalid value {status!r} for parameter 'status': use one of "
                         f"{', '.join(REQUEST_STATUSES)} or {ALL}")
