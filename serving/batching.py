"""Adaptive batching: requests that arrive together in a worker are scored in one model call."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """``max_rows``: most rows in one merged model call; ``max_wait_ms``: longest a request waits for
    others from its arrival. ``max_rows <= 1`` turns batching off."""

    max_rows: int = 0
    max_wait_ms: float = 0.0
