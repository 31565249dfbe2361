"""``modelfmt registry serve``: the registry server (MLflow's registry REST API, the pages).

Stub: the registry server helper writes it.
"""

from __future__ import annotations

import click


@click.command("serve")
def serve() -> None:
    """Serve the registry over HTTP (MLflow's registry REST API)."""
    raise click.ClickException("modelfmt registry serve is not implemented yet")
