"""Registry fixtures shared by the store, server and client tests: a SQLite store, a real PostgreSQL
server (Debian's, a throwaway cluster), and ``registry``: the same tests on both.

Import the fixtures you use into the test module (``from registry_support import registry  # noqa:
F401``). ``postgres_server`` is session-scoped: one cluster (``initdb`` into a temporary directory owned
by the ``postgres`` user, since PostgreSQL refuses to run as root; a unix socket in that directory, no
TCP listener; the C locale, so that names sort by code point as on SQLite) for the whole run, removed at the end; each test gets a database of its own
(``postgres_uri``). It fails (never skips) when PostgreSQL is not installed: ``make postgres`` installs it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

from modelfmt.serving.testing import free_port


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail("PostgreSQL is not installed (Debian's postgresql package): run `make postgres`")
    return os.path.dirname(found[-1])


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; as anyone else it runs as that user.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PostgresServer:
    """A running throwaway cluster: :meth:`new_database` gives a fresh database's URI."""

    def __init__(self, directory: str, port: int, user: str) -> None:
        self.directory, self.port, self.user = directory, port, user

    def uri(self, database: str) -> str:
        """The SQLAlchemy URI of ``database`` (psycopg 3, over the unix socket)."""
        return f"postgresql://{self.user}@/{database}?host={self.directory}&port={self.port}"

    def new_database(self) -> str:
        """Create an empty database; its URI."""
        import psycopg

        name = f"reg_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=self.directory, port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def drop_database(self, uri: str) -> None:
        """Drop the database of ``uri`` (closing what is connected to it)."""
        import psycopg

        name = uri.split("/")[3].split("?")[0]
        with psycopg.connect(host=self.directory, port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL cluster for the session (see the module docstring)."""
    bindir = _pg_bin()
    directory = tempfile.mkdtemp(prefix="modelfmt-pg-")
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        os.chown(directory, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
    data, log = os.path.join(directory, "data"), os.path.join(directory, "log")
    port = free_port()
    subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", user, "-E", "UTF8", "--locale=C",
                                 "--no-sync", "--no-instructions"]),
                   check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {directory} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
    started = subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-l", log, "-o", options, "-w",
                                           "-t", "60", "start"]), capture_output=True, text=True, timeout=120)
    try:
        if started.returncode != 0:
            text = open(log).read() if os.path.exists(log) else ""
            pytest.fail(f"PostgreSQL did not start: {started.stderr}{text[-2000:]}")
        yield PostgresServer(directory, port, user)
    finally:
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_uri(postgres_server):
    """A fresh, empty PostgreSQL database for one test; dropped after it."""
    uri = postgres_server.new_database()
    yield uri
    postgres_server.drop_database(uri)


@pytest.fixture
def sqlite_registry(tmp_path):
    """modelfmt's store on a fresh SQLite file (artifacts beside it)."""
    from modelfmt.registry.store import SqlRegistry

    reg = SqlRegistry(f"sqlite:///{tmp_path}/registry.db", str(tmp_path / "artifacts"))
    yield reg
    reg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path):
    """modelfmt's store on SQLite, then on PostgreSQL: the same test on both."""
    from modelfmt.registry.store import SqlRegistry

    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path}/registry.db"
    else:
        uri = request.getfixturevalue("postgres_uri")
    reg = SqlRegistry(uri, str(tmp_path / "artifacts"))
    yield reg
    reg.close()
