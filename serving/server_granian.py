"""``modelfmt serve --server granian``: the scoring app under granian's WSGI server (a Rust HTTP server).

- Each worker process forks from the master with the opened model, loads it and runs the app on
  granian's blocking threads (``--threads`` of them); the master respawns a worker that dies.
- A request past ``--timeout`` is answered 504 by the watchdog of :mod:`modelfmt.serving.timeouts`, as
  under gunicorn. granian gives a WSGI app no socket, so each request's responder (granian's protocol
  object, which answers from any thread) is put in its environ: granian's WSGI call wrapper is wrapped
  once in the worker for that (:func:`_pass_responder`; granian is pinned, and the tests catch a change).
- SIGTERM and SIGINT stop gracefully: each worker stops accepting and finishes the requests it holds.
- Metrics: the same multiprocess directory as under gunicorn, summed over workers by ``/metrics``.
- V2 over gRPC (``grpc_options``): started in each worker once its app has loaded, as under gunicorn;
  stopped when the worker process exits.
- granian's master stops the whole server when a respawned worker dies again within 5.5 s of its start
  (its crash-loop guard): with ``--timeout`` under ~5 s, two timeouts in a row on one worker can do that.
- The gap that keeps gunicorn the default: a worker retiring after a timeout stops through granian's
  graceful stop, which closes, unanswered, the connections it had accepted and not yet read (gunicorn
  leaves them in the listening socket's backlog for the next worker). ``retire_grace`` narrows it only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelfmt.serving import timeouts
from modelfmt.serving.timeouts import TimeoutGuard

if TYPE_CHECKING:
    from modelfmt.open import OpenedModel

# granian's access-log fields (its own names), in the shape of gunicorn's line: time, client, request, status, ms.
ACCESS_LOG_FORMAT = '[%(time)s] %(addr)s "%(method)s %(path)s %(protocol)s" %(status)d %(dt_ms).0fms'
_access = logging.getLogger("granian.access")


class _AccessLog:
    """The access line of a request the watchdog answered 504 (granian never logs those), in granian's
    format; nothing with ``--no-access-log``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def access(self, resp: Any, headers: Any, environ: dict, request_time: Any) -> None:
        if not self.enabled:
            return
        _access.info(ACCESS_LOG_FORMAT, {
            "time": time.strftime("%Y-%m-%d %H:%M:%S %z"), "addr": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD", "-"), "path": environ.get("PATH_INFO", "-"),
            "protocol": environ.get("SERVER_PROTOCOL", "-"), "status": int(resp.status.split()[0]),
            "dt_ms": request_time.total_seconds() * 1000,
        })


class _Worker:
    """What :mod:`modelfmt.serving.timeouts` asks of a worker, for a granian worker process."""

    # Seconds a retiring worker stays up at least: granian may have accepted connections whose requests
    # have not reached the app yet, and it gives no count of them.
    retire_grace = 1.0

    def __init__(self, access_log: bool) -> None:
        self.log = _AccessLog(access_log)

    @staticmethod
    def handle_exit(sig: int, frame: Any) -> None:
        """Stop taking requests: granian's own graceful stop of this worker (the master starts another)."""
        os.kill(os.getpid(), signal.SIGTERM)


def _loader(opened: OpenedModel, app_options: dict, timeout: float, access_log: bool,
            grpc_options: dict | None = None) -> Callable[[], Callable]:
    def load() -> Callable:
        # In the worker, after fork: the watchdog thread and the model belong to this process.
        import gc

        from modelfmt.serving.app import create_app

        app = create_app(opened, **app_options)
        _pass_responder()
        timeouts.WORKER = _Worker(access_log)
        gc.collect()
        gc.freeze()  # as under gunicorn: the loaded model stays out of every later collection
        guard = TimeoutGuard(app, timeout)
        if grpc_options is not None:  # after fork: grpcio is not fork-safe
            from modelfmt.serving.protocols import v2_grpc

            v2_grpc.start_in_worker(guard, grpc_options)
        return guard

    return load


def _pass_responder() -> None:
    """Make granian's WSGI worker put each request's responder in its environ (see the module docstring)."""
    import granian.server.mp as mp

    wrap = getattr(mp, "_wsgi_call_wrap", None)
    if wrap is None or getattr(wrap, "modelfmt", False):
        if wrap is None:
            raise RuntimeError("this granian version has no _wsgi_call_wrap: modelfmt cannot answer 504 under it")
        return

    def call_wrap(callback: Callable, scope_opts: dict[str, Any], access_log_fmt: Any = None) -> Any:
        inner = wrap(callback, scope_opts, access_log_fmt)

        def call(proto: Any, scope: dict) -> Any:
            scope[timeouts.GRANIAN_PROTO] = proto
            return inner(proto, scope)

        return call

    call_wrap.modelfmt = True  # type: ignore[attr-defined]
    mp._wsgi_call_wrap = call_wrap


def _server_class() -> type:
    from granian.net import SocketSpec
    from granian.server.mp import MPServer

    # MPServer is granian's process-per-worker server (Granian itself, on a GIL build of Python).
    class Server(MPServer):
        """granian with one listening socket shared by its workers, as gunicorn has. On Linux granian gives
        each worker its own (SO_REUSEPORT): the connections queued on a worker that dies are then reset,
        and a lone worker's respawn refuses connections; on a shared socket they wait for the next worker."""

        def _init_shared_socket(self) -> None:
            if self.bind_uds:
                super()._init_shared_socket()
                return
            self._ssp = None
            shared: Any = SocketSpec(self.bind_addr, self.bind_port, self.backlog).build()
            self._shd, self._sfd = shared, shared.get_fd()
            sock = socket.socket(fileno=self._sfd)
            sock.set_inheritable(True)
            self._sso = sock

    return Server


def run_granian(
    opened: OpenedModel,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    timeout: float,
    app_options: dict,
    access_log: bool = True,
    debug: bool = False,
    grpc_options: dict | None = None,
) -> None:
    """Serve the app of ``opened`` under granian until SIGTERM or SIGINT (blocking); ``grpc_options``
    (host, port, threads, timeout, max_message_size) also serve V2 over gRPC in every worker."""
    try:
        from granian.constants import Interfaces
        from granian.log import LogLevels
    except ImportError as e:
        from modelfmt.errors import DeployError

        raise DeployError("--server granian needs granian: pip install 'modelfmt[granian]'") from e

    server = _server_class()(
        "modelfmt",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        log_level=LogLevels.debug if debug else LogLevels.info,
        log_dictconfig=_log_config(),
        log_access=access_log,
        log_access_format=ACCESS_LOG_FORMAT,
        respawn_failed_workers=True,
        workers_kill_timeout=max(1, min(1800, int(timeout) + 5)),
    )
    server.serve(target_loader=_loader(opened, app_options, timeout, access_log, grpc_options), wrap_loader=False)


def _log_config() -> dict:
    """granian's logs on stderr, like the rest of ``serve``'s (granian writes them to stdout)."""
    stderr = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    return {
        "handlers": {"console": {**stderr, "formatter": "generic"}, "access": {**stderr, "formatter": "access"}},
    }
