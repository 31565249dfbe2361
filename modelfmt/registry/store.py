"""modelfmt's own registry store: :class:`SqlRegistry`, the :class:`~modelfmt.registry.base.Registry`
interface over SQLAlchemy (SQLite by default, PostgreSQL for teams; :mod:`.database`), the tables of
:mod:`.schema`, version files under an artifact root (:mod:`.storage`).

Every change runs in one transaction with the activity entry that records it, so the log never misses
a change nor records one that did not happen. Transition requests, the activity log and
``version_in_stage_at`` are in :mod:`.store_history` (a mixin of this class).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelfmt.errors import RegistryConflictError, RegistryError, RegistryNotFoundError, RegistryUnavailableError

try:
    import sqlalchemy as sa
except ImportError as _e:  # the one message for a missing extra, not a traceback
    raise RegistryError(
        f"modelfmt's registry store needs the 'registry' extra ({_e.name} is missing): "
        "pip install 'modelfmt[registry]'"
    ) from _e

from modelfmt.registry import schema as t  # noqa: E402 - after the extra's check
from modelfmt.registry import search as s
from modelfmt.registry import storage
from modelfmt.registry.base import Registry
from modelfmt.registry.database import IMMEDIATE, make_engine, upgrade
from modelfmt.registry.entities import STAGES, ModelVersion, Page, RegisteredModel
from modelfmt.registry.provenance import MLMODEL_FIELD, provenance_tags
from modelfmt.registry.store_common import check_name, check_stage, check_version, from_ms, new_id, now_ms, who
from modelfmt.registry.store_history import HistoryMixin

__all__ = ["SqlRegistry"]

_ALIAS = re.compile(r"^[A-Za-z_][\w\-]*$")
MAX_MODELS_PAGE = 1000
MAX_VERSIONS_PAGE = 200000


class SqlRegistry(HistoryMixin, Registry):
    """The registry in the database ``db_uri`` (``sqlite:///PATH`` or ``postgresql://...``), version
    files under ``artifact_root`` (default for SQLite: ``artifacts/`` beside the database file; required
    for PostgreSQL). The schema is created or upgraded when it opens (:func:`.database.upgrade`)."""

    def __init__(self, db_uri: str, artifact_root: str | os.PathLike | None = None) -> None:
        self.uri = db_uri
        self._engine = make_engine(db_uri)
        if artifact_root is None:
            if self._engine.dialect.name != "sqlite":
                raise RegistryError(
                    f"the registry at {self._shown()} needs an artifact root for the versions' files "
                    "(--artifacts-dir DIR): a directory every user of this database can read"
                )
            artifact_root = os.path.join(os.path.dirname(os.path.abspath(self._engine.url.database)), "artifacts")
        self.artifact_root = os.path.abspath(os.fspath(artifact_root))
        upgrade(self._engine, self._shown())

    def _shown(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close the database connections."""
        self._engine.dispose()

    # -- transactions ------------------------------------------------------------------------------
    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sa.Connection]:
        try:
            with self._engine.connect().execution_options(**{IMMEDIATE: write}) as conn, conn.begin():
                yield conn
        except sa.exc.IntegrityError as e:
            raise RegistryConflictError(f"the registry refused a conflicting change: {e.orig}") from e
        except sa.exc.OperationalError as e:
            raise RegistryUnavailableError(f"the registry database {self._shown()} failed: {e.orig}") from e

    def _log(self, conn: sa.Connection, model_id: int, name: str, action: str, user: str, authenticated: bool,
             version: int | None = None, stage: str | None = None, **details: Any) -> None:
        conn.execute(t.activity.insert().values(
            model_id=model_id, name=name, version=version, action=action, stage=stage, user_id=user,
            authenticated=authenticated, timestamp=now_ms(), details=json.dumps(details, sort_keys=True),
        ))

    # -- lookups -----------------------------------------------------------------------------------
    def _model_row(self, conn: sa.Connection, name: str, lock: bool = False) -> Any:
        q = sa.select(t.registered_models).where(t.registered_models.c.name == name)
        row = conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise RegistryNotFoundError(f"registered model {name!r} does not exist in {self._shown()}")
        return row

    def _version_row(self, conn: sa.Connection, name: str, version: Any) -> tuple[Any, Any]:
        v = check_version(version)
        model = self._model_row(conn, name)
        row = conn.execute(sa.select(t.model_versions).where(
            t.model_versions.c.model_id == model.id, t.model_versions.c.version == v)).first()
        if row is None:
            raise RegistryNotFoundError(f"version {v} of registered model {name!r} does not exist")
        return model, row

    def _touch(self, conn: sa.Connection, model_id: int) -> None:
        conn.execute(t.registered_models.update().where(t.registered_models.c.id == model_id)
                     .values(last_updated_time=now_ms()))

    def _versions(self, conn: sa.Connection, rows: list[Any], names: dict[int, str]) -> list[ModelVersion]:
        """Version records for ``rows`` of model_versions (tags and aliases in two more queries)."""
        ids = [r.id for r in rows]
        tags: dict[int, dict[str, str]] = {i: {} for i in ids}
        aliases: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            for tr in conn.execute(sa.select(t.model_version_tags).where(t.model_version_tags.c.version_id.in_(ids))
                                   .order_by(t.model_version_tags.c.key)):
                tags[tr.version_id][tr.key] = tr.value
            for ar in conn.execute(sa.select(t.aliases).where(t.aliases.c.version_id.in_(ids))
                                   .order_by(t.aliases.c.alias)):
                aliases[ar.version_id].append(ar.alias)
        return [ModelVersion(
            name=names[r.model_id], version=r.version, source=r.source, run_id=r.run_id, run_link=r.run_link,
            description=r.description, tags=tags[r.id], current_stage=r.current_stage, aliases=aliases[r.id],
            status=r.status, status_message=r.status_message,
            signature=json.loads(r.signature) if r.signature else None, digest=r.digest,
            storage_location=r.storage_location, user_id=r.user_id, authenticated=bool(r.authenticated),
            creation_timestamp=from_ms(r.creation_time), last_updated_timestamp=from_ms(r.last_updated_time),
        ) for r in rows]

    def _latest(self, conn: sa.Connection, model: Any, stages: list[str] | None) -> list[ModelVersion]:
        mv = t.model_versions
        wanted = [check_stage(x) for x in stages] if stages else list(STAGES)
        top = (sa.select(mv.c.current_stage, sa.func.max(mv.c.version).label("v"))
               .where(mv.c.model_id == model.id, mv.c.current_stage.in_(wanted))
               .group_by(mv.c.current_stage).subquery())
        rows = list(conn.execute(sa.select(mv).join(top, sa.and_(mv.c.current_stage == top.c.current_stage,
                                                            mv.c.version == top.c.v))
                            .where(mv.c.model_id == model.id)).all())
        rows.sort(key=lambda r: wanted.index(r.current_stage))
        return self._versions(conn, rows, {model.id: model.name})

    def _model(self, conn: sa.Connection, row: Any) -> RegisteredModel:
        tags = {r.key: r.value for r in conn.execute(
            sa.select(t.registered_model_tags).where(t.registered_model_tags.c.model_id == row.id)
            .order_by(t.registered_model_tags.c.key))}
        aliases = {r.alias: r.version for r in conn.execute(
            sa.select(t.aliases.c.alias, t.model_versions.c.version)
            .join(t.model_versions, t.model_versions.c.id == t.aliases.c.version_id)
            .where(t.aliases.c.model_id == row.id).order_by(t.aliases.c.alias))}
        return RegisteredModel(
            name=row.name, description=row.description, tags=tags, aliases=aliases,
            latest_versions=self._latest(conn, row, None),
            creation_timestamp=from_ms(row.creation_time), last_updated_timestamp=from_ms(row.last_updated_time),
        )

    # -- registered models -------------------------------------------------------------------------
    def _create_model(self, conn: sa.Connection, name: str, description: str, tags: dict[str, str] | None,
                      user: str, authenticated: bool) -> Any:
        if conn.execute(sa.select(t.registered_models.c.id).where(t.registered_models.c.name == name)).first():
            raise RegistryConflictError(f"registered model {name!r} already exists")
        now = now_ms()
        model_id = new_id(conn.execute(t.registered_models.insert().values(
            name=name, description=description or "", last_version=0, creation_time=now, last_updated_time=now,
        )))
        for key, value in (tags or {}).items():
            conn.execute(t.registered_model_tags.insert().values(model_id=model_id, key=_key(key), value=str(value)))
        self._log(conn, model_id, name, "create_model", user, authenticated, description=description or "",
                  tags=dict(tags or {}))
        return self._model_row(conn, name)

    def create_registered_model(self, name: str, description: str = "", tags: dict[str, str] | None = None,
                                user: str | None = None) -> RegisteredModel:
        """Create model ``name`` (a :class:`RegistryConflictError` when it exists)."""
        name = check_name(name)
        with self._tx() as conn:
            row = self._create_model(conn, name, description, tags, *who(user))
            return self._model(conn, row)

    def get_registered_model(self, name: str) -> RegisteredModel:
        """Model ``name`` with its tags, aliases and latest version per stage."""
        with self._tx(write=False) as conn:
            return self._model(conn, self._model_row(conn, name))

    def search_registered_models(self, filter_string: str = "", max_results: int = 100,
                                 order_by: list[str] | None = None,
                                 page_token: str | None = None) -> Page[RegisteredModel]:
        """Models matching MLflow's filter grammar (:mod:`.search`), ``name`` ascending by default."""
        clauses = s.parse_filter(filter_string, s.MODEL_ATTRIBUTES)
        order = s.parse_order_by(order_by, s.MODEL_ORDER_KEYS) or [("name", True)]
        limit = s.check_max_results(max_results, MAX_MODELS_PAGE)
        offset = s.decode_page_token(page_token)
        rm = t.registered_models
        q = sa.select(rm).where(*[_model_clause(c) for c in clauses])
        q = q.order_by(*[_ordered(_MODEL_COLUMNS[k], asc) for k, asc in order], rm.c.id)
        with self._tx(write=False) as conn:
            rows = conn.execute(q.offset(offset).limit(limit + 1)).all()
            items = [self._model(conn, r) for r in rows[:limit]]
        return Page(items, s.encode_page_token(offset + limit) if len(rows) > limit else None)

    def update_registered_model(self, name: str, description: str, user: str | None = None) -> RegisteredModel:
        """Set the description of ``name``."""
        with self._tx() as conn:
            row = self._model_row(conn, name, lock=True)
            conn.execute(t.registered_models.update().where(t.registered_models.c.id == row.id)
                         .values(description=description or "", last_updated_time=now_ms()))
            self._log(conn, row.id, name, "update_description", *who(user),
                      **_change(row.description, description or ""))
            return self._model(conn, self._model_row(conn, name))

    def rename_registered_model(self, name: str, new_name: str, user: str | None = None) -> RegisteredModel:
        """Rename ``name``: versions, aliases, requests and history follow (the history keeps the names
        entries were made under); the versions' files move to the new name's folder."""
        new_name = check_name(new_name, "new model name")
        with self._tx() as conn:
            row = self._model_row(conn, name, lock=True)
            if conn.execute(sa.select(t.registered_models.c.id).where(t.registered_models.c.name == new_name)).first():
                raise RegistryConflictError(f"cannot rename {name!r}: registered model {new_name!r} already exists")
            old_dir, new_dir = self._model_dir(name), self._model_dir(new_name)
            conn.execute(t.registered_models.update().where(t.registered_models.c.id == row.id)
                         .values(name=new_name, last_updated_time=now_ms()))
            for v in conn.execute(sa.select(t.model_versions.c.id, t.model_versions.c.storage_location)
                                  .where(t.model_versions.c.model_id == row.id)).all():
                if v.storage_location and v.storage_location.startswith(old_dir + os.sep):
                    conn.execute(t.model_versions.update().where(t.model_versions.c.id == v.id).values(
                        storage_location=new_dir + v.storage_location[len(old_dir):]))
            self._log(conn, row.id, new_name, "rename_model", *who(user), **_change(name, new_name))
            if os.path.isdir(old_dir):
                if os.path.lexists(new_dir):  # an orphan no row names (a crashed registration)
                    storage.remove_tree(new_dir)
                os.rename(old_dir, new_dir)  # last: the transaction commits right after
            return self._model(conn, self._model_row(conn, new_name))

    def delete_registered_model(self, name: str, user: str | None = None) -> None:
        """Delete ``name``, its versions and their files (the activity log keeps every deletion)."""
        user_id, auth = who(user)
        with self._tx() as conn:
            row = self._model_row(conn, name, lock=True)
            for v in conn.execute(sa.select(t.model_versions.c.version).where(t.model_versions.c.model_id == row.id)
                                  .order_by(t.model_versions.c.version)).scalars():
                self._log(conn, row.id, name, "delete_version", user_id, auth, version=v, with_model=True)
            self._delete_model_rows(conn, row.id)
            self._log(conn, row.id, name, "delete_model", user_id, auth)
        storage.remove_tree(self._model_dir(name))

    def _delete_model_rows(self, conn: sa.Connection, model_id: int) -> None:
        # Explicit, child tables first: no reliance on ON DELETE CASCADE being enforced.
        version_ids = sa.select(t.model_versions.c.id).where(t.model_versions.c.model_id == model_id)
        conn.execute(t.transition_requests.delete().where(t.transition_requests.c.model_id == model_id))
        conn.execute(t.aliases.delete().where(t.aliases.c.model_id == model_id))
        conn.execute(t.model_version_tags.delete().where(t.model_version_tags.c.version_id.in_(version_ids)))
        conn.execute(t.model_versions.delete().where(t.model_versions.c.model_id == model_id))
        conn.execute(t.registered_model_tags.delete().where(t.registered_model_tags.c.model_id == model_id))
        conn.execute(t.registered_models.delete().where(t.registered_models.c.id == model_id))

    def set_registered_model_tag(self, name: str, key: str, value: str, user: str | None = None) -> None:
        """Set tag ``key`` of model ``name``."""
        key = _key(key)
        with self._tx() as conn:
            row = self._model_row(conn, name, lock=True)
            _upsert_tag(conn, t.registered_model_tags, "model_id", row.id, key, value)
            self._touch(conn, row.id)
            self._log(conn, row.id, name, "set_tag", *who(user), key=key, value=str(value))

    def delete_registered_model_tag(self, name: str, key: str, user: str | None = None) -> None:
        """Delete tag ``key`` of model ``name`` (a :class:`RegistryNotFoundError` when it has none)."""
        with self._tx() as conn:
            row = self._model_row(conn, name, lock=True)
            tags = t.registered_model_tags
            if conn.execute(tags.delete().where(tags.c.model_id == row.id, tags.c.key == key)).rowcount == 0:
                raise RegistryNotFoundError(f"registered model {name!r} has no tag {key!r}")
            self._touch(conn, row.id)
            self._log(conn, row.id, name, "delete_tag", *who(user), key=key)

    # -- aliases -----------------------------------------------------------------------------------
    def set_registered_model_alias(self, name: str, alias: str, version: int, user: str | None = None) -> None:
        """Point ``alias`` at ``version``, moving it from the version that had it (one activity entry)."""
        alias = _check_alias(alias)
        with self._tx() as conn:
            model, row = self._version_row(conn, name, version)
            old = conn.execute(sa.select(t.model_versions.c.version).join(
                t.aliases, t.aliases.c.version_id == t.model_versions.c.id)
                .where(t.aliases.c.model_id == model.id, t.aliases.c.alias == alias)).scalar()
            conn.execute(t.aliases.delete().where(t.aliases.c.model_id == model.id, t.aliases.c.alias == alias))
            conn.execute(t.aliases.insert().values(model_id=model.id, alias=alias, version_id=row.id))
            self._touch(conn, model.id)
            self._log(conn, model.id, name, "set_alias", *who(user), version=row.version, alias=alias,
                      from_version=old)

    def delete_registered_model_alias(self, name: str, alias: str, user: str | None = None) -> None:
        """Remove ``alias`` from model ``name`` (a :class:`RegistryNotFoundError` when it has none)."""
        with self._tx() as conn:
            model = self._model_row(conn, name, lock=True)
            old = conn.execute(sa.select(t.model_versions.c.version).join(
                t.aliases, t.aliases.c.version_id == t.model_versions.c.id)
                .where(t.aliases.c.model_id == model.id, t.aliases.c.alias == alias)).scalar()
            if old is None:
                raise RegistryNotFoundError(f"registered model {name!r} has no alias {alias!r}")
            conn.execute(t.aliases.delete().where(t.aliases.c.model_id == model.id, t.aliases.c.alias == alias))
            self._touch(conn, model.id)
            self._log(conn, model.id, name, "delete_alias", *who(user), version=old, alias=alias)

    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version ``alias`` points at."""
        with self._tx(write=False) as conn:
            model = self._model_row(conn, name)
            joined = sa.select(t.model_versions).join(t.aliases, t.aliases.c.version_id == t.model_versions.c.id)
            row = conn.execute(joined.where(t.aliases.c.model_id == model.id, t.aliases.c.alias == alias)).first()
            if row is None:
                raise RegistryNotFoundError(f"registered model {name!r} has no alias {alias!r}")
            return self._versions(conn, [row], {model.id: model.name})[0]

    # -- versions ----------------------------------------------------------------------------------
    def _model_dir(self, name: str) -> str:
        return os.path.join(self.artifact_root, name)

    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             run_link: str | None = None, description: str = "",
                             tags: dict[str, str] | None = None, user: str | None = None,
                             params: dict[str, Any] | None = None,
                             metrics: dict[str, Any] | None = None) -> ModelVersion:
        """Register the model directory ``source`` as the next version of ``name`` (created when missing,
        as ``mlflow.register_model`` does). Its files are copied under the artifact root and checked
        against ``model.digests.json`` (recorded into the copy when the model has none: the version's
        ``modelfmt.digests.recorded`` tag says so), then made read-only. Provenance (git from the
        ``MLmodel`` metadata, ``params``, ``metrics``) goes into the tags."""
        name = check_name(name)
        src = storage.local_source(source)
        mlmodel = storage.read_mlmodel(src)
        all_tags = {**provenance_tags(mlmodel.get(MLMODEL_FIELD), params, metrics),
                    **{_key(k): str(v) for k, v in (tags or {}).items()}}
        user_id, auth = who(user)
        tmp, recorded = storage.stage_copy(src, self.artifact_root)
        final = None
        try:
            if recorded:
                all_tags[storage.RECORDED_TAG] = "registration"
            digest = storage.digest_of(tmp)
            self._ensure_model(name, user_id, auth)
            with self._tx() as conn:
                model = self._model_row(conn, name, lock=True)
                number = model.last_version + 1
                now = now_ms()
                conn.execute(t.registered_models.update().where(t.registered_models.c.id == model.id)
                             .values(last_version=number, last_updated_time=now))
                final = os.path.join(self._model_dir(name), str(number))
                vid = new_id(conn.execute(t.model_versions.insert().values(
                    model_id=model.id, version=number, source=source, run_id=run_id or None,
                    run_link=run_link or None, description=description or "", current_stage="None",
                    status="READY", signature=storage.signature_json(mlmodel), digest=digest,
                    storage_location=final, user_id=user_id, authenticated=auth, creation_time=now,
                    last_updated_time=now,
                )))
                for key, value in all_tags.items():
                    conn.execute(t.model_version_tags.insert().values(version_id=vid, key=key, value=value))
                self._log(conn, model.id, name, "register_version", user_id, auth, version=number, stage="None",
                          source=source, digest=digest, run_id=run_id, digests_recorded=recorded)
                storage.place(tmp, final)  # last before the commit; undone below if the commit fails
                row = conn.execute(sa.select(t.model_versions).where(t.model_versions.c.id == vid)).one()
                result = self._versions(conn, [row], {model.id: name})[0]
        except BaseException:
            storage.remove_tree(tmp)
            if final is not None and os.path.isdir(final) and not self._has_version(name, final):
                storage.remove_tree(final)
            raise
        return result

    def _ensure_model(self, name: str, user: str, authenticated: bool) -> None:
        """Create model ``name`` unless it exists, in a transaction of its own (as mlflow.register_model
        creates the model, then the version); a registration racing to create it too is no error."""
        with self._tx(write=False) as conn:
            if conn.execute(sa.select(t.registered_models.c.id).where(t.registered_models.c.name == name)).first():
                return
        try:
            with self._tx() as conn:
                self._create_model(conn, name, "", None, user, authenticated)
        except RegistryConflictError:
            pass  # another registration created it first

    def _has_version(self, name: str, location: str) -> bool:
        try:
            with self._tx(write=False) as conn:
                return conn.execute(sa.select(t.model_versions.c.id)
                                    .where(t.model_versions.c.storage_location == location)).first() is not None
        except RegistryError:
            return True  # cannot tell: keep the files rather than lose a registered version's

    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name``."""
        with self._tx(write=False) as conn:
            model, row = self._version_row(conn, name, version)
            return self._versions(conn, [row], {model.id: model.name})[0]

    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[ModelVersion]:
        """The latest version in each of ``stages`` (every stage when ``None``), in the order asked."""
        with self._tx(write=False) as conn:
            return self._latest(conn, self._model_row(conn, name), stages)

    def search_model_versions(self, filter_string: str = "", max_results: int = 10000,
                              order_by: list[str] | None = None,
                              page_token: str | None = None) -> Page[ModelVersion]:
        """Versions matching MLflow's filter grammar; ``name`` ascending, newest version first by default."""
        clauses = s.parse_filter(filter_string, s.VERSION_ATTRIBUTES)
        order = s.parse_order_by(order_by, s.VERSION_ORDER_KEYS) or [("name", True), ("version_number", False)]
        limit = s.check_max_results(max_results, MAX_VERSIONS_PAGE)
        offset = s.decode_page_token(page_token)
        mv, rm = t.model_versions, t.registered_models
        q = (sa.select(mv, rm.c.name.label("model_name")).join(rm, rm.c.id == mv.c.model_id)
             .where(*[_version_clause(c) for c in clauses])
             .order_by(*[_ordered(_VERSION_COLUMNS[k], asc) for k, asc in order], mv.c.id))
        with self._tx(write=False) as conn:
            rows = conn.execute(q.offset(offset).limit(limit + 1)).all()[: limit + 1]
            page = rows[:limit]
            items = self._versions(conn, list(page), {r.model_id: r.model_name for r in page})
        return Page(items, s.encode_page_token(offset + limit) if len(rows) > limit else None)

    def update_model_version(self, name: str, version: int, description: str,
                             user: str | None = None) -> ModelVersion:
        """Set the description of a version."""
        with self._tx() as conn:
            model, row = self._version_row(conn, name, version)
            conn.execute(t.model_versions.update().where(t.model_versions.c.id == row.id)
                         .values(description=description or "", last_updated_time=now_ms()))
            self._log(conn, model.id, name, "update_version_description", *who(user), version=row.version,
                      **_change(row.description, description or ""))
            row = conn.execute(sa.select(t.model_versions).where(t.model_versions.c.id == row.id)).one()
            return self._versions(conn, [row], {model.id: name})[0]

    def delete_model_version(self, name: str, version: int, user: str | None = None) -> None:
        """Delete a version and its files (its number is never given again; the log keeps the deletion)."""
        with self._tx() as conn:
            model, row = self._version_row(conn, name, version)
            conn.execute(t.transition_requests.delete().where(t.transition_requests.c.version_id == row.id))
            conn.execute(t.aliases.delete().where(t.aliases.c.version_id == row.id))
            conn.execute(t.model_version_tags.delete().where(t.model_version_tags.c.version_id == row.id))
            conn.execute(t.model_versions.delete().where(t.model_versions.c.id == row.id))
            self._touch(conn, model.id)
            self._log(conn, model.id, name, "delete_version", *who(user), version=row.version,
                      from_stage=row.current_stage)
        if row.storage_location:
            storage.remove_tree(row.storage_location)

    def set_model_version_tag(self, name: str, version: int, key: str, value: str,
                              user: str | None = None) -> None:
        """Set tag ``key`` of a version."""
        key = _key(key)
        with self._tx() as conn:
            model, row = self._version_row(conn, name, version)
            _upsert_tag(conn, t.model_version_tags, "version_id", row.id, key, value)
            conn.execute(t.model_versions.update().where(t.model_versions.c.id == row.id)
                         .values(last_updated_time=now_ms()))
            self._log(conn, model.id, name, "set_version_tag", *who(user), version=row.version, key=key,
                      value=str(value))

    def delete_model_version_tag(self, name: str, version: int, key: str, user: str | None = None) -> None:
        """Delete tag ``key`` of a version (a :class:`RegistryNotFoundError` when it has none)."""
        with self._tx() as conn:
            model, row = self._version_row(conn, name, version)
            tags = t.model_version_tags
            if conn.execute(tags.delete().where(tags.c.version_id == row.id, tags.c.key == key)).rowcount == 0:
                raise RegistryNotFoundError(f"version {row.version} of {name!r} has no tag {key!r}")
            self._log(conn, model.id, name, "delete_version_tag", *who(user), version=row.version, key=key)

    def _transition(self, conn: sa.Connection, model: Any, row: Any, stage: str, archive: bool, user: str,
                    authenticated: bool, **details: Any) -> None:
        """Move version ``row`` to ``stage`` (and, with ``archive``, the others in Staging/Production to
        Archived), one activity entry per version moved."""
        mv = t.model_versions
        now = now_ms()
        if archive and stage in ("Staging", "Production"):
            others = conn.execute(sa.select(mv.c.id, mv.c.version).where(
                mv.c.model_id == model.id, mv.c.current_stage == stage, mv.c.id != row.id)).all()
            for other in others:
                conn.execute(mv.update().where(mv.c.id == other.id).values(current_stage="Archived",
                                                                          last_updated_time=now))
                self._log(conn, model.id, model.name, "transition", user, authenticated, version=other.version,
                          stage="Archived", from_stage=stage, to_stage="Archived", archived_by_version=row.version)
        conn.execute(mv.update().where(mv.c.id == row.id).values(current_stage=stage, last_updated_time=now))
        self._touch(conn, model.id)
        self._log(conn, model.id, model.name, "transition", user, authenticated, version=row.version, stage=stage,
                  from_stage=row.current_stage, to_stage=stage, archive_existing_versions=archive, **details)

    def transition_model_version_stage(self, name: str, version: int, stage: str,
                                       archive_existing_versions: bool = False,
                                       user: str | None = None) -> ModelVersion:
        """Move a version to ``stage`` directly; ``archive_existing_versions`` archives the versions that
        were in that stage (Staging or Production), as MLflow does."""
        stage = check_stage(stage)
        with self._tx() as conn:
            model, row = self._version_row(conn, name, version)
            self._model_row(conn, name, lock=True)
            self._transition(conn, model, row, stage, bool(archive_existing_versions), *who(user))
            row = conn.execute(sa.select(t.model_versions).where(t.model_versions.c.id == row.id)).one()
            return self._versions(conn, [row], {model.id: name})[0]

    def get_model_version_download_uri(self, name: str, version: int) -> str:
        """The local directory holding the version's files (read-only; :meth:`download_model_version`
        checks them)."""
        return self._location(self.get_model_version(name, version))

    def _location(self, mv: ModelVersion) -> str:
        if not mv.storage_location:
            raise RegistryNotFoundError(f"version {mv.version} of {mv.name!r} has no files in the registry")
        return mv.storage_location

    def download_model_version(self, name: str, version: int, dst: str | os.PathLike | None = None) -> str:
        """The version's directory, checked against its digests on every call: the stored (read-only)
        directory itself, or a writable copy in ``dst`` (a new or empty directory) when given."""
        mv = self.get_model_version(name, version)
        path = self._location(mv)
        storage.check_version(path, mv.digest, f"version {mv.version} of registered model {name!r}")
        return path if dst is None else storage.copy_out(path, os.fspath(dst))


