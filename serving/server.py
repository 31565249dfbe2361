"""``modelfmt serve``: an HTTP engine around the scoring app, with request timeouts and graceful stops.

The engine is gunicorn (the default: its gthread worker, many threads per worker so that concurrent
requests meet in a worker and can be batched) or granian (``--server granian``, a Rust HTTP server,
in :mod:`modelfmt.serving.server_granian`; see there what it cannot do that gunicorn does).

- The master opens the model once (:func:`~modelfmt.open.open_model`: ``MLmodel`` parsed and checked);
  the workers fork with that :class:`~modelfmt.open.OpenedModel` and reuse it.
- Each worker loads the model itself (no loaded model is shared across ``fork``: ONNX and Spark
  sessions are not fork-safe); heavy libraries are imported once in the master so a replaced worker
  starts fast.
- A request running past ``timeout`` is answered 504 by a watchdog thread and its worker is replaced:
  the stuck call cannot be stopped from Python, so the worker finishes its other requests and exits.
- SIGTERM and SIGINT both stop gracefully: requests in flight finish, then the server exits 0.
- ``grpc_port``: every worker also serves V2 over gRPC (:mod:`modelfmt.serving.protocols.v2_grpc`) on
  that port (shared with ``SO_REUSEPORT``), started after fork over the worker's own runtime.
- :func:`modelfmt.serving.testing.serving` runs ``modelfmt serve`` in a subprocess for tests and scripts.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelfmt.serving import timeouts
from modelfmt.serving.timeouts import TimeoutGuard

if TYPE_CHECKING:
    from modelfmt.open import OpenedModel
    from modelfmt.serving.batching import BatchConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_TIMEOUT = 60.0
SERVERS = ("gunicorn", "granian")
DEFAULT_SERVER = "gunicorn"
# Threads per worker: enough that a worker sees the concurrent requests it could batch (2 cannot).
# gthread keeps idle kept-alive connections in its poller, so a thread is only taken by a request.
DEFAULT_THREADS = 16
ACCESS_LOG_FORMAT = '%(t)s %(h)s "%(r)s" %(s)s %(B)s %(M)sms'
_log = logging.getLogger("modelfmt.serving")


def default_workers() -> int:
    """One worker per core, at most 4 (each holds its own copy of the model)."""
    return max(1, min(4, os.cpu_count() or 1))


# -- gunicorn -----------------------------------------------------------------------------------
def _gunicorn_options(
    host: str, port: int, workers: int, threads: int, timeout: float, debug: bool, access_log: bool = True
) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        # gunicorn's own heartbeat kill is the backstop behind our 504: it must come later.
        "timeout": int(timeout) + 30,
        "graceful_timeout": int(timeout) + 5,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "logger_class": _stderr_logger_class(),
        "errorlog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "loglevel": "debug" if debug else "info",
        "proc_name": "modelfmt-serve",
        "control_socket_disable": True,  # one fixed socket path per user would clash between servers
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
        "child_exit": _child_exit,
        "when_ready": _when_ready,
    }


def _post_worker_init(worker: Any) -> None:
    timeouts.WORKER = worker  # a timed-out request retires this worker
    # Ctrl-C reaches the whole process group: a worker finishes its request instead of dropping it.
    signal.signal(signal.SIGINT, worker.handle_exit)
    # The model and libraries are loaded for good: keep them out of every future garbage collection,
    # which would otherwise walk them all and show up as latency spikes.
    import gc

    gc.collect()
    gc.freeze()
    grpc_options = getattr(worker.app, "grpc_options", None)
    if grpc_options is not None:
        # After fork and after the app loaded: grpcio is not fork-safe, and it serves the app's runtime.
        from modelfmt.serving.protocols import v2_grpc

        worker.modelfmt_grpc = v2_grpc.start_in_worker(worker.wsgi, grpc_options)


def _worker_exit(server: Any, worker: Any) -> None:
    grpc_server = getattr(worker, "modelfmt_grpc", None)
    if grpc_server is not None:  # HTTP has finished its requests; gRPC gets as long for its own
        from modelfmt.serving.protocols import v2_grpc

        v2_grpc.stop(grpc_server, worker.cfg.graceful_timeout)


def _child_exit(server: Any, worker: Any) -> None:
    from modelfmt.serving import metrics

    metrics.mark_worker_dead(worker.pid)


def _when_ready(server: Any) -> None:
    server.log.info("modelfmt serve: listening on http://%s", server.cfg.bind[0])


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("modelfmt")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def _stderr_logger_class() -> type:
    from gunicorn.glogging import Logger

    class StderrLogger(Logger):
        """gunicorn's logger with the access log on stderr too (``accesslog="-"`` means stdout to gunicorn),
        and a cheaper access line: gunicorn's own builds every atom (all headers) for each request."""

        _stamp: tuple[int, str] = (0, "")

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            if cfg.accesslog == "-":
                self._set_handler(self.access_log, "-", logging.Formatter(self.access_fmt), stream=sys.stderr)

        def access(self, resp: Any, req: Any, environ: dict, request_time: Any) -> None:
            # The line ACCESS_LOG_FORMAT describes: [time] client "request line" status bytes ms.
            if not self.cfg.accesslog:
                return
            status, sent = resp.status, getattr(resp, "sent", None)
            if isinstance(status, str):
                status = status.split(None, 1)[0]
            ms = request_time.seconds * 1000 + request_time.microseconds // 1000
            line = (
                f'{self._now()} {environ.get("REMOTE_ADDR", "-")} "{environ.get("REQUEST_METHOD", "-")} '
                f'{environ.get("RAW_URI", environ.get("PATH_INFO", "-"))} {environ.get("SERVER_PROTOCOL", "-")}" '
                f'{status} {"-" if sent is None else sent} {ms}ms'
            )
            try:
                self.access_log.info(line)
            except Exception:  # noqa: BLE001 - as gunicorn's: a log line must never fail the request
                self.error("Failed to write the access log line")

        def _now(self) -> str:
            # strftime once a second, not once a request.
            second = int(time.time())
            if self._stamp[0] != second:
                self._stamp = (second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second)))
            return self._stamp[1]

    return StderrLogger


