"""The interface every registry implements: modelfmt's own store (:mod:`.store`) and the client of a
registry server (:mod:`.rest`). The CLI, the resolver and the registry server talk only to this.

Methods take ``user`` (who acts; ``None``: the OS user, recorded as unauthenticated) where they change
something; every change appends to the model's activity log. Errors are :mod:`modelfmt.errors`'
registry errors: :class:`~modelfmt.errors.RegistryNotFoundError` naming the model, version, alias or
request that does not exist; :class:`~modelfmt.errors.RegistryConflictError`;
:class:`~modelfmt.errors.PermissionDeniedError`; :class:`~modelfmt.errors.RegistryError` for bad values.
"""

from __future__ import annotations

import abc
import datetime as dt
import os
from typing import Any

from modelfmt.registry.entities import ActivityEntry, ModelVersion, Page, RegisteredModel, TransitionRequest


class Registry(abc.ABC):
    """A model registry (see the module docstring). ``uri`` says where it is, for messages."""

    uri: str = ""

    # -- registered models ----------------------------------------------------------------------
    @abc.abstractmethod
    def create_registered_model(self, name: str, description: str = "", tags: dict[str, str] | None = None,
                                user: str | None = None) -> RegisteredModel:
        """Create model ``name`` (a :class:`RegistryConflictError` when it exists)."""

    @abc.abstractmethod
    def get_registered_model(self, name: str) -> RegisteredModel:
        """Model ``name`` with its aliases and latest version per stage."""

    @abc.abstractmethod
    def search_registered_models(self, filter_string: str = "", max_results: int = 100,
                                 order_by: list[str] | None = None,
                                 page_token: str | None = None) -> Page[RegisteredModel]:
        """Models matching MLflow's filter grammar (``name LIKE 'fraud%'``, ``tags.`team` = 'risk'``)."""

    @abc.abstractmethod
    def update_registered_model(self, name: str, description: str, user: str | None = None) -> RegisteredModel:
        """Set the description of ``name``."""

    @abc.abstractmethod
    def rename_registered_model(self, name: str, new_name: str, user: str | None = None) -> RegisteredModel:
        """Rename ``name`` (its versions, aliases, requests and history follow)."""

    @abc.abstractmethod
    def delete_registered_model(self, name: str, user: str | None = None) -> None:
        """Delete ``name`` and its versions (the activity log keeps the deletion)."""

    @abc.abstractmethod
    def set_registered_model_tag(self, name: str, key: str, value: str, user: str | None = None) -> None:
        """Set tag ``key`` of model ``name``."""

    @abc.abstractmethod
    def delete_registered_model_tag(self, name: str, key: str, user: str | None = None) -> None:
        """Delete tag ``key`` of model ``name``."""

    # -- aliases ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def set_registered_model_alias(self, name: str, alias: str, version: int, user: str | None = None) -> None:
        """Point ``alias`` at ``version`` (moving it from the version that had it)."""

    @abc.abstractmethod
    def delete_registered_model_alias(self, name: str, alias: str, user: str | None = None) -> None:
        """Remove ``alias`` from model ``name``."""

    @abc.abstractmethod
    def get_model_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        """The version ``alias`` points at."""

    # -- versions --------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_model_version(self, name: str, source: str, run_id: str | None = None,
                             run_link: str | None = None, description: str = "",
                             tags: dict[str, str] | None = None, user: str | None = None) -> ModelVersion:
        """Register the model at ``source`` (a local model directory, or a location the registry can
        read) as the next version of ``name`` (created when missing). Its files are copied under the
        artifact root, checked against their digests, and never change afterwards."""

    @abc.abstractmethod
    def get_model_version(self, name: str, version: int) -> ModelVersion:
        """Version ``version`` of ``name``."""

    @abc.abstractmethod
    def get_latest_versions(self, name: str, stages: list[str] | None = None) -> list[ModelVersion]:
        """The latest version in each of ``stages`` (every stage when ``None``), as MLflow answers."""

    @abc.abstractmethod
    def search_model_versions(self, filter_string: str = "", max_results: int = 10000,
                              order_by: list[str] | None = None,
                              page_token: str | None = None) -> Page[ModelVersion]:
        """Versions matching MLflow's filter grammar (``name = 'fraud'``, ``run_id = '...'``, tags)."""

    @abc.abstractmethod
    def update_model_version(self, name: str, version: int, description: str,
                             user: str | None = None) -> ModelVersion:
        """Set the description of a version."""

    @abc.abstractmethod
    def delete_model_version(self, name: str, version: int, user: str | None = None) -> None:
        """Delete a version (its files too)."""

    @abc.abstractmethod
    def set_model_version_tag(self, name: str, version: int, key: str, value: str,
                              user: str | None = None) -> None:
        """Set tag ``key`` of a version."""

    @abc.abstractmethod
    def delete_model_version_tag(self, name: str, version: int, key: str, user: str | None = None) -> None:
        """Delete tag ``key`` of a version."""

    @abc.abstractmethod
    def transition_model_version_stage(self, name: str, version: int, stage: str,
                                       archive_existing_versions: bool = False,
                                       user: str | None = None) -> ModelVersion:
        """Move a version to ``stage`` directly (the admin's way; others request it)."""

    @abc.abstractmethod
    def get_model_version_download_uri(self, name: str, version: int) -> str:
        """Where the version's files can be read (what MLflow's ``get-download-uri`` answers)."""

    @abc.abstractmethod
    def download_model_version(self, name: str, version: int, dst: str | os.PathLike | None = None) -> str:
        """A local directory holding the version's files, checked against its digests (cached: a second
        call for the same version is a lookup, not a download)."""

    # -- transition requests ---------------------------------------------------------------------
    @abc.abstractmethod
    def create_transition_request(self, name: str, version: int, stage: str, comment: str,
                                  user: str | None = None,
                                  archive_existing_versions: bool = True) -> TransitionRequest:
        """Ask for a version to move to ``stage``; it stays pending until approved, rejected or withdrawn."""

    @abc.abstractmethod
    def approve_transition_request(self, request_id: int, comment: str, user: str | None = None) -> TransitionRequest:
        """Approve a pending request and apply it. A Production request cannot be approved by its requester."""

    @abc.abstractmethod
    def reject_transition_request(self, request_id: int, comment: str, user: str | None = None) -> TransitionRequest:
        """Reject a pending request."""

    @abc.abstractmethod
    def withdraw_transition_request(self, request_id: int, user: str | None = None) -> TransitionRequest:
        """Withdraw a pending request (its requester)."""

    @abc.abstractmethod
    def list_transition_requests(self, name: str, version: int | None = None,
                                 status: str | None = "PENDING") -> list[TransitionRequest]:
        """Requests of a model (or one version) with ``status`` (all when ``None``), oldest first."""

    # -- history ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def activity(self, name: str, version: int | None = None, until: dt.datetime | None = None,
                 max_results: int = 1000, page_token: str | None = None) -> Page[ActivityEntry]:
        """The activity log of ``name`` (or one version), newest first, up to ``until``."""

    @abc.abstractmethod
    def version_in_stage_at(self, name: str, stage: str, at: dt.datetime) -> int | None:
        """The latest version that was in ``stage`` at time ``at`` ("which version was in Production
        on 3 March"), from the activity log; ``None`` when none was."""

    def close(self) -> None:  # noqa: B027 - optional: stores with connections override it
        """Release connections."""

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
