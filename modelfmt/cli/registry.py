"""``modelfmt registry ...``: the model registry's commands (register, list, show, transition, request,
approve, reject, alias, history; ``serve`` lives in :mod:`modelfmt.cli.registry_serve`).

Stub: the registry store helper writes the commands.
"""

from __future__ import annotations

import click

from modelfmt.cli.registry_serve import serve as _serve


@click.group("registry")
def registry() -> None:
    """The model registry: named models, versions, stages, aliases, approvals and history."""


registry.add_command(_serve)
