"""The store's transition requests, activity log and point-in-time stage query: a mixin of
:class:`~modelfmt.registry.store.SqlRegistry` (it uses the store's transactions and lookups).

- A request is PENDING until approved (which applies the transition), rejected or withdrawn; only a
  pending request changes. A Production request cannot be approved by its requester
  (:class:`~modelfmt.errors.PermissionDeniedError`); a request is withdrawn by its requester.
- The log is read newest first. A deleted model's log stays readable under its name.
- :meth:`version_in_stage_at` is one query over the log: per version, its last stage-setting entry
  (registration, transition, deletion) at or before the time; of those in the stage, the highest version.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from modelfmt.errors import PermissionDeniedError, RegistryConflictError, RegistryError, RegistryNotFoundError
from modelfmt.registry import schema as t
from modelfmt.registry import search as s
from modelfmt.registry.entities import (
    APPROVED,
    PENDING,
    REJECTED,
    WITHDRAWN,
    ActivityEntry,
    Page,
    TransitionRequest,
)
from modelfmt.registry.store_common import at_ms, check_stage, check_version, from_ms, new_id, now_ms, to_ms, who

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

STATUSES = (PENDING, APPROVED, REJECTED, WITHDRAWN)
_STAGE_ACTIONS = ("register_version", "transition", "delete_version")
MAX_ACTIVITY_PAGE = 10000


class HistoryMixin:
    """Transition requests, the activity log and :meth:`version_in_stage_at` (see the module docstring)."""

    if TYPE_CHECKING:
        def _tx(self, write: bool = True) -> AbstractContextManager[sa.Connection]: ...
        def _model_row(self, conn: sa.Connection, name: str, lock: bool = False) -> Any: ...
        def _version_row(self, conn: sa.Connection, name: str, version: Any) -> tuple[Any, Any]: ...
        def _transition(self, conn: sa.Connection, model: Any, row: Any, stage: str, archive: bool, user: str,
                        authenticated: bool, **details: Any) -> None: ...
        def _log(self, conn: sa.Connection, model_id: int, name: str, action: str, user: str,
                 authenticated: bool, version: int | None = None, stage: str | None = None,
                 **details: Any) -> None: ...
        def _shown(self) -> str: ...

    # -- transition requests -----------------------------------------------------------------------
    def _request(self, conn: sa.Connection, request_id: Any) -> tuple[Any, Any, Any]:
        try:
            rid = int(request_id)
        except (TypeError, ValueError):
            raise RegistryError(f"transition request id {request_id!r} is not a number") from None
        req = conn.execute(sa.select(t.transition_requests).where(t.transition_requests.c.id == rid)).first()
        if req is None:
            raise RegistryNotFoundError(f"transition request {rid} does not exist")
        model = conn.execute(sa.select(t.registered_models).where(t.registered_models.c.id == req.model_id)
                             .with_for_update()).one()
        version = conn.execute(sa.select(t.model_versions).where(t.model_versions.c.id == req.version_id)).one()
        return req, model, version

    def _request_entity(self, conn: sa.Connection, request_id: int) -> TransitionRequest:
        tr, rm, mv = t.transition_requests, t.registered_models, t.model_versions
        row = conn.execute(sa.select(tr, rm.c.name, mv.c.version).join(rm, rm.c.id == tr.c.model_id)
                           .join(mv, mv.c.id == tr.c.version_id).where(tr.c.id == request_id)).one()
        return _request_record(row)

    def create_transition_request(self, name: str, version: int, stage: str, comment: str,
                                  user: str | None = None,
                                  archive_existing_versions: bool = True) -> TransitionRequest:
        """Ask for a version to move to ``stage``: pending until approved, rejected or withdrawn. A
        :class:`RegistryConflictError` when the same request is already pending."""
        stage = check_stage(stage)
        user_id, auth = who(user)
        tr = t.transition_requests
        with self._tx() as conn:
            model, row = self._version_row(conn, name, version)
            self._model_row(conn, name, lock=True)
            dup = conn.execute(sa.select(tr.c.id).where(tr.c.version_id == row.id, tr.c.to_stage == stage,
                                                         tr.c.status == PENDING)).scalar()
            if dup is not None:
                raise RegistryConflictError(
                    f"transition request {dup} to move version {row.version} of {name!r} to {stage} is already pending"
                )
            rid = new_id(conn.execute(tr.insert().values(
                model_id=model.id, version_id=row.id, to_stage=stage, comment=comment or "", requested_by=user_id,
                creation_time=now_ms(), status=PENDING, archive_existing_versions=bool(archive_existing_versions),
            )))
            self._log(conn, model.id, name, "request_transition", user_id, auth, version=row.version,
                      request_id=rid, to_stage=stage, comment=comment or "")
            return self._request_entity(conn, rid)

    def _review(self, request_id: Any, status: str, comment: str, user: str | None) -> TransitionRequest:
        user_id, auth = who(user)
        with self._tx() as conn:
            req, model, version = self._request(conn, request_id)
            if req.status != PENDING:
                raise RegistryConflictError(f"transition request {req.id} is {req.status}, not {PENDING}")
            if status == APPROVED and req.to_stage == "Production" and req.requested_by == user_id:
                raise PermissionDeniedError(
                    f"{user_id!r} requested transition request {req.id} (version {version.version} of "
                    f"{model.name!r} to Production) and cannot approve it: someone else must"
                )
            if status == WITHDRAWN and req.requested_by != user_id:
                raise PermissionDeniedError(
                    f"transition request {req.id} was made by {req.requested_by!r}: only they can withdraw it "
                    "(a reviewer rejects it instead)"
                )
            conn.execute(t.transition_requests.update().where(t.transition_requests.c.id == req.id).values(
                status=status, reviewed_by=user_id, review_comment=comment, review_time=now_ms()))
            action = {APPROVED: "approve_request", REJECTED: "reject_request", WITHDRAWN: "withdraw_request"}[status]
            self._log(conn, model.id, model.name, action, user_id, auth, version=version.version,
                      request_id=req.id, to_stage=req.to_stage, comment=comment or "")
            if status == APPROVED:
                self._transition(conn, model, version, req.to_stage, bool(req.archive_existing_versions), user_id,
                                 auth, request_id=req.id)
            return self._request_entity(conn, req.id)

    def approve_transition_request(self, request_id: int, comment: str, user: str | None = None) -> TransitionRequest:
        """Approve a pending request and apply its transition (in one transaction)."""
        return self._review(request_id, APPROVED, comment or "", user)

    def reject_transition_request(self, request_id: int, comment: str, user: str | None = None) -> TransitionRequest:
        """Reject a pending request."""
        return self._review(request_id, REJECTED, comment or "", user)

    def withdraw_transition_request(self, request_id: int, user: str | None = None) -> TransitionRequest:
        """Withdraw a pending request (only its requester can)."""
        return self._review(request_id, WITHDRAWN, "", user)

    def list_transition_requests(self, name: str, version: int | None = None,
                                 status: str | None = PENDING) -> list[TransitionRequest]:
        """Requests of a model (or one version) with ``status`` (every status when ``None``), oldest first."""
        if status is not None and str(status).upper() not in STATUSES:
            raise RegistryError(f"invalid request status {status!r}: use one of {', '.join(STATUSES)}")
        tr, rm, mv = t.transition_requests, t.registered_models, t.model_versions
        with self._tx(write=False) as conn:
            model = self._model_row(conn, name)
            q = (sa.select(tr, rm.c.name, mv.c.version).join(rm, rm.c.id == tr.c.model_id)
                 .join(mv, mv.c.id == tr.c.version_id).where(tr.c.model_id == model.id).order_by(tr.c.id))
            if version is not None:
                q = q.where(mv.c.version == check_version(version))
            if status is not None:
                q = q.where(tr.c.status == str(status).upper())
            return [_request_record(r) for r in conn.execute(q)]

    # -- history -----------------------------------------------------------------------------------
    def _history_id(self, conn: sa.Connection, name: str) -> int:
        """The model id whose log ``name`` reads: the model of that name, else the last one deleted under it."""
        found = conn.execute(sa.select(t.registered_models.c.id).where(t.registered_models.c.name == name)).scalar()
        if found is None:
            found = conn.execute(sa.select(t.activity.c.model_id).where(t.activity.c.name == name)
                                 .order_by(t.activity.c.id.desc()).limit(1)).scalar()
        if found is None:
            raise RegistryNotFoundError(
                f"registered model {name!r} does not exist in {self._shown()} and has no history"
            )
        return int(found)

    def activity(self, name: str, version: int | None = None, until: dt.datetime | None = None,
                 max_results: int = 1000, page_token: str | None = None) -> Page[ActivityEntry]:
        """The activity log of ``name`` (or one version), newest first, up to ``until`` (inclusive)."""
        limit = s.check_max_results(max_results, MAX_ACTIVITY_PAGE)
        offset = s.decode_page_token(page_token)
        a = t.activity
        with self._tx(write=False) as conn:
            q = sa.select(a).where(a.c.model_id == self._history_id(conn, name))
            if version is not None:
                q = q.where(a.c.version == check_version(version))
            if until is not None:
                q = q.where(a.c.timestamp <= to_ms(until))
            rows = conn.execute(q.order_by(a.c.id.desc()).offset(offset).limit(limit + 1)).all()
        items = [ActivityEntry(id=r.id, name=r.name, action=r.action, user=r.user_id, at=at_ms(r.timestamp),
                               version=r.version, authenticated=bool(r.authenticated), details=json.loads(r.details))
                 for r in rows[:limit]]
        return Page(items, s.encode_page_token(offset + limit) if len(rows) > limit else None)

    def version_in_stage_at(self, name: str, stage: str, at: dt.datetime) -> int | None:
        """The highest version that was in ``stage`` at ``at``, from the log (one query); ``None`` if none."""
        stage = check_stage(stage)
        a, b = t.activity, t.activity.alias("later")
        when = to_ms(at)
        with self._tx(write=False) as conn:
            model_id = self._history_id(conn, name)
            last = (sa.select(sa.func.max(b.c.id)).where(
                b.c.model_id == a.c.model_id, b.c.version == a.c.version, b.c.action.in_(_STAGE_ACTIONS),
                b.c.timestamp <= when).scalar_subquery())
            q = (sa.select(a.c.version).where(a.c.model_id == model_id, a.c.action.in_(_STAGE_ACTIONS),
                                              a.c.timestamp <= when, a.c.stage == stage, a.c.id == last)
                 .order_by(a.c.version.desc()).limit(1))
            found = conn.execute(q).scalar()
        return None if found is None else int(found)


def _request_record(row: Any) -> TransitionRequest:
    return TransitionRequest(
        id=row.id, name=row.name, version=row.version, to_stage=row.to_stage, comment=row.comment,
        requested_by=row.requested_by, created=from_ms(row.creation_time) or dt.datetime.now(dt.timezone.utc),
        status=row.status, reviewed_by=row.reviewed_by, review_comment=row.review_comment,
        reviewed=from_ms(row.review_time), archive_existing_versions=bool(row.archive_existing_versions),
    )