def _app_class() -> type:
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from gunicorn.errors import AppImportError

    class _Arbiter(Arbiter):
        def handle_int(self) -> None:
            # gunicorn's SIGINT is a quick stop; ours is graceful, like SIGTERM.
            raise StopIteration

    class ModelfmtApplication(BaseApplication):
        """gunicorn running :func:`modelfmt.serving.app.create_app` behind :class:`TimeoutGuard`."""

        def __init__(self, opened: OpenedModel, options: dict, app_options: dict, timeout: float,
                     grpc_options: dict | None = None) -> None:
            # Opened in the master; every worker forks with it and loads from it, MLmodel not parsed again.
            self.opened, self.options, self.app_options, self.timeout = opened, options, app_options, timeout
            self.grpc_options = grpc_options  # read by _post_worker_init in each worker
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)

        def load(self) -> Callable:
            from modelfmt.errors import ModelfmtError
            from modelfmt.serving.app import create_app

            try:
                app = create_app(self.opened, **self.app_options)
            except ModelfmtError as e:
                raise AppImportError(f"modelfmt serve: cannot load the model: {e}") from e
            return TimeoutGuard(app, self.timeout)

        def run(self) -> None:
            _Arbiter(self).run()

    return ModelfmtApplication


def _metrics_dir() -> str | None:
    """A directory for per-worker metric files: a fresh one, or the user's emptied of stale files."""
    from modelfmt.serving.metrics import MULTIPROC_ENV

    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        os.makedirs(existing, exist_ok=True)
        for stale in glob.glob(os.path.join(existing, "*.db")):
            with contextlib.suppress(OSError):
                os.remove(stale)
        return None
    path = tempfile.mkdtemp(prefix="modelfmt-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


# Flavors whose model objects are plain Python and numpy, safe to unpickle before fork (no sessions,
# threads or JVMs). Their libraries are then imported once, in the master, not once per worker.
_FORK_SAFE_LOADERS = {"mlflow.sklearn"}


def _preload(opened: OpenedModel) -> None:
    """Import, in the master, what every worker would import: workers fork with it and start fast."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import prometheus_client  # noqa: F401  (after _metrics_dir: it reads PROMETHEUS_MULTIPROC_DIR on import)

    import modelfmt.serving.app  # noqa: F401
    import modelfmt.serving.codecs  # noqa: F401
    import modelfmt.serving.runtime  # noqa: F401
    from modelfmt.model import PYFUNC_FLAVOR

    try:
        if opened.model.flavors.get(PYFUNC_FLAVOR, {}).get("loader_module") in _FORK_SAFE_LOADERS:
            from modelfmt.flavors.pyfunc import load_model

            started = time.perf_counter()
            load_model(opened)  # for its imports only; each worker loads its own copy
            _log.info("model libraries imported in the master in %.2fs", time.perf_counter() - started)
    except Exception as e:  # noqa: BLE001 - a worker will load the model and report the problem properly
        _log.debug("preloading %s failed: %s", opened.path, e)


def batch_config(max_rows: int | None = None, max_wait_ms: float | None = None) -> BatchConfig | None:
    """The :class:`~modelfmt.serving.batching.BatchConfig` of ``serve``'s options: ``None`` when neither
    is given (the runtime's defaults); a limit not given takes ``BatchConfig()``'s default."""
    from modelfmt.serving.batching import BatchConfig

    if max_rows is None and max_wait_ms is None:
        return None
    default = BatchConfig()
    return BatchConfig(
        max_rows=default.max_rows if max_rows is None else max_rows,
        max_wait_ms=default.max_wait_ms if max_wait_ms is None else max_wait_ms,
    )


def check_grpc(host: str, port: int) -> None:
    """Before fork: :class:`~modelfmt.errors.DeployError` when the ``grpc`` extra is missing (naming it)
    or when ``port`` cannot be shared on ``host`` (bound by a process without ``SO_REUSEPORT``), so that
    ``serve`` fails at start rather than in every worker. grpcio is looked up, not imported: it must
    not be loaded in the master, whose workers fork from it."""
    import importlib.util
    import socket

    from modelfmt.errors import DeployError

    missing = []
    needed = (("grpc", "grpcio"), ("google.protobuf", "protobuf"), ("grpc_health", "grpcio-health-checking"))
    for module, dist in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # its parent package is missing
            found = False
        if not found:
            missing.append(dist)
    if missing:
        raise DeployError(f"--grpc-port needs {', '.join(missing)}: pip install 'modelfmt[grpc]'")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise DeployError(f"--grpc-port {port}: cannot listen on {host}:{port}: {e.strerror}") from e


def run(
    model: str | os.PathLike | OpenedModel,
    *,
    server: str = DEFAULT_SERVER,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int | None = None,
    threads: int = DEFAULT_THREADS,
    timeout: float = DEFAULT_TIMEOUT,
    max_body_size: int | None = None,
    debug: bool = False,
    access_log: bool = True,
    batching: BatchConfig | None = None,
    model_name: str | None = None,
    grpc_port: int | None = None,
) -> None:
    """Serve ``model`` (a location or an :class:`~modelfmt.open.OpenedModel`) in the foreground until
    SIGTERM or SIGINT (blocking). A location that is not a model raises before any worker starts.

    ``server`` is the HTTP engine (:data:`SERVERS`), ``threads`` the requests a worker runs at once,
    ``access_log`` one log line per request, ``batching`` the adaptive batching limits (``None``: the
    runtime's defaults), ``model_name`` the name V2 and KServe clients use (``None``: the registered
    name, else the directory's), ``grpc_port`` the port of V2 over gRPC in every worker (``None``: off).
    """
    from modelfmt.open import open_model
    from modelfmt.serving.app import DEFAULT_MAX_BODY_SIZE

    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}: choose one of {', '.join(SERVERS)}")
    opened = open_model(model)
    grpc_options = None
    if grpc_port is not None:
        if grpc_port == port:
            from modelfmt.errors import DeployError

            raise DeployError(f"--grpc-port {grpc_port} is the HTTP port (--port): give gRPC a port of its own")
        check_grpc(host, grpc_port)
        grpc_options = {"host": host, "port": grpc_port, "threads": threads, "timeout": timeout,
                        "max_message_size": max_body_size or DEFAULT_MAX_BODY_SIZE}
    _configure_logging(debug)
    created = _metrics_dir()
    master = os.getpid()
    _preload(opened)
    workers = workers or default_workers()
    app_options = {"max_body_size": max_body_size or DEFAULT_MAX_BODY_SIZE, "debug": debug, "batching": batching,
                   "model_name": model_name}
    try:
        if server == "granian":
            from modelfmt.serving.server_granian import run_granian

            run_granian(opened, host=host, port=port, workers=workers, threads=threads, timeout=timeout,
                        app_options=app_options, access_log=access_log, debug=debug, grpc_options=grpc_options)
        else:
            options = _gunicorn_options(host, port, workers, threads, timeout, debug, access_log)
            _app_class()(opened, options, app_options, timeout, grpc_options).run()
    finally:
        # A gunicorn worker that stops by itself (retired after a gRPC timeout) leaves through here too,
        # by sys.exit in its fork: only the master removes what the master made.
        if created and os.getpid() == master:
            from modelfmt.serving.metrics import MULTIPROC_ENV

            # Left set, a later run() in this process would take the removed directory for the user's.
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(created, ignore_errors=True)
