"""What a location resolver gives back: the local directory, and the registry name it came from.

A resolver (:func:`modelfmt.open.register_resolver`) returns a plain path, or a :class:`Resolved` when the
location names a registered model version (``models:/fraud/Production`` is version 3 of ``fraud``), so
that deploy targets can say which version they serve (V2's model name and version, ``/metadata``).
"""

from __future__ import annotations

from typing import NamedTuple


class Resolved(NamedTuple):
    """A resolved location: the local model directory ``path``, and for a registered model version its
    ``name`` and ``version`` (a string: MLflow's REST API writes versions as strings)."""

    path: str
    name: str | None = None
    version: str | None = None
