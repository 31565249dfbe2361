"""The registry store's database: the engine for a ``sqlite:`` or ``postgresql:`` URI, and its schema
brought to this modelfmt's revision with Alembic (the migrations in ``migrations/``, shipped in the
package) when the store opens.

- An empty database gets every table; an older one is upgraded; one at a revision this modelfmt does not
  know (made by a newer modelfmt) is refused with a :class:`~modelfmt.errors.RegistryError` saying so,
  never touched; a database holding tables that are not the registry's (MLflow's own, say) is refused.
- Two processes opening an empty database at once: PostgreSQL takes an advisory lock around the upgrade;
  SQLite's ``BEGIN IMMEDIATE`` serializes it.
- SQLite: WAL journal (readers do not wait for the writer), foreign keys on, a 30 s busy timeout, ``LIKE``
  case-sensitive (as MLflow's ``LIKE`` is), and writes in ``BEGIN IMMEDIATE`` transactions so that two
  writers queue instead of failing with "database is locked" on a lock upgrade.
- PostgreSQL goes through psycopg 3 (``postgresql://`` means ``postgresql+psycopg://``).
"""

from __future__ import annotations

import os
from typing import Any

from modelfmt.errors import RegistryError, RegistryUnavailableError

SCRIPT_LOCATION = "modelfmt.registry:migrations"
_LOCK_KEY = 0x6D6F64656C666D74 & 0x7FFFFFFFFFFFFFFF  # "modelfmt": the advisory lock of the upgrade
_OUR_TABLES = frozenset({"registered_models", "registered_model_tags", "model_versions", "model_version_tags",
                         "aliases", "transition_requests", "activity", "alembic_version"})
IMMEDIATE = "modelfmt_immediate"


def _missing_extra(e: ImportError) -> RegistryError:
    return RegistryError(
        f"modelfmt's registry store needs the 'registry' extra ({e.name} is missing): "
        "pip install 'modelfmt[registry]'"
    )


def make_engine(db_uri: str) -> Any:
    """A SQLAlchemy engine for ``db_uri`` (see the module docstring); a :class:`RegistryError` for a URI
    that is neither SQLite nor PostgreSQL."""
    try:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url
    except ImportError as e:
        raise _missing_extra(e) from e
    try:
        url = make_url(db_uri)
    except Exception as e:  # noqa: BLE001 - sqlalchemy's ArgumentError and ValueError alike
        raise RegistryError(f"registry URI {db_uri!r} is not a database URL: {e}") from e
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise RegistryError(f"registry URI {db_uri!r}: give a SQLite file (sqlite:///PATH/registry.db)")
        os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        _sqlite_events(engine)
        return engine
    if backend in ("postgresql", "postgres"):
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        try:
            return sa.create_engine(url, pool_pre_ping=True)
        except ImportError as e:
            raise _missing_extra(e) from e
    raise RegistryError(f"registry URI {db_uri!r}: modelfmt's store runs on SQLite or PostgreSQL")


def _sqlite_events(engine: Any) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we send BEGIN ourselves (below), pysqlite must not
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "case_sensitive_like=ON", "busy_timeout=30000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(IMMEDIATE) else "BEGIN")


def _config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Any, shown_uri: str) -> None:
    """Bring the database of ``engine`` to this modelfmt's newest schema revision (see the module
    docstring); ``shown_uri`` names it in messages."""
    import sqlalchemy as sa
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    heads = set(script.get_heads())
    known = {rev.revision for rev in script.walk_revisions()}
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
            tables = set(sa.inspect(conn).get_table_names())
    except sa.exc.OperationalError as e:
        raise RegistryUnavailableError(f"cannot open the registry database {shown_uri}: {e.orig}") from e
    if current - known:
        if "experiments" in tables:
            raise _mlflow_database(shown_uri)
        from modelfmt import __version__

        raise RegistryError(
            f"the registry database {shown_uri} has schema revision {', '.join(sorted(current))}, newer than "
            f"this modelfmt ({__version__}, newest revision {', '.join(sorted(heads))}) knows: upgrade modelfmt "
            "to open it (it was not changed)"
        )
    if not current and tables - _OUR_TABLES:
        if "experiments" in tables:
            raise _mlflow_database(shown_uri)
        raise RegistryError(
            f"the database {shown_uri} holds tables that are not a modelfmt registry's "
            f"({', '.join(sorted(tables - _OUR_TABLES)[:5])}): give an empty database or a registry's"
        )
    if current == heads:
        return
    with engine.connect().execution_options(**{IMMEDIATE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        if set(MigrationContext.configure(conn).get_current_heads()) != heads:  # another process did it
            command.upgrade(_config(conn), "heads")


def _mlflow_database(uri: str) -> RegistryError:
    return RegistryError(
        f"the database {uri} is MLflow's own (it has MLflow's tables): modelfmt never opens or migrates it. "
        "Run `mlflow server` on it and point --registry-uri at its http:// URL"
    )
