"""Private load-side helper of the built-in flavors; the save side is public in :mod:`modelfmt.flavors.save`."""

from __future__ import annotations

import os

from modelfmt.errors import ModelFormatError


def model_file(path: str, conf: dict, key: str, default: str) -> str:
    """The path inside the model that flavor field ``key`` names (``default`` when absent).

    :func:`modelfmt.open.open_model` has already checked that it stays inside the model directory.
    """
    value = conf.get(key) or default
    if not isinstance(value, str):
        raise ModelFormatError(f"{key!r} in MLmodel should name a file in the model directory, got {value!r}")
    return os.path.join(path, value)
