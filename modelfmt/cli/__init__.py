"""The ``modelfmt`` command.

Each command lives in a module of this package, imported only when it runs (``modelfmt --help`` stays
fast), and imports the flavors and deploy targets it needs inside its function. The commands raise; the
group reports every failure the same way (:mod:`modelfmt.cli.report`). ``--debug`` is one option that
every command shares, accepted before or after the command name, or set by ``MODELFMT_DEBUG``.
``--trust-type NAME`` (repeatable) is one option every command that loads a model shares
(:data:`TRUST_COMMANDS`); the command passes it to ``open_model`` through :func:`opening_options`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click

from modelfmt.cli.report import BAD_INPUT, INTERRUPTED, CommandError, report

# name -> "module:attribute" of a click command, loaded on first use so `modelfmt --help` stays fast.
LAZY_COMMANDS = {
    "info": "modelfmt.cli.info:info",
    "predict": "modelfmt.cli.predict:predict",
    "verify": "modelfmt.cli.info:verify",
    "seal": "modelfmt.cli.seal:seal",
    "sign": "modelfmt.cli.sign:sign",
    "serve": "modelfmt.cli.serve:serve",
    "convert": "modelfmt.cli.convert:convert",
    "generate-dockerfile": "modelfmt.cli.docker:generate_dockerfile_command",
    "build-docker": "modelfmt.cli.docker:build_docker_command",
    "generate-k8s": "modelfmt.cli.k8s:generate_k8s",
    "prepare-env": "modelfmt.cli.env:prepare_env",
    "env": "modelfmt.cli.env:env_group",
    "registry": "modelfmt.cli.registry:registry",
}

# Commands that load (or ship for loading) a model: they take --trust-type, --no-verify, --public-key
# and --certificate.
TRUST_COMMANDS = frozenset(
    {"predict", "verify", "serve", "convert", "generate-dockerfile", "build-docker", "generate-k8s", "prepare-env"}
)
# Commands that can run a model in its own environment: they take --env-manager.
ENV_COMMANDS = frozenset({"predict", "verify", "serve", "generate-dockerfile", "build-docker", "prepare-env"})

TRUST_HELP = (
    "Trust this type in a skops file, beyond the reviewed defaults (repeatable; e.g. "
    "mymodule.MyEstimator). MODELFMT_TRUSTED_TYPES (names separated by commas or spaces) adds more."
)

DEBUG_HELP = "Show the traceback of an error (serve: also stack traces in 500 answers, and debug logs)."

# click 8.2+ raises it for a bare `modelfmt`; with 8.1 the group prints its help itself.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


@dataclass
class CliState:
    """What one run of the command knows about itself (``ctx.obj``): ``--debug`` and the command name."""

    debug: bool = False
    command: str | None = None
    trusted_types: list[str] = field(default_factory=list)
    verify: bool = True
    public_keys: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    env_manager: str | None = None
    # The arguments main() was given; None when they are sys.argv's (this process is the command, so
    # --env-manager may re-exec it: modelfmt.cli._reexec).
    argv: list[str] | None = None


def _remember_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    state = ctx.find_object(CliState)
    if value and state is not None:
        state.debug = True  # given before or after the command name: either one turns it on
    return value


def debug_option() -> click.Option:
    """The ``--debug`` option (a new instance of the one definition) for the group and each command."""
    return click.Option(
        ["--debug"], is_flag=True, envvar="MODELFMT_DEBUG", show_envvar=True, expose_value=False,
        is_eager=True, callback=_remember_debug, help=DEBUG_HELP,
    )


def _remember_trust(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    state = ctx.find_object(CliState)
    if state is not None:
        state.trusted_types.extend(v for v in value if v not in state.trusted_types)
    return value


def trust_option() -> click.Option:
    """The ``--trust-type NAME`` option (repeatable), a new instance for each command that loads a model."""
    return click.Option(
        ["--trust-type", "trust_types"], multiple=True, metavar="NAME", expose_value=False,
        callback=_remember_trust, help=TRUST_HELP,
    )


def _remember(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        state = ctx.find_object(CliState)
        if state is not None and value not in (None, ()):
            if isinstance(getattr(state, attr), list):
                getattr(state, attr).extend(v for v in value if v not in getattr(state, attr))
            else:
                setattr(state, attr, value)
        return value

    return callback


def verify_options() -> list[click.Option]:
    """``--no-verify``, ``--public-key PEM`` and ``--certificate PEM`` (new instances for one command)."""
    return [
        click.Option(["--no-verify", "no_verify"], is_flag=True, expose_value=False,
                     callback=lambda ctx, p, v: _remember("verify")(ctx, p, False if v else None),
                     help="Load without checking the digests recorded at save (not recommended)."),
        click.Option(["--public-key", "public_keys"], multiple=True, metavar="PEM", expose_value=False,
                     callback=_remember("public_keys"),
                     help="Require a model.sig signed by this key (repeatable; or MODELFMT_PUBLIC_KEY)."),
        click.Option(["--certificate", "certificates"], multiple=True, metavar="PEM", expose_value=False,
                     callback=_remember("certificates"),
                     help="Require a model.sig signed with a certificate issued by this chain (repeatable)."),
    ]


def env_manager_option() -> click.Option:
    """``--env-manager local|uv|virtualenv`` (a new instance for one command)."""
    return click.Option(
        ["--env-manager", "env_manager"], type=click.Choice(["local", "uv", "virtualenv", "conda"]),
        envvar="MODELFMT_ENV_MANAGER", show_envvar=True, expose_value=False, callback=_remember("env_manager"),
        help="Where the model runs: local (this Python, the default), or its own environment built by uv "
             "(recommended) or virtualenv from its requirements, cached.",
    )


def opening_options() -> dict[str, Any]:
    """The opening options the command line gave, for ``open_model(location, **opening_options())``:
    ``trusted_types`` (``--trust-type``), ``verify`` (``--no-verify``), ``public_key`` (``--public-key``),
    ``certificate`` (``--certificate``), ``env_manager`` (``--env-manager``). Environment variables
    (``MODELFMT_TRUSTED_TYPES``, ``MODELFMT_PUBLIC_KEY``, ``MODELFMT_ALLOW_PICKLE``) are read where the
    model opens, so Python callers get them too."""
    ctx = click.get_current_context(silent=True)
    state = ctx.find_object(CliState) if ctx is not None else None
    if state is None:
        return {}
    out: dict[str, Any] = {}
    if state.trusted_types:
        out["trusted_types"] = list(state.trusted_types)
    if not state.verify:
        out["verify"] = False
    if state.public_keys:
        out["public_key"] = list(state.public_keys)
    if state.certificates:
        out["certificate"] = list(state.certificates)
    if state.env_manager is not None:
        out["env_manager"] = state.env_manager
    return out


def debug_enabled() -> bool:
    """Whether ``--debug`` (or ``MODELFMT_DEBUG``) is on for the command running now."""
    ctx = click.get_current_context(silent=True)
    state = ctx.find_object(CliState) if ctx is not None else None
    return bool(state and state.debug)


def fail(error: BaseException | str, exit_code: int = BAD_INPUT) -> NoReturn:
    """End the running command with ``error`` as its one line and ``exit_code`` (2: bad input)."""
    message = error if isinstance(error, str) else getattr(error, "message", None) or str(error)
    if isinstance(error, BaseException):
        raise CommandError(message, exit_code) from error
    raise CommandError(message, exit_code)


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules and load when called.

    It gives every command the shared ``--debug`` option (and those in :data:`TRUST_COMMANDS`
    ``--trust-type``), and reports every failure by one policy
    (:func:`modelfmt.cli.report.report`) instead of click's ``Error:`` lines.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in LAZY_COMMANDS:
            return super().get_command(ctx, name)
        module, attr = LAZY_COMMANDS[name].split(":")
        # No except here: a command module imports no optional library at its top, so a failure is a
        # bug, and the group's report says so.
        command: click.Command = getattr(importlib.import_module(module), attr)
        if not any(p.name == "debug" for p in command.params):
            command.params.append(debug_option())
        if name in TRUST_COMMANDS and not any(p.name == "trust_types" for p in command.params):
            command.params.append(trust_option())
            command.params.extend(verify_options())
        if name in ENV_COMMANDS and not any(p.name == "env_manager" for p in command.params):
            command.params.append(env_manager_option())
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        state = ctx.find_object(CliState)
        if state is not None:
            state.command = name
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # Here, before click turns it into an Abort and prints a blank line.
            raise SystemExit(INTERRUPTED) from None

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command; in standalone mode (the console script) every failure exits by the policy."""
        state = extra.setdefault("obj", CliState())
        if isinstance(state, CliState):
            state.argv = None if args is None else list(args)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # bare `modelfmt`: the help, as click shows it
            click.echo(e.ctx.get_help(), err=True)
            sys.exit(BAD_INPUT)
        except Exception as e:  # noqa: BLE001 - this is the one place that reports every failure
            sys.exit(report(e, debug=getattr(state, "debug", False), command=getattr(state, "command", None)))
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelfmt", prog_name="modelfmt")
def cli() -> None:
    """Save, inspect, score and serve models in the MLflow-compatible model format."""


cli.params.append(debug_option())


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    return cli.main(args=argv, prog_name="modelfmt")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
