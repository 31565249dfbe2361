"""The registry's records, shaped like MLflow's registry entities (field names as in its REST API).

Times are timezone-aware UTC datetimes. Versions are ints here (MLflow's REST API writes them as strings;
the REST layers convert). Stages are MLflow's four, spelled as MLflow spells them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Generic, TypeVar

STAGES = ("None", "Staging", "Production", "Archived")
# Version statuses, as MLflow's ModelVersionStatus.
READY, PENDING_REGISTRATION, FAILED_REGISTRATION = "READY", "PENDING_REGISTRATION", "FAILED_REGISTRATION"
# Transition request statuses.
PENDING, APPROVED, REJECTED, WITHDRAWN = "PENDING", "APPROVED", "REJECTED", "WITHDRAWN"

T = TypeVar("T")


def canonical_stage(stage: str) -> str:
    """``stage`` spelled as MLflow spells it (``production`` -> ``Production``); a ValueError naming the
    four stages when it is none of them."""
    for s in STAGES:
        if s.lower() == str(stage).lower():
            return s
    raise ValueError(f"{stage!r} is not a stage: use one of {', '.join(STAGES)}")


@dataclasses.dataclass
class ModelVersion:
    """One numbered version of a registered model.

    ``source`` is where its files came from (as given at registration); ``storage_location`` where the
    registry keeps them (an artifact URI or a local directory). ``digest`` is the SHA-256 over the
    version's digest file (:mod:`modelfmt.integrity`), ``signature`` the ``MLmodel`` signature as a dict
    (``None`` when the model has none). ``user_id`` registered it; ``authenticated`` says whether that
    name was proven (an account) or only claimed (``--user``, the OS user).
    """

    name: str
    version: int
    source: str = ""
    run_id: str | None = None
    run_link: str | None = None
    description: str = ""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    current_stage: str = "None"
    aliases: list[str] = dataclasses.field(default_factory=list)
    status: str = READY
    status_message: str | None = None
    signature: dict[str, Any] | None = None
    digest: str | None = None
    storage_location: str | None = None
    user_id: str | None = None
    authenticated: bool = False
    creation_timestamp: dt.datetime | None = None
    last_updated_timestamp: dt.datetime | None = None


@dataclasses.dataclass
class RegisteredModel:
    """A named model: its description and tags, its aliases (alias -> version), and the latest version
    in each stage (``latest_versions``, as MLflow's ``get-latest-versions`` answers)."""

    name: str
    description: str = ""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    aliases: dict[str, int] = dataclasses.field(default_factory=dict)
    latest_versions: list[ModelVersion] = dataclasses.field(default_factory=list)
    creation_timestamp: dt.datetime | None = None
    last_updated_timestamp: dt.datetime | None = None


@dataclasses.dataclass
class TransitionRequest:
    """A request to move a version to ``to_stage``, pending until approved, rejected or withdrawn."""

    id: int
    name: str
    version: int
    to_stage: str
    comment: str
    requested_by: str
    created: dt.datetime
    status: str = PENDING
    reviewed_by: str | None = None
    review_comment: str | None = None
    reviewed: dt.datetime | None = None
    archive_existing_versions: bool = True


@dataclasses.dataclass
class ActivityEntry:
    """One line of a registered model's activity log: never edited, only appended.

    ``action`` is one of :data:`ACTIONS`; ``version`` is set for version-level actions; ``details`` holds
    what changed (``{"from_stage": "Staging", "to_stage": "Production"}``, ``{"alias": "champion"}``...).
    """

    id: int
    name: str
    action: str
    user: str
    at: dt.datetime
    version: int | None = None
    authenticated: bool = False
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


ACTIONS = (
    "create_model", "rename_model", "delete_model", "update_description", "set_tag", "delete_tag",
    "register_version", "delete_version", "update_version_description", "set_version_tag",
    "delete_version_tag", "transition", "set_alias", "delete_alias", "request_transition",
    "approve_request", "reject_request", "withdraw_request",
)


@dataclasses.dataclass
class Page(Generic[T]):
    """One page of search results; ``next_page_token`` is ``None`` on the last page."""

    items: list[T]
    next_page_token: str | None = None
