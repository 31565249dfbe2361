"""The ``modelfmt serve`` command: options, each also read from a ``MODELFMT_*`` environment variable."""

from __future__ import annotations

import re
from decimal import Decimal

import click

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str | int) -> int:
    """Bytes in ``text``: ``1048576``, ``512K``, ``100MiB``, ``1GB``.

    K, M, G and KiB, MiB, GiB are binary (1024); KB, MB, GB decimal (1000).
    """
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size: write bytes, or a number with K, M, G, KiB, MiB, GiB, KB, MB, GB")
    # Decimal, not float: exact for "1.5K", and no OverflowError (a traceback) for a very long number.
    size = int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()])
    if size <= 0:
        raise ValueError(f"the size must be positive, got {text!r}")
    return size


def _size_option(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _env(name: str) -> dict:
    return {"envvar": f"MODELFMT_{name}", "show_envvar": True, "show_default": True}


@click.command("serve")
@click.argument("model", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 in a container).", **_env("HOST"))
@click.option("--port", default=5001, type=click.IntRange(0, 65535), help="Port to listen on.", **_env("PORT"))
@click.option("--server", default="gunicorn", type=click.Choice(["gunicorn", "granian"]), **_env("SERVER"),
              help="HTTP engine: gunicorn (gthread workers) or granian (Rust; the granian extra; see the README).")
@click.option("--workers", type=click.IntRange(1), envvar="MODELFMT_WORKERS", show_envvar=True,
              help="Worker processes, each with its own copy of the model.  [default: cores, at most 4]")
@click.option("--threads", default=16, type=click.IntRange(1), **_env("THREADS"),
              help="Requests a worker runs at once (its threads; concurrent ones can be batched). Under gunicorn "
                   "2 or more run the gthread worker (keep-alive), 1 the sync worker.")
@click.option("--timeout", default=60.0, type=click.FloatRange(0.1), **_env("TIMEOUT"),
              help="Seconds a request may run; past it the answer is 504 and the worker is replaced.")
@click.option("--max-body-size", default="100MiB", callback=_size_option, **_env("MAX_BODY_SIZE"),
              help="Largest request body (bytes, or 512K, 100MiB...); larger gets 413.")
@click.option("--max-batch-rows", type=click.IntRange(0), envvar="MODELFMT_MAX_BATCH_ROWS", show_envvar=True,
              help="Most rows in one batched model call; 0 or 1 turns adaptive batching off.  [default: the runtime's]")
@click.option("--max-batch-wait", type=click.FloatRange(0), envvar="MODELFMT_MAX_BATCH_WAIT", show_envvar=True,
              help="Milliseconds a request may wait for others to batch with.  [default: the runtime's]")
@click.option("--access-log/--no-access-log", default=True, **_env("ACCESS_LOG"),
              help="One log line per request on stderr.")
@click.option("--model-name", envvar="MODELFMT_MODEL_NAME", show_envvar=True,
              help="The name V2 and KServe clients address the model by.  [default: its registered name, "
                   "else its directory's name]")
@click.option("--grpc-port", type=click.IntRange(1, 65535), envvar="MODELFMT_GRPC_PORT", show_envvar=True,
              help="Also serve V2 over gRPC on this port, in every worker (the grpc extra).  [default: off]")
def serve(model: str, host: str, port: int, server: str, workers: int | None, threads: int, timeout: float,
          max_body_size: int, max_batch_rows: int | None, max_batch_wait: float | None, access_log: bool,
          model_name: str | None, grpc_port: int | None) -> None:
    """Serve MODEL over HTTP with MLflow's scoring protocol (POST /invocations) until SIGTERM or Ctrl-C.

    With --debug (before or after the command name, or MODELFMT_DEBUG) 500 answers carry stack traces
    and the logs go down to debug.
    """
    from modelfmt.cli import debug_enabled, opening_options
    from modelfmt.cli._reexec import run_in_model_environment
    from modelfmt.open import open_model
    from modelfmt.serving.server import batch_config, run

    opened = open_model(model, **opening_options())  # a wrong path fails here, in one line, before any worker starts
    run_in_model_environment(opened)  # --env-manager uv: the server itself runs in the model's environment
    run(opened, server=server, host=host, port=port, workers=workers, threads=threads, timeout=timeout,
        max_body_size=max_body_size, debug=debug_enabled(), access_log=access_log,
        batching=batch_config(max_batch_rows, max_batch_wait), model_name=model_name, grpc_port=grpc_port)
