"""Moved to :mod:`modelfmt.envs.wheels` (shared by the model environments and the Docker image); the
names stay importable from here."""

from modelfmt.envs.wheels import (  # noqa: F401 - re-exported
    copy_sources,
    modelfmt_wheel,
    pins_from_wheels,
    platform_tags,
    resolve_wheels,
    source_tree,
    wheel_from_installed,
    wheel_from_source,
)
