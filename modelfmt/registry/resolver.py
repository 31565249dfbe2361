"""``models:/``, ``runs:/`` and ``mlflow-artifacts:/`` locations, resolved for ``open_model``.

``open_model`` imports this module the first time it meets such a location (``modelfmt.open.LAZY_RESOLVERS``);
it must never import ``modelfmt.open`` back. Each function returns a :class:`~modelfmt.uris.Resolved`: a
local directory (in the download cache, :mod:`.cache`, or the store's own folder), and for ``models:/`` the
registered name and version. ``open_model`` then checks the directory's digests as it checks any folder.

- ``models:/NAME/VERSION``, ``models:/NAME/STAGE`` (any case: ``production`` is ``Production``),
  ``models:/NAME/latest``, ``models:/NAME@ALIAS``: against the registry :func:`.location.get_registry`
  finds (``MODELFMT_REGISTRY_URI``, an MLflow server's ``MLFLOW_REGISTRY_URI``/``MLFLOW_TRACKING_URI``, or
  the embedded store).
- ``runs:/RUN_ID/PATH`` and ``mlflow-artifacts:/PATH``: against an MLflow tracking server
  (``MLFLOW_TRACKING_URI``, else the registry's URL when it is a server).

A model, version, stage or alias that does not exist is one :class:`~modelfmt.errors.RegistryNotFoundError`
naming the location and what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from modelfmt.errors import ModelfmtError, RegistryError, RegistryNotFoundError
from modelfmt.registry import cache, downloads
from modelfmt.registry.base import Registry
from modelfmt.registry.entities import STAGES, ModelVersion, canonical_stage
from modelfmt.registry.location import get_registry, registry_location
from modelfmt.uris import Resolved

T = TypeVar("T")


class ModelsUri:
    """A parsed ``models:/`` location: ``name`` and one of ``version`` (int), ``stage``, ``alias`` or
    ``latest``."""

    def __init__(self, location: str) -> None:
        self.location = location
        parts = urlsplit(location)
        if parts.netloc:
            raise RegistryError(f"cannot open {location!r}: write models:/NAME/VERSION (a registry's address "
                                "goes in MODELFMT_REGISTRY_URI or MLFLOW_TRACKING_URI, not in the URI)")
        path = unquote(parts.path).strip("/")
        self.version: int | None = None
        self.stage: str | None = None
        self.alias: str | None = None
        self.latest = False
        if "/" not in path and "@" in path:
            self.name, _, self.alias = path.rpartition("@")
            if not self.name or not self.alias:
                raise RegistryError(f"cannot open {location!r}: write models:/NAME@ALIAS")
            return
        self.name, _, suffix = path.rpartition("/")
        if not self.name or not suffix or "/" in self.name:
            raise RegistryError(
                f"cannot open {location!r}: write models:/NAME/VERSION, models:/NAME/STAGE, models:/NAME/latest "
                "or models:/NAME@ALIAS"
            )
        if suffix.isdigit():
            self.version = int(suffix)
        elif suffix.lower() == "latest":
            self.latest = True
        else:
            try:
                self.stage = canonical_stage(suffix)
            except ValueError:
                raise RegistryError(
                    f"cannot open {location!r}: {suffix!r} is not a version number, a stage "
                    f"({', '.join(STAGES)}) or 'latest'"
                ) from None

    def find(self, registry: Registry) -> ModelVersion:
        """The version this location names in ``registry``."""
        if self.alias is not None:
            return _named(self.location, lambda: registry.get_model_version_by_alias(self.name, self.alias or ""))
        if self.version is not None:
            return _named(self.location, lambda: registry.get_model_version(self.name, self.version or 0))
        stages = None if self.latest else [self.stage or ""]
        versions = _named(self.location, lambda: registry.get_latest_versions(self.name, stages))
        if not versions:
            what = "has no versions" if self.latest else f"has no version in stage {self.stage}"
            raise RegistryNotFoundError(f"cannot open {self.location!r}: model {self.name!r} {what} "
                                        f"(registry {registry.uri})")
        return max(versions, key=lambda v: v.version)


def _named(location: str, call: Callable[[], T]) -> T:
    """``call()``, its registry errors re-raised as the same kind with the location in front."""
    try:
        return call()
    except RegistryError as e:
        if e.message.startswith("cannot open"):
            raise
        raise type(e)(f"cannot open {location!r}: {e.message}") from None


def resolve_models_uri(location: str) -> Resolved:
    """``models:/NAME/VERSION``, ``models:/NAME/STAGE``, ``models:/NAME/latest``, ``models:/NAME@ALIAS``."""
    uri = ModelsUri(location)
    with get_registry() as registry:
        mv = uri.find(registry)
        path = _named(location, lambda: registry.download_model_version(mv.name, mv.version))
    return Resolved(os.fspath(path), mv.name, str(mv.version))


def _tracking_server(location: str):  # -> HttpClient
    from modelfmt.registry.http import HttpClient

    url = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not url.lower().startswith(("http://", "https://")):
        try:
            loc = registry_location()
        except ModelfmtError:
            loc = None
        if loc is None or loc.kind != "rest":
            raise RegistryError(
                f"cannot open {location!r}: it names an MLflow tracking server's files; set MLFLOW_TRACKING_URI "
                "to the server's http:// URL"
            )
        url = loc.uri
    return HttpClient(url.rstrip("/"))


def resolve_runs_uri(location: str) -> Resolved:
    """``runs:/RUN_ID/PATH`` against an MLflow tracking server (cached by server, run and path)."""
    parts = urlsplit(location)
    run_id, _, path = unquote(parts.path).strip("/").partition("/")
    if parts.netloc or not run_id:
        raise RegistryError(f"cannot open {location!r}: write runs:/RUN_ID/PATH")
    client = _tracking_server(location)
    entry = cache.server_entry(client.base_url, "runs", run_id, path.strip("/"))

    def filler(tmp: str) -> None:
        downloads.download_uri(client, downloads.run_model_uri(client, run_id, path), tmp)

    return Resolved(_named(location, lambda: cache.fill(entry, filler)))


def resolve_artifacts_uri(location: str) -> Resolved:
    """``mlflow-artifacts:/PATH`` against an MLflow tracking server (cached by server and path)."""
    client = _tracking_server(location)
    parts = urlsplit(location)
    server = f"{urlsplit(client.base_url).scheme}://{parts.netloc}" if parts.netloc else client.base_url
    entry = cache.server_entry(server, "artifacts", unquote(parts.path).strip("/"))

    def filler(tmp: str) -> None:
        downloads.download_uri(client, location, tmp)

    return Resolved(_named(location, lambda: cache.fill(entry, filler)))
