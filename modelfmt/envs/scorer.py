"""A model scored in its own environment: the caller's side of the scorer process.

:func:`load_restored` builds (or reuses) the model's environment (:func:`modelfmt.envs.ensure_environment`),
starts ``python -m modelfmt.envs._worker`` in it, and returns a :class:`RestoredModel`: it has
``predict(data, params=None)`` and ``metadata`` like a ``PyFuncModel``, and each call sends the data to the
worker as Arrow (:mod:`modelfmt.envs._exchange`) and brings the answer back the same way, so column types
and prediction types are those of ``env_manager="local"``.

What the caller can rely on:

- An error in the worker comes back as the same modelfmt error class with the same message (a
  ``SchemaError`` stays one, and a server answers 400 for it); ``--debug`` tracebacks show the worker's
  traceback as the cause.
- A worker that dies is a :class:`ModelEnvironmentError` saying how it ended and what it last printed,
  never a hang; the next call starts a new one. A worker that cannot load the model says why.
- One call at a time per model (a lock); a process that forked gets its own worker.
- The worker ends when the model is closed (``close()``, ``with``, garbage collection, exit), and by
  itself when the caller dies (its stdin ends).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

from modelfmt.envs._exchange import decode, decode_error, encode, read_message, write_message
from modelfmt.errors import ModelEnvironmentError, ModelFormatError
from modelfmt.model import Model
from modelfmt.open import OpenedModel

_log = logging.getLogger(__name__)
_TAIL_LINES = 30
# How long a worker may take to end after its stdin closed, before it is killed.
_STOP_SECONDS = 5.0


def load_restored(opened: OpenedModel, **flavor_options: Any) -> RestoredModel:
    """``opened`` loaded in its own environment (``opened.options["env_manager"]``: ``uv`` or ``virtualenv``)."""
    from modelfmt.envs import ensure_environment

    manager = opened.options.get("env_manager") or "local"
    if manager == "local":
        raise ModelEnvironmentError("load_restored needs env_manager 'uv' or 'virtualenv'; 'local' loads in-process")
    environment = ensure_environment(opened, manager)
    return RestoredModel(opened, environment, flavor_options)


class _Worker:
    """One scorer process: its pipes, and the tail of its stderr (passed on to this process's stderr)."""

    def __init__(self, python: str, env: dict[str, str]) -> None:
        self.pid_of_caller = os.getpid()
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        try:
            self.proc = subprocess.Popen(
                [python, "-I", "-u", "-m", "modelfmt.envs._worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, close_fds=True,
            )
        except OSError as e:
            raise ModelEnvironmentError(f"cannot start the model's scorer with {python}: {e}") from e
        self._reader = threading.Thread(target=self._pump_stderr, name="modelfmt-scorer-stderr", daemon=True)
        self._reader.start()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.tail.append(line.rstrip("\n"))
            try:
                sys.stderr.write(line)
                sys.stderr.flush()
            except (ValueError, OSError):  # our stderr is closed (exiting): keep only the tail
                pass

    def exchange(self, header: dict, parts: list[Any]) -> tuple[dict, list[bytes]]:
        """Send one message and read the answer; a dead worker is an :class:`EOFError`/:class:`OSError`."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        write_message(self.proc.stdin, header, parts)
        answer = read_message(self.proc.stdout)
        if answer is None:
            raise EOFError("the scorer closed its output")
        return answer

    def ended(self, note: str = "") -> str:
        """How the process ended (waited for briefly), ``note``, and what it printed last."""
        try:
            rc = self.proc.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait()
        self._reader.join(timeout=1.0)
        if rc < 0:
            try:
                how = f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                how = f"was killed by signal {-rc}"
        else:
            how = f"exited with code {rc}"
        tail = "\n".join(list(self.tail)[-10:]).strip()
        return how + note + (f"; its last output:\n{tail}" if tail else "; it printed nothing")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        """Close its stdin (the worker then exits by itself); kill it if it does not."""
        if self.pid_of_caller != os.getpid():
            return  # a forked child's copy: the process belongs to the parent
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self._reader.join(timeout=1.0)


def _stop(holder: list[_Worker | None]) -> None:
    worker, holder[0] = holder[0], None
    if worker is not None:
        worker.stop()


class RestoredModel:
    """A model loaded in its own environment, scored there: ``predict`` and ``metadata`` as ``PyFuncModel``.

    ``environment`` is the environment it runs in (``.python``, ``.root``, ``.key``, ``.manager``).
    """

    def __init__(self, opened: OpenedModel, environment: Any, flavor_options: dict[str, Any]) -> None:
        self._opened = opened
        self.environment = environment
        self.path = opened.path
        self._input_schema = opened.model.get_input_schema()
        self._init_parts: list[Any] = []
        options = {k: v for k, v in opened.options.items() if k != "env_manager"}
        options = {k: _plain(v) for k, v in {**options, **flavor_options}.items()}
        try:
            self._init_desc = encode(options, self._init_parts)
        except TypeError as e:
            raise ModelEnvironmentError(
                f"cannot pass the load options to the model's environment: one is {e}; "
                "options must be strings, numbers, lists or dicts of them"
            ) from None
        self._lock = threading.Lock()
        self._holder: list[_Worker | None] = [None]
        self._finalizer = weakref.finalize(self, _stop, self._holder)
        with self._lock:
            self._start()  # load now: a model that cannot load fails here, as with local

    @property
    def metadata(self) -> Model:
        """The model's ``MLmodel`` descriptor."""
        return self._opened.model

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MODELFMT_ENV_MANAGER"] = "local"  # the worker is the environment: no environment inside it
        env["MODELFMT_RESTORED_ENV"] = str(getattr(self.environment, "root", ""))
        # Started with -I (no PYTHONPATH, no current directory on sys.path: the caller's packages, or a
        # checkout it runs in, must not shadow the environment's) and -u (its stderr reaches us line by line).
        return env

    def _start(self) -> _Worker:
        python = str(self.environment.python)
        worker = _Worker(python, self._env())
        header = {"op": "load", "path": self.path, "options": self._init_desc}
        try:
            answer, parts = worker.exchange(header, self._init_parts)
        except (OSError, EOFError, ValueError):
            raise ModelEnvironmentError(
                f"the model's scorer in {self._where()} did not start: it {worker.ended()}"
            ) from None
        if not answer.get("ok"):
            worker.stop()
            raise decode_error(answer["error"], _load_failure(self._where())) from _remote(answer["error"])
        self._holder[0] = worker
        return worker

    def _where(self) -> str:
        return f"{getattr(self.environment, 'root', '?')} ({getattr(self.environment, 'manager', '?')})"

    def _worker(self) -> _Worker:
        worker = self._holder[0]
        if worker is not None and worker.pid_of_caller != os.getpid():
            self._holder[0] = worker = None  # forked: the parent's pipes are not ours to use
        if worker is None or worker.proc.poll() is not None:
            if worker is not None:
                worker.stop()
            worker = self._start()
        return worker

    def predict(self, data: Any, params: dict | None = None) -> Any:
        """Score ``data`` in the model's environment: the same answer, type and errors as ``local``."""
        return self._call(data, params, prepared=False)

    def predict_prepared(self, data: Any, params: dict | None = None) -> Any:
        """``predict`` for input already checked (``enforce_schema``/``enforce_params``), as ``PyFuncModel``'s."""
        return self._call(data, params, prepared=True)

    def _call(self, data: Any, params: dict | None, prepared: bool) -> Any:
        parts: list[Any] = []
        try:
            header = {"op": "predict", "prepared": prepared, "data": encode(data, parts),
                      "params": encode(params, parts)}
        except TypeError as e:
            raise ModelEnvironmentError(
                f"cannot pass the input to the model's environment: it is {e}; pass a DataFrame, Series, "
                "numpy array, list or dict"
            ) from None
        with self._lock:
            worker = self._worker()
            try:
                answer, out = worker.exchange(header, parts)
            except (OSError, EOFError, ValueError):
                self._holder[0] = None
                raise ModelEnvironmentError(
                    f"the model's scorer in {self._where()} "
                    f"{worker.ended(' while scoring (the next call starts a new one)')}"
                ) from None
        if not answer.get("ok"):
            raise decode_error(answer["error"], _load_failure(self._where())) from _remote(answer["error"])
        return decode(answer["result"], out)

    def unwrap_python_model(self) -> Any:
        """Not available: the model object lives in another process."""
        raise ModelFormatError("the model runs in its own environment (another process); use env_manager='local'")

    def get_raw_model(self) -> Any:
        """Not available: the model object lives in another process."""
        raise ModelFormatError("the model runs in its own environment (another process); use env_manager='local'")

    def close(self) -> None:
        """End the scorer process (a later ``predict`` starts a new one)."""
        with self._lock:
            _stop(self._holder)

    def __enter__(self) -> RestoredModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RestoredModel(path={self.path!r}, flavors={sorted(self.metadata.flavors)}, "
                f"environment={str(getattr(self.environment, 'root', None))!r})")


def _plain(value: Any) -> Any:
    """Paths as strings: the opening options may hold ``PathLike`` key files."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _load_failure(where: str) -> Callable[[str], Exception]:
    """The error for a failure in the worker that is not a modelfmt error (an ``ImportError``...)."""
    return lambda message: ModelEnvironmentError(f"in the model's environment {where}: {message}")


class RemoteTraceback(Exception):
    """The traceback of the error in the scorer process (the ``__cause__`` of the error raised here)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]) if self.args else ""


def _remote(info: dict) -> RemoteTraceback | None:
    tb = info.get("traceback")
    return RemoteTraceback(tb.rstrip()) if tb else None
