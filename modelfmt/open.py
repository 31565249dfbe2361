"""One way in to a model: resolve a location, read and check ``MLmodel`` once, hand back the result.

Every flavor loader and every deploy target starts from :func:`open_model`. Nothing here imports or
unpickles anything from the model directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from modelfmt.errors import ModelNotFoundError
from modelfmt.model import Model


@dataclass
class OpenedModel:
    """A resolved, checked model directory: its absolute ``path`` and its ``MLmodel`` (``model``).

    ``options`` are the opening options the caller gave (trust, verification...), passed on to the
    flavor that loads it; ``source`` is the location as the caller wrote it.
    """

    path: str
    model: Model
    source: str
    options: dict[str, Any] = field(default_factory=dict)


def _resolve(location: str | os.PathLike) -> str:
    text = os.fspath(location)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif text.startswith("file:"):
        text = text[len("file:") :]
    return os.path.abspath(text)


def open_model(location: str | os.PathLike | OpenedModel, **options: Any) -> OpenedModel:
    """Resolve ``location`` (a path or ``file:`` URI) and read its ``MLmodel``; an :class:`OpenedModel`
    is returned as it is."""
    if isinstance(location, OpenedModel):
        return location
    path = _resolve(location)
    if not os.path.isdir(path):
        raise ModelNotFoundError(f"no model directory at {os.fspath(location)!r}")
    return OpenedModel(path=path, model=Model.load(path), source=os.fspath(location), options=dict(options))