# -- search: clauses -> SQL --------------------------------------------------------------------------
_MODEL_COLUMNS = {"name": t.registered_models.c.name, "creation_timestamp": t.registered_models.c.creation_time,
                  "last_updated_timestamp": t.registered_models.c.last_updated_time}
_VERSION_COLUMNS = {"name": t.registered_models.c.name, "version_number": t.model_versions.c.version,
                    "run_id": t.model_versions.c.run_id, "source_path": t.model_versions.c.source,
                    "creation_timestamp": t.model_versions.c.creation_time,
                    "last_updated_timestamp": t.model_versions.c.last_updated_time}


def _ordered(column: Any, ascending: bool) -> Any:
    return column.asc() if ascending else column.desc()


def _compare(column: Any, op: str, value: Any) -> Any:
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op == "LIKE":
        return column.like(value)
    if op == "ILIKE":
        return column.ilike(value)
    if op == "IN":
        return column.in_(value)
    if op == "NOT IN":
        return column.not_in(value)
    return {"<": column < value, "<=": column <= value, ">": column > value, ">=": column >= value}[op]


def _tag_clause(c: s.Clause, tags: Any, fk: str, owner: Any) -> Any:
    match = sa.select(tags.c[fk]).where(tags.c[fk] == owner, tags.c.key == c.key)
    if c.key == s.PROMPT_TAG and c.comparator == "!=":
        # What MLflow 3's clients send on every model search: everything that is not a prompt, including
        # the models without the tag (MLflow's store excludes prompts by an anti-join the same way).
        return ~sa.exists(match.where(tags.c.value == c.value))
    return sa.exists(match.where(_compare(tags.c.value, c.comparator, c.value)))


