"""Which registry a URI names, and the one the environment configures.

The order (issue 15, "CLI"): the ``uri`` given (``--registry-uri``), else ``MODELFMT_REGISTRY_URI``
(an ``http(s)://`` URL of a registry server, or a ``sqlite:``/``postgresql:`` URI of modelfmt's own
store), else ``MLFLOW_REGISTRY_URI`` / ``MLFLOW_TRACKING_URI`` (MLflow's order: the registry URI first)
when they are HTTP URLs: an MLflow tracking server, spoken to over its REST API. An MLflow URI that is
not HTTP (``sqlite:``, ``postgresql:``, ``mysql:``, ``file:``, ``databricks``...) names MLflow's own
store, which modelfmt never opens nor migrates: a clear :class:`~modelfmt.errors.RegistryError`. Else
the embedded default: a SQLite store under :func:`default_home`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from modelfmt.errors import RegistryError

if TYPE_CHECKING:
    from modelfmt.registry.base import Registry

MODELFMT_VARIABLE = "MODELFMT_REGISTRY_URI"
MLFLOW_VARIABLES = ("MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI")
HTTP_SCHEMES = ("http", "https")
# SQLAlchemy dialects of modelfmt's own store (``postgresql+psycopg://`` and the like are the same dialect).
SQL_SCHEMES = ("sqlite", "postgresql", "postgres")


class RegistryLocation(NamedTuple):
    """A registry URI and where it came from: ``"argument"``, an environment variable's name, or
    ``"default"``; ``kind`` is ``"rest"`` (a registry server) or ``"sql"`` (modelfmt's own store)."""

    uri: str
    origin: str
    kind: str


def default_home() -> str:
    """modelfmt's data directory for the embedded registry: ``$MODELFMT_HOME``, else
    ``~/.local/share/modelfmt/registry`` (``$XDG_DATA_HOME`` respected)."""
    home = os.environ.get("MODELFMT_HOME")
    if home:
        return os.path.abspath(os.path.expanduser(home))
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "modelfmt", "registry")


def default_registry_uri() -> str:
    """The embedded store's URI: ``sqlite:///<default_home()>/registry.db``."""
    return "sqlite:///" + os.path.join(default_home(), "registry.db")


def _scheme(uri: str) -> str:
    # "postgresql+psycopg://..." -> "postgresql"; "databricks" (no colon) -> "databricks".
    return urlsplit(uri).scheme.lower().split("+", 1)[0] if ":" in uri else uri.lower()


def _kind(uri: str, origin: str) -> str:
    scheme = _scheme(uri)
    if scheme in HTTP_SCHEMES:
        if not urlsplit(uri).netloc:
            raise RegistryError(f"registry URI {uri!r} (from {origin}) has no host: write http://HOST:PORT")
        return "rest"
    if scheme in SQL_SCHEMES:
        return "sql"
    raise RegistryError(
        f"registry URI {uri!r} (from {origin}) is not one modelfmt reads: give an http(s):// URL of a "
        "registry server (modelfmt registry serve, or an MLflow tracking server), or a sqlite:/// or "
        "postgresql:// URI of modelfmt's own store"
    )


def _mlflow_refusal(variable: str, uri: str) -> RegistryError:
    scheme = _scheme(uri)
    what = "MLflow's own database" if scheme in (*SQL_SCHEMES, "mysql", "mssql") else "MLflow's own store"
    return RegistryError(
        f"{variable} is {uri!r}, {what}: modelfmt does not open or migrate it. Run "
        f"`mlflow server --backend-store-uri {uri}` and set {variable} to its http:// URL, or set "
        f"{MODELFMT_VARIABLE} (or --registry-uri) for modelfmt's own registry"
    )


def registry_location(uri: str | None = None) -> RegistryLocation:
    """The registry ``uri`` names, or the one the environment configures (the order of the module
    docstring); a :class:`~modelfmt.errors.RegistryError` for a URI modelfmt does not read."""
    if uri:
        return RegistryLocation(uri, "argument", _kind(uri, "the argument"))
    value = os.environ.get(MODELFMT_VARIABLE, "").strip()
    if value:
        return RegistryLocation(value, MODELFMT_VARIABLE, _kind(value, MODELFMT_VARIABLE))
    for variable in MLFLOW_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if not value:
            continue
        if _scheme(value) in HTTP_SCHEMES:
            return RegistryLocation(value, variable, _kind(value, variable))
        raise _mlflow_refusal(variable, value)
    return RegistryLocation(default_registry_uri(), "default", "sql")


def get_registry(uri: str | None = None, user: str | None = None, artifact_root: str | None = None) -> Registry:
    """The registry ``uri`` names (or the environment's, see :func:`registry_location`).

    ``http(s)://`` gives a :class:`~modelfmt.registry.rest.RestRegistry` (``user``: the identity sent when
    a method is given none); ``sqlite:``/``postgresql:`` gives modelfmt's
    :class:`~modelfmt.registry.store.SqlRegistry` (``artifact_root``: where versions' files live; default
    next to a SQLite database, ``artifacts/`` under :func:`default_home` for the embedded one).
    """
    loc = registry_location(uri)
    if loc.kind == "rest":
        from modelfmt.registry.rest import RestRegistry

        return RestRegistry(loc.uri, user=user)
    if loc.origin == "default":
        os.makedirs(default_home(), exist_ok=True)
        artifact_root = artifact_root or os.path.join(default_home(), "artifacts")
    from modelfmt.registry.store import SqlRegistry  # type: ignore[import-not-found,unused-ignore]

    return SqlRegistry(loc.uri, artifact_root)  # type: ignore[no-any-return,unused-ignore]
