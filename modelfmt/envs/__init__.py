"""A model's own Python environment (``env_manager="uv"|"virtualenv"``): build it, cache it, score in it.

:func:`ensure_environment` returns a built, checked, cached environment for an opened model
(:mod:`modelfmt.envs.build`); :func:`load_restored` a model whose ``predict`` runs in it, through a
scorer process that exchanges Arrow with this one (:mod:`modelfmt.envs.scorer`).
"""

from __future__ import annotations

from typing import Any


def ensure_environment(opened: Any, manager: str) -> Any:
    """The model's environment, built by ``manager`` (``uv`` or ``virtualenv``), from the cache when valid."""
    from modelfmt.envs.build import ensure_environment as ensure

    return ensure(opened, manager)


def load_restored(opened: Any, **flavor_options: Any) -> Any:
    """A model whose ``predict`` runs in the model's own environment (``opened.options['env_manager']``)."""
    from modelfmt.envs.scorer import load_restored as load

    return load(opened, **flavor_options)