def _model_clause(c: s.Clause) -> Any:
    if c.kind == "tag":
        return _tag_clause(c, t.registered_model_tags, "model_id", t.registered_models.c.id)
    return _compare(_MODEL_COLUMNS[c.key], c.comparator, c.value)


def _version_clause(c: s.Clause) -> Any:
    if c.kind == "tag":
        return _tag_clause(c, t.model_version_tags, "version_id", t.model_versions.c.id)
    return _compare(_VERSION_COLUMNS[c.key], c.comparator, c.value)


def _change(before: str, after: str) -> dict[str, Any]:
    return {"from": before, "to": after}


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > t.KEY_LENGTH:
        raise RegistryError(f"invalid tag key {key!r}: a non-empty string of at most {t.KEY_LENGTH} characters")
    return key


def _check_alias(alias: Any) -> str:
    if not isinstance(alias, str) or not _ALIAS.match(alias) or alias.lower() == "latest" \
            or re.fullmatch(r"[vV]\d+", alias) or len(alias) > t.NAME_LENGTH:
        raise RegistryError(
            f"invalid alias {alias!r}: letters, digits, '_' and '-', starting with a letter or '_'; "
            "not 'latest' nor a version ('v3'), which models:/ URIs read differently"
        )
    return alias


def _upsert_tag(conn: sa.Connection, table: Any, fk: str, owner: int, key: str, value: Any) -> None:
    updated = conn.execute(table.update().where(table.c[fk] == owner, table.c.key == key).values(value=str(value)))
    if updated.rowcount == 0:
        conn.execute(table.insert().values(**{fk: owner, "key": key, "value": str(value)}))
