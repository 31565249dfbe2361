"""``--env-manager uv|virtualenv`` on ``serve``, ``predict`` and ``verify``: run the command itself in the
model's environment.

Right after the command opens the model, :func:`run_in_model_environment` builds (or reuses) the model's
environment and replaces this process with the same command run by that environment's interpreter
(``python -m modelfmt ... --env-manager local``): the server, the prediction and the check then happen
inside it, with no extra hop per request. Nothing has been read from stdin yet, so ``predict -i -``
keeps its input.

When the command was not started from this process's own command line (``main([...])`` from Python, a
test's ``CliRunner``), this process is not replaced: the command runs in a child process with the same
standard streams, and its exit status is the command's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import click

from modelfmt.open import OpenedModel

# Set in the re-run command's environment: the environment it runs in.
RESTORED_ENV = "MODELFMT_RESTORED_ENV"


def run_in_model_environment(opened: OpenedModel) -> None:
    """Return at once for ``env_manager`` local; else re-run this command in the model's environment
    (this call does not return then)."""
    manager = opened.options.get("env_manager") or "local"
    if manager == "local":
        return
    from modelfmt.cli import CliState
    from modelfmt.envs import ensure_environment

    ctx = click.get_current_context()
    state = ctx.find_object(CliState)
    argv = state.argv if state is not None else None
    environment = ensure_environment(opened, manager)
    args = local_args(sys.argv[1:] if argv is None else argv)
    extra_env: dict[str, str] = {}
    if opened.registered_name and opened.source != opened.path:
        # The environment may lack the registry's client (sqlalchemy): it gets the resolved copy, and
        # the name V2 clients address it by.
        args = [opened.path if a == opened.source else a for a in args]
        if "MODELFMT_MODEL_NAME" not in os.environ:
            extra_env["MODELFMT_MODEL_NAME"] = opened.registered_name
    # -I: neither PYTHONPATH nor the current directory (a checkout holding modelfmt/) shadow the environment's.
    cmd = [environment.python, "-I", "-m", "modelfmt", *args]
    env = dict(os.environ, MODELFMT_ENV_MANAGER="local", **extra_env, **{RESTORED_ENV: environment.root})
    if argv is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(environment.python, cmd, env)
    ctx.exit(_run_child(cmd, env))


def local_args(args: Sequence[str]) -> list[str]:
    """``args`` with every ``--env-manager`` option dropped and ``--env-manager local`` put after the
    command name (the first argument that is not a group option)."""
    out: list[str] = []
    skip = False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a == "--":
            out.extend(args[i:])
            break
        if a == "--env-manager":
            skip = True
            continue
        if a.startswith("--env-manager="):
            continue
        out.append(a)
    at = next((i for i, a in enumerate(out) if not a.startswith("-")), len(out))
    return [*out[: at + 1], "--env-manager", "local", *out[at + 1 :]]


def _run_child(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` with this process's standard streams (copied through when they are not files)."""
    kwargs: dict[str, Any] = {"env": env}
    streams = {"stdin": sys.stdin, "stdout": sys.stdout, "stderr": sys.stderr}
    for name, stream in streams.items():
        fd = _fileno(stream)
        if fd is not None:
            kwargs[name] = fd
        elif name == "stdin":
            data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode()
            kwargs["input"] = data
        else:
            kwargs[name] = subprocess.PIPE
    proc = subprocess.run(cmd, check=False, **kwargs)
    for name, data in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if data:
            stream = streams[name]
            if hasattr(stream, "buffer"):
                stream.buffer.write(data)
            else:
                stream.write(data.decode("utf-8", "replace"))
            stream.flush()
    return proc.returncode


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        return None
