"""Small helpers the store's modules share: time in milliseconds, who acts, names, stages and versions
checked at the boundary (each a :class:`~modelfmt.errors.RegistryError` naming the bad value)."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import time
from typing import Any

from modelfmt.errors import RegistryError
from modelfmt.registry import schema as t
from modelfmt.registry.entities import canonical_stage


def now_ms() -> int:
    """Now, in milliseconds since the epoch (the store's time unit)."""
    return time.time_ns() // 1_000_000


def from_ms(ms: int | None) -> dt.datetime | None:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def to_ms(when: dt.datetime) -> int:
    """An (aware, or UTC if naive) datetime as milliseconds since the epoch."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def who(user: str | None) -> tuple[str, bool]:
    """(name, authenticated) of the one acting: ``user`` as claimed, else the OS user; never proven here."""
    if user:
        return str(user), False
    try:
        return getpass.getuser(), False
    except (KeyError, OSError):  # no passwd entry (a container's random uid)
        return os.environ.get("USER") or f"uid-{os.getuid()}", False


def check_name(name: Any, what: str = "model name") -> str:
    """``name`` when it can name a registered model (and a directory of the artifact root)."""
    if not isinstance(name, str) or not name.strip():
        raise RegistryError(f"the {what} must be a non-empty string, got {name!r}")
    # A leading dot is refused: the artifact root keeps its own folders (.uploads) beside the models'.
    if len(name) > t.NAME_LENGTH or any(c in name for c in "/\\\0") or name.startswith("."):
        raise RegistryError(
            f"invalid {what} {name!r}: at most {t.NAME_LENGTH} characters, no '/', '\\' or NUL, "
            "not starting with '.'"
        )
    return name


def check_stage(stage: Any) -> str:
    """``stage`` spelled as MLflow spells it; a :class:`RegistryError` naming the four otherwise."""
    try:
        return canonical_stage(stage)
    except ValueError as e:
        raise RegistryError(str(e)) from None


def check_version(version: Any) -> int:
    """``version`` as a positive int (MLflow's REST API sends strings)."""
    try:
        v = int(version)
    except (TypeError, ValueError):
        raise RegistryError(f"version {version!r} is not a version number") from None
    if v < 1 or str(version).strip() != str(v):
        raise RegistryError(f"version {version!r} is not a version number (1, 2, ...)")
    return v


def at_ms(ms: int) -> dt.datetime:
    """Milliseconds since the epoch (never NULL) as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def new_id(result: Any) -> int:
    """The primary key an INSERT made."""
    key = result.inserted_primary_key
    assert key is not None  # an INSERT of one row always has one
    return int(key[0])
