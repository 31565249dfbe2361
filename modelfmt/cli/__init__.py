"""The ``modelfmt`` command. Commands of the deploy targets are imported only when they run."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> "module:attribute" of a click command, loaded on first use so `modelfmt --help` stays fast.
LAZY_COMMANDS = {
    "info": "modelfmt.cli.info:info",
    "predict": "modelfmt.cli.predict:predict",
    "verify": "modelfmt.cli.info:verify",
    "serve": "modelfmt.cli.serve:serve",
    "convert": "modelfmt.cli.convert:convert",
    "generate-dockerfile": "modelfmt.cli.docker:generate_dockerfile_command",
    "build-docker": "modelfmt.cli.docker:build_docker_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules and load when called."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> Any:
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                reason = str(e)  # ``e`` is unbound once the except block ends

                @click.command(name, help=f"(unavailable: {reason})")
                def _missing() -> None:
                    raise click.ClickException(f"'{name}' is not available in this installation: {reason}")

                return _missing
        return super().get_command(ctx, name)


def fail(e: BaseException, debug: bool) -> None:
    """One clear line on stderr and exit 2 (the traceback only with ``--debug``)."""
    if debug:
        raise e
    click.echo(f"modelfmt: error: {e}", err=True)
    sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelfmt", prog_name="modelfmt")
def cli() -> None:
    """Save, inspect, score and serve models in the MLflow-compatible model format."""


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="modelfmt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
