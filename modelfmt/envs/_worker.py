"""The scorer inside a model's own environment: ``python -m modelfmt.envs._worker``.

Started by :mod:`modelfmt.envs.scorer` with pipes on stdin and stdout. The first message names the model
and the options to load it with (``env_manager="local"``: this interpreter *is* the model's environment);
the worker loads it, answers ``ready`` (or the loading error), then answers each ``predict`` message with
the predictions or the error, until stdin ends. The protocol is :mod:`modelfmt.envs._exchange`.

The protocol owns the original stdout; the model's own prints and this process's logs go to stderr,
which the caller reads (its tail explains a worker that died) and passes on.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from modelfmt.envs._exchange import decode, encode, encode_error, read_message, write_message


def _claim_pipes() -> tuple[IO[bytes], IO[bytes]]:
    """The protocol's pipes, moved off fds 0 and 1 so that nothing the model does can touch them."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = sys.stderr
    return proto_in, proto_out


def _load(header: dict, parts: list[bytes]) -> Any:
    from modelfmt.flavor_lookup import flavor_module
    from modelfmt.model import PYFUNC_FLAVOR

    options = decode(header["options"], parts)
    options["env_manager"] = "local"
    pyfunc = flavor_module(PYFUNC_FLAVOR)
    return pyfunc.load_model(header["path"], **options)


def _answer(model: Any, header: dict, parts: list[bytes]) -> tuple[dict, list[Any]]:
    data = decode(header["data"], parts)
    params = decode(header["params"], parts)
    score = model.predict_prepared if header.get("prepared") else model.predict
    predictions = score(data, params=params)
    out: list[Any] = []
    try:
        desc = encode(predictions, out)
    except TypeError as e:
        from modelfmt.errors import ModelEnvironmentError

        raise ModelEnvironmentError(
            f"the model's predict returned {e}, which cannot be passed back from its environment "
            "(DataFrame, Series, numpy arrays and scalars, lists, dicts, str, bytes, numbers can)"
        ) from None
    return {"ok": True, "result": desc}, out


def serve(proto_in: IO[bytes], proto_out: IO[bytes]) -> int:
    """Answer messages until ``proto_in`` ends; 0 then (1 when the model failed to load)."""
    first = read_message(proto_in)
    if first is None:
        return 0
    try:
        model = _load(*first)
    except Exception as e:  # noqa: BLE001 - every loading failure goes back to the caller, as it was
        write_message(proto_out, {"ok": False, "error": encode_error(e)})
        return 1
    write_message(proto_out, {"ok": True, "ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        message = read_message(proto_in)
        if message is None:
            return 0
        try:
            header, parts = _answer(model, *message)
        except Exception as e:  # noqa: BLE001 - the caller raises it again, same class and message
            header, parts = {"ok": False, "error": encode_error(e)}, []
        write_message(proto_out, header, parts)


def main() -> int:
    """Entry point: take the pipes, then :func:`serve`."""
    proto_in, proto_out = _claim_pipes()
    try:
        return serve(proto_in, proto_out)
    except (BrokenPipeError, EOFError):  # the caller went away mid-message: nothing to answer
        return 0


if __name__ == "__main__":
    sys.exit(main())
